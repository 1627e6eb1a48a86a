"""PLE: Progressive Layered Extraction (Tang et al., "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020).

Each level is a CGC: every task has `n_specific` experts of its own, and `n_shared` experts are
shared; task t's gate mixes its own and the shared experts, fed by task t's input. Below the last
level a shared gate mixes all experts to feed the next level's shared experts. All experts of a
level run as one batched matmul."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import Experts, Gate, Towers

Inputs = tuple[Tensor, ...]  # one (B, D) tensor per task, then the shared one


class CGC(nn.Module):
    """One extraction level: T+1 inputs (one per task, then shared) -> T (+1) outputs, task-major."""

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
        # experts are ordered task 0's K specific, ..., task T-1's K specific, then S shared
        self.experts = Experts(n_tasks * n_specific + n_shared, in_dim, expert)
        self.task_gates = nn.ModuleList(Gate(in_dim, n_specific + n_shared) for _ in range(n_tasks))
        # below the last level a shared gate feeds the next level's shared experts, if any
        self.shared_gate = (
            None if last or not n_shared else Gate(in_dim, n_tasks * n_specific + n_shared)
        )
        self.out_dim = self.experts.out_dim

    def gate_weights(self, inputs: Inputs) -> Tensor:  # T+1 x (B, in) -> (B, T, K+S)
        return torch.stack([g.weights(inputs[t]) for t, g in enumerate(self.task_gates)], 1)

    def forward(self, inputs: Inputs) -> Inputs:  # T+1 x (B, in) -> T+1 (T if last) x (B, D)
        T, K, S = self.n_tasks, self.n_specific, self.n_shared
        # each expert reads its task's input (specific) or the shared one; tuples, not slices,
        # so the backward pass has no zero-filled gradient buffers
        if all(x is inputs[0] for x in inputs):  # first level: everyone reads the same x
            e = self.experts(inputs[0])
        else:
            e = self.experts(
                torch.stack([inputs[t] for t in range(T) for _ in range(K)] + [inputs[T]] * S)
            )
        experts = e.unbind(0)  # T*K+S x (B, D)
        shared = experts[T * K :]
        w = self.gate_weights(inputs).to(e.dtype)
        out = []
        for t in range(T):
            mine = experts[t * K : (t + 1) * K] + shared
            out.append(sum(w[:, t, k, None] * x for k, x in enumerate(mine)))
        if self.shared_gate is not None:  # the next level's shared input mixes all experts
            ws = self.shared_gate.weights(inputs[T]).to(e.dtype)
            out.append(sum(ws[:, k, None] * x for k, x in enumerate(experts)))
        elif not self.last:
            out.append(inputs[T])  # no shared experts: nothing reads it, keep the shape
        return tuple(out)


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

    def mean_gate_weights(self, x: Tensor) -> list[Tensor]:  # (B, in) -> [(T, K+S)] per level
        """Each level's task gates averaged over the batch: own experts first, then shared."""
        h: Inputs = (x,) * (self.n_tasks + 1)
        out = []
        for level in self.levels:
            out.append(level.gate_weights(h).mean(0))
            h = level(h)
        return out

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        h: Inputs = (x,) * (self.n_tasks + 1)  # every task and the shared experts read x
        for level in self.levels:
            h = level(h)
        return self.towers(torch.stack(h))  # (T, B, D) -> (B, T)


class PLEConfig(ModelConfig):
    kind: Literal["ple"]
    n_levels: int = Field(2, ge=1, le=8)
    n_shared: int = Field(1, ge=0, le=64)
    n_specific: int = Field(1, ge=1, le=64)
    expert: list[PositiveInt] = [256, 128]
    tower: list[PositiveInt] = [64]

    def head(self, in_dim: int, n_tasks: int) -> nn.Module:
        return PLE(
            in_dim, n_tasks, self.n_levels, self.n_shared, self.n_specific, self.expert, self.tower
        )
