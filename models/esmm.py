"""ESMM: Entire Space Multi-task Model (Ma et al., "Entire Space Multi-Task Model: An Effective
Approach for Estimating Post-Click Conversion Rate", SIGIR 2018).

A CTR tower and a CVR tower over the one shared embedding. The conversion is never fit on the
clicked samples alone (the sample selection bias of a CVR model trained after the click): it
is trained on every impression as pCTCVR = pCTR x pCVR, so both towers learn from the entire
space. Generalised to a funnel of tasks: task 0 is the click, and every later task k is a
post-click action, p_k = p_click x p(k | click), its own tower learning p(k | click). So the
first of train.tasks must be the click (KuaiSAR: click, then long_view, like, follow, forward).
Logits out, like every model: logit(p_click x p(k | click)), in closed form."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import PositiveInt
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import Towers


def chained_logits(raw: Tensor) -> Tensor:
    """(B, T) tower logits (click a, then each task given the click b) -> (B, T) logits of
    p_click and of p_click x p(k | click). In closed form, logit(sigmoid(a) sigmoid(b)) =
    -log(e^-a + e^-b + e^-(a+b)): one logsumexp, exact at both ends and the same in any runtime
    (log(1 - p) through expm1 was not: ONNX has no expm1, and exp(x) - 1 loses the digits where
    p is near 1)."""
    raw = raw.float()
    if raw.shape[1] == 1:
        return raw
    a, b = raw[:, :1].expand(-1, raw.shape[1] - 1), raw[:, 1:]
    chained = -torch.logsumexp(torch.stack([-a, -b, -(a + b)]), dim=0)
    return torch.cat([raw[:, :1], chained], dim=1)


class ESMM(nn.Module):
    def __init__(self, in_dim: int, n_tasks: int, tower: list[int]) -> None:
        super().__init__()
        self.towers = Towers(n_tasks, in_dim, tower)  # one whole MLP per task, batched

    def conditional(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T): p_click, p(k | click)
        return torch.sigmoid(self.towers(x).float())

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, T) logits
        return chained_logits(self.towers(x))


class ESMMConfig(ModelConfig):
    kind: Literal["esmm"]
    FUNNEL: ClassVar[bool] = True  # train.tasks in the funnel's order, all binary
    tower: list[PositiveInt] = [256, 128, 64]  # each task's MLP on the shared embedding

    def head(self, in_dim: int, n_tasks: int) -> nn.Module:
        return ESMM(in_dim, n_tasks, self.tower)
