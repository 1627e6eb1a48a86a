"""report: one comparison table of every model x task x metric, each model's training protocol
next to its figures, paired comparisons with bootstrap 95% CIs (every model against
report.baseline, and report.pairs), and whether sampled and full ranking order the models alike
(markdown and JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config.params import ReportParams, load_params
from tasks.evaluation import paired
from tasks.evaluation.metrics import score
from tasks.io.atomic import write_json_atomic, write_text_atomic
from tasks.kuaisar.spec import SEARCH_TASK

# those a task has: binary or regression, and ranking with sampled negatives (feed clicks)
METRICS = (
    "auc",
    "gauc",
    "logloss",
    "mse",
    "r2",
    "hr@1",
    "hr@5",
    "hr@10",
    "ndcg@5",
    "ndcg@10",
    "mrr",
    "full_recall@10",  # against every item the user was not served (tasks.evaluation.ranking)
    "full_recall@50",
    "full_ndcg@10",
    "full_ndcg@50",
    "searched_hr@10",  # the clicks on a category searched just before (tasks.evaluation.ranking)
    "searched_ndcg@10",
)
LOWER_IS_BETTER = {"logloss", "mse"}


def comparison_rows(metrics: dict[str, dict]) -> list[dict[str, object]]:
    """Flat rows (model, task, metric values) in params order."""
    return [
        {"model": model, "task": task, **{k: round(float(v[k]), 4) for k in METRICS if k in v}}
        for model, per_task in metrics.items()
        for task, v in per_task.items()
    ]


def protocol(fit: dict, table: bool = False) -> str:
    """A model's training protocol in a few words (its checkpoint's fit options); a table's
    models train on its train rows, a KuaiSAR model on served impressions (and negatives)."""
    neg = fit.get("sampled_negatives", 0)
    data = f"served + {neg} sampled neg/click" if neg else "served impressions only"
    data = "the table's train rows" if table else data
    return f"{data}; select {fit.get('select', 'auc')}; wd {fit.get('weight_decay', 0):g}"


def markdown_table(rows: list[dict[str, object]], protocols: dict[str, str] | None = None) -> str:
    """Tasks as row groups, models side by side: the layout a reader compares in; the first
    row says how each model was trained (where they differ, the figures are not like for like)."""
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    tasks = list(dict.fromkeys(str(r["task"]) for r in rows))
    cell = {(r["model"], r["task"]): r for r in rows}
    head = "| task | metric | " + " | ".join(models) + " |"
    lines = [head, "|" + "---|" * (2 + len(models))]
    if protocols:
        lines.append("| trained on | | " + " | ".join(protocols.get(m, "–") for m in models) + " |")
    for t in tasks:
        for k in METRICS:
            have = [m for m in models if k in cell.get((m, t), {})]  # a model may lack the task
            if not have:
                continue
            best = (min if k in LOWER_IS_BETTER else max)(float(cell[m, t][k]) for m in have)
            vals = [
                "–"
                if m not in have
                else f"**{cell[m, t][k]:.4f}**"
                if float(cell[m, t][k]) == best
                else f"{cell[m, t][k]:.4f}"
                for m in models
            ]
            lines.append(f"| {t} | {k} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def multitask_gain(metrics: dict[str, dict], kinds: dict[str, str]) -> list[dict[str, object]]:
    """Each model's headline metric minus the single-task baseline's, per task (the seesaw:
    a multi-task model may gain on one task and lose on another). Empty without a baseline."""
    base = next((m for m, k in kinds.items() if k == "single_task"), None)
    if base is None:
        return []
    return [
        {
            "model": model,
            "task": task,
            "metric": "auc" if "auc" in v else "r2",
            "gain": round(score(v) - score(metrics[base][task]), 4),
        }
        for model, per_task in metrics.items()
        if model != base
        for task, v in per_task.items()
        if task in metrics[base]
    ]


def gain_table(gains: list[dict[str, object]]) -> str:
    models = list(dict.fromkeys(str(g["model"]) for g in gains))
    tasks = list(dict.fromkeys(str(g["task"]) for g in gains))
    cell = {(g["model"], g["task"]): g for g in gains}
    lines = ["| task | metric | " + " | ".join(models) + " |", "|" + "---|" * (2 + len(models))]
    for t in tasks:
        metric = next(cell[m, t]["metric"] for m in models if (m, t) in cell)
        vals = [f"{float(cell[m, t]['gain']):+.4f}" if (m, t) in cell else "–" for m in models]
        lines.append(f"| {t} | {metric} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def paired_rows(artifacts: Path, models: list[str], r: ReportParams) -> list[dict[str, Any]]:
    """Each model minus report.baseline, then report.pairs (those whose models were trained):
    per shared task/metric, the paired difference and its bootstrap 95% CI."""
    pairs = [(m, r.baseline) for m in models if r.baseline in models and m != r.baseline]
    for p in r.pairs:
        a, _, b = p.partition("-")
        if a in models and b in models and (a, b) not in pairs:
            pairs.append((a, b))
    return [
        {"a": a, "b": b, "metric": k, **ci}
        for a, b in pairs
        for k, ci in paired.compare(artifacts, a, b, r.bootstrap, r.seed).items()
    ]


def ci_table(rows: list[dict[str, Any]]) -> str:
    """Metrics as rows, comparisons ("a − b") side by side; * where the CI excludes 0."""
    cols = list(dict.fromkeys(f"{r['a']} − {r['b']}" for r in rows))
    keys = list(dict.fromkeys(r["metric"] for r in rows))
    cell = {(f"{r['a']} − {r['b']}", r["metric"]): r for r in rows}
    lines = ["| metric | " + " | ".join(cols) + " |", "|" + "---|" * (1 + len(cols))]
    for k in keys:
        vals = [paired.ci_text(cell[c, k]) if (c, k) in cell else "–" for c in cols]
        lines.append(f"| {k} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-a of two orderings of the same items."""
    n, s = len(x), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += int(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]))
    return s / (n * (n - 1) / 2) if n > 1 else float("nan")


