"""Ranking evaluation with sampled negatives, as SESRec and UniSAR report it on KuaiSAR.

Each test feed click (up to `positives` of them, a seeded sample) is ranked against `negatives`
items drawn in proportion to their train popularity, never an item the user was served in any
part of the log. A candidate is the positive's own row with every item-side field of the
candidate's own item swapped in (spec.json's item_side, sparse and dense: tasks.training.items;
the user, their features and histories stay), so every model scores exactly the same candidates:
the draw depends on the data and the seed only. Reports HR@1/5/10, NDCG@5/10 and MRR, and the
same (searched_*) on the slice of clicks whose category the user had searched shortly before:
where search-aware models should differ from feed-only ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from tasks.training.items import ItemFields, item_frame, item_side
from tasks.training.tensors import HOUR_MS, Histories, Samples, make_batch, read_spec, window

KS = (1, 5, 10)


@dataclass(frozen=True)
class Candidates:
    rows: np.ndarray  # (P,) test rows of the positives
    items: np.ndarray  # (P, 1 + negatives) row indices into `fields`; column 0 is the positive
    fields: pl.DataFrame  # item_id and every item-side field, one row per item (sorted by id)


def draw(
    train: pl.DataFrame,
    test: pl.DataFrame,
    served: pl.DataFrame,
    negatives: int,
    positives: int,
    seed: int,
    item_cols: list[str] | None = None,
) -> Candidates:
    """The candidates of every sampled test click (frames are encoded feed samples);
    `item_cols`: the item-side fields candidates carry (spec.json's item_side; None: item_id)."""
    rng = np.random.default_rng(seed)
    fields = item_frame([train, test], item_cols or ["item_id"])
    index = {int(i): k for k, i in enumerate(fields["item_id"].to_list())}
    pop = (
        train.filter(pl.col("item_id") > 0)
        .group_by("item_id")
        .len()
        .join(fields.select("item_id").with_row_index("k"), on="item_id")
        .sort("k")
    )
    weight = np.zeros(len(fields))
    weight[pop["k"].to_numpy()] = pop["len"].to_numpy()
    weight /= weight.sum()
    cdf = np.cumsum(weight)
    ids = fields["item_id"].to_numpy()
    clicks = np.flatnonzero((test["click"].to_numpy() == 1) & (test["item_id"].to_numpy() > 0))
    rows = np.sort(rng.choice(clicks, min(positives, len(clicks)), replace=False))
    seen = served.group_by("raw_user_id").agg(pl.col("item_id").unique())
    seen_by = dict(zip(seen["raw_user_id"].to_list(), seen["item_id"].to_list(), strict=True))
    user, item = test["raw_user_id"].to_numpy(), test["item_id"].to_numpy()
    out = np.zeros((len(rows), 1 + negatives), dtype=np.int64)
    for n, r in enumerate(rows):
        banned = np.array([*seen_by.get(user[r], []), item[r]], dtype=ids.dtype)
        picked = np.zeros(0, dtype=np.int64)
        for attempt in range(1000):
            if len(picked) >= negatives:
                break
            if attempt == 20:  # slow going: are there enough items at all? (costs O(items))
                eligible = int(((weight > 0) & ~np.isin(ids, banned)).sum())
                if eligible < negatives:
                    raise ValueError(
                        f"only {eligible} items are left to sample as negatives for user "
                        f"{user[r]}; lower evaluate.ranking_negatives (now {negatives})"
                    )
            k = np.searchsorted(cdf, rng.random(4 * negatives) * cdf[-1], side="right")
            k = np.minimum(k, len(ids) - 1)
            k = k[~np.isin(ids[k], banned) & (weight[k] > 0)]
            both = np.concatenate([picked, k])
            _, first = np.unique(both, return_index=True)
            picked = both[np.sort(first)]  # distinct, in draw order
        if len(picked) < negatives:
            raise ValueError(
                f"could not draw {negatives} distinct unseen items for user {user[r]}; "
                "lower evaluate.ranking_negatives"
            )
        out[n, 0] = index[int(item[r])]
        out[n, 1:] = picked[:negatives]
    return Candidates(rows, out, fields)


def ranked_candidates(feats: Path, negatives: int, positives: int, seed: int) -> Candidates:
    """The draw of evaluate@ on a features folder: its test clicks' candidates."""
    frames = {p: pl.read_parquet(feats / f"rec_{p}.parquet") for p in ("train", "valid", "test")}
    served = pl.concat([f.select("raw_user_id", "item_id") for f in frames.values()])
    cols = item_side(read_spec(feats))
    return draw(frames["train"], frames["test"], served, negatives, positives, seed, cols)


@torch.no_grad()
def scores(
    model: nn.Module,
    test: Samples,
    hist: Histories | None,
    c: Candidates,
    spec: dict,
    task: int,
    batch: int = 128,
) -> np.ndarray:
    """(P, 1 + negatives) scores of `task` for each positive's candidates."""
    model.eval()
    device = test.sparse.device
    table = ItemFields.from_frame(c.fields, spec).to(device)
    out = []
    width = c.items.shape[1]
    for i in range(0, len(c.rows), batch):
        rows = torch.from_numpy(c.rows[i : i + batch]).to(device)
        items = torch.from_numpy(c.items[i : i + batch]).to(device)  # (b, width)
        idx = rows.repeat_interleave(width)
        sparse, dense, seqs = make_batch(test, hist, idx)
        sparse, dense = table.swap(sparse, dense, items.reshape(-1))
        out.append(model(sparse, dense, seqs)[:, task].float().reshape(-1, width).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, width))


