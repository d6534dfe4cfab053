"""Frozen-backbone features: the on-disk cache (cache.py) and the extraction that fills it (extract.py)."""
