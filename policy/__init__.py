"""π0: the model, its weights, training, inference with real-time chunking, and the policy server."""
