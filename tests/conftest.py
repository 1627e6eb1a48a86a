"""Shared fixtures: tiny generated data and throw-away copies of the project."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml

from flows.project import ROOT, copy_project, dvc, run  # noqa: F401  (tests import them here)

# Prefect: never touch the user's ~/.prefect, no telemetry, patient server start-up.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="sarflow-prefect-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DVC_NO_ANALYTICS"] = "1"
# `dvc exp` and the tests' commits need a git identity, which a fresh CI machine may lack
for var, value in (("NAME", "sarflow tests"), ("EMAIL", "tests@sarflow.invalid")):
    os.environ.setdefault(f"GIT_AUTHOR_{var}", value)
    os.environ.setdefault(f"GIT_COMMITTER_{var}", value)

# The tests' configuration: params.yaml with these overrides, nothing else (tiny_params).
TINY = {
    "generate": {
        "n_users": 80,
        "n_items": 600,
        "n_authors": 60,
        "n_categories": 6,
        "n_subcategories": 2,
        "n_words": 700,
        "rec_actions": 8000,
        "search_sessions": 900,
    },
    "train": {"epochs": 2, "patience": 1, "batch_size": 512, "embed_dim": 8},
}
# flow and server tests check orchestration, not models: two small models are enough
TWO_MODELS = {"train": {"models": ["mmoe", "ple"]}}
# every model section keeps its kind and options, with these widths where it has the key
TINY_WIDTHS = {"bottom": [32], "expert": [32], "tower": [8], "n_experts": 2}


def tiny_params(overrides: dict | None = None) -> dict:
    """params.yaml of the project with the TINY sizes, TINY_WIDTHS in every model section, and
    `overrides` (a section's keys merged in; `models` replaced whole) merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = {
        name: {**section, **{k: v for k, v in TINY_WIDTHS.items() if k in section}}
        for name, section in params["models"].items()
    }
    for extra in (TINY, overrides or {}):
        for section, values in extra.items():
            if section == "models":
                params["models"] = dict(values)
            else:
                params[section] = {**params.get(section, {}), **values}
    return params


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """A fresh git + DVC repository holding the project's code and tiny params."""
    return copy_project(dest, tiny_params(overrides))


@pytest.fixture(scope="session")
def tiny_generate():
    from tasks.config.params import GenerateParams

    return GenerateParams(**TINY["generate"])


@pytest.fixture(scope="session")
def raw_frames(tiny_generate):
    from tasks.kuaisar.world import generate

    return generate(tiny_generate)


@pytest.fixture(scope="session")
def raw_dir(raw_frames, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    for name, df in raw_frames.items():
        df.write_csv(d / name)
    return d