def sampled_vs_full(metrics: dict[str, dict]) -> dict[str, Any] | None:
    """Do sampled NDCG@10 (1 + negatives) and full NDCG@10 (the catalogue) order the models
    alike? (Krichene & Rendle, KDD 2020: they need not.)"""
    have = [m for m, t in metrics.items() if "full_ndcg@10" in t.get("click", {})]
    if len(have) < 2:
        return None
    s = [metrics[m]["click"]["ndcg@10"] for m in have]
    f = [metrics[m]["click"]["full_ndcg@10"] for m in have]
    return {
        "sampled_order": [have[i] for i in np.argsort(s)[::-1]],
        "full_order": [have[i] for i in np.argsort(f)[::-1]],
        "kendall_tau": kendall_tau(s, f),
        "disagree": [
            (have[i], have[j])
            for i in range(len(have))
            for j in range(i + 1, len(have))
            if np.sign(s[i] - s[j]) * np.sign(f[i] - f[j]) < 0
        ],
    }


SPLIT_SCORES = {
    "model": "the model's co-attention score",
    "heuristic": "the authors' rule (category clicked in the feed in the 7 days before)",
    "untrained": "an untrained model of the same shape",
}


SAME_ORDER_AUC = 0.005  # trained and untrained splits this close in AUC: the same order


def constant_section(evals: dict[str, dict]) -> str:
    """A warning for every model that predicts a task the same for every test row (evaluate's
    `constant_tasks`), so its row of the table is not read as a trained model's ("" if none)."""
    dead = {m: ev["constant_tasks"] for m, ev in evals.items() if ev.get("constant_tasks")}
    if not dead:
        return ""
    lines = [f"- {m}: {', '.join(ts)}" for m, ts in dead.items()]
    return (
        "\n## Warning: constant predictions\n\n"
        "These models predict these tasks the same for every test row: their AUC is 0.5 and "
        "their ranking arbitrary by construction, not by what they learnt (typically a tower "
        "whose units all went inactive in training; another train.seed, wider towers or a lower "
        "train.lr usually fixes it).\n\n" + "\n".join(lines) + "\n"
    )


