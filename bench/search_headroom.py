"""How much feed NDCG@10 a user's recent searches can buy on this dataset: trained models against
an oracle that knows the generator's planted rule.

The built-in generator raises the feed click logit of a category the user searched in the last
generate.search_effect_hours (48). evaluate@ ranks each sampled test click against 99
popularity-drawn items; this bench draws the same candidates and splits the ranked clicks by
whether the click's category was searched in the last evaluate.searched_hours (the `searched`
slice; the rest are the others). It scores
- each trained model named (default: sesrec and its no-search ablation) on all clicks, the slice
  and the rest;
- the last model named (the ablation) plus an oracle boost b added to the click logit of every
  candidate whose category the user searched in those hours, for each b: what a model that knew
  the planted rule exactly would add on top of the ablation. Boosting helps the slice and costs
  the rest (the boosted negatives overtake the other clicks); the best b bounds the gain on all
  clicks that the planted effect alone can give.

Run in a project whose models are trained (after `make run` or `dvc repro`):

    python bench/search_headroom.py [--models sesrec sesrec_nosearch] [--boosts 0.5 1 1.5 2]

Prints a table, then one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.config.params import load_params  # noqa: E402
from tasks.evaluation import ranking  # noqa: E402
from tasks.evaluation.candidates import load_candidates  # noqa: E402
from tasks.training.checkpoint import load_checkpoint  # noqa: E402
from tasks.training.tensors import load_histories, read_spec, scenario_samples  # noqa: E402


def ndcg10(s: np.ndarray, rows: np.ndarray) -> float:
    return ranking.ranking_metrics(s[rows])["ndcg@10"] if rows.any() else float("nan")


def split(s: np.ndarray, in_slice: np.ndarray) -> dict[str, float]:
    return {
        "all": ndcg10(s, np.ones(len(s), dtype=bool)),
        "searched": ndcg10(s, in_slice),
        "rest": ndcg10(s, ~in_slice),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["sesrec", "sesrec_nosearch"])
    ap.add_argument("--boosts", type=float, nargs="+", default=[0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
    args = ap.parse_args(argv)
    p = load_params()
    torch.set_num_threads(p.train.threads)
    e, feats = p.evaluate, p.paths.features
    if e.searched_hours <= 0:
        raise SystemExit("evaluate.searched_hours is 0: set the recency window to split by")
    spec = read_spec(feats)
    c = load_candidates(feats, p.paths.candidates / "test.parquet")
    hist = load_histories(feats, spec, "cpu")
    # the models' inputs only (scores never read labels): one load serves every model
    test = scenario_samples(feats, "test", spec, "feed", ["click"], "cpu")
    scores = {}
    for m in args.models:
        model, config = load_checkpoint(p.paths.artifacts / m / "model.pt")
        scores[m] = ranking.scores(model, test, hist, c, spec, config["tasks"].index("click"))
    cats = ranking.searched_categories(test, hist, c.rows, e.searched_hours)
    cand = torch.from_numpy(c.fields["cat1"].to_numpy()[c.items])
    hot = ranking.among_searched(cats, cand).numpy()
    in_slice = hot[:, 0]
    base = args.models[-1]
    rows = {m: split(s, in_slice) for m, s in scores.items()}
    rows |= {f"{base} + oracle {b:g}": split(scores[base] + b * hot, in_slice) for b in args.boosts}
    out = {
        "features": str(feats),
        "ranked_clicks": len(c.rows),
        "searched_share": float(in_slice.mean()),
        "negatives_in_searched_categories": float(hot[:, 1:].mean()),
        "ndcg@10": rows,
    }
    print(
        f"{len(c.rows):,} ranked clicks; {out['searched_share']:.1%} in the searched slice "
        f"(a category searched in the last {e.searched_hours:g} h); "
        f"{out['negatives_in_searched_categories']:.1%} of the negatives in such a category\n"
    )
    print("| scores | NDCG@10 all | searched | rest | all vs " + base + " |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        gain = r["all"] - rows[base]["all"]
        print(f"| {name} | {r['all']:.4f} | {r['searched']:.4f} | {r['rest']:.4f} | {gain:+.4f} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
