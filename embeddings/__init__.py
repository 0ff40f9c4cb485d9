"""The embedder's model files: the backbone weights' manifest entry (downloaded, never shipped)
and the projections trained on anime faces by `animeface train`, each with its card."""
