"""Evaluation: the competition metric, exact k-NN retrieval with faiss, and reports."""
