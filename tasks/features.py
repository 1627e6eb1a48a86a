"""features: encode split outputs into model-ready integer ids; vocabularies fit on train only.

Every categorical value seen in the train part (at least `min_count` times) gets an index
1..V; anything else, including ids first seen in valid or test, maps to 0 (unknown): the
encoding itself is tasks.kuaisar.encoding. Vocabularies are written under `vocab/` so a served
model can encode new rows the same way; their sizes go to `spec.json`, the one place a model
learns its input shapes from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from tasks.config.params import FeaturesParams, load_params
from tasks.io.atomic import atomic_dir, write_json_atomic
from tasks.io.progress import progress
from tasks.kuaisar.encoding import (
    Fitted,
    encode,
    encoded,
    fit,
    fit_vocab,
    item_attributes,
    item_sides,
    raw_sides,
)
from tasks.kuaisar.spec import AGE_HOURS, DENSE, FEED_LABELS, ITEM_SIDE, PARTS, SEQUENCES, SPARSE


def make_spec(
    f: Fitted, rows: dict[str, int], max_query_words: int, p: FeaturesParams
) -> dict[str, object]:
    return {
        "sparse": {c: len(f.vocabs[c]) + 1 for c in SPARSE},
        "dense": list(DENSE),
        "extra_tables": {"word": len(f.vocabs["word"]) + 1, "age": len(AGE_HOURS) + 2},
        "age_hours": list(AGE_HOURS),
        "sequences": {s.name: {"table": s.vocab, "target": s.target} for s in SEQUENCES},
        "item_side": list(ITEM_SIDE),  # what a ranking candidate takes from its own item
        "rec_tasks": list(FEED_LABELS),
        "history_len": p.history_len,
        "search_history_len": p.search_history_len,
        "max_query_words": max(1, max_query_words),
        "dense_stats": {c: {"mean": m, "std": s} for c, (m, s) in f.stats.items()},
        "rows": rows,
    }


def build_features(
    split: dict[str, pl.DataFrame], items: pl.DataFrame, users: pl.DataFrame, p: FeaturesParams
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], dict[str, object]]:
    """Pure, in memory: split frames (rec_train, ..., src_history) -> encoded frames, vocabs,
    spec. `main` does the same file by file, streaming, so memory stays bounded."""
    rec = pl.concat([split[f"rec_{part}"].lazy() for part in PARTS])
    items = item_sides(items, item_attributes(rec))
    f = fit(split["rec_train"].lazy(), split["src_train"].lazy(), items, users, p)
    out = {
        name: encode(name, split[name].lazy(), f, items, users).collect() for name in SPLIT_FILES
    }
    words = int(out["src_history"]["word"].list.len().max() or 1)
    return out, f.vocabs, make_spec(f, {k: len(v) for k, v in out.items()}, words, p)


SPLIT_FILES = [f"{s}_{p}" for s in ("rec", "src") for p in PARTS] + ["rec_history", "src_history"]


def table_features(
    parts: dict[str, pl.DataFrame], table: dict, p: FeaturesParams
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], dict[str, object]]:
    """A declared table's parts -> encoded frames (table_PART), vocabularies, spec.

    Categorical columns get train-only vocabularies (unknown -> 0); numeric columns are
    standardised with train's mean and std (missing -> 0, the mean); labels stay as declared
    (binary 0/1 or regression values); `weight` is the declared sample weight, else 1."""
    train = parts["train"]
    cats, nums, labels = table["categorical"], table["numeric"], table["labels"]
    vocabs = {c: fit_vocab(train[c].cast(pl.Utf8), p.min_count) for c in cats}
    stats = {}
    for c in nums:
        mean, std = train[c].mean(), train[c].std()
        stats[c] = {"mean": float(mean or 0.0), "std": float(std or 1.0) or 1.0}
    weight = pl.col(table["weight"]) if table.get("weight") else pl.lit(1.0)
    out = {
        f"table_{part}": df.select(
            *[encoded(pl.col(c).cast(pl.Utf8), vocabs[c]).alias(c) for c in cats],
            *[
                ((pl.col(c) - stats[c]["mean"]) / stats[c]["std"]).fill_null(0.0).cast(pl.Float32)
                for c in nums
            ],
            *[pl.col(t).cast(pl.Float32) for t in labels],
            weight.cast(pl.Float32).alias("weight"),
        )
        for part, df in parts.items()
    }
    spec = {
        "samples": "table",
        "sparse": {c: len(vocabs[c]) + 1 for c in cats},
        "dense": list(nums),
        "extra_tables": {},
        "sequences": {},
        "tasks": list(labels),
        "task_types": dict(labels),
        "weighted": bool(table.get("weight")),
        "dense_stats": stats,
        "rows": {k: len(v) for k, v in out.items()},
    }
    return out, vocabs, spec


def _write(folder: Path, frames: dict[str, pl.DataFrame], vocabs: dict, spec: dict) -> None:
    for name, df in frames.items():
        df.write_parquet(folder / f"{name}.parquet")
    (folder / "vocab").mkdir(exist_ok=True)
    for name, v in vocabs.items():
        v.write_parquet(folder / "vocab" / f"{name}.parquet")
    write_json_atomic(folder / "spec.json", spec)


def main(argv: list[str] | None = None) -> None:
    """Read paths.split and the raw feature tables, write paths.features atomically.

    Streams: vocabularies from the train files, then each split file is encoded and sunk to
    parquet on its own, so peak memory is about one file's columns, not the whole dataset."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    split = params.paths.split
    if params.source.kind == "table":
        table = json.loads((split / "summary.json").read_text())["table"]
        parts = {part: pl.read_parquet(split / f"table_{part}.parquet") for part in PARTS}
        frames, vocabs, spec = table_features(parts, table, params.features)
        with atomic_dir(params.paths.features) as tmp:
            _write(tmp, frames, vocabs, spec)
        print(f"features: table, vocabularies {spec['sparse']} -> {params.paths.features}/")
        return
    raw = params.paths.source
    scan = {k: pl.scan_parquet(split / f"{k}.parquet") for k in SPLIT_FILES}
    items, users = raw_sides(split, raw)
    f = fit(scan["rec_train"], scan["src_train"], items, users, params.features)
    rows: dict[str, int] = {}
    with atomic_dir(params.paths.features) as tmp:
        for name in progress(SPLIT_FILES, len(SPLIT_FILES), "features (files)"):
            path = tmp / f"{name}.parquet"
            encode(name, scan[name], f, items, users).sink_parquet(path)
            rows[name] = pl.scan_parquet(path).select(pl.len()).collect().item()
        words = (
            pl.scan_parquet(tmp / "src_history.parquet")
            .select(pl.col("word").list.len().max())
            .collect()
            .item()
        )
        spec = make_spec(f, rows, int(words or 1), params.features)
        _write(tmp, {}, f.vocabs, spec)
    sizes = ", ".join(f"{k}={v}" for k, v in spec["sparse"].items())
    print(f"features: vocabularies {sizes} -> {params.paths.features}/")


if __name__ == "__main__":
    main()
