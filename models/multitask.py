"""A multi-task recommender: the network its kind's config builds (models.registry); logits out."""

from __future__ import annotations

from torch import Tensor, nn

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

    def auxiliary_loss(self) -> Tensor | None:
        """Extra training losses of the last forward pass (SESRec's InfoNCE and triplet), if any."""
        return getattr(self.net, "aux_loss", None)

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        return self.net(sparse, dense, seqs)  # (B, T) logits
