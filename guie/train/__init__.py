"""Training: frozen-feature extraction and cache, the head training loop, checkpoints, tracking."""
