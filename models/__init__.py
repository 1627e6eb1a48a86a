"""PyTorch modules only: embeddings, experts, gates, towers and the multi-task heads."""
