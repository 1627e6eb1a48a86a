"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018).

Shared experts; each task mixes them with its own softmax gate, then has its own tower.
With `one_gate=True` it is the paper's OMoE baseline: a single gate shared by all tasks."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import Experts, Towers


class MMoE(nn.Module):
    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_experts: int,
        expert: list[int],
        tower: list[int],
        one_gate: bool = False,
    ) -> None:
        super().__init__()
        self.n_tasks, self.n_experts = n_tasks, n_experts
        self.n_gates = 1 if one_gate else n_tasks
        self.experts = Experts(n_experts, in_dim, expert)
        # every task's gate reads the same input: all gates as one linear layer
        self.gates = nn.Linear(in_dim, self.n_gates * n_experts)
        self.towers = Towers(n_tasks, self.experts.out_dim, tower)

    def gate_weights(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T, E), rows sum to 1
        w = self.gates(x).view(-1, self.n_gates, self.n_experts).softmax(-1)
        return w.expand(-1, self.n_tasks, -1)  # OMoE: every task reads the one gate

    def mean_gate_weights(self, x: Tensor) -> list[Tensor]:  # (B, in) -> [(T, E)]
        """How much each task leans on each expert, averaged over the batch (one level)."""
        return [self.gate_weights(x).mean(0)]

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        e = self.experts(x)  # (E, B, D)
        mixed = torch.einsum("bte,ebd->tbd", self.gate_weights(x).to(e.dtype), e)  # (T, B, D)
        return self.towers(mixed)


class MMoEConfig(ModelConfig):
    kind: Literal["mmoe", "omoe"]  # omoe: one gate shared by all tasks (the paper's baseline)
    n_experts: int = Field(4, ge=1, le=64)
    expert: list[PositiveInt] = [256, 128]
    tower: list[PositiveInt] = [64]

    def head(self, in_dim: int, n_tasks: int) -> nn.Module:
        return MMoE(
            in_dim, n_tasks, self.n_experts, self.expert, self.tower, one_gate=self.kind == "omoe"
        )
