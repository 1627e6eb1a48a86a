"""The registry and guarded promotion (tasks.serving) on a real pipeline run: GTO tags, `dvc
artifacts get` from a clone, the guard's paired CI against production re-encoded its own way."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from tasks.serving import registry
from tests.conftest import TWO_MODELS, dvc, make_project, run


def git(d: Path, *args: str) -> str:
    return run(["git", *args], cwd=d).stdout.strip()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_snapshot_commits_the_pipeline_files_and_touches_nothing(tmp_path):
    d = tmp_path / "repo"
    d.mkdir()
    git(d, "init", "-q")
    (d / "dvc.yaml").write_text("stages: {}\n")
    (d / "dvc.lock").write_text("schema: '2.0'\n")
    (d / "code.py").write_text("x = 1\n")
    empty = registry.snapshot(d, "first")  # no HEAD yet: a root commit of the pipeline files
    assert git(d, "ls-tree", "--name-only", empty).split() == ["dvc.lock", "dvc.yaml"]
    git(d, "add", "code.py")
    git(d, "commit", "-qm", "code")
    head = git(d, "rev-parse", "HEAD")
    (d / "code.py").write_text("x = 2\n")  # a tracked change, unstaged
    (d / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    status = git(d, "status", "--porcelain")
    sha = registry.snapshot(d, "run")
    assert git(d, "rev-parse", f"{sha}^") == head  # parented on HEAD
    assert git(d, "show", f"{sha}:code.py") == "x = 2"  # the working tree as it is
    assert "stages" in git(d, "show", f"{sha}:dvc.lock")
    # HEAD, the index and the files are as they were
    assert git(d, "rev-parse", "HEAD") == head and git(d, "status", "--porcelain") == status


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two models through `dvc repro`, committed, with a local DVC remote."""
    base = tmp_path_factory.mktemp("registry")
    d = make_project(base / "p", TWO_MODELS)
    dvc("remote", "add", "-d", "local", str(base / "remote"), cwd=d)
    git(d, "add", "-A")
    git(d, "commit", "-qm", "code")
    dvc("repro", cwd=d)
    return d


def promote(d: Path) -> dict:
    run([sys.executable, "-m", "tasks.serving.promote"], cwd=d)
    return json.loads((d / "reports" / "promotion.json").read_text())


def tags(d: Path) -> list[str]:
    return git(d, "tag", "-l").split()


@pytest.mark.slow
def test_the_first_version_is_registered_and_promoted_without_touching_the_branch(project):
    d = project
    head, status = git(d, "rev-parse", "HEAD"), git(d, "status", "--porcelain")
    out = promote(d)
    summary = json.loads((d / "recommendations" / "summary.json").read_text())
    assert out["promoted"] and out["registered"] == "v0.0.1" and "first version" in out["why"]
    assert tags(d) == ["feed-ranker#prod#1", "feed-ranker@v0.0.1"]
    card = registry.card(d, "feed-ranker", "v0.0.1")
    assert card["model"] == summary["model"] and card["model_version"] == summary["model_version"]
    assert card["data_version"] == summary["data_version"]
    # the version's commit records this run's dvc.lock; the user's branch and files are as they were
    commit = git(d, "rev-list", "-n", "1", "feed-ranker@v0.0.1")
    assert git(d, "show", f"{commit}:dvc.lock") == (d / "dvc.lock").read_text().strip()
    assert git(d, "rev-parse", "HEAD") == head and git(d, "status", "--porcelain") == status
    # no production to compare with: drift is this run's test rows against its own train rows
    assert out["drift"]["against"] == "own train" and not out["drift"]["drifted"]
    assert (d / "reports" / "drift.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_dvc_artifacts_get_fetches_production_from_a_clone(project, tmp_path):
    d = project
    dvc("push", cwd=d)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(d), str(clone)], cwd=tmp_path)
    dvc("artifacts", "get", ".", "feed-ranker", "--stage", "prod", "-o", "got", cwd=clone)
    model = json.loads((d / "recommendations" / "summary.json").read_text())["model"]
    assert md5(clone / "got" / "model.pt") == md5(d / "artifacts" / model / "model.pt")
    assert {p.name for p in (clone / "got").iterdir()} >= {
        "model.pt",
        "spec.json",
        "vocab",
        "profile.json",
    }


@pytest.mark.slow
def test_the_guard_reencoding_reproduces_evaluate_for_the_same_model(project, monkeypatch):
    """Production's path (this run's rows encoded with a package's own vocabularies) given this
    run's own package must rank and predict exactly as evaluate did."""
    from tasks.config.params import load_params
    from tasks.serving.guard import production_results

    monkeypatch.chdir(project)
    params = load_params()
    model = json.loads(Path("recommendations/summary.json").read_text())["model"]
    ranks, preds = production_results(params, Path("recommendations/model"), torch.device("cpu"))
    mine = pl.read_parquet(f"artifacts/{model}/ranks.parquet")
    both = mine.join(ranks, on="row", suffix="_b")
    assert len(both) == len(mine) == len(ranks) > 0 and (both["rank"] == both["rank_b"]).all()
    evaluated = pl.read_parquet(f"artifacts/{model}/predictions.parquet").filter(file="rec")
    joined = evaluated.join(preds, on=["file", "row"], suffix="_b")
    assert len(joined) == len(evaluated)
    assert (joined["p_click"] - joined["p_click_b"]).abs().max() < 1e-6


@pytest.mark.slow
def test_the_same_model_again_is_not_promoted_and_nothing_is_tagged(project):
    before = tags(project)
    out = promote(project)
    assert not out["promoted"] and "production already" in out["why"]
    assert out["registered"] == "v0.0.1" and tags(project) == before


@pytest.mark.slow
def test_a_retrained_model_is_registered_and_promoted_only_on_its_paired_ci(project):
    d = project
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["train"]["seed"] = 11  # other weights, the same data: the same candidates
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", cwd=d)
    out = promote(d)
    ci = out["against"]
    assert out["registered"] == "v0.0.2" and ci is not None and ci["n"] > 0
    # the same data version: production re-encoded ranks as it did when it was evaluated, so
    # the paired difference is the difference of the two models' metric values
    summary = json.loads((d / "recommendations" / "summary.json").read_text())
    prod = registry.card(d, "feed-ranker", "v0.0.1")
    assert ci["diff"] == pytest.approx(
        summary["values"][summary["model"]] - prod["value"], abs=1e-9
    )
    assert out["promoted"] == (ci["excludes_0"] and ci["diff"] > 0)
    expected = "v0.0.2" if out["promoted"] else "v0.0.1"
    assert registry.production(d, "feed-ranker", "prod")["version"] == expected
    assert ("feed-ranker#prod#2" in tags(d)) == out["promoted"]


@pytest.mark.slow
def test_production_whose_files_cannot_be_fetched_is_named_and_nothing_is_promoted(
    project, monkeypatch
):
    from tasks.config.params import load_params
    from tasks.serving import promote

    def unreachable(*args, **kwargs):
        raise RuntimeError("no remote holds 1e7bbc2a")

    monkeypatch.chdir(project)
    monkeypatch.setattr(registry, "fetch", unreachable)
    before = tags(project)
    out = promote.decide(load_params())
    assert not out["promoted"] and "cannot be fetched (no remote holds 1e7bbc2a)" in out["why"]
    assert tags(project) == before
