"""Training shared by the stages: engine, tensors, checkpoints, item fields, sampled negatives."""
