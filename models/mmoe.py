"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018).

Shared experts; each task mixes them with its own softmax gate, then has its own tower."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers import Experts, Gate, Towers


class MMoE(nn.Module):
    def __init__(
        self, in_dim: int, n_tasks: int, n_experts: int, expert: list[int], tower: list[int]
    ) -> None:
        super().__init__()
        self.experts = Experts(n_experts, in_dim, expert)
        self.gates = nn.ModuleList(Gate(in_dim, n_experts) for _ in range(n_tasks))
        self.towers = Towers(n_tasks, self.experts.out_dim, tower)

    def gate_weights(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T, E), rows sum to 1
        return torch.stack([g.weights(x) for g in self.gates], dim=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        e = self.experts(x)  # (B, E, D)
        mixed = torch.einsum("bte,bed->btd", self.gate_weights(x), e)  # (B, T, D)
        return self.towers(mixed)
