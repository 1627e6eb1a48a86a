"""The MMoE paper's synthetic experiment as one Prefect flow: test loss against task correlation.

    python -m flows.experiments.synthetic [--p 0.5 0.7 0.9 1.0] [--seeds 0 1 2] [--out reports/synthetic]
    make synthetic

Trains Shared-Bottom, OMoE, MMoE and PLE (flows/experiments/synthetic_data.py) on the two regression tasks for
every task correlation p and seed, one Prefect task per (p, seed), and writes under `--out`:
results.json (every run), table.md (mean and spread of test MSE per model and p, and whether
the paper's ordering MMoE <= OMoE <= Shared-Bottom holds) and loss_vs_p.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task

from flows.experiments.synthetic_data import MODELS
from flows.experiments.synthetic_data import run as run_model
from tasks.io.atomic import write_json_atomic, write_text_atomic

ORDER = ["shared_bottom", "omoe", "mmoe", "ple"]


@task(task_run_name="p={p} seed={seed}")
def one_dataset(p: float, seed: int, epochs: int) -> list[dict[str, Any]]:
    return [run_model(m, p, seed, epochs=epochs) for m in MODELS]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ps = sorted({r["p"] for r in runs})
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for m in ORDER:
        stats[m] = {}
        for p in ps:
            v = np.array([r["test_mse"] for r in runs if r["model"] == m and r["p"] == p])
            stats[m][str(p)] = {"mean": float(v.mean()), "std": float(v.std()), "n": len(v)}
    mean = {m: {p: stats[m][str(p)]["mean"] for p in ps} for m in ORDER}
    ordering = {
        str(p): bool(mean["mmoe"][p] <= mean["omoe"][p] <= mean["shared_bottom"][p]) for p in ps
    }
    gap = {str(p): mean["shared_bottom"][p] - mean["mmoe"][p] for p in ps}
    return {"ps": ps, "stats": stats, "mmoe_le_omoe_le_sb": ordering, "sb_minus_mmoe": gap}


def table(summary: dict[str, Any]) -> str:
    ps = summary["ps"]
    lines = [
        "| model | " + " | ".join(f"p = {p}" for p in ps) + " |",
        "|---|" + "---:|" * len(ps),
    ]
    for m in ORDER:
        cells = [
            f"{summary['stats'][m][str(p)]['mean']:.4f} ± {summary['stats'][m][str(p)]['std']:.4f}"
            for p in ps
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    holds = ", ".join(
        f"p={p}: {'yes' if summary['mmoe_le_omoe_le_sb'][str(p)] else 'no'}" for p in ps
    )
    gaps = ", ".join(f"p={p}: {summary['sb_minus_mmoe'][str(p)]:+.4f}" for p in ps)
    return (
        "Test MSE (mean over the two tasks), mean ± std over seeds.\n\n"
        + "\n".join(lines)
        + f"\n\nMMoE <= OMoE <= Shared-Bottom (means): {holds}.\n"
        + f"Shared-Bottom minus MMoE: {gaps}.\n"
    )


def plot(summary: dict[str, Any], runs: list[dict[str, Any]], path: Path) -> None:
    """Test MSE against p: each run a faint dot, the mean over seeds a line (log scale, so one
    diverged seed does not flatten the rest)."""
    from tasks.evaluation.plots import plt, save_png

    ps = summary["ps"]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for i, m in enumerate(ORDER):
        color = f"C{i}"
        mine = [r for r in runs if r["model"] == m]
        jitter = (i - 1.5) * 0.006
        ax.scatter(
            [r["p"] + jitter for r in mine],
            [r["test_mse"] for r in mine],
            color=color,
            alpha=0.35,
            s=14,
        )
        mean = [summary["stats"][m][str(p)]["mean"] for p in ps]
        ax.plot([p + jitter for p in ps], mean, marker="o", color=color, label=m)
    ax.set_yscale("log")
    ax.set(
        xlabel="task correlation p (cosine of the task weights)",
        ylabel="test MSE, mean of both tasks (log)",
        title="MMoE paper synthetic benchmark (dots: seeds)",
    )
    ax.legend(fontsize=8)
    save_png(fig, path)


@flow(name="sarflow-mmoe-synthetic", log_prints=True)
def synthetic(
    ps: list[float] | None = None,
    seeds: list[int] | None = None,
    out: str = "reports/synthetic",
    epochs: int = 60,
) -> dict[str, Any]:
    ps = ps or [0.5, 0.7, 0.9, 1.0]
    seeds = seeds or [0, 1, 2]
    runs: list[dict[str, Any]] = []
    for p in ps:
        for seed in seeds:
            runs += one_dataset(p, seed, epochs)
    summary = summarise(runs)
    folder = Path(out)
    write_json_atomic(folder / "results.json", {"summary": summary, "runs": runs})
    text = table(summary)
    write_text_atomic(folder / "table.md", "# MMoE synthetic benchmark\n\n" + text)
    plot(summary, runs, folder / "loss_vs_p.png")
    print(text)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=float, nargs="+", default=[0.5, 0.7, 0.9, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", default="reports/synthetic")
    args = ap.parse_args(argv)
    synthetic(args.p, args.seeds, args.out, args.epochs)
    print(json.dumps({"out": args.out}))


if __name__ == "__main__":
    main()