def interests_section(evals: dict[str, dict]) -> str:
    """The section on each disentangled model's similar/dissimilar split of search interests
    (evaluate's `interests`; tasks.evaluation.interests), '' where no model has one."""
    found = {m: ev["interests"] for m, ev in evals.items() if ev.get("interests")}
    if not found:
        return ""
    truth = any("auc" in i["model"] for i in found.values())
    lines = [
        "| model | steps (users) | score | AUC | mean | called similar (> 0.5) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for m, i in found.items():
        for k, what in SPLIT_SCORES.items():
            auc = f"{i[k]['auc']:.3f}" if "auc" in i[k] else "–"
            lines.append(
                f"| {m} | {i['steps']:,} ({i['users']:,}) | {what} | {auc} | "
                f"{i[k]['mean']:.3f} | {i[k]['similar_share']:.1%} |"
            )
    share = next(iter(found.values())).get("truth_similar_share")
    # a split whose order its form sets (split_on: same_category) ranks the steps as an
    # untrained one does: say so, so the AUC is not read as something training recovered
    alike = [
        m
        for m, i in found.items()
        if "auc" in i["model"]
        and "auc" in i["untrained"]
        and abs(i["model"]["auc"] - i["untrained"]["auc"]) < SAME_ORDER_AUC
    ]
    note = (
        f" For {', '.join(alike)} the trained and the untrained split rank the steps alike "
        f"(AUC within {SAME_ORDER_AUC}): the order comes from the split's form, not from "
        "training, which sets only how much of a step goes to each part."
        if alike
        else ""
    )
    return (
        "\n## Search interests: similar or dissimilar to the feed's\n\n"
        "Each test user's last feed sample: every search step of its window, scored by how much "
        "the model puts it into the *similar* part of the search history (its co-attention "
        "score; 1 − score goes to the dissimilar part)"
        + (
            ", against the generator's planted truth (similar: the session's query category is "
            f"one of the user's feed interests; {share:.1%} of the steps). AUC 0.5 is chance."
            if truth
            else ". Real data has no truth: the scores are described only."
        )
        + note
        + " Picture: interests.png.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    artifacts = params.paths.artifacts
    order = [*params.train.tasks, SEARCH_TASK]  # search_click: search and joint models
    metrics = {}
    for m in params.train.models:
        path: Path = artifacts / m / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"report: {path} is missing; run evaluate@{m} first")
        per_task = json.loads(path.read_text())
        metrics[m] = {t: per_task[t] for t in order if t in per_task}
    evals = {m: json.loads((artifacts / m / "evaluation.json").read_text()) for m in metrics}
    rows = comparison_rows(metrics)
    table_source = params.source.kind == "table"
    protocols = {m: protocol(ev.get("fit", {}), table_source) for m, ev in evals.items()}
    table = markdown_table(rows, protocols) + constant_section(evals)
    gains = multitask_gain(metrics, {m: ev["kind"] for m, ev in evals.items()})
    if gains:
        table += (
            "\n## Multi-task gain over the single-task baseline\n\n"
            "Test AUC (binary) or R^2 (regression) minus that of the single-task model; "
            "a negative cell is a task the shared model pays for (the seesaw).\n\n"
            + gain_table(gains)
        )
    r = params.report
    pairs = paired_rows(artifacts, list(metrics), r)
    if pairs:
        table += (
            f"\n## Paired differences (a − b), bootstrap 95% CI\n\n"
            f"On the same ranked clicks (click/: per-click metric values; full_*: the clicks "
            f"ranked in full) and the same test rows (TASK/auc), {r.bootstrap} Poisson-bootstrap "
            f"resamples (seed {r.seed}); * marks a CI that excludes 0. Every model against "
            f"{r.baseline} (report.baseline), then report.pairs. Where two models' protocols "
            "differ (the trained-on row above), a difference is the protocol's as much as the "
            "architecture's.\n\n" + ci_table(pairs)
        )
    agree = sampled_vs_full(metrics)
    if agree:
        table += (
            "\n## Sampled and full ranking\n\n"
            f"By sampled NDCG@10: {', '.join(agree['sampled_order'])}.  \n"
            f"By full NDCG@10: {', '.join(agree['full_order'])}.  \n"
            f"Kendall's tau {agree['kendall_tau']:.2f}; pairs ordered differently: "
            + (", ".join(f"{a}/{b}" for a, b in agree["disagree"]) or "none")
            + ".\n"
        )
    table += interests_section(evals)
    reports = params.paths.reports
    write_text_atomic(reports / "comparison.md", "# Model comparison (test set)\n\n" + table)
    write_json_atomic(
        reports / "comparison.json",
        {
            "rows": rows,
            "protocols": protocols,
            "multitask_gain": gains,
            "paired": pairs,
            "sampled_vs_full": agree,
        },
    )
    tasks = list(dict.fromkeys(t for per_task in metrics.values() for t in per_task))
    draw_pictures(artifacts, reports, metrics, evals, tasks)
    print(table)


PICTURES = ("roc.png", "learning_curves.png", "gates.png", "seesaw.png", "interests.png")


def draw_pictures(
    artifacts: Path,
    reports: Path,
    metrics: dict[str, dict],
    evals: dict[str, dict],
    tasks: list[str],
) -> None:
    """The report's PNG figures (see tasks.evaluation.plots), from what train and evaluate wrote."""
    from tasks.evaluation import plots

    curves = {m: json.loads((artifacts / m / "curve.json").read_text())["curve"] for m in metrics}
    plots.roc(evals, metrics, tasks, reports / "roc.png")
    plots.learning_curves(curves, reports / "learning_curves.png")
    plots.gates(evals, tasks, reports / "gates.png")
    plots.seesaw(metrics, tasks, reports / "seesaw.png")
    plots.interests(evals, reports / "interests.png")


if __name__ == "__main__":
    main()
