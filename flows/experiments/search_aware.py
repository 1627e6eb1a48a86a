"""Planted-truth experiment for search-aware recommendation, as one Prefect flow.

    python -m flows.experiments.search_aware [--seeds 1 2 3] [--epochs 6] [--effect E] [--positives 10000]
                                 [--out reports/search_aware]
    python -m flows.experiments.search_aware --from-results [--out reports/search_aware]  # re-summarise
    make search-aware

The built-in generator plants how a user's searches move the feed: later feed clicks in the
searched category are more likely (`generate.search_effect`) and the feed serves that category
more (`generate.search_serving`). For every seed, with the effect on (params' values) and off
(both 0), the flow generates a dataset and runs the real pipeline on it (flows.pipeline as a
subflow: dvc repro of every stage in a throw-away copy of the project), then compares:
- SESRec against its no-search ablation on feed NDCG@10 (the ranking evaluation): with the
  effect on, the gain should show (its paired 95% CI above 0) on every seed and reach the *rule
  model*'s (sesrec_rule: the ablation plus the planted rule as a fitted input); with it off, every
  seed's CI should cover 0; the same on the `searched` slice (clicks on a category the user
  searched in the last evaluate.searched_hours), where the planted effect lives;
- SESRec's similar/dissimilar split of search interests against the generator's truth (the AUC
  of tasks.evaluation.interests, next to the authors' heuristic and an untrained model);
- the joint model (ple_joint) against the per-scenario models (ple on the feed, ple_search on
  search) on both scenarios, per seed with paired CIs.
Each difference is paired: the two models ranked the same candidates (the cell's candidates
stage) and scored the same test rows (tasks.evaluation.paired); the seed-to-seed spread of the
levels is no yardstick for it. Next to each gain it reports what the generator's own truth as a
ranker gains from knowing the searches on the very same candidates (flows.experiments.oracle):
the most a model can be expected to gain there. Each cell ranks `--positives` test clicks
(params: candidates.positives, 2,000 by default; more here, because the searched slice is a
fraction of them). Writes results.json (every run's metrics) and
table.md under `--out`; `--from-results` rewrites them from the results.json there (adding
the truth ranker's figures where a run lacks them) without training anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from prefect import flow, task

from flows.experiments.oracle import search_gain_bound
from flows.pipeline import pipeline
from flows.project import ROOT, copy_project, with_python_on_path
from tasks.config.params import Params
from tasks.evaluation import paired
from tasks.io.atomic import write_json_atomic, write_text_atomic
from tasks.report import SPLIT_SCORES

# the search-aware models in every cell: the ablation, the rule model, SESRec and SESRec without
# its similar/dissimilar split (does disentangling add anything?)
SEARCH_AWARE = ["sesrec", "sesrec_nosearch", "sesrec_rule"]
NO_SPLIT = "sesrec_nodis"
SCENARIO = ["ple", "ple_search", "ple_joint"]
# a cell's search interests: a search_rec_overlap, "independent" (generate.search_interests:
# drawn without looking at the feed interests) or None (params.yaml's)
Overlap = float | Literal["independent"] | None
# (model, task, metric) rows of the table
ROWS = [
    *[
        (m, "click", k)
        for m in [*SEARCH_AWARE, NO_SPLIT]
        for k in ("ndcg@10", "hr@10", "mrr", "auc", "searched_ndcg@10", "searched_hr@10")
    ],
    *[(m, "click", k) for m in ("ple", "ple_joint") for k in ("ndcg@10", "auc")],
    *[(m, t, "auc") for m in ("ple", "ple_joint") for t in ("like", "long_view")],
    *[(m, "search_click", "auc") for m in ("ple_search", "ple_joint")],
]


def cell_params(
    seed: int,
    effect: float,
    epochs: int,
    models: list[str],
    positives: int,
    overlap: Overlap = None,
) -> dict[str, Any]:
    """The project's params with this cell's data seed, search effect, epochs, models and
    number of ranked test clicks (none ranked in full); `overlap`, where given, the generator's
    search_rec_overlap, or "independent" for search interests drawn independently of the feed
    interests. Effect 0 turns the search->feed effect off whole: no click boost and no
    serving of searched categories."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["generate"] |= {"seed": seed, "search_effect": effect}
    if overlap == "independent":
        params["generate"]["search_interests"] = "independent"
    elif overlap is not None:
        params["generate"]["search_rec_overlap"] = overlap
    if effect == 0:
        params["generate"]["search_serving"] = 0.0
    params["train"] |= {"seed": seed, "epochs": epochs, "models": models}
    # no full ranking here: the checks are on sampled NDCG@10, and a catalogue per click and
    # model would double the cell's time
    params["candidates"] |= {"positives": positives, "full_positives": 0}
    params["paths"] = {**params["paths"], "raw": "data/raw", "source": "data/raw"}
    params["source"] = {"kind": "kuaisar"}
    return params


