"""features: encode split outputs into model-ready integer ids; vocabularies fit on train only.

Every categorical value seen in the train part (at least `min_count` times) gets an index
1..V; anything else, including ids first seen in valid or test, maps to 0 (unknown). Vocabularies
are written under `vocab/` so a served model can encode new rows the same way; their sizes go to
`spec.json`, the one place a model learns its input shapes from.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tasks.io import atomic_dir, write_json_atomic
from tasks.params import FeaturesParams, load_params
from tasks.progress import progress
from tasks.schema import polars_schema
from tasks.split import PARTS, REC_LABELS

USER_FIELDS = ("search_active_level", "rec_active_level", "onehot_feat1", "onehot_feat2")
ITEM_FIELDS = ("author_id", "cat1", "cat2", "item_type", "upload_type")
# sparse fields of a sample, in the order of the model's input columns
SPARSE = ("user_id", "item_id", *ITEM_FIELDS, *USER_FIELDS)
DENSE = ("log_duration",)
# sequences: name -> (vocabulary it indexes, sparse field it is compared with, or None)
SEQUENCES = {
    "rec_hist_item": ("item_id", "item_id"),
    "rec_hist_cat1": ("cat1", "cat1"),
    "src_hist_item": ("item_id", "item_id"),
    "src_hist_cat1": ("cat1", "cat1"),
    "src_hist_word": ("word", None),
    "rec_hist_age": ("age", None),
    "src_hist_age": ("age", None),
    "query_word": ("word", "cat1"),  # a search sample's own query (empty for feed samples)
}
# a history event's age at the sample's time, in buckets with these upper edges (hours; the
# last bucket is everything older); 0 is padding. tasks.tensors.make_batch computes them.
AGE_HOURS = (1, 3, 6, 12, 24, 36, 48, 72, 120, 168, 336, 720)
HIST_COLS = ("rec_hist_start", "rec_hist_len", "src_hist_start", "src_hist_len")


def fit_vocab(values: pl.Series, min_count: int) -> pl.DataFrame:
    """value -> index 1..V, most frequent first (ties by value), for values seen >= min_count."""
    name = values.name
    counts = values.drop_nulls().value_counts(name="n").filter(pl.col("n") >= min_count)
    counts = counts.sort(["n", name], descending=[True, False])
    return counts.select(name, pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("index"))


def encoded(expr: pl.Expr, vocab: pl.DataFrame) -> pl.Expr:
    """An expression mapping values through `vocab` (unknown -> 0)."""
    return expr.replace_strict(
        vocab[vocab.columns[0]], vocab["index"], default=0, return_dtype=pl.Int64
    )


def item_table(raw: Path) -> pl.DataFrame:
    """item_id and the item fields the models use."""
    return (
        pl.scan_csv(raw / "item_features.csv", schema=polars_schema("item_features.csv"))
        .select(
            "item_id",
            "author_id",
            pl.col("first_level_category_id").alias("cat1"),
            pl.col("second_level_category_id").alias("cat2"),
            "item_type",
            "upload_type",
        )
        .collect()
    )


def user_table(raw: Path) -> pl.DataFrame:
    schema = polars_schema("user_features.csv")
    return pl.read_csv(raw / "user_features.csv", schema=schema)


@dataclass(frozen=True)
class Fitted:
    """What is learned from the train part: vocabularies and the dense feature's scaling."""

    vocabs: dict[str, pl.DataFrame]
    mean: float
    std: float


def _with_sides(lf: pl.LazyFrame, items: pl.DataFrame, users: pl.DataFrame) -> pl.LazyFrame:
    lf = lf.drop("item_type", strict=False)  # item_features.csv is the one source of it
    lf = lf.join(items.lazy(), on="item_id", how="left", maintain_order="left")
    return lf.join(users.lazy(), on="user_id", how="left", maintain_order="left")


