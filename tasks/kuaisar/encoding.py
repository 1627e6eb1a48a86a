"""Encoding KuaiSAR rows into model inputs: vocabularies and dense scaling fit on train rows
(`fit`), applied to any split file (`encode`). The features stage runs them on its split; the
promotion guard (tasks.serving.guard) runs `encode` with a served model's own fitted
transforms on newer rows; drift checks (tasks.serving.drift) read the same raw item and user
sides (`with_sides`).

Every categorical value seen in the train part (at least `min_count` times) gets an index
1..V; anything else, including ids first seen in valid or test, maps to 0 (unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tasks.config.params import FeaturesParams
from tasks.kuaisar.schema import polars_schema
from tasks.kuaisar.spec import DENSE, FEED_LABELS, FIELD, FIELDS, PARTS, SPARSE

HIST_COLS = ("rec_hist_start", "rec_hist_len", "src_hist_start", "src_hist_len")
# sparse fields read from item_features.csv / user_features.csv (item_id, user_id are the keys)
ITEM_SPARSE = tuple(f.name for f in FIELDS if f.side == "item" and f.kind == "sparse")
USER_SPARSE = tuple(f.name for f in FIELDS if f.side == "user" and f.kind == "sparse")
ITEM_DENSE = tuple(f.name for f in FIELDS if f.side == "item" and f.kind == "dense")
# sparse fields of a search sample's own row (split's src files); feed samples have none: 0
QUERY_SPARSE = tuple(f.name for f in FIELDS if f.side == "query" and f.kind == "sparse")


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
    """item_id and the item-side sparse fields (FIELDS' sources in item_features.csv)."""
    cols = [pl.col(FIELD[n].source).alias(n) for n in ITEM_SPARSE if n != "item_id"]
    return (
        pl.scan_csv(raw / "item_features.csv", schema=polars_schema("item_features.csv"))
        .select("item_id", *cols)
        .collect()
    )


def user_table(raw: Path) -> pl.DataFrame:
    """user_id and the user-side sparse fields (FIELDS' sources in user_features.csv)."""
    cols = [pl.col(FIELD[n].source).alias(n) for n in USER_SPARSE if n != "user_id"]
    schema = polars_schema("user_features.csv")
    return pl.read_csv(raw / "user_features.csv", schema=schema).select("user_id", *cols)


def item_attributes(rec: pl.LazyFrame) -> pl.LazyFrame:
    """item_id and the raw value of every item-side dense field, one row per item, from the feed
    log (an attribute of the item, e.g. its duration): every sample of an item, feed or search,
    and every ranking candidate carries the item's own value."""
    if set(DENSE) != set(ITEM_DENSE):
        raise ValueError(
            f"dense fields {sorted(set(DENSE) - set(ITEM_DENSE))} are not item-side: features "
            "derives dense fields as item attributes only (tasks/kuaisar/spec.py)"
        )
    values = [FIELD[n].expr().alias(n) for n in ITEM_DENSE]
    return rec.select("item_id", *values).group_by("item_id").agg(pl.col(ITEM_DENSE).min())


@dataclass(frozen=True)
class Fitted:
    """What is learned from the train part: vocabularies and each dense field's (mean, std)."""

    vocabs: dict[str, pl.DataFrame]
    stats: dict[str, tuple[float, float]]


def with_sides(lf: pl.LazyFrame, items: pl.LazyFrame, users: pl.DataFrame) -> pl.LazyFrame:
    """A sample frame joined with its item's fields (sparse and dense) and its user's."""
    lf = lf.drop("item_type", strict=False)  # item_features.csv is the one source of it
    have = lf.collect_schema().names()
    lf = lf.with_columns(
        pl.lit(None, dtype=pl.String).alias(FIELD[n].source)
        for n in QUERY_SPARSE
        if FIELD[n].source not in have
    )
    # an item absent from item_features (a search result the feed never serves: LIVE, USER,
    # ...) gets nulls here, so every item_features field of it encodes as 0 (unknown)
    lf = lf.join(items, on="item_id", how="left", maintain_order="left")
    return lf.join(users.lazy(), on="user_id", how="left", maintain_order="left")


def item_sides(items: pl.DataFrame, attributes: pl.LazyFrame) -> pl.LazyFrame:
    """Every item-side field of each item: item_features' columns and the dense attributes."""
    return items.lazy().join(attributes, on="item_id", how="left")


def raw_sides(split: Path, raw: Path) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """The raw side fields of a split folder's rows: every item's (`item_sides`: item_features'
    fields, the dense attributes from the feed log of every part) and every user's."""
    rec = pl.concat([pl.scan_parquet(split / f"rec_{p}.parquet") for p in PARTS])
    return item_sides(item_table(raw), item_attributes(rec).collect().lazy()), user_table(raw)


def row_keys(lf: pl.LazyFrame) -> pl.LazyFrame:
    """The columns a sample row brings itself: its ids and its query-side fields' sources."""
    have = lf.collect_schema().names()
    own = [FIELD[n].source for n in QUERY_SPARSE if FIELD[n].source in have]
    return lf.select("user_id", "item_id", *own)


def fit(
    rec_train: pl.LazyFrame,
    src_train: pl.LazyFrame,
    items: pl.LazyFrame,
    users: pl.DataFrame,
    p: FeaturesParams,
) -> Fitted:
    """Vocabularies of every sparse field and of query words, and the scaling of every dense
    field (over the feed's train rows), from train rows only. `items`: `item_sides`."""
    train = pl.concat(
        [with_sides(row_keys(lf), items, users).select(SPARSE) for lf in (rec_train, src_train)]
    ).collect(engine="streaming")
    vocabs = {f: fit_vocab(train[f], p.min_count) for f in SPARSE}
    del train
    words = src_train.select(pl.col("keyword").explode().alias("word")).collect(engine="streaming")
    vocabs["word"] = fit_vocab(words["word"], p.min_count)
    dense = (
        rec_train.select("item_id")
        .join(items.select("item_id", *DENSE), on="item_id", how="left")
        .select(DENSE)
        .collect(engine="streaming")
        # the streaming join's row order varies from run to run, and float sums depend on the
        # order: sorted, the same rows give the same bytes in spec.json
        .sort(DENSE)
    )
    stats = {c: (float(dense[c].mean() or 0.0), float(dense[c].std() or 1.0) or 1.0) for c in DENSE}
    return Fitted(vocabs, stats)


def with_session_category(sessions: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Split's src_history (with its item's `cat1`) whose `cat1` is each session's most common
    first-level category among the items it showed (`results`), ties to the category of the
    item it led to, then the smallest; that item's category where no result has one. The
    query's category, as near as the log shows it: the item a session led to is off-topic for
    about 1 in 8 of the generator's sessions, the modal result for 1 in 30 (BENCHMARKS)."""
    sessions = sessions.with_row_index("k")
    modal = (
        sessions.select("k", "results", "cat1")
        .explode("results")
        .join(
            items.select(pl.col("item_id").alias("results"), pl.col("cat1").alias("c")),
            on="results",
            how="inner",
        )
        .group_by("k", "c")
        .agg(n=pl.len(), own=(pl.col("c") == pl.col("cat1")).any())
        .sort("k", "n", "own", "c", descending=[False, True, True, False])
        .group_by("k", maintain_order=True)
        .first()
    )
    return (
        sessions.join(modal.select("k", "c"), on="k", how="left", maintain_order="left")
        .with_columns(cat1=pl.coalesce("c", "cat1"))
        .drop("k", "c")
    )


def encode(
    name: str, lf: pl.LazyFrame, f: Fitted, items: pl.LazyFrame, users: pl.DataFrame
) -> pl.LazyFrame:
    """The encoded form of split file `name` (rec_train, ..., src_history), row order kept."""
    v = f.vocabs
    if name in ("rec_history", "src_history"):
        hist = lf.join(
            items.select("item_id", "cat1"), on="item_id", how="left", maintain_order="left"
        )
        if name == "src_history":
            hist = with_session_category(hist, items)
        cols = [
            encoded(pl.col("item_id"), v["item_id"]).alias("item"),
            encoded(pl.col("cat1"), v["cat1"]).alias("cat1"),
            pl.col("timestamp").cast(pl.Int64),
        ]
        if name == "src_history":
            cols.append(pl.col("keyword").list.eval(encoded(pl.element(), v["word"])).alias("word"))
        return hist.select(cols)
    rec = name.startswith("rec_")
    labels = list(FEED_LABELS) if rec else ["click"]  # a search sample's label column: click
    dense = [
        ((pl.col(c) - f.stats[c][0]) / f.stats[c][1]).fill_null(0.0).cast(pl.Float32).alias(c)
        for c in DENSE
    ]  # an item without a value (seen only in search) gets the mean
    out = with_sides(lf.drop(DENSE, strict=False), items, users).select(
        pl.col("user_id").alias("raw_user_id"),
        *[encoded(pl.col(c), v[c]).alias(c) for c in SPARSE],
        *dense,
        *[pl.col(c).cast(pl.Float32) for c in labels],
        *HIST_COLS,
        "timestamp",
        *([] if rec else [pl.col("keyword").list.eval(encoded(pl.element(), v["word"]))]),
    )
    return out
