"""Sampled negatives for training: unserved items as click-0 rows, the ranking task."""

from __future__ import annotations

import numpy as np
import torch

from tasks.training.items import ItemFields
from tasks.training.tensors import Samples, concat_samples


def with_sampled_negatives(s: Samples, spec: dict, click: int, k: int, seed: int) -> Samples:
    """Training samples plus, for every click, `k` items the user was not served in `s`, drawn
    in proportion to their popularity there (with replacement), as extra rows: the click's row
    (user, features, histories, time) with every item-side field (spec.json's item_side, sparse
    and dense) swapped in, as the ranking builds its candidates (tasks.training.items). Such a row is a click 0 and outside every other task's sample space
    (NaN): the other tasks are measured on served impressions, and training them on unserved
    items cost like and follow AUC 0.02-0.05 (BENCHMARKS.md). Trained on these, a model learns
    what the ranking evaluation measures (which items a user clicks among all), not only which
    served items they click."""
    field_names = list(spec["sparse"])
    if "user_id" not in field_names or "item_id" not in field_names:
        raise ValueError(
            "sampled negatives need the fields user_id and item_id; these samples lack them"
        )
    sp = s.sparse.cpu().numpy()
    items = sp[:, field_names.index("item_id")]
    users = sp[:, field_names.index("user_id")].astype(np.int64)
    known = items > 0
    ids, first, counts = np.unique(items[known], return_index=True, return_counts=True)
    table = ItemFields.from_rows(spec, s.sparse, s.dense, np.flatnonzero(known)[first])
    pos = np.flatnonzero((s.labels[:, click].cpu().numpy() == 1) & known)
    if len(pos) == 0 or k == 0:
        return s
    span = int(items.max()) + 1
    served = np.unique(users * span + items)  # (user, item) pairs, as sorted codes
    user = np.repeat(users[pos], k)
    pick = np.zeros(len(user), dtype=np.int64)
    todo = np.arange(len(user))
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(counts) / counts.sum()
    for _ in range(100):  # redraw the (few) served ones
        d = np.minimum(np.searchsorted(cdf, rng.random(len(todo)), side="right"), len(ids) - 1)
        ok = ~np.isin(user[todo] * span + ids[d], served)
        pick[todo[ok]] = d[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            break
    else:
        raise ValueError(
            f"{len(todo)} sampled negatives kept hitting items their user was served: too few "
            "items for sampled_negatives; lower it"
        )
    device = s.sparse.device
    rows = torch.from_numpy(np.repeat(pos, k)).to(device)
    sparse, dense = table.swap(s.sparse[rows], s.dense[rows], torch.from_numpy(pick).to(device))
    labels = torch.full_like(s.labels[rows], float("nan"))
    labels[:, click] = 0.0
    neg = Samples(
        sparse=sparse,
        dense=dense,
        labels=labels,
        hist=s.hist[rows],
        user=None if s.user is None else s.user[rows.cpu().numpy()],
        weight=None if s.weight is None else s.weight[rows],
        time=None if s.time is None else s.time[rows],
        query=None if s.query is None else s.query[rows],
    )
    return concat_samples(s, neg)
