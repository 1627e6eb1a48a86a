"""A real Prefect server: serve the deployment, trigger a run, read it back over the API and in
headless Chromium (the dashboard page), stop everything.

Everything Prefect runs in child processes and is read over the REST API, so this test never
shares Prefect settings or background workers with the in-process harness of test_flow.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from flows.dashboard_check import artifact_images, check_flow_run
from tests.conftest import ROOT, TWO_MODELS, make_project

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves this file out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left; no descendant may survive."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(
        os.environ,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_UI_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    )
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def healthy() -> bool:
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("the Prefect server", healthy, timeout=180)
        yield api, env
    finally:
        stop(proc)
        log.close()
    assert proc.poll() is not None


def test_served_deployment_runs_on_trigger_with_task_runs_and_artifacts(server, tmp_path):
    api, env = server
    d = make_project(tmp_path / "p", TWO_MODELS)
    serve_log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.serve", "--root", str(d), "--cron", "0 0 1 1 *", "--no-push", "--name", "t"],
        cwd=d, env=env, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        post = lambda path, body=None: httpx.post(f"{api}{path}", json=body or {}, timeout=10)  # noqa: E731
        deployment = wait_for(
            "the served deployment",
            lambda: next((x for x in post("/deployments/filter").json() if x["name"] == "t"), None),
            timeout=120,
        )
        assert deployment["global_concurrency_limit"]["limit"] == 1  # never two runs at once
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"

        def created():
            r = post(f"/deployments/{deployment['id']}/create_flow_run")
            if r.status_code >= 500:  # transient (a busy server under load): nothing was created
                return None
            assert r.status_code in (200, 201), f"create_flow_run: {r.status_code} {r.text[:500]}"
            return r.json()

        def finished(run):
            state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()["state"]
            return (
                state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None
            )

        def triggered():
            run = wait_for("the flow run to be created", created, timeout=60, every=2)
            state = wait_for("the triggered run", lambda: finished(run), timeout=600, every=3)
            assert state["type"] == "COMPLETED", (
                state,
                (tmp_path / "serve.log").read_text()[-3000:],
            )
            return run

        run = triggered()
        flt = {"flow_runs": {"id": {"any_": [run["id"]]}}}
        names = {t["name"] for t in post("/task_runs/filter", flt).json()}
        assert {
            "dvc generate",
            "dvc validate",
            "dvc train@*",
            "dvc export@*",
            "dvc score",
            "promote",
        } <= names
        keys = {
            a["key"]
            for a in post(
                "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
            ).json()
        }
        assert {
            "validation-summary",
            "metrics-comparison",
            "training-progress",
            "recommendations",
            "promotion",
            "drift",
        } <= keys
        assert (d / "reports" / "comparison.md").is_file()
        # the registry: the first version is production
        tags = lambda: subprocess.run(  # noqa: E731
            ["git", "tag", "-l"], cwd=d, capture_output=True, text=True
        ).stdout.split()
        assert tags() == ["feed-ranker#prod#1", "feed-ranker@v0.0.1"]

        # the same run as a user sees it: the dashboard page in headless Chromium
        page = check_flow_run(api.removesuffix("/api"), run["id"], d / "reports" / "dashboard")
        assert page.missing == [], page.missing
        assert page.state == "Completed"
        assert len(page.screenshots) == 3  # run's task runs, run's artifacts, train task's page
        for png in page.screenshots:
            assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert Path(png).stat().st_size > 20_000, png  # a rendered page, not a blank one

        # a second run on drifted data (a new catalogue): marked, and production stays
        params = yaml.safe_load((d / "params.yaml").read_text())
        params["generate"] |= {"seed": params["generate"]["seed"] + 1, "n_items": 1800}
        (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        again = triggered()
        assert "drifted" in httpx.get(f"{api}/flow_runs/{again['id']}", timeout=10).json()["tags"]
        decision = json.loads((d / "reports" / "promotion.json").read_text())
        assert decision["drift"]["drifted"] and not decision["promoted"]
        assert decision["why"].startswith("the data drifted") and "item_id" in decision["why"]
        assert tags() == ["feed-ranker#prod#1", "feed-ranker@v0.0.1", "feed-ranker@v0.0.2"]
        page = check_flow_run(api.removesuffix("/api"), again["id"], d / "reports" / "dashboard2")
        assert page.missing == [], page.missing
        assert "drifted" in page.tabs["flow run / Artifacts"]  # the run's tag, on its page
        picture = next(
            a
            for a in post(
                "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [again["id"]]}}}
            ).json()
            if a["key"] == "drift-picture"
        )
        widths = artifact_images(
            api.removesuffix("/api"), picture["id"], d / "reports" / "drift-page.png"
        )
        assert widths and min(widths) > 1000  # the drift picture, drawn on the artifact's page
    finally:
        stop(serve)
        serve_log.close()
    assert serve.poll() is not None


def test_prefect_yaml_registers_the_worker_deployment(server, tmp_path):
    """prefect.yaml, for users who run workers: `prefect deploy --all` registers the pipeline with
    the same contract as `make serve` (concurrency 1, enqueue, push) and params.yaml's cron."""
    api, env = server
    d = make_project(tmp_path / "p")
    prefect = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "prefect", *a], cwd=d, env=env, capture_output=True, text=True
    )
    made = prefect("work-pool", "create", "sarflow", "--type", "process")
    assert made.returncode == 0, made.stdout + made.stderr
    deployed = prefect("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    dep = next(x for x in found if x["name"] == "scheduled-worker")
    assert dep["work_pool_name"] == "sarflow"
    assert dep["entrypoint"] == "flows/pipeline.py:pipeline"
    assert dep["parameters"] == {"root": ".", "push_to_remote": True}
    assert dep["global_concurrency_limit"]["limit"] == 1
    assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    from tasks.config.params import load_params

    crons = [s["schedule"]["cron"] for s in dep["schedules"]]
    assert crons == [load_params(ROOT / "params.yaml").serve.cron]  # the yaml mirrors params
    pull = dep["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
    assert Path(pull["directory"]).resolve() == d.resolve()