def truth_gain(
    seed: int,
    effect: float,
    positives: int,
    candidates: Path | None = None,
    overlap: Overlap = None,
) -> dict[str, float]:
    """What the generator's truth ranker gains from the searches on this cell's dataset (feed
    ndcg@10 and searched_ndcg@10; flows.experiments.oracle), on the cell's own candidates file
    when given. Redraws the logs with the cell's params (overlap included): seconds."""
    params = Params.model_validate(cell_params(seed, effect, 1, SEARCH_AWARE, positives, overlap))
    gain = search_gain_bound(params, candidates=candidates)["gain"]
    return {k: gain[k] for k in ("ndcg@10", "searched_ndcg@10") if k in gain}


# the paired comparisons of each cell (a minus b), on the cell's own candidates and test rows
PAIRS = [
    ("sesrec", "sesrec_nosearch"),
    ("sesrec_rule", "sesrec_nosearch"),
    ("sesrec", "sesrec_rule"),
    ("sesrec", NO_SPLIT),
    ("ple_joint", "ple"),
    ("ple_joint", "ple_search"),
]


def cell_pairs(artifacts: Path, models: list[str]) -> dict[str, dict]:
    """Per pair of PAIRS whose models the cell trained: {task/metric: paired CI}."""
    return {
        f"{a}-{b}": paired.compare(artifacts, a, b) for a, b in PAIRS if a in models and b in models
    }


def split_summary(artifacts: Path) -> dict | None:
    """SESRec's similar/dissimilar split against the truth (evaluation.json's `interests`, its
    per-step sample left out), or None where the model has none."""
    path = artifacts / "sesrec" / "evaluation.json"
    found = json.loads(path.read_text()).get("interests") if path.is_file() else None
    return None if found is None else {k: v for k, v in found.items() if k != "shown"}


@task(task_run_name="seed={seed} search_effect={effect} search_rec_overlap={overlap}")
def one_cell(
    seed: int,
    effect: float,
    epochs: int,
    positives: int,
    work: str,
    scenario: bool = True,
    overlap: Overlap = None,
) -> dict[str, Any]:
    """Generate, validate, split, featurise, train and evaluate one dataset through DVC."""
    models = [*SEARCH_AWARE, NO_SPLIT, *(SCENARIO if effect > 0 and scenario else [])]
    d = Path(work) / f"seed{seed}-effect{effect:g}-overlap{overlap}"
    shutil.rmtree(d, ignore_errors=True)
    params = cell_params(seed, effect, epochs, models, positives, overlap)
    copy_project(d, params)
    try:
        pipeline.with_options(name=f"sarflow-pipeline seed={seed} effect={effect:g}")(str(d))
        metrics = {
            m: json.loads((d / "artifacts" / m / "metrics.json").read_text()) for m in models
        }
        pairs = cell_pairs(d / "artifacts", models)
        split = split_summary(d / "artifacts")
        candidates = d / "data" / "candidates" / "test.parquet"
        truth = truth_gain(seed, effect, positives, candidates, overlap)
    finally:
        shutil.rmtree(d, ignore_errors=True)  # a dataset and models per cell: keep only metrics
    return {
        "seed": seed,
        "search_effect": effect,
        "search_rec_overlap": overlap_of(params["generate"]),
        "metrics": metrics,
        "paired": pairs,
        "truth_gain": truth,
        "interests": split,
    }


