"""Shared-Bottom multi-task model (Caruana, "Multitask Learning", Machine Learning 1997).

One bottom MLP shared by all tasks, then one tower per task."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import PositiveInt
from torch import Tensor, nn

from models.config import ModelConfig
from models.embedding import EmbeddingSpec
from models.layers import MLP, Towers


class SharedBottom(nn.Module):
    def __init__(self, in_dim: int, n_tasks: int, bottom: list[int], tower: list[int]) -> None:
        super().__init__()
        self.bottom = MLP(in_dim, bottom)
        self.towers = Towers(n_tasks, self.bottom.out_dim, tower)

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        return self.towers(self.bottom(x))


class SharedBottomConfig(ModelConfig):
    kind: Literal["shared_bottom"]
    bottom: list[PositiveInt] = [256, 128]
    tower: list[PositiveInt] = [64]

    def head(self, in_dim: int, n_tasks: int) -> nn.Module:
        return SharedBottom(in_dim, n_tasks, bottom=self.bottom, tower=self.tower)


class SingleTask(nn.Module):
    """One whole network per task (own embedding, bottom and tower), nothing shared, trained
    side by side (their losses add up but touch disjoint parameters, so each learns as if
    alone): the baseline every multi-task model is measured against."""

    def __init__(self, spec: EmbeddingSpec, cfg: SingleTaskConfig, n_tasks: int, sparse: bool):
        super().__init__()
        one = SharedBottomConfig(kind="shared_bottom", bottom=cfg.bottom, tower=cfg.tower)
        self.singles = nn.ModuleList(one.build(spec, 1, sparse) for _ in range(n_tasks))

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        return torch.cat([m(sparse, dense, seqs) for m in self.singles], dim=1)


class SingleTaskConfig(ModelConfig):
    kind: Literal["single_task"]
    SHARED_INPUT: ClassVar[bool] = False  # one embedding per task
    bottom: list[PositiveInt] = [256, 128]
    tower: list[PositiveInt] = [64]

    def build(self, spec: EmbeddingSpec, n_tasks: int, sparse: bool) -> nn.Module:
        return SingleTask(spec, self, n_tasks, sparse)
