"""Shared fixtures: tiny generated data and throw-away copies of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

# Prefect: never touch the user's ~/.prefect, no telemetry, patient server start-up.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="sarflow-prefect-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DVC_NO_ANALYTICS"] = "1"
# `dvc exp` and the tests' commits need a git identity, which a fresh CI machine may lack
for var, value in (("NAME", "sarflow tests"), ("EMAIL", "tests@sarflow.invalid")):
    os.environ.setdefault(f"GIT_AUTHOR_{var}", value)
    os.environ.setdefault(f"GIT_COMMITTER_{var}", value)

ROOT = Path(__file__).resolve().parents[1]
CODE = [
    "tasks",
    "models",
    "flows",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".dvcignore",
    "prefect.yaml",
]

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
    "models": {
        "shared_bottom": {"kind": "shared_bottom", "bottom": [32], "tower": [8]},
        "mmoe": {"kind": "mmoe", "n_experts": 2, "expert": [32], "tower": [8]},
        "ple": {
            "kind": "ple",
            "n_levels": 2,
            "n_shared": 1,
            "n_specific": 1,
            "expert": [32],
            "tower": [8],
        },
        "ple_search": {
            "kind": "ple",
            "scenario": "search",
            "n_levels": 1,
            "expert": [32],
            "tower": [8],
        },
        "ple_joint": {
            "kind": "ple",
            "scenario": "joint",
            "n_levels": 1,
            "expert": [32],
            "tower": [8],
        },
    },
}


def tiny_params(overrides: dict | None = None) -> dict:
    """params.yaml of the project with the TINY sizes (and `overrides`) merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for extra in (TINY, overrides or {}):
        for section, values in extra.items():
            if section == "models":
                params["models"] = dict(values)
            else:
                params[section] = {**params.get(section, {}), **values}
    return params


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with this interpreter's folder first on PATH (stage commands say `python`)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    env = dict(os.environ, PATH=path, **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check)


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """A fresh git + DVC repository holding the project's code and tiny params."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(overrides), sort_keys=False))
    run(["git", "init", "-q"], cwd=dest)
    dvc("init", "-q", cwd=dest)
    dvc("config", "core.analytics", "false", cwd=dest)
    return dest


@pytest.fixture(scope="session")
def tiny_generate():
    from tasks.params import GenerateParams

    return GenerateParams(**TINY["generate"])


@pytest.fixture(scope="session")
def raw_frames(tiny_generate):
    from tasks.generate import generate

    return generate(tiny_generate)


@pytest.fixture(scope="session")
def raw_dir(raw_frames, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    for name, df in raw_frames.items():
        df.write_csv(d / name)
    return d
