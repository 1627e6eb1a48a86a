"""report: one comparison table of every model x task x metric (markdown and JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.io import write_json_atomic, write_text_atomic
from tasks.params import load_params

METRICS = ("auc", "gauc", "logloss")


def comparison_rows(metrics: dict[str, dict]) -> list[dict[str, object]]:
    """Flat rows (model, task, auc, gauc, logloss) in params order."""
    return [
        {"model": model, "task": task, **{k: round(float(v[k]), 4) for k in METRICS}}
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
            best = (min if k == "logloss" else max)(float(cell[m, t][k]) for m in models)
            vals = [
                f"**{cell[m, t][k]:.4f}**"
                if float(cell[m, t][k]) == best
                else f"{cell[m, t][k]:.4f}"
                for m in models
            ]
            lines.append(f"| {t} | {k} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    metrics = {}
    for m in params.train.models:
        path: Path = params.paths.artifacts / m / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"report: {path} is missing; run evaluate@{m} first")
        per_task = json.loads(path.read_text())
        metrics[m] = {t: per_task[t] for t in params.train.tasks if t in per_task}
    rows = comparison_rows(metrics)
    table = markdown_table(rows)
    reports = params.paths.reports
    write_text_atomic(reports / "comparison.md", "# Model comparison (test set)\n\n" + table)
    write_json_atomic(reports / "comparison.json", {"rows": rows})
    draw_pictures(params.paths.artifacts, reports, metrics, list(params.train.tasks))
    print(table)


PICTURES = ("roc.png", "learning_curves.png", "gates.png", "seesaw.png")


def draw_pictures(
    artifacts: Path, reports: Path, metrics: dict[str, dict], tasks: list[str]
) -> None:
    """The report's PNG figures (see tasks.plots), from what train and evaluate wrote."""
    from tasks import plots

    models = list(metrics)
    evals = {m: json.loads((artifacts / m / "evaluation.json").read_text()) for m in models}
    curves = {m: json.loads((artifacts / m / "curve.json").read_text())["curve"] for m in models}
    plots.roc(evals, metrics, tasks, reports / "roc.png")
    plots.learning_curves(curves, reports / "learning_curves.png")
    plots.gates(evals, tasks, reports / "gates.png")
    plots.seesaw(metrics, tasks, reports / "seesaw.png")


if __name__ == "__main__":
    main()
