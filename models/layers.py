"""Building blocks shared by the multi-task models: MLP, batched experts, gates, towers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """Linear + ReLU (+ dropout) layers; the last layer keeps its activation."""

    def __init__(self, in_dim: int, dims: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d in dims:
            layers += [nn.Linear(in_dim, d), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = d
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, out)
        return self.net(x)


class Experts(nn.Module):
    """E independent MLPs evaluated as one batched matmul (baddbmm) per layer.

    Layout is expert-major, (E, B, D), so no permute copies are needed between layers.
    Input (B, in) feeds every expert; input (E, B, in) gives each expert its own rows."""

    def __init__(self, n_experts: int, in_dim: int, dims: list[int]) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d in dims:
            bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation, per expert
            self.weights.append(
                nn.Parameter(torch.empty(n_experts, in_dim, d).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(n_experts, 1, d).uniform_(-bound, bound)))
            in_dim = d
        self.n_experts = n_experts
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:  # (B, in) or (E, B, in) -> (E, B, out)
        h = x.unsqueeze(0).expand(self.n_experts, -1, -1) if x.dim() == 2 else x
        for w, b in zip(self.weights, self.biases, strict=True):
            h = torch.baddbmm(b, h, w).relu_()
        return h


class Gate(nn.Module):
    """Softmax mixture of expert outputs: one weight per expert."""

    def __init__(self, in_dim: int, n_experts: int) -> None:
        super().__init__()
        self.logits = nn.Linear(in_dim, n_experts)

    def weights(self, x: Tensor) -> Tensor:  # (B, in) -> (B, E), rows sum to 1
        return self.logits(x).softmax(-1)

    def forward(self, x: Tensor, experts: Tensor) -> Tensor:  # (B,in), (E,B,D) -> (B,D)
        return torch.einsum("be,ebd->bd", self.weights(x).to(experts.dtype), experts)


class Towers(nn.Module):
    """One MLP + linear head per task, batched; returns one logit per task."""

    def __init__(self, n_tasks: int, in_dim: int, dims: list[int]) -> None:
        super().__init__()
        self.n_tasks = n_tasks
        self.hidden = Experts(n_tasks, in_dim, dims) if dims else None
        out_in = dims[-1] if dims else in_dim
        bound = 1.0 / math.sqrt(out_in)
        self.w = nn.Parameter(torch.empty(n_tasks, out_in, 1).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(n_tasks))

    def forward(self, x: Tensor) -> Tensor:  # (T, B, in) or (B, in) -> (B, T) logits
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_tasks, -1, -1)
        h = self.hidden(x) if self.hidden is not None else x
        return torch.bmm(h, self.w).squeeze(-1).t() + self.b
