"""The log_duration leak, paired: each trained model ranks evaluate@'s candidates twice, once as
evaluate@ does (every item-side field from the candidate's own item) and once as sarflow did
before 2026-12-02 (the dense item fields left at the positive's values); per-click NDCG@10
differences with a bootstrap 95% CI. Run from the project root after `make run`:
`.venv/bin/python bench/candidate_leak.py [MODEL ...]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.config.params import load_params  # noqa: E402
from tasks.evaluation import ranking  # noqa: E402
from tasks.evaluation.candidates import load_candidates  # noqa: E402
from tasks.training.checkpoint import load_checkpoint  # noqa: E402
from tasks.training.tensors import load_histories, read_spec, scenario_samples  # noqa: E402


def ndcg10(s: np.ndarray) -> np.ndarray:
    rank = 1 + (s[:, 1:] > s[:, :1]).sum(1)
    return np.where(rank <= 10, 1 / np.log2(rank + 1), 0.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    args = ap.parse_args(argv)
    p = load_params()
    torch.set_num_threads(p.train.threads)
    feats = p.paths.features
    spec = read_spec(feats)
    c = load_candidates(feats, p.paths.candidates / "test.parquet")
    test = scenario_samples(feats, "test", spec, "feed", ["click"], torch.device("cpu"))
    hist = load_histories(feats, spec, torch.device("cpu"))
    # the old build: only the sparse item fields swapped in, the dense ones left as the positive's
    old = {**spec, "item_side": [f for f in spec["item_side"] if f not in spec["dense"]]}
    rng = np.random.default_rng(0)
    for m in args.models or [x for x in p.train.models if p.models[x].get("scenario") != "search"]:
        model, config = load_checkpoint(p.paths.artifacts / m / "model.pt")
        task = config["tasks"].index("click")
        own = ranking.scores(model, test, hist, c, spec, task)
        kept = ranking.scores(model, test, hist, c, old, task)
        d = ndcg10(own) - ndcg10(kept)
        boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(
            f"{m:16s} NDCG@10 own item fields {ndcg10(own).mean():.4f}  positive's duration kept "
            f"{ndcg10(kept).mean():.4f}  difference {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"
        )


if __name__ == "__main__":
    main()
