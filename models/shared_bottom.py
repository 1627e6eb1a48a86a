"""Shared-Bottom multi-task model (Caruana, "Multitask Learning", Machine Learning 1997).

One bottom MLP shared by all tasks, then one tower per task."""

from __future__ import annotations

from torch import Tensor, nn

from models.layers import MLP, Towers


class SharedBottom(nn.Module):
    def __init__(self, in_dim: int, n_tasks: int, bottom: list[int], tower: list[int]) -> None:
        super().__init__()
        self.bottom = MLP(in_dim, bottom)
        self.towers = Towers(n_tasks, self.bottom.out_dim, tower)

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        return self.towers(self.bottom(x))
