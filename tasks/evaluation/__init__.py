"""Evaluation shared by the stages: metrics, ranking with sampled negatives, plots."""
