"""flows/experiments/search_aware.py: the planted-truth checks computed from per-seed metrics."""

from __future__ import annotations

import json

import pytest
import yaml

import flows.experiments.search_aware as sa
from flows.experiments.search_aware import SCENARIO, SEARCH_AWARE, cell_params, summarise, table
from flows.project import ROOT
from tasks.config.params import Params


def metrics(ndcg: float, auc: float = 0.7, search: float = 0.6, searched: float = 0.0) -> dict:
    feed = {t: {"auc": auc} for t in ("click", "like", "long_view")}
    feed["click"] |= {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "mrr": ndcg}
    feed["click"] |= {"searched_ndcg@10": ndcg + searched, "searched_hr@10": 2 * ndcg}
    return feed | {"search_click": {"auc": search}}


def ci(diff: float, half: float = 0.01) -> dict:
    lo, hi = diff - half, diff + half
    return {"diff": diff, "lo": lo, "hi": hi, "excludes_0": lo > 0 or hi < 0}


def runs(gain_on: float, gain_off: float, joint_diff: float, slice_on: float = 0.0) -> list[dict]:
    """Per seed and effect, metrics where SESRec beats the ablation by `gain_*` overall and, with
    the effect on, by `slice_on` more on the searched slice; each run's paired CIs are the
    difference +- 0.01."""
    out = []
    for seed, base in ((1, 0.30), (2, 0.31), (3, 0.32)):
        for effect, gain in ((1.5, gain_on), (0.0, gain_off)):
            m = {
                "sesrec": metrics(base + gain, searched=slice_on if effect else 0.0),
                "sesrec_nosearch": metrics(base),
                "sesrec_nodis": metrics(base + gain / 2),
            }
            if effect:
                m |= {
                    "ple": metrics(base, auc=0.70),
                    "ple_search": metrics(base, search=0.60),
                    "ple_joint": metrics(base, auc=0.70 + joint_diff, search=0.60 + joint_diff),
                }
            pairs = {
                "sesrec-sesrec_nosearch": {
                    "click/ndcg@10": ci(gain),
                    "click/searched_ndcg@10": ci(gain + (slice_on if effect else 0.0)),
                }
            }
            if effect:
                pairs |= {
                    "ple_joint-ple": {f"{t}/auc": ci(joint_diff) for t in ("click", "like")},
                    "ple_joint-ple_search": {"search_click/auc": ci(joint_diff)},
                }
            out.append({"seed": seed, "search_effect": effect, "metrics": m, "paired": pairs})
    return out


def test_a_gain_whose_paired_ci_excludes_0_on_every_seed_passes_and_one_covering_0_does_not():
    s = summarise(runs(gain_on=0.05, gain_off=0.001, joint_diff=0.01))
    on, off = s["checks"]["effect_on"], s["checks"]["effect_off"]
    assert on["seeds_above_0"] == 3 and on["seeds_covering_0"] == 0
    assert off["seeds_above_0"] == 0 and off["seeds_covering_0"] == 3
    assert on["ci"][0] == [0.04, 0.06] and on["gain"] == [0.05, 0.05, 0.05]
    small = summarise(runs(gain_on=0.005, gain_off=0.0, joint_diff=0.0))["checks"]["effect_on"]
    assert small["seeds_above_0"] == 0 and small["seeds_covering_0"] == 3
    text = table(s, [1, 2, 3])
    assert "above 0 on 3 of 3 seeds, covering 0 on 0" in text
    assert "spread" not in text  # the unpaired yardstick is retired


