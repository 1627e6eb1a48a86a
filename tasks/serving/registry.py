"""A model registry without a server: git tags in GTO's format over a dvc.yaml artifact.

dvc.yaml declares the served model's package (`artifacts:` feed-ranker, the score stage's
paths.recommendations folder, type model). A version is a GTO registration tag
(`feed-ranker@v0.0.3`) on a commit that records the run's dvc.yaml, params.yaml and dvc.lock,
so the version's files are the ones that dvc.lock hashes; production is a GTO stage assignment
(`feed-ranker#prod#2`). Both are plain annotated git tags, so `dvc artifacts get REPO
feed-ranker --stage prod` and `gto show` read them from any clone.

A run's results are usually not committed (a scheduled run changes dvc.lock in the working
tree): `snapshot` commits the working tree's tracked files and the pipeline's files through a
temporary index, parented on HEAD, without moving any branch or touching the index or the
files. The registration tag keeps that commit reachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

# what `dvc artifacts get` needs at a version's commit, beside the tracked files
PIPELINE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", ".dvc/.gitignore")
FALLBACK_IDENTITY = ("sarflow", "sarflow@localhost")


def git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {root}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def is_repo(root: Path) -> bool:
    try:
        return git(root, "rev-parse", "--show-toplevel") != ""
    except RuntimeError:
        return False


def identity(root: Path) -> tuple[str, str]:
    """The git identity to commit and tag as: the repository's, else sarflow's own."""
    out = []
    for key, var, fallback in zip(
        ("user.name", "user.email"), ("NAME", "EMAIL"), FALLBACK_IDENTITY, strict=True
    ):
        try:
            value = git(root, "config", key)
        except RuntimeError:  # unset
            value = os.environ.get(f"GIT_COMMITTER_{var}", "")
        out.append(value or fallback)
    return out[0], out[1]


def snapshot(root: Path, message: str) -> str:
    """A commit of the working tree's tracked files and PIPELINE_FILES, parented on HEAD (none
    in a repository without commits); HEAD, the index and the files stay as they are."""
    name, email = identity(root)
    who = {
        f"GIT_{r}_{k}": v
        for r in ("AUTHOR", "COMMITTER")
        for k, v in (("NAME", name), ("EMAIL", email))
    }
    with tempfile.TemporaryDirectory(prefix="sarflow-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), **who}
        try:
            head: str | None = git(root, "rev-parse", "--verify", "-q", "HEAD")
        except RuntimeError:
            head = None
        if head:
            git(root, "read-tree", head, env=env)
            git(root, "add", "-u", env=env)
        present = [f for f in PIPELINE_FILES if (root / f).is_file()]
        git(root, "add", "-f", "--", *present, env=env)
        tree = git(root, "write-tree", env=env)
        parents = ["-p", head] if head else []
        return git(root, "commit-tree", tree, *parents, "-m", message, env=env)


def production(root: Path, name: str, stage: str) -> dict[str, Any] | None:
    """The version of artifact `name` in `stage` (its registration card), None if none is."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        found = gto.api.find_versions_in_stage(str(root), name, stage)
    except ArtifactNotFound:  # never registered
        return None
    if not found:
        return None
    v = found[0] if isinstance(found, list) else found
    return {"version": v.version, "commit": v.commit_hexsha, "card": card(root, name, v.version)}


def card(root: Path, name: str, version: str) -> dict[str, Any]:
    """The JSON a version was registered with (its registration tag's message, after the
    first line)."""
    text = git(root, "tag", "-l", "--format=%(contents)", f"{name}@{version}")
    body = text.split("\n", 1)[1] if "\n" in text else "{}"
    return json.loads(body.strip() or "{}")


def latest(root: Path, name: str) -> dict[str, Any] | None:
    """The last registered version of `name` and its card, None if it has none."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        v = gto.api.find_latest_version(str(root), name)
    except ArtifactNotFound:
        return None
    return None if v is None else {"version": v.version, "card": card(root, name, v.version)}


def fetch(root: Path, name: str, stage: str, dest: Path) -> Path:
    """`dvc artifacts get ROOT NAME --stage STAGE -o DEST`: the files of the version in stage."""
    from dvc.repo.artifacts import Artifacts

    Artifacts.get(str(root), name, stage=stage, out=str(dest), force=True)
    return dest


def register(root: Path, name: str, commit: str, summary: str, info: dict[str, Any]) -> str:
    """A new version of `name` on `commit`; its tag message: `summary`, then `info` as JSON."""
    import gto.api

    who, email = identity(root)
    message = summary + "\n" + json.dumps(info, sort_keys=True)
    tag = gto.api.register(str(root), name, commit, message=message, author=who, author_email=email)
    return str(tag.version)


def assign(root: Path, name: str, version: str, stage: str, why: str) -> None:
    import gto.api

    who, email = identity(root)
    gto.api.assign(
        str(root), name, stage, version=version, message=why, author=who, author_email=email
    )
