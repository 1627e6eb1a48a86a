"""features: encode split outputs into model-ready integer ids; vocabularies fit on train only.

Every categorical value seen in the train part (at least `min_count` times) gets an index
1..V; anything else, including ids first seen in valid or test, maps to 0 (unknown). Vocabularies
are written under `vocab/` so a served model can encode new rows the same way; their sizes go to
`spec.json`, the one place a model learns its input shapes from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from tasks.io import atomic_dir, write_json_atomic
from tasks.params import FeaturesParams, load_params
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
}
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


def build_features(
    split: dict[str, pl.DataFrame], items: pl.DataFrame, users: pl.DataFrame, p: FeaturesParams
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], dict[str, object]]:
    """Pure: split frames (rec_train, ..., src_history) -> encoded frames, vocabs, spec."""

    def with_sides(df: pl.DataFrame) -> pl.DataFrame:
        df = df.drop("item_type", strict=False)  # item_features.csv is the one source of it
        df = df.join(items, on="item_id", how="left", maintain_order="left")
        return df.join(users, on="user_id", how="left", maintain_order="left")

    train = pl.concat(
        [with_sides(split[f"{s}_train"]).select(SPARSE) for s in ("rec", "src")], how="vertical"
    )
    vocabs = {f: fit_vocab(train[f], p.min_count) for f in SPARSE}
    words = split["src_train"]["keyword"].explode().rename("word")
    vocabs["word"] = fit_vocab(words, p.min_count)

    log_dur = (split["rec_train"]["duration_ms"] / 1000).log1p()
    mean, std = float(log_dur.mean() or 0.0), float(log_dur.std() or 1.0) or 1.0

    def sample_frame(df: pl.DataFrame, labels: list[str]) -> pl.DataFrame:
        df = with_sides(df)
        dense = (
            ((pl.col("duration_ms") / 1000).log1p() - mean) / std
            if "duration_ms" in df.columns
            else pl.lit(0.0)
        )
        return df.select(
            pl.col("user_id").alias("raw_user_id"),
            *[encoded(pl.col(f), vocabs[f]).alias(f) for f in SPARSE],
            dense.cast(pl.Float32).alias("log_duration"),
            *[pl.col(c).cast(pl.Float32) for c in labels],
            *HIST_COLS,
            "timestamp",
        )

    out: dict[str, pl.DataFrame] = {}
    for part in PARTS:
        out[f"rec_{part}"] = sample_frame(split[f"rec_{part}"], list(REC_LABELS))
        src = split[f"src_{part}"]
        out[f"src_{part}"] = sample_frame(src, ["click"]).with_columns(
            keyword=src["keyword"].list.eval(encoded(pl.element(), vocabs["word"]))
        )
    hist = split["rec_history"].join(
        items.select("item_id", "cat1"), on="item_id", how="left", maintain_order="left"
    )
    out["rec_history"] = hist.select(
        encoded(pl.col("item_id"), vocabs["item_id"]).alias("item"),
        encoded(pl.col("cat1"), vocabs["cat1"]).alias("cat1"),
    )
    shist = split["src_history"].join(
        items.select("item_id", "cat1"), on="item_id", how="left", maintain_order="left"
    )
    out["src_history"] = shist.select(
        encoded(pl.col("item_id"), vocabs["item_id"]).alias("item"),
        encoded(pl.col("cat1"), vocabs["cat1"]).alias("cat1"),
        pl.col("keyword").list.eval(encoded(pl.element(), vocabs["word"])).alias("word"),
    )
    spec = {
        "sparse": {f: len(vocabs[f]) + 1 for f in SPARSE},
        "dense": list(DENSE),
        "extra_tables": {"word": len(vocabs["word"]) + 1},
        "sequences": {k: {"table": t, "target": tgt} for k, (t, tgt) in SEQUENCES.items()},
        "rec_tasks": list(REC_LABELS),
        "history_len": p.history_len,
        "search_history_len": p.search_history_len,
        "max_query_words": max(1, int(out["src_history"]["word"].list.len().max() or 1)),
        "dense_stats": {"log_duration": {"mean": mean, "std": std}},
        "rows": {k: len(v) for k, v in out.items()},
    }
    return out, vocabs, spec


SPLIT_FILES = [f"{s}_{p}" for s in ("rec", "src") for p in PARTS] + ["rec_history", "src_history"]


def main(argv: list[str] | None = None) -> None:
    """Read paths.split and the raw feature tables, write paths.features atomically."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    split = {k: pl.read_parquet(params.paths.split / f"{k}.parquet") for k in SPLIT_FILES}
    raw = params.paths.source
    frames, vocabs, spec = build_features(split, item_table(raw), user_table(raw), params.features)
    with atomic_dir(params.paths.features) as tmp:
        for name, df in frames.items():
            df.write_parquet(tmp / f"{name}.parquet")
        (tmp / "vocab").mkdir()
        for name, v in vocabs.items():
            v.write_parquet(tmp / "vocab" / f"{name}.parquet")
        write_json_atomic(tmp / "spec.json", spec)
    sizes = ", ".join(f"{k}={v}" for k, v in spec["sparse"].items())
    print(f"features: vocabularies {sizes} -> {params.paths.features}/")


if __name__ == "__main__":
    main()
