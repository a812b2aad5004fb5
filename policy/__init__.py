"""pi0: model, training, inference (issue 5)."""
