"""The score stage's throughput per model: users per second for a top-K over the candidate pool.

tasks/score.py serves the model `score.select` picks; this bench times the same top_k for every
trained model named (default: train.models), on the same users, pool and served items, after
one warm-up batch. A user costs `score.pool` forward rows, so users/s x pool is rows/s.

Run in a project whose models are trained (after `make run` or `dvc repro`):

    python bench/score_speed.py [--models mmoe sesrec] [--users 300]

Prints a table, then one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.config.params import load_params  # noqa: E402
from tasks.io.features import read_spec  # noqa: E402
from tasks.score import score_inputs, top_k  # noqa: E402
from tasks.training.checkpoint import load_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="default: train.models")
    ap.add_argument("--users", type=int, default=0, help="the first N users (0: all)")
    args = ap.parse_args()
    params = load_params()
    torch.set_num_threads(params.train.threads)
    cpu = torch.device("cpu")
    ctx, hist, pool = score_inputs(params, read_spec(params.paths.features), cpu)
    if args.users:
        n = min(args.users, len(ctx.users))
        ctx = dataclasses.replace(ctx, users=ctx.users[:n], rows=ctx.rows[:n])
        keep = pool.served[0] < n
        pool = dataclasses.replace(pool, served=(pool.served[0][keep], pool.served[1][keep]))
    rows = []
    for name in args.models or params.train.models:
        model, config = load_checkpoint(params.paths.artifacts / name / "model.pt")
        if "click" not in config["tasks"] or config.get("scenario", "feed") == "search":
            continue
        model.eval()
        click, batch = config["tasks"].index("click"), params.evaluate.batch_size
        warm = dataclasses.replace(ctx, users=ctx.users[:20], rows=ctx.rows[:20])
        top_k(model, warm, hist, pool.items, pool.served, click, params.score.k, batch)
        t0 = time.perf_counter()
        top_k(model, ctx, hist, pool.items, pool.served, click, params.score.k, batch)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "model": name,
                "users": len(ctx.users),
                "pool": len(pool.ids),
                "seconds": round(seconds, 3),
                "users_per_s": round(len(ctx.users) / seconds, 1),
                "rows_per_s": round(len(ctx.users) * len(pool.ids) / seconds),
            }
        )
        print(
            f"{name:18s} {rows[-1]['users_per_s']:>9,.1f} users/s "
            f"{rows[-1]['rows_per_s']:>11,} rows/s ({seconds:.1f} s)",
            flush=True,
        )
    print(json.dumps({"threads": params.train.threads, "k": params.score.k, "rows": rows}))
    if not rows:
        raise SystemExit("no trained feed model to time")


if __name__ == "__main__":
    main()