def _std(v: np.ndarray) -> float:
    """Sample standard deviation over seeds (0 for a single seed)."""
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _side(runs: list[dict[str, Any]], effect_on: bool) -> list[dict[str, Any]]:
    """The runs with the search effect on (or off), by seed."""
    return [
        r for r in sorted(runs, key=lambda r: r["seed"]) if (r["search_effect"] > 0) == effect_on
    ]


def _values(runs: list[dict[str, Any]], effect_on: bool, model: str, task_: str, k: str):
    return np.array(
        [
            r["metrics"][model][task_][k]
            for r in _side(runs, effect_on)
            if k in r["metrics"].get(model, {}).get(task_, {})
        ]
    )


def _has(runs: list[dict[str, Any]], k: str) -> bool:
    return all(k in r["metrics"]["sesrec"]["click"] for r in runs)


def _cis(runs: list[dict[str, Any]], effect_on: bool, pair: str, key: str) -> list[dict] | None:
    """Each seed's paired CI of `pair` on `key` (None where a run predates paired CIs)."""
    out = [r.get("paired", {}).get(pair, {}).get(key) for r in _side(runs, effect_on)]
    return None if not out or None in out else out


def _gain(
    runs: list[dict[str, Any]],
    effect_on: bool,
    k: str,
    a: str = "sesrec",
    b: str = "sesrec_nosearch",
) -> dict[str, Any] | None:
    """Model `a` minus model `b` on feed click metric `k` (by default SESRec minus its no-search
    ablation): per seed the paired difference on the same candidates with its bootstrap 95% CI,
    and how many seeds' CIs exclude 0 (with the effect on, the gain should show on every seed;
    off, on none). None where the runs lack either model."""
    full, ablation = (
        _values(runs, effect_on, a, "click", k),
        _values(runs, effect_on, b, "click", k),
    )
    if not len(full) or len(full) != len(ablation):
        return None
    gain = full - ablation  # paired: the same dataset and candidates
    truth = [r.get("truth_gain", {}).get(k) for r in _side(runs, effect_on)]
    cis = _cis(runs, effect_on, f"{a}-{b}", f"click/{k}")
    return {
        "pair": f"{a}-{b}",
        "metric": k,
        # the generator's truth ranker, same datasets: the gain a model can be expected to reach
        "truth_gain": None if None in truth else [round(v, 5) for v in truth],
        "gain": gain.round(5).tolist(),
        "mean_gain": float(gain.mean()),
        "ci": None if cis is None else [[round(c["lo"], 5), round(c["hi"], 5)] for c in cis],
        "seeds": len(gain),
        "seeds_above_0": None if cis is None else sum(c["lo"] > 0 for c in cis),
        "seeds_covering_0": None if cis is None else sum(c["lo"] <= 0 <= c["hi"] for c in cis),
        # over the seeds at once, the spread between them included (tasks.evaluation.paired)
        "pooled": None
        if cis is None or len(cis) < 2
        else paired.pooled_over_runs(gain.tolist(), [[c["lo"], c["hi"]] for c in cis]),
    }


# the gains each side reports besides SESRec's over the ablation: key -> (a, b)
RULE_GAINS = {
    "rule": ("sesrec_rule", "sesrec_nosearch"),
    "over_rule": ("sesrec", "sesrec_rule"),
    "over_no_split": ("sesrec", NO_SPLIT),
}


