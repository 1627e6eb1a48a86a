"""report: one comparison table of every model x task x metric (markdown and JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.config.params import load_params
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


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Tasks as row groups, models side by side: the layout a reader compares in."""
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    tasks = list(dict.fromkeys(str(r["task"]) for r in rows))
    cell = {(r["model"], r["task"]): r for r in rows}
    head = "| task | metric | " + " | ".join(models) + " |"
    lines = [head, "|" + "---|" * (2 + len(models))]
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
    table = markdown_table(rows)
    gains = multitask_gain(metrics, {m: ev["kind"] for m, ev in evals.items()})
    if gains:
        table += (
            "\n## Multi-task gain over the single-task baseline\n\n"
            "Test AUC (binary) or R^2 (regression) minus that of the single-task model; "
            "a negative cell is a task the shared model pays for (the seesaw).\n\n"
            + gain_table(gains)
        )
    reports = params.paths.reports
    write_text_atomic(reports / "comparison.md", "# Model comparison (test set)\n\n" + table)
    write_json_atomic(reports / "comparison.json", {"rows": rows, "multitask_gain": gains})
    tasks = list(dict.fromkeys(t for per_task in metrics.values() for t in per_task))
    draw_pictures(artifacts, reports, metrics, evals, tasks)
    print(table)


PICTURES = ("roc.png", "learning_curves.png", "gates.png", "seesaw.png")


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


if __name__ == "__main__":
    main()
