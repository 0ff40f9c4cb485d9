"""The detector's model files: the cascade's manifest entry (the cascade itself is downloaded)
and the face verifier trained by benchmarks/train_verifier.py, each with its card."""