def test_the_searched_slice_is_checked_on_its_own_and_old_results_without_it_still_summarise():
    s = summarise(runs(gain_on=0.005, gain_off=0.0, joint_diff=0.0, slice_on=0.05))["checks"]
    assert s["effect_on"]["seeds_above_0"] == 0  # overall: covers 0
    sliced = s["effect_on"]["searched"]
    assert sliced["metric"] == "searched_ndcg@10" and sliced["seeds_above_0"] == 3
    assert s["effect_off"]["searched"]["seeds_covering_0"] == 3
    old = runs(0.05, 0.0, 0.0)
    for r in old:
        del r["paired"]  # results from before paired CIs were recorded
        for m in r["metrics"].values():
            for k in ("searched_ndcg@10", "searched_hr@10"):
                m["click"].pop(k)
    summary = summarise(old)
    assert "searched" not in summary["checks"]["effect_on"]
    assert summary["checks"]["effect_on"]["ci"] is None
    text = table(summary, [1, 2, 3])
    assert "searched_ndcg@10" not in text and "no paired CIs" in text


def test_the_joint_model_is_compared_on_each_scenario_against_its_own_baseline():
    s = summarise(runs(gain_on=0.05, gain_off=0.0, joint_diff=-0.05))["checks"]["joint"]
    assert s["search_click/auc"]["against"] == "ple_search" and s["click/auc"]["against"] == "ple"
    assert s["click/auc"]["seeds_below_0"] == 3 and s["click/auc"]["seeds_above_0"] == 0
    won = summarise(runs(gain_on=0.05, gain_off=0.0, joint_diff=0.02))["checks"]["joint"]
    assert won["search_click/auc"]["seeds_above_0"] == 3
    assert won["click/ndcg@10"]["ci"] is None  # no run recorded that pair's CI
    text = table(summarise(runs(0.05, 0.0, 0.02)), [1, 2, 3])
    assert "| sesrec | click | ndcg@10 |" in text and "joint ahead on 3, behind on 0" in text


def test_cells_run_the_project_params_with_only_seed_effect_epochs_and_models_changed():
    project = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = cell_params(4, 0.0, 3, SEARCH_AWARE + SCENARIO, 5000)
    # effect off is the whole search->feed effect off: no click boost, no serving
    off = {"seed": 4, "search_effect": 0.0, "search_serving": 0.0}
    assert p["generate"] == project["generate"] | off
    assert cell_params(4, 2.0, 3, SEARCH_AWARE, 5000)["generate"] == project["generate"] | {
        "seed": 4,
        "search_effect": 2.0,
    }
    assert p["train"]["seed"] == 4 and p["train"]["epochs"] == 3
    assert p["models"] == project["models"] and p["source"] == {"kind": "kuaisar"}
    assert p["evaluate"] == project["evaluate"]
    assert p["candidates"] == project["candidates"] | {"positives": 5000, "full_positives": 0}


def test_the_truth_rankers_gain_is_reported_next_to_each_check_when_every_run_has_it():
    rs = runs(gain_on=0.005, gain_off=0.0, joint_diff=0.0)
    for r in rs:
        r["truth_gain"] = {"ndcg@10": 0.001 * r["seed"] if r["search_effect"] else 0.0}
    s = summarise(rs)["checks"]
    assert s["effect_on"]["truth_gain"] == [0.001, 0.002, 0.003]
    assert s["effect_off"]["truth_gain"] == [0.0, 0.0, 0.0]
    assert s["effect_on"]["searched"]["truth_gain"] is None  # no run has the slice's
    text = table(summarise(rs), [1, 2, 3])
    assert "truth ranker gains +0.0020 (per seed [0.001, 0.002, 0.003])" in text
    del rs[0]["truth_gain"]
    assert summarise(rs)["checks"]["effect_on"]["truth_gain"] is None
    assert "truth ranker" not in table(summarise(runs(0.005, 0.0, 0.0)), [1, 2, 3])


def test_from_results_rewrites_the_report_adding_only_missing_truth_gains(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="results.json"):
        sa.from_results(tmp_path)
    rs = runs(gain_on=0.05, gain_off=0.0, joint_diff=0.01)
    rs[0]["truth_gain"] = {"ndcg@10": 0.5}  # already there: kept, not recomputed
    res = {"seeds": [1, 2, 3], "epochs": 6, "effect": 1.5, "positives": 123, "runs": rs}
    (tmp_path / "results.json").write_text(json.dumps(res))
    calls = []

    def fake(seed, effect, positives, candidates=None, overlap=None):
        calls.append((seed, effect, positives))
        return {"ndcg@10": 0.01}

    monkeypatch.setattr(sa, "truth_gain", fake)
    sa.from_results(tmp_path)
    assert sorted(calls) == sorted((r["seed"], r["search_effect"], 123) for r in rs[1:])
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["runs"][0]["truth_gain"] == {"ndcg@10": 0.5}
    assert out["summary"]["checks"]["effect_on"]["truth_gain"] == [0.5, 0.01, 0.01]
    assert "above 0 on 3 of 3 seeds" in (tmp_path / "table.md").read_text()


