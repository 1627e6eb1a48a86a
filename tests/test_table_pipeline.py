"""A census-income-format folder runs end to end through `dvc repro` with only a params change,
single-task baselines and OMoE included; the report shows each model's multi-task gain."""

from __future__ import annotations

import json
import re

import polars as pl
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
    "esmm": {"kind": "esmm", "tower": [16, 8]},
    "aitm": {"kind": "aitm", "bottom": [16], "tower": [8]},
    "mmoe_uncertainty": {
        "kind": "mmoe",
        "n_experts": 3,
        "expert": [16],
        "tower": [8],
        "loss_weighting": "uncertainty",
    },
    "sb_gradnorm": {
        "kind": "shared_bottom",
        "bottom": [32],
        "tower": [8],
        "loss_weighting": "gradnorm",
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
    assert "(table: income_50k, never_married)" in out and "(feed:" not in out
    assert left_out(d) == ["generate"]  # nothing reads data/raw: the flow leaves it out
    assert json.loads((d / "reports" / "validation.json").read_text())["success"]
    spec = json.loads((d / "data" / "features" / "spec.json").read_text())
    assert spec["samples"] == "table" and spec["tasks"] == ["income_50k", "never_married"]
    assert "income" not in spec["sparse"] and "age" in spec["dense"]
    for m in MODELS:
        metrics = json.loads((d / "artifacts" / m / "metrics.json").read_text())
        # the planted signal: income follows education and age, marriage follows age. ESMM
        # chains p(never married) = p(income) x p(never married | income): census' two tasks
        # are no funnel, and the chain pulls its income tower off (AUC ~0.52 measured)
        if m != "esmm":
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
    assert "the table's train rows" in table and "served" not in table
    # OMoE's one gate: every task reads the same mixture
    omoe = json.loads((d / "artifacts" / "omoe" / "evaluation.json").read_text())["gates"][0]
    assert omoe[0] == omoe[1]
    # the balanced models' learnt task weights are in their curves, moved from the start
    for m, start in (("mmoe_uncertainty", 1.0), ("sb_gradnorm", 1.0)):
        curve = json.loads((d / "artifacts" / m / "curve.json").read_text())["curve"]
        weights = curve[-1]["loss_weights"]
        assert set(weights) == {"income_50k", "never_married"}
        assert any(abs(w - start) > 1e-3 for w in weights.values()), (m, weights)
    assert (
        "loss_weights"
        not in json.loads((d / "artifacts" / "mmoe" / "curve.json").read_text())["curve"][-1]
    )
    # a second repro runs nothing; going back to KuaiSAR is again only a params change
    assert "Running stage" not in dvc("repro", cwd=d).stdout


def test_a_numeric_only_table_with_its_own_parts_and_column_globs(tmp_path):
    """The MMoE paper's kind of table (only numeric inputs, regression labels) in one CSV with
    its own train/valid/test column, 100 inputs declared by one glob."""
    from flows.experiments.synthetic_data import make_data

    data = make_data(0.9, 6000, 0)
    folder = tmp_path / "synthetic"
    folder.mkdir()
    part = ["train"] * 4000 + ["valid"] * 1000 + ["test"] * 1000
    pl.DataFrame(
        {
            **{f"x{i:03d}": data.x[:, i] for i in range(data.x.shape[1])},
            "y1": data.y[:, 0],
            "y2": data.y[:, 1],
            "part": part,
        }
    ).write_csv(folder / "synthetic.csv")
    d = make_project(tmp_path / "sarflow")
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["source"] = {"kind": "table"}
    params["paths"]["source"] = str(folder)
    params["table"] |= {
        "files": {"data": "synthetic.csv"},
        "numeric": ["x*"],
        "labels": {"y1": "regression", "y2": "regression"},
        "split": {**params["table"]["split"], "rule": "column", "column": "part"},
    }
    models = {
        "shared_bottom": {"kind": "shared_bottom", "bottom": [64], "tower": [8]},
        "mmoe": {"kind": "mmoe", "n_experts": 4, "expert": [16], "tower": [8]},
    }
    params["models"] = models
    params["train"] |= {
        "models": list(models),
        "tasks": ["y1", "y2"],
        "epochs": 15,
        "patience": 3,
        "batch_size": 128,
    }
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = dvc("repro", cwd=d).stdout
    assert "(table: y1, y2)" in out
    spec = json.loads((d / "data" / "features" / "spec.json").read_text())
    assert spec["sparse"] == {} and len(spec["dense"]) == 100
    assert spec["rows"] == {"table_train": 4000, "table_valid": 1000, "table_test": 1000}
    for m in models:
        metrics = json.loads((d / "artifacts" / m / "metrics.json").read_text())
        # trained on all 4,000 rows, not 0: well above the linear part alone
        assert metrics["y1"]["n"] == 1000 and metrics["y1"]["r2"] > 0.5, (m, metrics)
