"""The MMoE paper's synthetic experiment as one Prefect flow: test loss against task correlation.

    python -m flows.experiments.synthetic [--p 0.5 0.7 0.9 1.0] [--seeds 0 ... 9] [--epochs 100]
        [--frequency 1] [--out reports/synthetic]
    python -m flows.experiments.synthetic --from-results [--out reports/synthetic]
    make synthetic

Trains Shared-Bottom, OMoE, MMoE and PLE (flows/experiments/synthetic_data.py) on the two regression tasks for
every task correlation p and seed, one Prefect task per (p, seed), and writes under `--out`:
results.json (every run), table.md (mean and spread of test MSE per model and p; paired over
seeds, the differences of the paper's ordering MMoE <= OMoE <= Shared-Bottom with bootstrap CIs
and sign counts) and loss_vs_p.png. `--frequency 4` is the harder variant (sharper sinusoids).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task

from flows.experiments.synthetic_data import MODELS, held_out_label_variance, r2
from flows.experiments.synthetic_data import run as run_model
from tasks.evaluation.paired import paired_mean
from tasks.io.atomic import write_json_atomic, write_text_atomic

ORDER = ["shared_bottom", "omoe", "mmoe", "ple"]
P_VALUES = [0.5, 0.7, 0.9, 1.0]
SEEDS = list(range(10))  # the paper repeats each setting many times: 10 seeds at the least
EPOCHS, PATIENCE = 100, 8


@task(task_run_name="p={p} seed={seed}")
def one_dataset(
    p: float, seed: int, epochs: int, patience: int, frequency: float
) -> list[dict[str, Any]]:
    return [
        run_model(m, p, seed, epochs=epochs, patience=patience, frequency=frequency) for m in MODELS
    ]


# a minus b in test MSE (positive: b is better), paired on the same (p, seed) dataset
PAIRS = [("shared_bottom", "omoe"), ("omoe", "mmoe"), ("shared_bottom", "mmoe"), ("mmoe", "ple")]


def sign_test(wins: int, n: int) -> float:
    """Two-sided binomial sign test: the chance of a split at least this uneven if each seed
    were a coin flip."""
    k = max(wins, n - wins)
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_over_seeds(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """mean over seeds of a - b with its bootstrap 95% CI over seeds, and how many seeds
    favour b (a > b), with the sign test's p-value."""
    seeds = sorted(set(a) & set(b))
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    ci = paired_mean(x, y, resamples=4000, seed=0)
    wins = int((x > y).sum())
    return ci | {"b_better_seeds": wins, "sign_p": sign_test(wins, len(seeds))}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ps = sorted({r["p"] for r in runs})
    mse = {
        (m, p): {r["seed"]: r["test_mse"] for r in runs if r["model"] == m and r["p"] == p}
        for m in ORDER
        for p in ps
    }
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for m in ORDER:
        stats[m] = {}
        for p in ps:
            v = np.array(list(mse[m, p].values()))
            stats[m][str(p)] = {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "median": float(np.median(v)),
                "n": len(v),
            }
            r2s = [r.get("test_r2") for r in runs if r["model"] == m and r["p"] == p]
            if r2s and None not in r2s:
                stats[m][str(p)] |= {"r2_median": float(np.median(r2s)), "r2_min": min(r2s)}
    paired = {
        f"{a}-{b}": {str(p): paired_over_seeds(mse[a, p], mse[b, p]) for p in ps} for a, b in PAIRS
    }
    # the paper's ordering at p: Shared-Bottom worse than OMoE and OMoE worse than MMoE, each
    # with a paired CI over seeds above 0
    ordering = {
        str(p): bool(
            paired["shared_bottom-omoe"][str(p)]["lo"] > 0 and paired["omoe-mmoe"][str(p)]["lo"] > 0
        )
        for p in ps
    }
    gap = {
        p: {s: mse["shared_bottom", p][s] - mse["mmoe", p][s] for s in mse["mmoe", p]} for p in ps
    }
    # does the Shared-Bottom - MMoE gap grow as p falls? the gap at the lowest p minus at the
    # highest, paired by seed
    trend = paired_over_seeds(gap[ps[0]], gap[ps[-1]]) if len(ps) > 1 else None
    return {
        "ps": ps,
        "stats": stats,
        "paired": paired,
        "ordering_shown": ordering,
        "sb_minus_mmoe": {str(p): float(np.mean(list(gap[p].values()))) for p in ps},
        "gap_lowest_minus_highest_p": trend,
    }


def _cell(c: dict[str, Any]) -> str:
    mark = "**" if c["excludes_0"] else ""
    return (
        f"{mark}{c['diff']:+.4f}{mark} [{c['lo']:+.4f}, {c['hi']:+.4f}] "
        f"{c['b_better_seeds']}/{c['n']} (sign p {c['sign_p']:.3f})"
    )


