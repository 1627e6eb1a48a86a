"""PLE: Progressive Layered Extraction (Tang et al., "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020).

Each level is a CGC: every task has `n_specific` experts of its own, and `n_shared` experts are
shared; task t's gate mixes its own and the shared experts, fed by task t's input. Below the last
level a shared gate mixes all experts to feed the next level's shared experts. All experts of a
level run as one batched matmul."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers import Experts, Gate, Towers


class CGC(nn.Module):
    """One extraction level: T+1 inputs (one per task, then shared) -> T (+1) outputs."""

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_shared: int,
        n_specific: int,
        expert: list[int],
        last: bool,
    ) -> None:
        super().__init__()
        self.n_tasks, self.n_specific, self.n_shared, self.last = (
            n_tasks,
            n_specific,
            n_shared,
            last,
        )
        n_all = n_tasks * n_specific + n_shared
        self.experts = Experts(n_all, in_dim, expert)
        # which input row (task t or shared = T) each expert reads
        src = [t for t in range(n_tasks) for _ in range(n_specific)] + [n_tasks] * n_shared
        self.register_buffer("expert_input", torch.tensor(src), persistent=False)
        # task t's gate sees its own experts then the shared ones
        own = [[t * n_specific + k for k in range(n_specific)] for t in range(n_tasks)]
        shared = list(range(n_tasks * n_specific, n_all))
        self.register_buffer(
            "task_experts", torch.tensor([o + shared for o in own]), persistent=False
        )
        self.task_gates = nn.ModuleList(Gate(in_dim, n_specific + n_shared) for _ in range(n_tasks))
        self.shared_gate = None if last else Gate(in_dim, n_all)
        self.out_dim = self.experts.out_dim

    def gate_weights(self, inputs: Tensor) -> Tensor:  # (B, T+1, in) -> (B, T, S+K)
        return torch.stack([g.weights(inputs[:, t]) for t, g in enumerate(self.task_gates)], 1)

    def forward(self, inputs: Tensor) -> Tensor:  # (B, T+1, in) -> (B, T+1, D) (B, T, D if last)
        e = self.experts(inputs[:, self.expert_input])  # (B, E_all, D)
        per_task = e[:, self.task_experts]  # (B, T, S+K, D)
        out = torch.einsum("btk,btkd->btd", self.gate_weights(inputs), per_task)
        if self.shared_gate is None:
            return out
        shared = self.shared_gate(inputs[:, self.n_tasks], e)  # (B, D)
        return torch.cat([out, shared.unsqueeze(1)], dim=1)


class PLE(nn.Module):
    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_levels: int,
        n_shared: int,
        n_specific: int,
        expert: list[int],
        tower: list[int],
    ) -> None:
        super().__init__()
        self.n_tasks = n_tasks
        levels = []
        for i in range(n_levels):
            levels.append(
                CGC(in_dim, n_tasks, n_shared, n_specific, expert, last=i == n_levels - 1)
            )
            in_dim = levels[-1].out_dim
        self.levels = nn.ModuleList(levels)
        self.towers = Towers(n_tasks, in_dim, tower)

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        h = x.unsqueeze(1).expand(-1, self.n_tasks + 1, -1)  # every task and shared read x
        for level in self.levels:
            h = level(h)
        return self.towers(h)
