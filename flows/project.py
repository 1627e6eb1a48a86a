"""A throw-away copy of the project (code, dvc.yaml, given params) as a fresh git + DVC repo.

Used by experiments that run the real pipeline on other data (flows/experiments/search_aware.py) and by the
tests (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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


def with_python_on_path() -> None:
    """Stage commands say `python`: make it this interpreter (the venv's) in child processes."""
    here = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != here:
        os.environ["PATH"] = os.pathsep.join([here, os.environ.get("PATH", "")])


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


def copy_project(dest: Path, params: dict[str, Any]) -> Path:
    """The project's code with `params` as params.yaml, in a new git + DVC repository."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], cwd=dest)
    dvc("init", "-q", cwd=dest)
    dvc("config", "core.analytics", "false", cwd=dest)
    return dest
