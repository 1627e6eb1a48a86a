"""Declared multi-task tables (source.kind: table) and the papers' presets."""
