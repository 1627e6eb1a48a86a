"""SESRec's split of search interests against the generator's overlap, as one Prefect flow.

    python -m flows.experiments.interests [--overlaps 0 0.25 0.5 0.75 1] [--seed 1] [--epochs 5]
        [--out reports/search_aware/interests]
    python -m flows.experiments.interests --from-results [--out ...]   # redraw the picture

The generator decides per user which search interests are also feed interests
(`generate.search_rec_overlap`: the share of search-interest slots that repeat a feed interest).
For each overlap this generates a dataset (the experiment's cell params: flows.experiments.
search_aware.cell_params, effect on), trains and evaluates `sesrec` in a throw-away copy of the
project (`dvc repro evaluate@sesrec`), and reads evaluate's split of each test user's search steps
(tasks.evaluation.interests): the share of steps truly similar, the share the model calls
similar (score > 0.5), its mean score, and each score's AUC against the truth, next to the
authors' heuristic and an untrained model. A split that recovers the planted structure follows
the diagonal: the share it calls similar rises with the true share. Writes results.json and
overlap.png under `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.experiments.search_aware import cell_params
from flows.project import copy_project, dvc, with_python_on_path
from tasks.io.atomic import write_json_atomic
from tasks.report import SPLIT_SCORES

OVERLAPS = [0.0, 0.25, 0.5, 0.75, 1.0]
SCORES = tuple(SPLIT_SCORES)  # the scores evaluate gives each search step


@task(task_run_name="search_rec_overlap={overlap}")
def one_overlap(overlap: float, seed: int, epochs: int, work: str) -> dict[str, Any]:
    """Generate a dataset with this overlap, train and evaluate sesrec; its split's summary."""
    params = cell_params(seed, 1.5, epochs, ["sesrec"], 2000, overlap)
    d = Path(work) / f"overlap{overlap:g}"
    shutil.rmtree(d, ignore_errors=True)
    copy_project(d, params)
    try:
        dvc("repro", "evaluate@sesrec", cwd=d)
        found = json.loads((d / "artifacts" / "sesrec" / "evaluation.json").read_text())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    split = {k: v for k, v in found["interests"].items() if k != "shown"}
    return {"overlap": overlap, "seed": seed, "split": split}


def draw(runs: list[dict[str, Any]], path: Path) -> None:
    """The share of search steps called similar against the overlap, per score, with the true
    share and the diagonal; beside it each score's AUC against the truth."""
    from tasks.evaluation.plots import plt, save_png

    x = [r["overlap"] for r in runs]
    fig, (share, auc) = plt.subplots(1, 2, figsize=(9, 3.6))
    share.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="diagonal")
    share.plot(x, [r["split"]["truth_similar_share"] for r in runs], "k-o", label="truly similar")
    for k, colour in zip(SCORES, ("C0", "C1", "C7"), strict=True):
        share.plot(x, [r["split"][k]["similar_share"] for r in runs], "o-", color=colour, label=k)
        # no AUC where every step is similar or none is (overlap 0 and 1)
        auc.plot(x, [r["split"][k].get("auc", math.nan) for r in runs], "o-", color=colour, label=k)
    share.set(xlabel="search_rec_overlap", ylabel="share of search steps called similar")
    auc.axhline(0.5, color="grey", lw=0.8, ls="--")
    auc.set(xlabel="search_rec_overlap", ylabel="AUC against the planted truth", ylim=(0, 1))
    share.legend(fontsize=7)
    auc.legend(fontsize=7)
    save_png(fig, path)


@flow(name="sarflow-interests", log_prints=True)
def interests(
    overlaps: list[float] | None = None,
    seed: int = 1,
    epochs: int = 5,
    out: str = "reports/search_aware/interests",
    work: str | None = None,
) -> list[dict[str, Any]]:
    with_python_on_path()
    work_dir = Path(work or tempfile.mkdtemp(prefix="sarflow-interests-"))
    runs = [one_overlap(o, seed, epochs, str(work_dir)) for o in overlaps or OVERLAPS]
    folder = Path(out)
    write_json_atomic(folder / "results.json", {"seed": seed, "epochs": epochs, "runs": runs})
    draw(runs, folder / "overlap.png")
    for r in runs:
        s = r["split"]
        print(
            f"overlap {r['overlap']:g}: truly similar {s['truth_similar_share']:.3f}; "
            + "; ".join(
                f"{k} calls {s[k]['similar_share']:.3f} similar, AUC {s[k].get('auc', math.nan):.3f}"
                for k in SCORES
            )
        )
    return runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overlaps", type=float, nargs="+", default=OVERLAPS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default="reports/search_aware/interests")
    ap.add_argument("--work", default=None, help="where the per-overlap projects go (a temp dir)")
    ap.add_argument("--from-results", action="store_true", help="redraw overlap.png, no training")
    args = ap.parse_args(argv)
    if args.from_results:
        runs = json.loads((Path(args.out) / "results.json").read_text())["runs"]
        draw(runs, Path(args.out) / "overlap.png")
    else:
        interests(args.overlaps, args.seed, args.epochs, args.out, args.work)


if __name__ == "__main__":
    main()
