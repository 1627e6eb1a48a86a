"""A stage group's stale stages run several at once (`flow.jobs`), each on its share of the cores.

`dvc repro` runs one stage at a time: it holds the repository's lock while a stage runs. On 2
cores, two trainings at one thread each get through 1.3-1.4x the samples of one training at two
threads (BENCHMARKS.md, "Two stages at once"). So for the groups in `CONCURRENT` the flow runs
the stale stages itself, `jobs` at a time, each with SARFLOW_THREADS = train.threads // jobs, each
the exact command DVC would run (dvc.yaml's, resolved, in the stage's folder), and then records
the ones that succeeded with `dvc commit`: dvc.lock ends as `dvc repro` would leave it.

That is sound only where a stage's results do not depend on its thread count, bit for bit, or
`dvc repro` could not reproduce what the flow wrote. tests/test_train.py checks it for every
model in params.yaml: every kind predicts the same at 1 and 2 threads (so evaluate@ always
pairs up), and trains to the same weights unless its config says THREADS_INVARIANT = False
(SESRec's backward sums in a thread-dependent order): those train@ stages run alone, on all
train.threads, after the others. export@ stays one at a time: it measures latency.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# groups whose stages the flow may run at once (export@ measures latency: it needs the cores)
CONCURRENT = ("train@*", "evaluate@*")
THREADS_ENV = "SARFLOW_THREADS"  # read by tasks.config.params.torch_threads


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True
    )


def stale_stages(root: Path, stages: list[str]) -> list[str]:
    """The stages `dvc repro` would run (changed deps, params, outs or command), in order."""
    proc = dvc(root, "status", "--json", *stages)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed (exit {proc.returncode}): {proc.stderr.strip()}")
    changed = json.loads(proc.stdout or "{}")
    # keys are stage names, or dvc.yaml:stage where DVC qualifies them
    names = {key.rsplit(":", 1)[-1] for key in changed}
    return [s for s in stages if s in names]


def stage_commands(root: Path, stages: list[str]) -> dict[str, tuple[str, Path]]:
    """Each stage's command as DVC would run it (dvc.yaml's, ${...} resolved) and its folder."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        found = {s.addressing.rsplit(":", 1)[-1]: s for s in repo.index.stages}
        out = {}
        for name in stages:
            stage = found[name]
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            out[name] = (cmd, Path(stage.wdir))
        return out


Line = tuple[str, str | None]  # (stage, an output line); None: the stage ended


def _run_one(name: str, cmd: str, wdir: Path, env: dict[str, str], lines: queue.Queue) -> int:
    """Run one stage's command, each output line onto `lines`, then None (also if it could not
    start: the reader must not wait for ever); its exit code."""
    try:
        lines.put((name, f"Running stage '{name}':"))
        lines.put((name, f"> {cmd}"))
        with subprocess.Popen(
            cmd,
            shell=True,  # as DVC runs a stage's command
            cwd=wdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put((name, line.rstrip()))
        return proc.returncode
    finally:
        lines.put((name, None))


def run_concurrently(
    root: Path,
    stages: list[str],
    jobs: int,
    threads: int,
    env: dict[str, str],
    see: Callable[[str, str], None],
    force: bool = False,
    alone: frozenset[str] = frozenset(),
) -> dict[str, tuple[int, list[str]]]:
    """Run the stale ones of `stages` `jobs` at a time, each with `threads // jobs` torch threads
    (at least 1), then those in `alone` one at a time on their own threads (stages whose results
    depend on the thread count); every output line goes to `see(stage, line)` (on this thread:
    Prefect's logger and artifacts need the flow's context). Then `dvc commit` the ones that
    succeeded. Returns each stage that ran: (exit code, its last 40 lines); a failed stage is
    not committed and leaves dvc.lock's entry for it as it was. `force`: every stage, stale or
    not (dvc repro --force)."""
    todo = list(stages) if force else stale_stages(root, stages)
    if not todo:
        return {}
    commands = stage_commands(root, todo)
    shared = dict(env) | {THREADS_ENV: str(max(1, threads // jobs))}
    lines: queue.Queue[Line] = queue.Queue()
    tails: dict[str, list[str]] = {name: [] for name in todo}
    codes: dict[str, int] = {}
    batches = [([n for n in todo if n not in alone], jobs, shared)]
    batches += [([n], 1, dict(env)) for n in todo if n in alone]
    for batch, workers, batch_env in batches:
        if not batch:
            continue
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {n: pool.submit(_run_one, n, *commands[n], batch_env, lines) for n in batch}
            running = len(batch)
            while running:
                name, line = lines.get()
                if line is None:
                    running -= 1
                    continue
                tails[name] = (tails[name] + [line])[-40:]
                see(name, line)
            codes |= {n: f.result() for n, f in futures.items()}
    done = [name for name in todo if codes[name] == 0]
    if done:
        proc = dvc(root, "commit", "--force", *done)
        for line in (proc.stdout + proc.stderr).splitlines():
            see(done[-1], line)
        if proc.returncode != 0:
            raise RuntimeError(f"dvc commit {' '.join(done)} failed: {proc.stderr.strip()}")
    return {name: (codes[name], tails[name]) for name in todo}


def stage_env() -> dict[str, str]:
    """This process's environment, `python` resolving to this interpreter (the project's venv)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
