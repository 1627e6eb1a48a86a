"""An item's own fields, for rows that show a user another item than the one they were served.

Ranking candidates and sampled negatives are a sample's row (user, context, histories) with
another item in it. Which columns belong to the item is spec.json's `item_side` (derived from
tasks.kuaisar.spec.FIELDS), sparse and dense alike, so no field of the original item survives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import Tensor

from tasks.io.features import item_side


def item_columns(spec: dict) -> tuple[list[int], list[int]]:
    """Positions of the item-side fields in Samples.sparse and in Samples.dense."""
    sparse_names, dense_names = list(spec["sparse"]), list(spec["dense"])
    side = item_side(spec)
    return (
        [sparse_names.index(c) for c in side if c in sparse_names],
        [dense_names.index(c) for c in side if c in dense_names],
    )


@dataclass(frozen=True)
class ItemFields:
    """Every item-side field of each item in `ids` (one row per item)."""

    ids: np.ndarray  # (I,) encoded item ids
    sparse: Tensor  # (I, Fs) long: the item-side columns of Samples.sparse, in `sparse_cols` order
    dense: Tensor  # (I, Fd) float: the item-side columns of Samples.dense
    sparse_cols: list[int]
    dense_cols: list[int]

    @classmethod
    def from_frame(cls, items: pl.DataFrame, spec: dict) -> ItemFields:
        """From a frame with item_id and every item-side field (one row per item)."""
        missing = [c for c in item_side(spec) if c not in items.columns]
        if missing:
            raise ValueError(f"item table lacks the item-side fields {missing}")
        sparse_cols, dense_cols = item_columns(spec)
        s = [list(spec["sparse"])[k] for k in sparse_cols]
        d = [list(spec["dense"])[k] for k in dense_cols]
        return cls(
            ids=items["item_id"].to_numpy(),
            sparse=torch.from_numpy(
                items.select(s).to_numpy().astype(np.int64).reshape(len(items), len(s))
            ),
            dense=torch.from_numpy(
                items.select(d).to_numpy().astype(np.float32).reshape(len(items), len(d))
            ),
            sparse_cols=sparse_cols,
            dense_cols=dense_cols,
        )

    @classmethod
    def from_rows(cls, spec: dict, sparse: Tensor, dense: Tensor, rows: np.ndarray) -> ItemFields:
        """From sample rows (one per item): their item-side columns."""
        s, d = item_columns(spec)
        idx = torch.from_numpy(rows).to(sparse.device)
        return cls(
            ids=sparse[idx, list(spec["sparse"]).index("item_id")].cpu().numpy(),
            sparse=sparse[idx][:, s],
            dense=dense[idx][:, d],
            sparse_cols=s,
            dense_cols=d,
        )

    def to(self, device: torch.device) -> ItemFields:
        return ItemFields(
            self.ids,
            self.sparse.to(device),
            self.dense.to(device),
            self.sparse_cols,
            self.dense_cols,
        )

    def swap(self, sparse: Tensor, dense: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Copies of (B, Fs) sparse and (B, Fd) dense rows with row j's item-side fields
        replaced by those of item `k[j]` (a row index into this table)."""
        sparse, dense = sparse.clone(), dense.clone()
        sparse[:, self.sparse_cols] = self.sparse[k]
        if self.dense_cols:
            dense[:, self.dense_cols] = self.dense[k].to(dense.dtype)
        return sparse, dense
