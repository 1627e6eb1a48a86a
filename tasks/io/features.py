"""A features folder's spec.json: what every stage after features learns its inputs from."""

from __future__ import annotations

import json
from pathlib import Path


def read_spec(features: Path) -> dict:
    return json.loads((features / "spec.json").read_text())


def sample_files(spec: dict) -> str:
    """The prefix of the sample files: rec (KuaiSAR feed) or table (a declared table)."""
    return str(spec.get("samples", "rec"))


def item_side(spec: dict) -> list[str]:
    """The item-side field names of a features folder's spec.json."""
    if "item_side" not in spec:
        raise ValueError(
            "spec.json has no item_side (features written by an older sarflow): rerun the "
            "features stage (dvc repro features)"
        )
    return list(spec["item_side"])
