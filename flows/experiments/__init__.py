"""Experiments apart from the pipeline: the MMoE synthetic, the search-aware runs, the truth ranker."""