def earned(on: dict | None, rule: dict | None, off: dict | None) -> dict[str, Any] | None:
    """Issue 20's bar for SESRec's search branch, per seed, on all ranked clicks: with the effect
    on, its paired gain over the ablation has a 95% CI above 0 and is at least the rule model's
    gain; with the effect off, its CI covers 0."""
    if on is None or rule is None or off is None or None in (on["ci"], off["ci"]):
        return None
    per_seed = [
        bool(ci[0] > 0 and g >= r and off_ci[0] <= 0 <= off_ci[1])
        for g, r, ci, off_ci in zip(on["gain"], rule["gain"], on["ci"], off["ci"], strict=True)
    ]
    return {"per_seed": per_seed, "met": all(per_seed)}


def split_auc(runs: list[dict[str, Any]], effect_on: bool) -> dict[str, list] | None:
    """Per score (model, heuristic, untrained) each seed's AUC against the planted similar /
    dissimilar truth (tasks.evaluation.interests); None where a run lacks it."""
    found = [r.get("interests") for r in _side(runs, effect_on)]
    if not found or None in found or any("auc" not in f.get("model", {}) for f in found):
        return None
    return {k: [f[k]["auc"] for f in found] for k in SPLIT_SCORES}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and spreads over seeds, and the planted-truth checks as per-seed paired CIs."""
    out: dict[str, Any] = {"stats": {}, "checks": {}}
    for on in (True, False):
        side = "effect_on" if on else "effect_off"
        out["stats"][side] = {}
        for m, t, k in ROWS:
            v = _values(runs, on, m, t, k)
            if len(v):
                out["stats"][side][f"{m}/{t}/{k}"] = {
                    "mean": float(v.mean()),
                    "std": _std(v),
                    "values": v.round(5).tolist(),
                }
        out["checks"][side] = _gain(runs, on, "ndcg@10")
        if out["checks"][side] is None:  # no run on this side (--off-only)
            out["checks"][side] = {}
            continue
        if _has(runs, "searched_ndcg@10"):  # results from before the slice existed lack it
            out["checks"][side]["searched"] = _gain(runs, on, "searched_ndcg@10")
        for key, (a, b) in RULE_GAINS.items():
            if (found := _gain(runs, on, "ndcg@10", a, b)) is not None:
                out["checks"][side][key] = found
        if (split := split_auc(runs, on)) is not None:
            out["checks"][side]["interests_auc"] = split
    verdict = earned(
        out["checks"]["effect_on"] or None,
        out["checks"]["effect_on"].get("rule"),
        out["checks"]["effect_off"],
    )
    if verdict is not None:
        out["checks"]["earned"] = verdict
    joint: dict[str, Any] = {}
    for t, k, separate in (
        ("click", "auc", "ple"),
        ("click", "ndcg@10", "ple"),
        ("like", "auc", "ple"),
        ("long_view", "auc", "ple"),
        ("search_click", "auc", "ple_search"),
    ):
        j, s = _values(runs, True, "ple_joint", t, k), _values(runs, True, separate, t, k)
        if len(j) and len(s):
            d = j - s
            cis = _cis(runs, True, f"ple_joint-{separate}", f"{t}/{k}")
            joint[f"{t}/{k}"] = {
                "against": separate,
                "diff": d.round(5).tolist(),
                "mean_diff": float(d.mean()),
                "ci": None
                if cis is None
                else [[round(c["lo"], 5), round(c["hi"], 5)] for c in cis],
                "seeds_above_0": None if cis is None else sum(c["lo"] > 0 for c in cis),
                "seeds_below_0": None if cis is None else sum(c["hi"] < 0 for c in cis),
            }
    out["checks"]["joint"] = joint
    return out


def table(summary: dict[str, Any], seeds: list[int]) -> str:
    st, ch = summary["stats"], summary["checks"]
    lines = [
        "| model | task | metric | search effect on | search effect off |",
        "|---|---|---|---:|---:|",
    ]
    for m, t, k in ROWS:
        if not any(f"{m}/{t}/{k}" in st[side] for side in ("effect_on", "effect_off")):
            continue
        cells = []
        for side in ("effect_on", "effect_off"):
            s = st[side].get(f"{m}/{t}/{k}")
            cells.append(f"{s['mean']:.4f} ± {s['std']:.4f}" if s else "–")
        lines.append(f"| {m} | {t} | {k} | {cells[0]} | {cells[1]} |")
    text = [
        f"Mean ± std over seeds {seeds} (a fresh dataset per seed; test split). Each check is a "
        "paired difference on the same candidates (or test rows) per seed, with its bootstrap "
        "95% CI (tasks.evaluation.paired); the count of seeds whose CI excludes 0 is the verdict.",
        "",
        *lines,
        "",
    ]
    names = {
        "sesrec": "SESRec",
        "sesrec_nosearch": "no-search ablation",
        "sesrec_rule": "rule model",
        NO_SPLIT: "no-split ablation",
    }
    for side in ("effect_on", "effect_off"):
        for c in (ch[side], ch[side].get("searched"), *(ch[side].get(k) for k in RULE_GAINS)):
            if not c:  # None, or {}: no run on this side
                continue
            a, b = c.get("pair", "sesrec-sesrec_nosearch").split("-")
            text.append(
                f"- {side.replace('_', ' ')}: {names[a]} minus {names[b]}, feed {c['metric']} "
                f"per seed {c['gain']} (mean {c['mean_gain']:+.4f})"
                + (
                    f", paired 95% CIs {c['ci']}: above 0 on {c['seeds_above_0']} of "
                    f"{c['seeds']} seeds, covering 0 on {c['seeds_covering_0']}"
                    + (
                        f"; pooled over the seeds {paired.ci_text(c['pooled'])} (tau, the seeds' "
                        f"disagreement beyond their CIs, {c['pooled']['tau']:.4f})"
                        if c.get("pooled")
                        else ""
                    )
                    if c["ci"] is not None
                    else " (no paired CIs: results from before they were recorded)"
                )
                + (
                    f"; the generator's truth ranker gains {np.mean(c['truth_gain']):+.4f} "
                    f"(per seed {c['truth_gain']})"
                    if c.get("truth_gain") and b == "sesrec_nosearch"
                    else ""
                )
            )
        if (split := ch[side].get("interests_auc")) is not None:
            text.append(
                f"- {side.replace('_', ' ')}: AUC of the similar/dissimilar split against the "
                "planted truth per seed: " + "; ".join(f"{k} {v}" for k, v in split.items())
            )
    if (v := ch.get("earned")) is not None:
        text.append(
            "- the search branch earned (effect on: CI above 0 and gain >= the rule model's; "
            f"effect off: CI covering 0), per seed: {v['per_seed']}: "
            + ("met" if v["met"] else "not met")
        )
    for key, c in ch["joint"].items():
        text.append(
            f"- joint vs {c['against']} on {key}: per seed {c['diff']}, mean {c['mean_diff']:+.4f}"
            + (
                f", paired 95% CIs {c['ci']}: joint ahead on {c['seeds_above_0']}, behind on "
                f"{c['seeds_below_0']} of {len(c['diff'])} seeds"
                if c["ci"] is not None
                else " (no paired CIs)"
            )
        )
    return "\n".join(text) + "\n"


@flow(name="sarflow-search-aware", log_prints=True)
def search_aware(
    seeds: list[int] | None = None,
    epochs: int = 6,
    out: str = "reports/search_aware",
    work: str | None = None,
    effect: float | None = None,
    positives: int = 10_000,
    scenario: bool = True,
    off_overlap: Overlap = None,
    off_only: bool = False,
) -> dict[str, Any]:
    """`effect`: the 'on' setting of generate.search_effect (default: params.yaml's);
    `scenario`: also train the joint and per-scenario PLE models where the effect is on;
    `off_overlap`: the effect-off cells' search_rec_overlap (default params.yaml's; 0 makes a
    searched category a sign that it is *not* a feed interest), or "independent" (search
    interests drawn without looking at the feed interests: searches that say nothing of the
    feed, the control a learned model needs); `off_only`: the effect-off cells alone."""
    with_python_on_path()
    seeds = seeds or [1, 2, 3]
    if effect is None:
        effect = float(
            yaml.safe_load((ROOT / "params.yaml").read_text())["generate"]["search_effect"]
        )
    if effect <= 0:
        raise ValueError(f"the search effect's 'on' setting must be > 0, got {effect}")
    work_dir = Path(work or tempfile.mkdtemp(prefix="sarflow-search-aware-"))
    runs = [
        one_cell(s, e, epochs, positives, str(work_dir), scenario, None if e else off_overlap)
        for s in seeds
        for e in ((0.0,) if off_only else (effect, 0.0))
    ]
    return write_report(Path(out), seeds, epochs, effect, positives, runs)


def write_report(
    folder: Path, seeds: list[int], epochs: int, effect: float, positives: int, runs: list[dict]
) -> dict[str, Any]:
    """Summarise the runs into results.json and table.md under `folder`; print the table."""
    summary = summarise(runs)
    write_json_atomic(
        folder / "results.json",
        {
            "seeds": seeds,
            "epochs": epochs,
            "effect": effect,
            "positives": positives,
            "summary": summary,
            "runs": runs,
        },
    )
    text = (
        f"search_effect {effect:g} (on) and 0 (off), {epochs} epochs at most, {positives:,} "
        "ranked test clicks per dataset.\n" + table(summary, seeds)
    )
    write_text_atomic(folder / "table.md", "# Search-aware planted-truth experiment\n\n" + text)
    print(text)
    return summary


def from_results(folder: Path) -> dict[str, Any]:
    """Rewrite a finished experiment's report from its results.json, adding the truth ranker's
    gain to runs that lack it (results from before flows.experiments.oracle)."""
    path = folder / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no results to re-summarise (run the experiment first)")
    res = json.loads(path.read_text())
    for r in res["runs"]:
        if "truth_gain" not in r:
            r["truth_gain"] = truth_gain(
                r["seed"], r["search_effect"], res["positives"], None, r.get("search_rec_overlap")
            )
    return write_report(
        folder, res["seeds"], res["epochs"], res["effect"], res["positives"], res["runs"]
    )


def overlap_of(generate: dict[str, Any]) -> float | str:
    """A cell's search interests as its results record them: "independent" or the overlap."""
    if generate.get("search_interests") == "independent":
        return "independent"
    return generate["search_rec_overlap"]


