"""Workflows that compose stages: training with --eval tasks (train, then eval), the demo (every stage
once) and a class-count sweep (train, then eval of every run)."""