def test_truth_gain_is_zero_on_a_cell_without_the_search_effect():
    # the experiment's own dataset (default size, seed 2): a real redraw, seconds
    assert sa.truth_gain(2, 0.0, 500) == {"ndcg@10": 0.0, "searched_ndcg@10": 0.0}


def test_truth_gain_redraws_the_cells_own_logs_overlap_included(monkeypatch):
    """A cell with its own search_rec_overlap is redrawn with it (with the default one the
    cell's candidates would not be in the redrawn log)."""
    seen = []

    def fake(params, candidates=None):
        seen.append(params.generate.search_rec_overlap)
        return {"gain": {"ndcg@10": 0.0}}

    monkeypatch.setattr(sa, "search_gain_bound", fake)
    sa.truth_gain(1, 0.0, 500, None, 0.0)
    sa.truth_gain(1, 0.0, 500)
    project = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert seen == [0.0, project["generate"]["search_rec_overlap"]] and seen[1] != 0.0


def with_rule(rs: list[dict], rule_on: float, rule_off: float = 0.0) -> list[dict]:
    """`runs` plus a rule model `rule_*` above the ablation, with its paired CIs (+- 0.01)."""
    for r in rs:
        gain = rule_on if r["search_effect"] else rule_off
        base = r["metrics"]["sesrec_nosearch"]["click"]["ndcg@10"]
        sesrec = r["metrics"]["sesrec"]["click"]["ndcg@10"]
        r["metrics"]["sesrec_rule"] = metrics(base + gain)
        r["paired"] |= {
            "sesrec_rule-sesrec_nosearch": {"click/ndcg@10": ci(gain)},
            "sesrec-sesrec_rule": {"click/ndcg@10": ci(sesrec - base - gain)},
        }
    return rs


@pytest.mark.parametrize(
    ("gain_on", "rule_on", "gain_off", "met"),
    [
        (0.03, 0.02, 0.0, True),  # above 0 and above the rule model's gain, covering 0 off
        (0.015, 0.02, 0.0, False),  # above 0 but short of the rule model
        (0.03, 0.02, 0.02, False),  # a gain with the effect off: something else is at work
    ],
)
def test_the_search_branch_is_earned_only_above_0_at_the_rule_models_gain_and_null_when_off(
    gain_on, rule_on, gain_off, met
):
    s = summarise(with_rule(runs(gain_on, gain_off, joint_diff=0.0), rule_on))["checks"]
    assert s["effect_on"]["rule"]["gain"] == pytest.approx([rule_on] * 3)
    assert s["effect_on"]["over_rule"]["gain"] == pytest.approx([gain_on - rule_on] * 3)
    assert s["earned"]["met"] is met
    text = table(summarise(with_rule(runs(gain_on, gain_off, 0.0), rule_on)), [1, 2, 3])
    assert "rule model minus no-search ablation" in text and "SESRec minus rule model" in text
    assert ("per seed: [True, True, True]: met" in text) is met
    # results from before the rule model: no verdict, no rule lines
    old = summarise(runs(gain_on, gain_off, joint_diff=0.0))["checks"]
    assert "earned" not in old and "rule" not in old["effect_on"]


