"""A census-income-format folder runs end to end through `dvc repro` with only a params change,
single-task baselines and OMoE included; the report shows each model's multi-task gain."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from flows.pipeline import left_out
from tests.conftest import dvc, make_project
from tests.table_files import write_census

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves this file out

MODELS = {
    "single_task": {"kind": "single_task", "bottom": [32], "tower": [8]},
    "shared_bottom": {"kind": "shared_bottom", "bottom": [32], "tower": [8]},
    "omoe": {"kind": "omoe", "n_experts": 3, "expert": [16], "tower": [8]},
    "mmoe": {"kind": "mmoe", "n_experts": 3, "expert": [16], "tower": [8]},
    "ple": {
        "kind": "ple",
        "n_levels": 1,
        "n_shared": 1,
        "n_specific": 1,
        "expert": [16],
        "tower": [8],
    },
}


def test_census_runs_end_to_end_with_only_a_params_change(tmp_path):
    census = write_census(tmp_path / "census", n_train=4000, n_test=2000)
    d = make_project(tmp_path / "sarflow")
    params = yaml.safe_load((d / "params.yaml").read_text())
    # the params change a user makes: nothing else
    params["source"] = {"kind": "table"}
    params["table"] = {**params["table"], "preset": "census_income", "group": 1}
    params["paths"]["source"] = str(census)
    params["models"] = MODELS
    params["train"] |= {
        "models": list(MODELS),
        "tasks": ["income_50k", "never_married"],
        "epochs": 4,
        "patience": 2,
    }
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = dvc("repro", cwd=d).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {"validate", "split", "features", "report"} | {f"train@{m}" for m in MODELS} <= ran
    assert left_out(d) == ["generate"]  # nothing reads data/raw: the flow leaves it out
    assert json.loads((d / "reports" / "validation.json").read_text())["success"]
    spec = json.loads((d / "data" / "features" / "spec.json").read_text())
    assert spec["samples"] == "table" and spec["tasks"] == ["income_50k", "never_married"]
    assert "income" not in spec["sparse"] and "age" in spec["dense"]
    for m in MODELS:
        metrics = json.loads((d / "artifacts" / m / "metrics.json").read_text())
        # the planted signal: income follows education and age, marriage follows age
        assert metrics["income_50k"]["auc"] > 0.65, (m, metrics)
        assert metrics["never_married"]["auc"] > 0.75, (m, metrics)
    comparison = json.loads((d / "reports" / "comparison.json").read_text())
    gains = comparison["multitask_gain"]
    assert {(g["model"], g["task"]) for g in gains} == {
        (m, t) for m in MODELS if m != "single_task" for t in ("income_50k", "never_married")
    }
    base = json.loads((d / "artifacts" / "single_task" / "metrics.json").read_text())
    mmoe = json.loads((d / "artifacts" / "mmoe" / "metrics.json").read_text())
    g = next(x for x in gains if x["model"] == "mmoe" and x["task"] == "income_50k")
    assert abs(g["gain"] - (mmoe["income_50k"]["auc"] - base["income_50k"]["auc"])) < 1e-3
    table = (d / "reports" / "comparison.md").read_text()
    assert "Multi-task gain over the single-task baseline" in table
    # OMoE's one gate: every task reads the same mixture
    omoe = json.loads((d / "artifacts" / "omoe" / "evaluation.json").read_text())["gates"][0]
    assert omoe[0] == omoe[1]
    # a second repro runs nothing; going back to KuaiSAR is again only a params change
    assert "Running stage" not in dvc("repro", cwd=d).stdout
