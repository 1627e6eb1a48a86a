"""Scoring the ranking evaluation's candidates (tasks.evaluation.candidates) with a model.

A candidate is the positive's own row with every item-side field of the candidate's own item
swapped in (spec.json's item_side, sparse and dense: tasks.training.items; the user, their
features and histories stay), so every model scores exactly the same candidates. `scores` gives
each click's 1 + negatives scores (sampled metrics: HR@1/5/10, NDCG@5/10, MRR), and
`catalogue_ranks` the positive's rank among every catalogue item the user was not served (full
ranking: full_recall@10/50, full_ndcg@10/50; sampled metrics can order models differently from
full ranking, Krichene & Rendle, KDD 2020). `searched_*`: the sampled ones on the clicks whose
category the user had searched shortly before, where search-aware models should differ.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.evaluation.candidates import Candidates, rank_metrics, ranks_of
from tasks.training.items import ItemFields
from tasks.training.tensors import HOUR_MS, Histories, Samples, make_batch, window


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
    was_training = model.training
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
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, width))


@torch.no_grad()
def catalogue_ranks(
    model: nn.Module,
    test: Samples,
    hist: Histories | None,
    c: Candidates,
    served: list[np.ndarray],
    spec: dict,
    task: int,
    batch: int = 16384,
) -> np.ndarray:
    """(F,) rank of each full-ranked click's positive (c.full) among every catalogue item
    (c.fields) its user was not served (`served`: served_indices); an item scored the same as the
    positive ranks above it, as in candidates.ranks_of."""
    was_training = model.training
    model.eval()
    device = test.sparse.device
    table = ItemFields.from_frame(c.fields, spec).to(device)
    n_items = len(c.fields)
    ranks = []
    for r, pos, seen in zip(c.rows[c.full], c.items[c.full, 0], served, strict=True):
        s = []
        for i in range(0, n_items, batch):
            items = torch.arange(i, min(i + batch, n_items), device=device)
            idx = torch.full((len(items),), int(r), device=device)
            sparse, dense, seqs = make_batch(test, hist, idx)
            sparse, dense = table.swap(sparse, dense, items)
            s.append(model(sparse, dense, seqs)[:, task].float().cpu())
        score = torch.cat(s).numpy()
        above = score >= score[pos]
        above[seen] = False  # served items (the positive among them) are not candidates
        ranks.append(1 + int(above.sum()))
    model.train(was_training)
    return np.array(ranks, dtype=np.int64)


def ranking_metrics(s: np.ndarray) -> dict[str, float]:
    """HR@K, NDCG@K and MRR of column 0 (the positive) among each row's candidates."""
    return rank_metrics(ranks_of(s))


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


def sliced_metrics(rank: np.ndarray, in_slice: np.ndarray, name: str) -> dict[str, float]:
    """The sampled metrics of the clicks in the slice (from their ranks), keys prefixed
    `name_`, and its size."""
    out: dict[str, float] = {f"{name}_positives": int(in_slice.sum())}
    if in_slice.any():
        out |= {f"{name}_{k}": v for k, v in rank_metrics(rank[in_slice]).items()}
    return out