def ranking_metrics(s: np.ndarray) -> dict[str, float]:
    """HR@K, NDCG@K and MRR of column 0 (the positive) among each row's candidates."""
    rank = 1 + (s[:, 1:] > s[:, :1]).sum(1)  # ties go to the positive
    out: dict[str, float] = {}
    for k in KS:
        out[f"hr@{k}"] = float((rank <= k).mean())
    for k in (5, 10):
        out[f"ndcg@{k}"] = float(np.where(rank <= k, 1 / np.log2(rank + 1), 0.0).mean())
    out["mrr"] = float((1 / rank).mean())
    return out


def searched_categories(
    test: Samples, hist: Histories, rows: np.ndarray, hours: float
) -> torch.Tensor:
    """(P, search_history_len) first-level categories of the search sessions the model sees for
    test row `rows[p]` (its window of the last search_history_len sessions) that happened within
    `hours` before the sample; 0 for the others and for padding."""
    if test.time is None:
        raise ValueError("these samples have no timestamp column: cannot tell recent searches")
    idx = torch.from_numpy(rows).to(test.sparse.device)
    hs = test.hist[idx]
    src = hist.src[window(hs[:, 2], hs[:, 3], hist.src_len)]  # (P, S, columns); row 0: padding
    recent = (test.time[idx].unsqueeze(1) - src[..., 2]) <= hours * HOUR_MS
    return torch.where(recent, src[..., 1], torch.zeros_like(src[..., 1]))


def among_searched(cats: torch.Tensor, cat1: torch.Tensor) -> torch.Tensor:
    """(P, W) bool: whether each first-level category `cat1` (P, W) is among its row's
    `searched_categories` (P, S)."""
    return ((cat1.unsqueeze(-1) == cats.unsqueeze(1)) & (cats.unsqueeze(1) > 0)).any(-1)


def recently_searched(
    test: Samples, hist: Histories, rows: np.ndarray, cat_col: int, hours: float
) -> np.ndarray:
    """(P,) bool: whether the sample's first-level category is among `searched_categories`."""
    cats = searched_categories(test, hist, rows, hours)
    own = test.sparse[torch.from_numpy(rows).to(test.sparse.device), cat_col].unsqueeze(1)
    return among_searched(cats, own)[:, 0].cpu().numpy()


def sliced_metrics(s: np.ndarray, in_slice: np.ndarray, name: str) -> dict[str, float]:
    """ranking_metrics of the rows in the slice, keys prefixed `name_`, and its size."""
    out: dict[str, float] = {f"{name}_positives": int(in_slice.sum())}
    if in_slice.any():
        out |= {f"{name}_{k}": v for k, v in ranking_metrics(s[in_slice]).items()}
    return out
