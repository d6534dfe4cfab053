"""Retrieval below every stage: exact k-NN (knn.py) and the host's metrics (metrics.py)."""
