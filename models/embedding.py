"""Feature embedding: one table for every sparse field, pooled history sequences, dense inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Sequence:
    """A history sequence of ids from `table`; `target` is the sparse field it is compared with."""

    name: str
    table: str
    target: str | None = None


@dataclass(frozen=True)
class EmbeddingSpec:
    """Input shapes, from the features stage's spec.json (index 0 = unknown / padding)."""

    sparse: tuple[tuple[str, int], ...]  # (field, vocabulary size), in input-column order
    n_dense: int
    extra_tables: tuple[tuple[str, int], ...] = ()  # tables used only by sequences (query words)
    sequences: tuple[Sequence, ...] = ()
    dim: int = 16

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingSpec:
        """Inverse of dataclasses.asdict (as stored in a checkpoint)."""
        return cls(
            sparse=tuple((str(n), int(v)) for n, v in d["sparse"]),
            n_dense=int(d["n_dense"]),
            extra_tables=tuple((str(n), int(v)) for n, v in d["extra_tables"]),
            sequences=tuple(Sequence(**s) for s in d["sequences"]),
            dim=int(d["dim"]),
        )

    @property
    def out_dim(self) -> int:
        pooled = sum(2 if s.target else 1 for s in self.sequences)
        return (len(self.sparse) + pooled) * self.dim + self.n_dense


class FeatureEmbedding(nn.Module):
    """(sparse ids, dense values, sequences) -> one flat vector per sample.

    All tables live in one nn.Embedding at per-table offsets (one lookup for all sparse fields).
    A sequence is mean-pooled over its non-zero ids; with a target field it also yields the
    element-wise product of the pooled vector with the target's embedding (a cheap interest
    match, e.g. recently clicked categories x this item's category)."""

    def __init__(self, spec: EmbeddingSpec, sparse: bool = False) -> None:
        super().__init__()
        self.spec = spec
        tables = list(spec.sparse) + list(spec.extra_tables)
        sizes = [n for _, n in tables]
        starts = [0] * len(sizes)  # each table's first row in the one embedding
        for i in range(1, len(sizes)):
            starts[i] = starts[i - 1] + sizes[i - 1]
        self.offset = {name: s for (name, _), s in zip(tables, starts, strict=True)}
        self.field_pos = {name: i for i, (name, _) in enumerate(spec.sparse)}
        self.register_buffer(
            "sparse_offsets",
            torch.tensor(starts[: len(spec.sparse)], dtype=torch.long),
            persistent=False,
        )
        self.table = nn.Embedding(sum(sizes), spec.dim, sparse=sparse)  # sparse: SparseAdam rows
        nn.init.normal_(self.table.weight, std=0.05)

    def rows(self, ids: Tensor) -> Tensor:
        """The table's rows at `ids` (any shape, already offset) -> (*ids.shape, d).

        A dense table on the CPU is read with index_select: its backward is one index_add_,
        3x faster on 2 cores than nn.Embedding's sort-based one (BENCHMARKS.md, SESRec). Sparse
        tables (SparseAdam's gradients) and CUDA (deterministic, fast) use nn.Embedding."""
        if self.table.sparse or ids.is_cuda:
            return self.table(ids)
        return self.table.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, self.spec.dim)

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        # sparse (B, F) long, dense (B, Dn) float, seqs[k] (B, L_k) long -> (B, out_dim)
        emb = self.rows(sparse + self.sparse_offsets)  # (B, F, d)
        parts = [emb.flatten(1)]
        for s, ids in zip(self.spec.sequences, seqs, strict=True):
            mask = (ids > 0).unsqueeze(-1).to(emb.dtype)  # (B, L, 1)
            vec = self.rows(ids + self.offset[s.table])  # (B, L, d)
            pooled = (vec * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, d)
            parts.append(pooled)
            if s.target is not None:
                parts.append(pooled * emb[:, self.field_pos[s.target]])
        parts.append(dense)
        return torch.cat(parts, dim=1)
