"""A multi-task recommender = one feature embedding + one multi-task head; logits out."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.embedding import EmbeddingSpec, FeatureEmbedding
from models.mmoe import MMoE
from models.ple import PLE
from models.sesrec import SESRec
from models.shared_bottom import SharedBottom


def build_head(kind: str, in_dim: int, n_tasks: int, cfg: dict[str, Any]) -> nn.Module:
    """The multi-task head named by `kind`, from its params section (minus `kind`)."""
    if kind == "shared_bottom":
        return SharedBottom(in_dim, n_tasks, bottom=cfg["bottom"], tower=cfg["tower"])
    if kind in ("mmoe", "omoe"):
        return MMoE(
            in_dim,
            n_tasks,
            cfg["n_experts"],
            expert=cfg["expert"],
            tower=cfg["tower"],
            one_gate=kind == "omoe",
        )
    if kind == "ple":
        return PLE(
            in_dim,
            n_tasks,
            cfg["n_levels"],
            cfg["n_shared"],
            cfg["n_specific"],
            expert=cfg["expert"],
            tower=cfg["tower"],
        )
    raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")


KINDS = ("shared_bottom", "omoe", "mmoe", "ple", "single_task", "sesrec")


class MultiTaskModel(nn.Module):
    """`kind` sesrec is a whole model of its own (it reads the histories step by step, see
    models.sesrec); every other kind is a head on the pooled feature embedding.

    `kind` single_task is the baseline every multi-task model is measured against: one whole
    network per task (own embedding, bottom and tower), nothing shared, trained side by side
    (their losses add up but touch disjoint parameters, so each learns as if alone)."""

    def __init__(
        self,
        spec: EmbeddingSpec,
        kind: str,
        n_tasks: int,
        cfg: dict[str, Any],
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.kind = kind
        if kind == "sesrec":
            self.sesrec = SESRec(spec, n_tasks, cfg, sparse)
            return
        if kind == "single_task":
            self.singles = nn.ModuleList(
                MultiTaskModel(spec, "shared_bottom", 1, cfg, sparse) for _ in range(n_tasks)
            )
            return
        self.embedding = FeatureEmbedding(spec, sparse=sparse)
        self.head = build_head(kind, spec.out_dim, n_tasks, cfg)

    def auxiliary_loss(self) -> Tensor | None:
        """Extra training losses of the last forward pass (SESRec's InfoNCE and triplet), if any."""
        return self.sesrec.aux_loss if self.kind == "sesrec" else None

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        if self.kind == "sesrec":
            return self.sesrec(sparse, dense, seqs)
        if self.kind == "single_task":
            return torch.cat([m(sparse, dense, seqs) for m in self.singles], dim=1)
        return self.head(self.embedding(sparse, dense, seqs))  # (B, T) logits
