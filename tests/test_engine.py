"""The training engine: resume after kill -9 ends where an uninterrupted run ends; DDP on 2 CPUs."""

from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

from tests.conftest import dvc, make_project, run

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves this file out

# long enough that a run killed after epoch 1 has epochs left to resume
OVERRIDES = {"train": {"epochs": 3, "patience": 3, "models": ["mmoe"]}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = make_project(tmp_path_factory.mktemp("engine") / "sarflow", OVERRIDES)
    dvc("repro", "candidates", cwd=d)  # features and the candidates train and evaluate read
    return d


def train_and_evaluate(d, env: dict | None = None, check: bool = True):
    proc = run([sys.executable, "-m", "tasks.train", "mmoe"], cwd=d, check=False, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run([sys.executable, "-m", "tasks.evaluate", "mmoe"], cwd=d)
    return proc


def test_kill_9_mid_training_then_rerun_resumes_and_ends_with_the_same_metrics(project):
    d = project
    train_and_evaluate(d)
    uninterrupted = (d / "artifacts" / "mmoe" / "metrics.json").read_text()
    (d / "artifacts" / "mmoe" / "model.pt").unlink()

    killed = train_and_evaluate(d, env={"SARFLOW_FAULT_KILL_AFTER_EPOCH": "1"}, check=False)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert not (d / "artifacts" / "mmoe" / "model.pt").exists()  # no partial output
    assert list((d / "checkpoints" / "mmoe").glob("resume-*.pt"))

    resumed = train_and_evaluate(d)
    assert "resumed from" in resumed.stdout and "after epoch 1" in resumed.stdout
    assert (d / "artifacts" / "mmoe" / "metrics.json").read_text() == uninterrupted
    assert not list((d / "checkpoints" / "mmoe").glob("resume-*.pt"))  # finished: cleaned up


def test_a_resume_checkpoint_of_other_params_is_not_used(project):
    d = project
    train_and_evaluate(d, env={"SARFLOW_FAULT_KILL_AFTER_EPOCH": "1"}, check=False)
    original = (d / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["train"]["lr"] = params["train"]["lr"] / 2
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = train_and_evaluate(d).stdout
    finally:
        (d / "params.yaml").write_text(original)
    assert "resumed from" not in out


def test_torchrun_trains_with_ddp_on_two_cpu_processes(project):
    d = project
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tasks.train",
        "mmoe",
    ]
    proc = run(cmd, cwd=d, env={"OMP_NUM_THREADS": "1"})
    assert "x 2 ranks" in proc.stdout, proc.stdout
    assert proc.stdout.count("epoch 1/") == 1  # rank 0 alone reports
    run([sys.executable, "-m", "tasks.evaluate", "mmoe"], cwd=d)
    metrics = json.loads((d / "artifacts" / "mmoe" / "metrics.json").read_text())
    assert all(0.0 <= m["auc"] <= 1.0 for m in metrics.values()), metrics  # gathered on rank 0
    curve = json.loads((d / "artifacts" / "mmoe" / "curve.json").read_text())["curve"]
    losses = [r["train_loss"] for r in curve]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], (
        losses
    )  # the ranks learn together
    assert os.environ.get("WORLD_SIZE") is None  # the test process itself is not a rank


def test_two_runs_with_the_same_seed_give_identical_checkpoints_and_metrics(project):
    d = project
    outputs = []
    for _ in range(2):
        train_and_evaluate(d)
        outputs.append(
            [(d / "artifacts" / "mmoe" / f).read_bytes() for f in ("model.pt", "metrics.json")]
        )
    assert outputs[0] == outputs[1]
