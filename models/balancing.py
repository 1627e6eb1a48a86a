"""Loss balancing across tasks: how the per-task losses become the one loss a step minimises.

- `sum`: the plain sum (every model's default).
- `uncertainty` (Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
  Losses for Scene Geometry and Semantics", CVPR 2018): a learnt log-variance s_t per task,
  loss = sum_t exp(-s_t) L_t + s_t / 2. That is the paper's classification form; its regression
  form (1/2 exp(-s_t) L_t + s_t / 2) is the same up to the shift s_t -> s_t - log 2, so one form
  serves both kinds of task.
- `gradnorm` (Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
  Multitask Networks", ICML 2018): learnt weights w_t (summing to T) such that each task's
  gradient norm G_t = ||d(w_t L_t)/dh|| on the shared representation h tends to
  mean(G) x r_t^alpha, r_t being the task's loss ratio L_t / L_t(first step) over its mean: a task
  that trains slower gets a larger weight. h is the shared input of the head (the feature
  embedding's output), the representation-gradient variant of the paper's last shared layer, so
  that every model kind with a shared input supports it. The weights follow their own loss
  (sum_t |G_t - target_t|); the model's parameters follow sum_t w_t L_t.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Weighting = Literal["sum", "uncertainty", "gradnorm"]


class Uncertainty(nn.Module):
    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        self.log_var = nn.Parameter(torch.zeros(n_tasks))

    def forward(self, per_task: Tensor, shared: Tensor | None) -> Tensor:
        return (torch.exp(-self.log_var) * per_task + 0.5 * self.log_var).sum()

    def weights(self) -> Tensor:
        return torch.exp(-self.log_var.detach())

    def after_step(self) -> None:
        pass


class GradNorm(nn.Module):
    def __init__(self, n_tasks: int, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.weight = nn.Parameter(torch.ones(n_tasks))
        self.register_buffer("initial", torch.zeros(n_tasks))  # L_t at the first step

    def forward(self, per_task: Tensor, shared: Tensor | None) -> Tensor:
        if shared is None or not shared.requires_grad:
            raise RuntimeError("gradnorm needs the model's shared representation of this step")
        loss = per_task.float()
        # L_t(0): each task's first positive loss (a batch may hold no sample of a task)
        self.initial.copy_(torch.where(self.initial > 0, self.initial, loss.detach()))
        # ||dL_t/dh|| per task: one backward pass into h (not the embedding) per task
        norms = torch.stack(
            [
                torch.autograd.grad(loss[t], shared, retain_graph=True)[0].float().norm()
                for t in range(len(loss))
            ]
        )
        g = self.weight * norms  # G_t = ||d(w_t L_t)/dh||, linear in w_t
        seen = self.initial > 0
        ratio = torch.where(seen, loss.detach() / self.initial.clamp_min(1e-12), 1.0)
        target = (g.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        # the weights' own gradient, set here; the total below reads them detached
        self.weight.grad = torch.autograd.grad((g - target).abs().sum(), self.weight)[0]
        return (self.weight.detach() * loss).sum()

    def weights(self) -> Tensor:
        return self.weight.detach()

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep the weights positive and summing to the number of tasks (the paper's renorm)."""
        self.weight.clamp_(min=1e-3)
        self.weight.mul_(len(self.weight) / self.weight.sum())


def balancer(kind: Weighting, n_tasks: int, alpha: float) -> nn.Module | None:
    """The module that combines the per-task losses (None: their plain sum)."""
    if kind == "uncertainty":
        return Uncertainty(n_tasks)
    if kind == "gradnorm":
        return GradNorm(n_tasks, alpha)
    return None
