"""The feature spec and the labels of the KuaiSAR models: every input and target declared once.

Everything else derives from these two tuples: the features stage encodes each field from its
source, spec.json lists them, the embedding reads its tables from spec.json, and ranking
candidates and sampled negatives take *every* item-side field from the candidate's own item
(`ITEM_SIDE`), so adding an item field here is one line and no ranking code changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import polars as pl

VALID_PLAY_MS = 7_000  # the release's valid-play rule (long view)
PARTS = ("train", "valid", "test")  # the temporal parts of every sample file (tasks.split)


@dataclass(frozen=True)
class Field:
    """One model input. `source` is the column it is read from, after features joins the
    sample row with its item and user rows (item_features, user_features); a dense field's
    `expr` computes it from that row (standardised with train's mean and std); a sequence's
    `target` is the sparse field it is matched against (None: none)."""

    name: str
    side: Literal["user", "item", "context", "query", "history"]
    kind: Literal["sparse", "dense", "sequence"]
    source: str
    vocab: str | None = None  # the vocabulary it indexes (tables of one vocab are shared)
    target: str | None = None
    expr: Callable[[], pl.Expr] | None = None  # dense fields: the raw value from `source`


def _log_seconds() -> pl.Expr:
    return (pl.col("duration_ms") / 1000).log1p()


# Order is the models' input-column order (sparse, then dense, then sequences).
FIELDS: tuple[Field, ...] = (
    Field("user_id", "user", "sparse", "user_id", vocab="user_id"),
    Field("item_id", "item", "sparse", "item_id", vocab="item_id"),
    Field("author_id", "item", "sparse", "author_id", vocab="author_id"),
    Field("cat1", "item", "sparse", "first_level_category_id", vocab="cat1"),
    Field("cat2", "item", "sparse", "second_level_category_id", vocab="cat2"),
    Field("item_type", "item", "sparse", "item_type", vocab="item_type"),
    Field("upload_type", "item", "sparse", "upload_type", vocab="upload_type"),
    Field("search_active_level", "user", "sparse", "search_active_level", "search_active_level"),
    Field("rec_active_level", "user", "sparse", "rec_active_level", vocab="rec_active_level"),
    Field("onehot_feat1", "user", "sparse", "onehot_feat1", vocab="onehot_feat1"),
    Field("onehot_feat2", "user", "sparse", "onehot_feat2", vocab="onehot_feat2"),
    # a search result's own type (src_inter.item_type: VIDEO, LIVE, USER, ...); 0 on feed samples.
    # item_type above is item_features' (the release: normal video or ad), absent for many results
    Field("result_type", "query", "sparse", "result_type", vocab="result_type"),
    # an item attribute (fixed per item; rec_inter's duration_ms), so candidates carry their own
    Field("log_duration", "item", "dense", "duration_ms", expr=_log_seconds),
    # histories (tasks.split): the user's last clicked feed items and search sessions
    Field("rec_hist_item", "history", "sequence", "rec_history.item_id", "item_id", "item_id"),
    Field("rec_hist_cat1", "history", "sequence", "rec_history.cat1", "cat1", "cat1"),
    Field("src_hist_item", "history", "sequence", "src_history.item_id", "item_id", "item_id"),
    Field("src_hist_cat1", "history", "sequence", "src_history.cat1", "cat1", "cat1"),
    Field("src_hist_word", "history", "sequence", "src_history.keyword", "word"),
    Field("rec_hist_age", "history", "sequence", "rec_history.timestamp", "age"),
    Field("src_hist_age", "history", "sequence", "src_history.timestamp", "age"),
    # a search sample's own query (empty for feed samples), matched with the item's category
    Field("query_word", "query", "sequence", "src_inter.keyword", "word", "cat1"),
)

SPARSE = tuple(f.name for f in FIELDS if f.kind == "sparse")
DENSE = tuple(f.name for f in FIELDS if f.kind == "dense")
SEQUENCES = tuple(f for f in FIELDS if f.kind == "sequence")
ITEM_SIDE = tuple(f.name for f in FIELDS if f.side == "item")  # what a candidate brings
FIELD = {f.name: f for f in FIELDS}

# a history event's age at the sample's time, in buckets with these upper edges (hours; the
# last bucket is everything older); 0 is padding. tasks.training.tensors computes them.
AGE_HOURS = (1, 3, 6, 12, 24, 36, 48, 72, 120, 168, 336, 720)


@dataclass(frozen=True)
class Label:
    """One training target: its scenario's samples, its type and how it is derived."""

    name: str
    scenario: Literal["feed", "search"]
    kind: Literal["binary", "regression"]
    derivation: str  # in words, for readers and the README
    expr: Callable[[], pl.Expr]  # from the raw file's columns


def _long_view() -> pl.Expr:
    dur, play = pl.col("duration_ms"), pl.col("playing_time")
    return (
        pl.when(dur <= VALID_PLAY_MS)
        .then(play >= dur)
        .otherwise(play > VALID_PLAY_MS)
        .cast(pl.Int8)
    )


LABELS: tuple[Label, ...] = (
    Label("click", "feed", "binary", "rec_inter.click", lambda: pl.col("click")),
    Label(
        "long_view",
        "feed",
        "binary",
        "playing_time >= duration_ms when duration_ms <= 7 s, else playing_time > 7 s",
        _long_view,
    ),
    Label("like", "feed", "binary", "rec_inter.like", lambda: pl.col("like")),
    Label("follow", "feed", "binary", "rec_inter.follow", lambda: pl.col("follow")),
    Label("forward", "feed", "binary", "rec_inter.forward", lambda: pl.col("forward")),
    Label("search_click", "search", "binary", "src_inter.click_cnt", lambda: pl.col("click_cnt")),
)

LABEL = {lab.name: lab for lab in LABELS}
FEED_LABELS = tuple(lab.name for lab in LABELS if lab.scenario == "feed")
(SEARCH_TASK,) = (lab.name for lab in LABELS if lab.scenario == "search")
