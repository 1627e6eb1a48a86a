"""A multi-task recommender: the network its kind's config builds (models.registry); logits out."""

from __future__ import annotations

from torch import Tensor, nn

from models.balancing import balancer
from models.config import ModelConfig
from models.embedding import EmbeddingSpec


class MultiTaskModel(nn.Module):
    """`cfg.build`'s network: a head on the pooled feature embedding (models.config.Pooled), or a
    whole model of its own (SESRec reads the histories step by step; single_task is one network
    per task)."""

    def __init__(
        self, spec: EmbeddingSpec, cfg: ModelConfig, n_tasks: int, sparse: bool = False
    ) -> None:
        super().__init__()
        self.kind = cfg.kind
        self.net = cfg.build(spec, n_tasks, sparse)
        # how the per-task losses combine (models.balancing; None: their sum)
        self.balance = balancer(cfg.loss_weighting, n_tasks, cfg.gradnorm_alpha)

    def auxiliary_loss(self) -> Tensor | None:
        """Extra training losses of the last forward pass (SESRec's InfoNCE and triplet, AITM's
        calibrator), if any."""
        return getattr(self.net, "aux_loss", None)

    def combine(self, per_task: Tensor) -> Tensor:
        """The step's loss from the per-task losses (T,) of the last forward pass."""
        if self.balance is None:
            return per_task.sum()
        return self.balance(per_task, getattr(self.net, "shared", None))

    def after_step(self) -> None:
        if self.balance is not None:
            self.balance.after_step()

    def loss_weights(self) -> list[float] | None:
        """The learnt task weights (uncertainty: exp(-s_t); gradnorm: w_t), None for a sum."""
        return None if self.balance is None else self.balance.weights().tolist()

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        return self.net(sparse, dense, seqs)  # (B, T) logits
