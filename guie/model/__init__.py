"""Models: the frozen open_clip backbone, the projection, margin heads and the embedder."""