def fit(
    rec_train: pl.LazyFrame,
    src_train: pl.LazyFrame,
    items: pl.DataFrame,
    users: pl.DataFrame,
    p: FeaturesParams,
) -> Fitted:
    """Vocabularies of every sparse field and of query words, from train rows only."""
    train = pl.concat(
        [
            _with_sides(lf.select("user_id", "item_id"), items, users)
            for lf in (rec_train, src_train)
        ]
    ).collect(engine="streaming")
    vocabs = {f: fit_vocab(train[f], p.min_count) for f in SPARSE}
    del train
    words = src_train.select(pl.col("keyword").explode().alias("word")).collect(engine="streaming")
    vocabs["word"] = fit_vocab(words["word"], p.min_count)
    log_dur = rec_train.select(((pl.col("duration_ms") / 1000).log1p()).alias("d")).collect(
        engine="streaming"
    )["d"]
    mean, std = float(log_dur.mean() or 0.0), float(log_dur.std() or 1.0) or 1.0
    return Fitted(vocabs, mean, std)


def encode(
    name: str, lf: pl.LazyFrame, f: Fitted, items: pl.DataFrame, users: pl.DataFrame
) -> pl.LazyFrame:
    """The encoded form of split file `name` (rec_train, ..., src_history), row order kept."""
    v = f.vocabs
    if name in ("rec_history", "src_history"):
        hist = lf.join(
            items.lazy().select("item_id", "cat1"), on="item_id", how="left", maintain_order="left"
        )
        cols = [
            encoded(pl.col("item_id"), v["item_id"]).alias("item"),
            encoded(pl.col("cat1"), v["cat1"]).alias("cat1"),
            pl.col("timestamp").cast(pl.Int64),
        ]
        if name == "src_history":
            cols.append(pl.col("keyword").list.eval(encoded(pl.element(), v["word"])).alias("word"))
        return hist.select(cols)
    rec = name.startswith("rec_")
    labels = list(REC_LABELS) if rec else ["click"]
    dense = ((pl.col("duration_ms") / 1000).log1p() - f.mean) / f.std if rec else pl.lit(0.0)
    out = _with_sides(lf, items, users).select(
        pl.col("user_id").alias("raw_user_id"),
        *[encoded(pl.col(c), v[c]).alias(c) for c in SPARSE],
        dense.cast(pl.Float32).alias("log_duration"),
        *[pl.col(c).cast(pl.Float32) for c in labels],
        *HIST_COLS,
        "timestamp",
        *([] if rec else [pl.col("keyword").list.eval(encoded(pl.element(), v["word"]))]),
    )
    return out


def make_spec(
    f: Fitted, rows: dict[str, int], max_query_words: int, p: FeaturesParams
) -> dict[str, object]:
    return {
        "sparse": {c: len(f.vocabs[c]) + 1 for c in SPARSE},
        "dense": list(DENSE),
        "extra_tables": {"word": len(f.vocabs["word"]) + 1, "age": len(AGE_HOURS) + 2},
        "age_hours": list(AGE_HOURS),
        "sequences": {k: {"table": t, "target": tgt} for k, (t, tgt) in SEQUENCES.items()},
        "rec_tasks": list(REC_LABELS),
        "history_len": p.history_len,
        "search_history_len": p.search_history_len,
        "max_query_words": max(1, max_query_words),
        "dense_stats": {"log_duration": {"mean": f.mean, "std": f.std}},
        "rows": rows,
    }


def build_features(
    split: dict[str, pl.DataFrame], items: pl.DataFrame, users: pl.DataFrame, p: FeaturesParams
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], dict[str, object]]:
    """Pure, in memory: split frames (rec_train, ..., src_history) -> encoded frames, vocabs,
    spec. `main` does the same file by file, streaming, so memory stays bounded."""
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
    items, users = item_table(raw), user_table(raw)
    scan = {k: pl.scan_parquet(split / f"{k}.parquet") for k in SPLIT_FILES}
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
