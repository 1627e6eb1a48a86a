"""The Prefect flow: DVC's stages as task runs, artifacts read back, a bad input stops it at validate."""

from __future__ import annotations

import asyncio
import json
import shutil

import polars as pl
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.sorting import ArtifactSort

from flows.pipeline import pipeline, stage_groups
from tests.conftest import TWO_MODELS, make_project

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves this file out

GROUPS = [
    "generate",
    "validate",
    "split",
    "features",
    "candidates",
    "train@*",
    "evaluate@*",
    "export@*",
    "report",
    "score",
]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def read_run(flow_run_id):
    async def _read():
        async with get_client() as client:
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                ),
                sort=ArtifactSort.CREATED_DESC,
            )
            return tasks, arts

    return asyncio.run(_read())


def test_stage_groups_follow_dvcs_order(tmp_path):
    d = make_project(tmp_path / "p")
    groups = stage_groups(d)
    assert [g for g, _ in groups] == GROUPS
    models = yaml.safe_load((d / "params.yaml").read_text())["train"]["models"]
    assert "ple_joint" in models
    assert dict(groups)["train@*"] == [f"train@{m}" for m in models]  # params order


def test_flow_runs_every_stage_and_publishes_both_artifacts(harness, tmp_path):
    d = make_project(tmp_path / "p", TWO_MODELS)
    state = pipeline(str(d), return_state=True)
    assert state.is_completed(), state.message
    tasks, arts = read_run(state.state_details.flow_run_id)
    assert sorted(t.name for t in tasks) == sorted([*(f"dvc {g}" for g in GROUPS), "promote"])
    assert all(t.state.is_completed() for t in tasks)
    by_key = {a.key: a for a in arts}
    assert by_key["validation-summary"].type == "markdown"
    assert "Data validation passed" in by_key["validation-summary"].data
    table = by_key["metrics-comparison"]
    assert table.type == "table"
    assert "mmoe" in table.data and "gauc" in table.data
    assert "data_docs/index.html" in by_key["data-docs"].data  # a link (stored as markdown)
    assert "seesaw.png" in by_key["model-comparison-figures"].data
    served = json.loads((d / "recommendations" / "summary.json").read_text())["model"]
    assert f"# Serving {served}" in by_key["recommendations"].data
    assert "runner-up" in by_key["recommendations"].data  # two models: a paired CI
    # the registry: no production yet, so the served model is its first version
    assert by_key["promotion"].data.startswith("# Promoted: feed-ranker v0.0.1")
    assert by_key["drift"].type == "table" and "psi" in by_key["drift"].data
    assert "](data:image/png;base64,iVBORw0KGgo" in by_key["drift-picture"].data  # a PNG, inline
    progress = by_key["training-progress"]  # moved by the epochs, 100 when training ends
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert (d / "artifacts" / "ple" / "metrics.json").is_file()


def test_corrupted_input_stops_the_flow_at_validate_naming_the_check(harness, tmp_path, raw_dir):
    source = tmp_path / "kuaisar"  # a real-source folder, as the real dataset would be
    shutil.copytree(raw_dir, source)
    d = make_project(tmp_path / "p", {"paths": {"source": str(source)}})
    rec = source / "rec_inter.csv"
    df = pl.read_csv(rec, infer_schema=False)
    at = pl.int_range(pl.len()) == 4
    df.with_columns(click=pl.when(at).then(pl.lit("3")).otherwise(pl.col("click"))).write_csv(rec)

    state = pipeline(str(d), return_state=True)
    assert state.is_failed()
    tasks, arts = read_run(state.state_details.flow_run_id)
    states = {t.name: t.state for t in tasks}
    # generate is left out (nothing reads data/raw), nothing downstream of validate ran
    assert set(states) == {"dvc validate"}
    assert states["dvc validate"].is_failed()
    assert (
        next(t for t in tasks if t.name == "dvc validate").run_count == 1
    )  # a data failure is not retried
    assert "click" in states["dvc validate"].message
    summary = {a.key: a for a in arts}["validation-summary"].data
    assert "FAILED" in summary and "click" in summary and "3" in summary
    assert "data-docs" in {a.key for a in arts}  # a failed run still links what it produced
    assert not (d / "data" / "split").exists()


def test_a_second_run_while_one_is_in_progress_is_refused_and_touches_nothing(harness, tmp_path):
    from flows.pipeline import PipelineBusy, pipeline_lock

    d = make_project(tmp_path / "p")
    with pipeline_lock(d):  # a run in progress
        state = pipeline(str(d), return_state=True)
    assert state.is_failed()
    with pytest.raises(PipelineBusy, match="another sarflow pipeline run is in progress"):
        state.result()
    assert not (d / "data").exists()  # nothing ran
    tasks, _ = read_run(state.state_details.flow_run_id)
    assert tasks == []
