"""Workflows that compose stages: the demo (every stage once) and a class-count sweep (train, then eval of every run)."""
