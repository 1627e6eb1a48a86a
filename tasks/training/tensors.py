"""Encoded features as tensors on the training device, and vectorised batch assembly.

No per-sample Python: a batch is a slice of index tensors; history windows are gathered with
index arithmetic from flat per-user sequences (see tasks.split)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from models.embedding import EmbeddingSpec, Sequence
from tasks.io.features import read_spec, sample_files
from tasks.kuaisar.spec import SEARCH_TASK

__all__ = ["read_spec", "sample_files"]  # re-exported: callers load samples and specs together

Batch = tuple[Tensor, Tensor, tuple[Tensor, ...]]  # sparse (B,F), dense (B,Dn), sequences
HOUR_MS = 3_600_000  # timestamps are Unix milliseconds
SRC_FIRST_WORD = 3  # Histories.src columns: item, cat1, timestamp, then the query words


def embedding_spec(spec: dict, dim: int) -> EmbeddingSpec:
    """The model's input description, from the features stage's spec.json."""
    return EmbeddingSpec(
        sparse=tuple((k, int(v)) for k, v in spec["sparse"].items()),
        n_dense=len(spec["dense"]),
        extra_tables=tuple((k, int(v)) for k, v in spec["extra_tables"].items()),
        sequences=tuple(
            Sequence(name, s["table"], s["target"]) for name, s in spec["sequences"].items()
        ),
        dim=dim,
    )


@dataclass(frozen=True)
class Samples:
    sparse: Tensor  # (N, F) long
    dense: Tensor  # (N, Dn) float
    labels: Tensor  # (N, T) float, NaN = not in this task's sample space
    hist: Tensor  # (N, 4) long: rec start, rec len, search start, search len (0 for tables)
    user: np.ndarray | None  # (N,) raw user ids, for GAUC (None: a table without users)
    weight: Tensor | None = None  # (N,) sample weights of a weighted table
    time: Tensor | None = None  # (N,) long: the sample's timestamp (ms), for history ages
    query: Tensor | None = None  # (N, Q) long: a search sample's query words (None: feed)

    def __len__(self) -> int:
        return self.sparse.shape[0]


@dataclass(frozen=True)
class Histories:
    rec: Tensor  # (1 + H, 3) long: item, cat1, timestamp (ms); row 0 is padding
    src: Tensor  # (1 + S, 3 + Q) long: item, cat1, timestamp, words...; row 0 is padding
    rec_len: int  # window sizes
    src_len: int
    order: tuple[str, ...]  # sequence names in the order of the spec (and of the model)
    age_edges: Tensor  # upper edges (ms) of the age buckets (spec.json `age_hours`)


def _columns(df: pl.DataFrame, cols: list[str], dtype: type) -> Tensor:
    """(rows, len(cols)) of `dtype`; no columns still keep the rows (a table with only numeric
    or only categorical inputs: polars' select of none has no rows)."""
    if not cols:
        return torch.from_numpy(np.zeros((len(df), 0), dtype=dtype))
    return torch.from_numpy(df.select(cols).to_numpy().astype(dtype))


def _long(df: pl.DataFrame, cols: list[str]) -> Tensor:
    return _columns(df, cols, np.int64)


def _padded(lists: pl.Series, q: int) -> Tensor:
    """A list column of ids -> (N, q) long: each list cut or zero-padded to q."""
    zeros = pl.lit([0] * q, dtype=pl.List(pl.Int64))
    x = pl.col("x").cast(pl.List(pl.Int64)).list.head(q).list.concat(zeros).list.head(q)
    arr = lists.to_frame("x").select(x.list.to_array(q)).to_series().to_numpy()
    return torch.from_numpy(arr.astype(np.int64).reshape(len(lists), q))


def _no_query(n: int, q: int, device: torch.device) -> Tensor:
    """The query words of `n` feed samples: none."""
    return torch.zeros(n, q, dtype=torch.long, device=device)


def load_samples(
    features: Path,
    name: str,
    spec: dict,
    tasks: list[str],
    device: torch.device,
    columns: dict[str, str | None] | None = None,
) -> Samples:
    """`name` is e.g. rec_train or table_train; labels in `tasks` order, each read from the
    column of its name, or from `columns[task]` (None: NaN, outside this file's sample space)."""
    df = pl.read_parquet(features / f"{name}.parquet")
    columns = columns or {}
    df = df.with_columns(
        (pl.col(columns[t]) if columns[t] else pl.lit(None, dtype=pl.Float32)).alias(t)
        for t in tasks
        if t in columns
    )
    hist_cols = ["rec_hist_start", "rec_hist_len", "src_hist_start", "src_hist_len"]
    has_hist = set(hist_cols) <= set(df.columns)
    weighted = bool(spec.get("weighted")) and "weight" in df.columns
    return Samples(
        sparse=_long(df, list(spec["sparse"])).to(device),
        dense=_columns(df, spec["dense"], np.float32).to(device),
        labels=torch.from_numpy(df.select(tasks).to_numpy().astype(np.float32)).to(device),
        hist=(_long(df, hist_cols) if has_hist else torch.zeros(len(df), 4, dtype=torch.long)).to(
            device
        ),
        user=df["raw_user_id"].to_numpy() if "raw_user_id" in df.columns else None,
        weight=torch.from_numpy(df["weight"].to_numpy().astype(np.float32)).to(device)
        if weighted
        else None,
        time=_long(df, ["timestamp"])[:, 0].to(device) if has_hist else None,
        query=_padded(df["keyword"], int(spec["max_query_words"])).to(device)
        if "keyword" in df.columns
        else None,
    )


def concat_samples(a: Samples, b: Samples) -> Samples:
    """Samples of two files (feed and search) as one set; histories index the same tables."""
    user = None if a.user is None or b.user is None else np.concatenate([a.user, b.user])
    weight = None if a.weight is None or b.weight is None else torch.cat([a.weight, b.weight])
    time = None if a.time is None or b.time is None else torch.cat([a.time, b.time])
    query = None
    if a.query is not None or b.query is not None:  # feed rows: no query words
        q = (a.query if a.query is not None else b.query).shape[1]
        query = torch.cat(
            [
                x.query if x.query is not None else _no_query(len(x), q, x.sparse.device)
                for x in (a, b)
            ]
        )
    return Samples(
        sparse=torch.cat([a.sparse, b.sparse]),
        dense=torch.cat([a.dense, b.dense]),
        labels=torch.cat([a.labels, b.labels]),
        hist=torch.cat([a.hist, b.hist]),
        user=user,
        weight=weight,
        time=time,
        query=query,
    )


def scenario_samples(
    features: Path, part: str, spec: dict, scenario: str, tasks: list[str], device: torch.device
) -> Samples:
    """A model's samples of `part` for its scenario: feed (rec_PART, or table_PART), search
    (src_PART, its click as search_click) or joint (both; each task NaN outside its scenario)."""
    prefix = sample_files(spec)
    if scenario == "feed":
        return load_samples(features, f"{prefix}_{part}", spec, tasks, device)
    search_cols: dict[str, str | None] = {t: None for t in tasks} | {SEARCH_TASK: "click"}
    search = load_samples(features, f"src_{part}", spec, tasks, device, search_cols)
    if scenario == "search":
        return search
    feed = load_samples(features, f"rec_{part}", spec, tasks, device, {SEARCH_TASK: None})
    return concat_samples(feed, search)


def task_types(spec: dict, tasks: list[str]) -> tuple[bool, ...]:
    """Per task, whether it is a regression task (tables declare it; KuaiSAR's are binary)."""
    types = spec.get("task_types", {})
    return tuple(types.get(t) == "regression" for t in tasks)


def load_histories(features: Path, spec: dict, device: torch.device) -> Histories | None:
    if not spec["sequences"]:  # a table: no histories
        return None
    rec = pl.read_parquet(features / "rec_history.parquet")
    src = pl.read_parquet(features / "src_history.parquet")
    words = _padded(src["word"], int(spec["max_query_words"]))
    src_t = torch.cat([_long(src, ["item", "cat1", "timestamp"]), words], 1)

    def pad(t: Tensor) -> Tensor:
        return torch.cat([torch.zeros(1, t.shape[1], dtype=torch.long), t]).to(device)

    rec_t = _long(rec, ["item", "cat1", "timestamp"])
    return Histories(
        pad(rec_t),
        pad(src_t),
        spec["history_len"],
        spec["search_history_len"],
        tuple(spec["sequences"]),
        torch.tensor([h * HOUR_MS for h in spec["age_hours"]], dtype=torch.long, device=device),
    )


def window(start: Tensor, length: Tensor, size: int) -> Tensor:
    """Row indices (into a padded flat history) of the last `size` events; 0 where none.

    start, length (B,) -> (B, size); the newest event is in the last column."""
    k = torch.arange(size, device=start.device)
    idx = 1 + start.unsqueeze(1) + length.unsqueeze(1) - size + k  # 1 skips the padding row
    return torch.where(k >= size - length.clamp(max=size).unsqueeze(1), idx, torch.zeros_like(idx))


def age_buckets(age: Tensor, valid: Tensor, edges: Tensor) -> Tensor:
    """Ages (ms) -> bucket ids 1..len(edges)+1 (bucket k: edges[k-2] < age <= edges[k-1]);
    0 where `valid` is false (padding)."""
    return torch.where(valid, 1 + torch.bucketize(age, edges), torch.zeros_like(age))


def make_batch(s: Samples, h: Histories | None, idx: Tensor) -> Batch:
    """Model inputs of the samples at `idx`; sequences in the spec's order, matched by name (the
    model's EmbeddingSpec lists them in that order; see tasks.kuaisar.spec.FIELDS)."""
    if h is None:  # a table without histories
        return s.sparse[idx], s.dense[idx], ()
    hs = s.hist[idx]
    if s.time is None:
        raise ValueError("these samples have no timestamp column, needed for history ages")
    rec_rows = window(hs[:, 0], hs[:, 1], h.rec_len)
    src_rows = window(hs[:, 2], hs[:, 3], h.src_len)
    rec, src = h.rec[rec_rows], h.src[src_rows]  # (B, L, 3), (B, S, SRC_FIRST_WORD + Q)
    now = s.time[idx].unsqueeze(1)
    if s.query is not None:
        query = s.query[idx]
    else:
        query = _no_query(len(idx), h.src.shape[1] - SRC_FIRST_WORD, idx.device)
    by_name = {
        "query_word": query,
        "rec_hist_item": rec[..., 0],
        "rec_hist_cat1": rec[..., 1],
        "rec_hist_age": age_buckets(now - rec[..., 2], rec_rows > 0, h.age_edges),
        "src_hist_item": src[..., 0],
        "src_hist_cat1": src[..., 1],
        "src_hist_age": age_buckets(now - src[..., 2], src_rows > 0, h.age_edges),
        "src_hist_word": src[..., SRC_FIRST_WORD:].flatten(1),
    }
    return s.sparse[idx], s.dense[idx], tuple(by_name[name] for name in h.order)