def table(summary: dict[str, Any]) -> str:
    ps = summary["ps"]
    head = "|---|" + "---:|" * len(ps)
    cols = " | ".join(f"p = {p}" for p in ps)
    lines = [f"| model | {cols} |", head]
    for m in ORDER:
        cells = [
            f"{summary['stats'][m][str(p)]['mean']:.4f} ± {summary['stats'][m][str(p)]['std']:.4f}"
            for p in ps
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    r2_lines = [f"| model | {cols} |", head]
    for m in ORDER:
        cells = [summary["stats"][m][str(p)] for p in ps]
        if any("r2_median" not in c for c in cells):
            r2_lines = []
            break
        cells = [f"{c['r2_median']:.3f} (min {c['r2_min']:.3f})" for c in cells]
        r2_lines.append(f"| {m} | " + " | ".join(cells) + " |")
    r2_text = (
        "\n\nTest R² (1 − MSE / label variance, mean of the two tasks): median over seeds, "
        "the worst seed in brackets.\n\n" + "\n".join(r2_lines)
        if r2_lines
        else ""
    )
    pairs = [f"| a − b | {cols} |", head]
    for key, by_p in summary["paired"].items():
        pairs.append(
            f"| {key.replace('-', ' − ')} | " + " | ".join(_cell(by_p[str(p)]) for p in ps) + " |"
        )
    shown = ", ".join(f"p={p}: {'yes' if summary['ordering_shown'][str(p)] else 'no'}" for p in ps)
    trend = summary["gap_lowest_minus_highest_p"]
    trend_text = (
        f"Shared-Bottom − MMoE gap at p = {ps[0]} minus at p = {ps[-1]}: {_cell(trend)}.\n"
        if trend
        else ""
    )
    n = summary["stats"]["mmoe"][str(ps[0])]["n"]
    return (
        f"Test MSE (mean over the two tasks), mean ± std over {n} seeds.\n\n"
        + "\n".join(lines)
        + r2_text
        + "\n\nPaired over seeds (each seed one dataset, both models trained on it): mean of "
        "a − b in test MSE (positive: b is better), bootstrap 95% CI over seeds (bold: excludes "
        "0), and the seeds on which b is better with the two-sided sign test's p-value (robust to "
        "the one diverged run that can dominate a mean).\n\n"
        + "\n".join(pairs)
        + f"\n\nMMoE better than OMoE better than Shared-Bottom, both CIs above 0: {shown}.\n"
        + trend_text
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
    epochs: int = EPOCHS,
    patience: int = PATIENCE,
    frequency: float = 1.0,
) -> dict[str, Any]:
    ps = ps or P_VALUES
    seeds = seeds or SEEDS
    runs: list[dict[str, Any]] = []
    for p in ps:
        for seed in seeds:
            runs += one_dataset(p, seed, epochs, patience, frequency)
    summary = summarise(runs) | {"frequency": frequency, "epochs": epochs, "patience": patience}
    return write_results(Path(out), summary, runs)


def write_results(folder: Path, summary: dict[str, Any], runs: list[dict[str, Any]]) -> dict:
    write_json_atomic(folder / "results.json", {"summary": summary, "runs": runs})
    text = table(summary)
    frequency = summary.get("frequency", 1.0)
    title = "# MMoE synthetic benchmark" + (f" (frequency {frequency})" if frequency != 1 else "")
    write_text_atomic(folder / "table.md", f"{title}\n\n{text}")
    plot(summary, runs, folder / "loss_vs_p.png")
    print(text)
    return summary


def from_results(folder: Path) -> dict[str, Any]:
    """table.md, the summary and the figure again from results.json's runs: no training."""
    saved = json.loads((folder / "results.json").read_text())
    for r in saved["runs"]:  # results saved before runs recorded their R²
        if "test_r2" not in r:
            var = held_out_label_variance(r["p"], r["seed"], r.get("frequency", 1.0))
            r["test_r2"] = r2(np.array([r["test_mse_y1"], r["test_mse_y2"]]), var)
    keep = {
        k: saved["summary"][k] for k in ("frequency", "epochs", "patience") if k in saved["summary"]
    }
    return write_results(folder, summarise(saved["runs"]) | keep, saved["runs"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=float, nargs="+", default=P_VALUES)
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--patience", type=int, default=PATIENCE)
    ap.add_argument(
        "--frequency", type=float, default=1.0, help="scale of the sinusoids' alphas (harder: 4)"
    )
    ap.add_argument("--out", default="reports/synthetic")
    ap.add_argument(
        "--from-results", action="store_true", help="rewrite --out from its results.json"
    )
    args = ap.parse_args(argv)
    if args.from_results:
        from_results(Path(args.out))
    else:
        synthetic(args.p, args.seeds, args.out, args.epochs, args.patience, args.frequency)
    print(json.dumps({"out": args.out}))


if __name__ == "__main__":
    main()