def overlap_arg(text: str) -> float | str:
    """--off-overlap's value: a number in [0, 1] or the word independent."""
    if text == "independent":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a search_rec_overlap in [0, 1] or 'independent', got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", default="reports/search_aware")
    ap.add_argument("--work", default=None, help="where the per-cell projects go (a temp dir)")
    ap.add_argument("--effect", type=float, default=None, help="search_effect when on (params)")
    ap.add_argument("--positives", type=int, default=10_000, help="ranked test clicks per cell")
    ap.add_argument(
        "--no-scenario",
        action="store_true",
        help="only the search-aware models (no joint / per-scenario PLE comparison)",
    )
    ap.add_argument(
        "--off-overlap",
        type=overlap_arg,
        default=None,
        help="search_rec_overlap of the effect-off cells, or 'independent' (search interests "
        "drawn without looking at the feed interests: searches that say nothing of the feed)",
    )
    ap.add_argument("--off-only", action="store_true", help="only the effect-off cells")
    ap.add_argument(
        "--from-results",
        action="store_true",
        help="no training: rewrite the report from --out's results.json (adds truth gains)",
    )
    args = ap.parse_args(argv)
    if args.from_results:
        from_results(Path(args.out))
    else:
        search_aware(
            args.seeds,
            args.epochs,
            args.out,
            args.work,
            args.effect,
            args.positives,
            not args.no_scenario,
            args.off_overlap,
            args.off_only,
        )
    print(json.dumps({"out": args.out}))


if __name__ == "__main__":
    main()
