"""ESMM: Entire Space Multi-task Model (Ma et al., "Entire Space Multi-Task Model: An Effective
Approach for Estimating Post-Click Conversion Rate", SIGIR 2018).

A CTR tower and a CVR tower over the one shared embedding. The conversion is never fit on the
clicked samples alone (the sample selection bias of a CVR model trained after the click): it
is trained on every impression as pCTCVR = pCTR x pCVR, so both towers learn from the entire
space. Generalised to a funnel of tasks: task 0 is the click, and every later task k is a
post-click action, p_k = p_click x p(k | click), its own tower learning p(k | click). So the
first of train.tasks must be the click (KuaiSAR: click, then long_view, like, follow, forward).
Logits out, like every model: logit(p_click x p(k | click)), computed in log space."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import PositiveInt
from torch import Tensor, nn
from torch.nn import functional as F

from models.config import ModelConfig
from models.layers import Towers


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def chained_logits(raw: Tensor) -> Tensor:
    """(B, T) tower logits (click, then each task given the click) -> (B, T) logits of
    p_click and of p_click x p(k | click)."""
    raw = raw.float()
    if raw.shape[1] == 1:
        return raw
    log_p = F.logsigmoid(raw[:, :1]) + F.logsigmoid(raw[:, 1:])  # log(pCTR pCVR)
    return torch.cat([raw[:, :1], log_p - log1mexp(log_p)], dim=1)


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
