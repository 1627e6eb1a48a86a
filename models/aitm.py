"""AITM: Adaptive Information Transfer Multi-task (Xi et al., "Modeling the Sequential
Dependence among Audience Multi-step Conversions with Multi-task Learning in Targeted Display
Advertising", KDD 2021).

For tasks that follow one another (impression -> click -> conversion; KuaiSAR's like, follow and
forward follow a click), each task has its own tower on the shared embedding, giving q_t. What
task t-1 learnt flows into task t: the AIT module attends over {transfer(z_{t-1}), q_t} (one
query/key/value projection each, softmax over the two, scaled by sqrt(d)), giving z_t; z_0 =
q_0. Each z_t goes to the task's output MLP. The behavioural expectation calibrator adds
`calibration_weight` x mean(max(p_t - p_{t-1}, 0)): a later step of the funnel should not be
more likely than the one before it. The order of train.tasks is the funnel's."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import MLP


class AIT(nn.Module):
    """Attention over the transferred information and the task's own representation."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # the paper's h1, h2, h3 in one matmul
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, transferred: Tensor, own: Tensor) -> Tensor:  # (B, d), (B, d) -> (B, d)
        u = torch.stack([transferred, own], dim=1)  # (B, 2, d)
        q, k, v = self.qkv(u).chunk(3, dim=-1)
        w = ((q * k).sum(-1) * self.scale).softmax(-1)  # (B, 2)
        return (w.unsqueeze(-1) * v).sum(1)


class AITMHead(nn.Module):
    def __init__(
        self, in_dim: int, n_tasks: int, bottom: list[int], tower: list[int], weight: float
    ) -> None:
        super().__init__()
        self.bottoms = nn.ModuleList(MLP(in_dim, bottom) for _ in range(n_tasks))
        d = self.bottoms[0].out_dim
        self.transfer = nn.ModuleList(MLP(d, [d]) for _ in range(n_tasks - 1))
        self.ait = nn.ModuleList(AIT(d) for _ in range(n_tasks - 1))
        self.towers = nn.ModuleList(
            nn.Sequential(MLP(d, tower), nn.Linear(tower[-1] if tower else d, 1))
            for _ in range(n_tasks)
        )
        self.weight = weight
        self.aux_loss: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        z = [self.bottoms[0](x)]
        for t in range(1, len(self.bottoms)):
            z.append(self.ait[t - 1](self.transfer[t - 1](z[-1]), self.bottoms[t](x)))
        logits = torch.cat([tower(h) for tower, h in zip(self.towers, z, strict=True)], dim=1)
        if self.weight > 0 and logits.shape[1] > 1:
            p = torch.sigmoid(logits.float())
            self.aux_loss = self.weight * (p[:, 1:] - p[:, :-1]).clamp_min(0).sum(1).mean()
        return logits


class AITMConfig(ModelConfig):
    kind: Literal["aitm"]
    FUNNEL: ClassVar[bool] = True  # train.tasks in the funnel's order, all binary
    bottom: list[PositiveInt] = [256, 128]  # each task's tower to q_t
    tower: list[PositiveInt] = [64]  # each task's output MLP on z_t
    calibration_weight: float = Field(0.6, ge=0)  # the calibrator's weight (the paper's alpha)

    def head(self, in_dim: int, n_tasks: int) -> nn.Module:
        return AITMHead(in_dim, n_tasks, self.bottom, self.tower, self.calibration_weight)