def test_the_split_of_search_interests_is_summarised_per_seed_where_every_run_has_it():
    rs = runs(0.01, 0.0, 0.0)
    for r in rs:
        auc = 0.9 if r["search_effect"] else 0.8
        r["interests"] = {k: {"auc": auc, "mean": 0.5} for k in ("model", "heuristic", "untrained")}
    s = summarise(rs)["checks"]
    assert s["effect_on"]["interests_auc"]["model"] == [0.9, 0.9, 0.9]
    assert s["effect_off"]["interests_auc"]["heuristic"] == [0.8, 0.8, 0.8]
    assert "split against the planted truth per seed: model [0.9, 0.9, 0.9]" in table(
        summarise(rs), [1, 2, 3]
    )
    rs[0]["interests"] = None  # a run without the split (real data, or before it existed)
    assert "interests_auc" not in summarise(rs)["checks"]["effect_on"]


def test_the_overlap_sweep_draws_each_scores_share_called_similar_and_auc(tmp_path):
    from flows.experiments.interests import SCORES, draw

    def split(o: float) -> dict:
        return {"truth_similar_share": o} | {
            k: {"similar_share": o * 0.9, "auc": 0.7, "mean": 0.5} for k in SCORES
        }

    draw([{"overlap": o, "split": split(o)} for o in (0.0, 0.5, 1.0)], tmp_path / "o.png")
    data = (tmp_path / "o.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000


def test_the_effect_off_control_alone_with_its_own_overlap_summarises_without_the_on_side():
    """--off-only --off-overlap 0: cells with the effect off and searches that carry no feed
    interest; the summary and table have the off side's checks, no verdict, no on side."""
    project = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = cell_params(4, 0.0, 3, SEARCH_AWARE, 5000, overlap=0.0)
    assert p["generate"] == project["generate"] | {
        "seed": 4,
        "search_effect": 0.0,
        "search_serving": 0.0,
        "search_rec_overlap": 0.0,
    }
    off = [
        r for r in with_rule(runs(0.02, 0.0, 0.0), 0.02, rule_off=0.001) if not r["search_effect"]
    ]
    s = summarise(off)
    assert s["checks"]["effect_on"] == {} and "earned" not in s["checks"]
    assert s["checks"]["effect_off"]["seeds_covering_0"] == 3
    assert s["checks"]["effect_off"]["rule"]["gain"] == pytest.approx([0.001] * 3)
    text = table(s, [1, 2, 3])
    assert "effect off: rule model minus no-search ablation" in text
    assert "effect on:" not in text


def test_the_independent_control_draws_search_interests_without_the_feeds_and_says_so():
    """--off-overlap independent: the cell's generator draws search interests independently of
    the feed interests, its results say "independent", and a bad value is refused by name."""
    project = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = cell_params(4, 0.0, 3, SEARCH_AWARE, 5000, overlap="independent")
    assert p["generate"] == project["generate"] | {
        "seed": 4,
        "search_effect": 0.0,
        "search_serving": 0.0,
        "search_interests": "independent",
    }
    assert sa.overlap_of(p["generate"]) == "independent"
    assert (
        sa.overlap_of(cell_params(4, 0.0, 3, SEARCH_AWARE, 5000, overlap=0.25)["generate"]) == 0.25
    )
    assert Params.model_validate(p).generate.search_interests == "independent"
    assert sa.overlap_arg("independent") == "independent" and sa.overlap_arg("0.5") == 0.5
    with pytest.raises(SystemExit):
        sa.main(["--off-overlap", "separate"])


def test_each_check_is_pooled_over_the_seeds_and_the_table_says_so():
    s = summarise(runs(gain_on=0.05, gain_off=0.001, joint_diff=0.0))["checks"]
    on, off = s["effect_on"]["pooled"], s["effect_off"]["pooled"]
    assert on["diff"] == pytest.approx(0.05) and on["excludes_0"] and on["runs"] == 3
    assert off["lo"] < 0 < off["hi"]
    text = table(summarise(runs(0.05, 0.001, 0.0)), [1, 2, 3])
    assert "pooled over the seeds +0.0500" in text
    one = [r for r in runs(0.05, 0.0, 0.0) if r["seed"] == 1]
    assert summarise(one)["checks"]["effect_on"]["pooled"] is None  # one seed: nothing to pool
