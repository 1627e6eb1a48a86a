"""candidates: draw the ranking evaluation's candidates once, for every model and the truth ranker.

Writes paths.candidates (a DVC output a user can open with any parquet reader):
- test.parquet: `candidates.positives` test feed clicks (a seeded sample), each with
  `candidates.negatives` items drawn by train popularity among those the user was never served
  in any part of the log (the user's own earlier clicks are served items, so never negatives).
  Columns: row (in rec_test.parquet), raw_user_id, timestamp, item_id (encoded; the positive first),
  raw_item_id (the release's ids, same order), full (also ranked against the whole catalogue:
  a seeded `candidates.full_positives` of them).
- valid.parquet: the same for `candidates.valid_positives` valid clicks (models that select
  their epoch on valid ranking); full is false.
- summary.json: the protocol and the counts.
Sources without feed clicks (a declared table) write summary.json only, with ranked: false.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from tasks.config.params import load_params
from tasks.evaluation.candidates import candidate_table, draw, feed_frames, served_pairs
from tasks.io.atomic import atomic_dir, write_json_atomic
from tasks.io.features import item_side, read_spec, sample_files

PROTOCOL = (
    "each ranked feed click against `negatives` items drawn in proportion to their train "
    "impressions, never an item its user was served in any part (so never one of their own "
    "clicks); `full` clicks are also ranked against every catalogue item the user was not served"
)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    feats, cp = params.paths.features, params.candidates
    spec = read_spec(feats)
    if sample_files(spec) != "rec":
        with atomic_dir(params.paths.candidates) as tmp:
            write_json_atomic(tmp / "summary.json", {"ranked": False, "why": "no feed clicks"})
        print("candidates: none (the source has no feed clicks to rank)")
        return
    frames = feed_frames(feats)
    served = served_pairs(frames)
    cols = item_side(spec)
    raw_items = pl.read_parquet(feats / "vocab" / "item_id.parquet")
    summary: dict[str, object] = {"ranked": True, "protocol": PROTOCOL, **cp.model_dump()}
    with atomic_dir(params.paths.candidates) as tmp:
        for part, n, seed in (
            ("test", cp.positives, cp.seed),
            ("valid", cp.valid_positives, cp.seed + 1),  # another draw than test's
        ):
            c = draw(frames["train"], frames[part], served, cp.negatives, n, seed, cols)
            full = np.zeros(len(c.rows), dtype=bool)
            if part == "test":
                pick = np.random.default_rng(cp.seed).permutation(len(c.rows))
                full[pick[: cp.full_positives]] = True
            table = candidate_table(c, frames[part], raw_items, full)
            table.write_parquet(tmp / f"{part}.parquet")
            summary[f"{part}_clicks"] = len(table)
            summary[f"{part}_full"] = int(full.sum())
        summary["catalogue"] = len(
            pl.concat([f.select("item_id") for f in frames.values()])
            .filter(pl.col("item_id") > 0)
            .unique()
        )
        write_json_atomic(tmp / "summary.json", summary)
    print(
        f"candidates: {summary['test_clicks']:,} test clicks ({summary['test_full']:,} also "
        f"ranked in full among {summary['catalogue']:,} items), {summary['valid_clicks']:,} "
        f"valid clicks, 1 + {cp.negatives} candidates each -> {params.paths.candidates}/"
    )


if __name__ == "__main__":
    main()
