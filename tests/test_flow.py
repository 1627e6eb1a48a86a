"""The Prefect flow: DVC's stages as task runs, artifacts read back, a bad input stops it at validate."""

from __future__ import annotations

import asyncio

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
from tests.conftest import dvc, make_project

GROUPS = ["generate", "validate", "split", "features", "train@*", "evaluate@*", "report"]


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
    assert dict(groups)["train@*"] == ["train@shared_bottom", "train@mmoe", "train@ple"]


def test_flow_runs_every_stage_and_publishes_both_artifacts(harness, tmp_path):
    d = make_project(tmp_path / "p")
    state = pipeline(str(d), return_state=True)
    assert state.is_completed(), state.message
    tasks, arts = read_run(state.state_details.flow_run_id)
    assert sorted(t.name for t in tasks) == sorted(f"dvc {g}" for g in GROUPS)
    assert all(t.state.is_completed() for t in tasks)
    by_key = {a.key: a for a in arts}
    assert by_key["validation-summary"].type == "markdown"
    assert "Data validation passed" in by_key["validation-summary"].data
    table = by_key["metrics-comparison"]
    assert table.type == "table"
    assert "mmoe" in table.data and "gauc" in table.data
    assert (d / "artifacts" / "ple" / "metrics.json").is_file()


def test_corrupted_input_stops_the_flow_at_validate_naming_the_check(harness, tmp_path):
    d = make_project(tmp_path / "p")
    dvc("repro", "generate", cwd=d)
    # freeze generate (as for a real source) so the corrupted file is read, not regenerated;
    # `dvc freeze` refuses parametrized stages, so set the flag in dvc.yaml itself
    pipeline_yaml = yaml.safe_load((d / "dvc.yaml").read_text())
    pipeline_yaml["stages"]["generate"]["frozen"] = True
    (d / "dvc.yaml").write_text(yaml.safe_dump(pipeline_yaml, sort_keys=False))
    rec = d / "data" / "raw" / "rec_inter.csv"
    df = pl.read_csv(rec, infer_schema=False)
    df.with_columns(
        click=pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("3")).otherwise(pl.col("click"))
    ).write_csv(rec)

    state = pipeline(str(d), return_state=True)
    assert state.is_failed()
    tasks, arts = read_run(state.state_details.flow_run_id)
    states = {t.name: t.state for t in tasks}
    assert set(states) == {"dvc generate", "dvc validate"}  # nothing downstream ran
    assert states["dvc validate"].is_failed()
    assert (
        next(t for t in tasks if t.name == "dvc validate").run_count == 1
    )  # a data failure is not retried
    assert "click" in states["dvc validate"].message
    summary = {a.key: a for a in arts}["validation-summary"].data
    assert "FAILED" in summary and "click" in summary and "3" in summary
    assert not (d / "data" / "split").exists()
