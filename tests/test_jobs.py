"""flows/jobs.py: a group's stale stages run two at a time, recorded in dvc.lock as dvc repro
would record them; a failed stage is not recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.jobs import run_concurrently, stage_env, stale_stages
from tasks.config.params import load_params, torch_threads

STAGES = ["make@a", "make@b", "make@c"]

# each stage writes its item (the output DVC hashes) and, outside DVC, when it ran and with
# how many threads; the item "fail" exits 3 before writing anything
WRITE = """
import json, os, sys, time
item, log = sys.argv[1], sys.argv[2]
start = time.time()
time.sleep(0.6)
if os.environ.get("FAIL") == item:
    sys.exit(3)
os.makedirs("out", exist_ok=True)
with open(f"out/{item}.txt", "w") as f:
    f.write(item)
with open(f"{log}/{item}.json", "w") as f:
    json.dump({"start": start, "end": time.time(), "threads": os.environ.get("SARFLOW_THREADS")}, f)
print(f"wrote {item}")
"""


def dvc_project(root: Path, log: Path) -> Path:
    root.mkdir()
    (root / "write.py").write_text(WRITE)
    (root / "dvc.yaml").write_text(
        "stages:\n  make:\n    foreach: [a, b, c]\n    do:\n"
        f"      cmd: python write.py ${{item}} {log}\n"
        "      deps: [write.py]\n      outs:\n        - out/${item}.txt\n"
    )
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True)
    return root


def run(
    root: Path, env: dict[str, str] | None = None, alone: frozenset[str] = frozenset()
) -> tuple[dict, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    ran = run_concurrently(
        root, STAGES, 2, 2, env or stage_env(), lambda s, line: seen.append((s, line)), alone=alone
    )
    return ran, seen


@pytest.fixture
def project(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    return dvc_project(tmp_path / "p", log), log


def test_stale_stages_run_two_at_a_time_and_end_in_dvc_lock_as_dvc_repro_leaves_it(project):
    root, log = project
    assert stale_stages(root, STAGES) == STAGES
    twin = shutil.copytree(root, root.parent / "twin")  # the same project, for dvc repro
    ran, seen = run(root)
    assert {s: code for s, (code, _) in ran.items()} == dict.fromkeys(STAGES, 0)
    times = {s: json.loads((log / f"{s[-1]}.json").read_text()) for s in STAGES}
    assert {t["threads"] for t in times.values()} == {"1"}  # 2 threads shared by 2 jobs
    a, b, c = (times[s] for s in STAGES)
    assert a["start"] < b["end"] and b["start"] < a["end"]  # a and b overlapped
    assert c["start"] >= min(a["end"], b["end"]) - 0.05  # never three at once
    assert ("make@b", "wrote b") in seen
    assert stale_stages(root, STAGES) == []  # recorded: dvc has nothing left to run
    assert run(root)[0] == {}
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=twin, check=True)
    assert (root / "dvc.lock").read_text() == (twin / "dvc.lock").read_text()


def test_a_failed_stage_is_not_recorded_and_the_others_are(project):
    root, _ = project
    ran, _ = run(root, stage_env() | {"FAIL": "c"})
    assert ran["make@c"][0] == 3 and ran["make@a"][0] == ran["make@b"][0] == 0
    assert stale_stages(root, STAGES) == ["make@c"]
    ran, _ = run(root)  # fixed: only the failed stage runs again
    assert list(ran) == ["make@c"] and stale_stages(root, STAGES) == []


def test_a_stage_whose_results_depend_on_threads_runs_alone_on_all_of_them(project, monkeypatch):
    root, log = project
    monkeypatch.delenv("SARFLOW_THREADS", raising=False)
    ran, _ = run(root, alone=frozenset({"make@a"}))
    assert sorted(ran) == STAGES and all(code == 0 for code, _ in ran.values())
    times = {s: json.loads((log / f"{s[-1]}.json").read_text()) for s in STAGES}
    assert times["make@a"]["threads"] is None  # its own threads: train.threads
    assert times["make@b"]["threads"] == times["make@c"]["threads"] == "1"
    assert times["make@a"]["start"] >= max(times["make@b"]["end"], times["make@c"]["end"]) - 0.05
    assert stale_stages(root, STAGES) == []


def test_a_stage_gives_torch_the_flows_share_of_threads_else_train_threads(monkeypatch):
    params = load_params()
    monkeypatch.delenv("SARFLOW_THREADS", raising=False)
    assert torch_threads(params) == params.train.threads
    monkeypatch.setenv("SARFLOW_THREADS", "1")
    assert torch_threads(params) == 1
    monkeypatch.setenv("SARFLOW_THREADS", "two")
    with pytest.raises(ValueError, match="SARFLOW_THREADS must be a whole number >= 1, got 'two'"):
        torch_threads(params)
