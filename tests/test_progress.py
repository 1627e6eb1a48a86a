"""Progress bars: on for a person at a terminal, off in CI, in pipes and under the flow."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = "from tasks.io.progress import progress\nprint(sum(progress(range(500), 500, 'work')))"


def run_with(env_extra: dict[str, str], drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop} | env_extra
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_quiet_when_stderr_is_not_a_terminal():
    out = run_with({}, drop=("SARFLOW_PROGRESS", "CI"))
    assert out.stdout.strip() == "124750"
    assert out.stderr == ""


def test_forced_on_draws_a_bar_on_stderr_only():
    out = run_with({"SARFLOW_PROGRESS": "1"})
    assert out.stdout.strip() == "124750"  # stdout stays the stage's log
    assert "work" in out.stderr and "/500" in out.stderr


def test_ci_and_forced_off_win_over_a_terminal(monkeypatch):
    from tasks.io import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("SARFLOW_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert progress.enabled()
    monkeypatch.setenv("CI", "true")
    assert not progress.enabled()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("SARFLOW_PROGRESS", "0")
    assert not progress.enabled()


def test_training_progress_follows_the_epochs_before_finish():
    """The flow's training-progress artifact moves with each model's epochs, not only at the
    end (finish() publishes 100 whatever happened before)."""
    from flows.pipeline import TrainingProgress

    class Recorded(TrainingProgress):
        def _publish(self, pct: float, description: str) -> None:
            seen.append(round(pct, 2))

    seen: list[float] = []
    p = Recorded(n_models=2)
    for line in [
        "Running stage 'train@mmoe':",
        "epoch 1/4 train loss 0.7",
        "epoch 2/4 train loss 0.6",
        "something else",
        "Running stage 'train@ple':",
        "epoch 1/2 train loss 0.7",
    ]:
        p.see(line)
    assert seen == [0.0, 12.5, 25.0, 50.0, 75.0]
