"""The base of every model kind's options: one config class beside each model, validated from
its `models.NAME` section of params.yaml (unknown keys and out-of-range values fail, naming the key).

A config says what the model is (its own fields) and how it is trained (the fields below, which
go to the checkpoint's `fit`, not the architecture). Its defaults are those of params.yaml's
section named after the kind (checked by tests/test_params.py).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.balancing import Weighting
from models.embedding import EmbeddingSpec, FeatureEmbedding


class ConfigError(ValueError):
    """A model's options do not fit the rest of params; `key` names the option ('' for none)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key, self.message = key, message


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    # feed: trained on feed samples, the feed tasks | search: on search samples, search_click |
    # joint: on both together, the feed tasks plus search_click (the scenario as a task)
    scenario: Literal["feed", "search", "joint"] = "feed"
    # how this model is trained, apart from its architecture (None: the train section's):
    weight_decay: float | None = Field(None, ge=0)  # None: train.weight_decay
    # per train feed click, this many items the user was not served, drawn by popularity, as
    # extra click-0 samples: the task the ranking evaluation measures (0: impressions only).
    # None: train.sampled_negatives on a feed (or joint) model of KuaiSAR, else 0
    sampled_negatives: int | None = Field(None, ge=0, le=100)
    # what chooses the kept epoch: the mean valid AUC over the tasks, or the valid feed click
    # ranking (NDCG@10 on the candidates stage's valid candidates). None: train.select on a
    # feed (or joint) model of KuaiSAR, else auc
    select: Literal["auc", "ndcg@10"] | None = None
    # how the per-task losses combine (models.balancing): sum | uncertainty | gradnorm
    loss_weighting: Weighting = "sum"
    gradnorm_alpha: float = Field(1.5, gt=0)  # gradnorm: how strongly slow tasks are lifted

    # whether the tasks share one input representation (the head's): what gradnorm balances on
    SHARED_INPUT: ClassVar[bool] = True
    # whether the kind chains its tasks' probabilities (a funnel: ESMM, AITM): binary tasks only
    FUNNEL: ClassVar[bool] = False

    TRAINING: ClassVar[tuple[str, ...]] = (
        "scenario",
        "weight_decay",
        "sampled_negatives",
        "select",
    )

    def architecture(self) -> dict:
        """The fields that say what the model is (not kind, not how it is trained)."""
        return self.model_dump(exclude={"kind", *self.TRAINING})

    def check(self, embed_dim: int, histories: bool) -> None:
        """Raise ConfigError if this model cannot run with the rest of params: the embedding
        width `embed_dim`, and whether the source has feed/search histories (KuaiSAR)."""
        if self.scenario != "feed" and not histories:
            raise ConfigError(
                "scenario", f"{self.scenario} needs the search log: source.kind kuaisar"
            )
        if self.select not in (None, "auc") and (self.scenario == "search" or not histories):
            raise ConfigError(
                "select",
                f"{self.select} ranks feed clicks: it needs a feed model on KuaiSAR (use auc)",
            )
        if self.sampled_negatives and (self.scenario == "search" or not histories):
            raise ConfigError(
                "sampled_negatives", "draws negatives for feed clicks: a feed model on KuaiSAR"
            )
        if self.loss_weighting == "gradnorm" and not self.SHARED_INPUT:
            raise ConfigError(
                "loss_weighting",
                f"gradnorm balances gradients on a representation all tasks share; {self.kind} "
                "has none (use uncertainty or sum)",
            )

    def build(self, spec: EmbeddingSpec, n_tasks: int, sparse: bool) -> nn.Module:
        """The whole model: (sparse, dense, sequences) -> (B, n_tasks) logits. By default the
        kind's `head` on the pooled feature embedding."""
        return Pooled(spec, self, n_tasks, sparse)

    def head(self, in_dim: int, n_tasks: int) -> nn.Module:
        """A multi-task head on a (B, in_dim) input -> (B, n_tasks) logits."""
        raise NotImplementedError(f"model kind {self.kind!r} builds a whole model (build)")


class Pooled(nn.Module):
    """The feature embedding (pooled histories, models.embedding) and a multi-task head on it."""

    def __init__(self, spec: EmbeddingSpec, cfg: ModelConfig, n_tasks: int, sparse: bool) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, sparse=sparse)
        self.head = cfg.head(spec.out_dim, n_tasks)
        self.shared: Tensor | None = None  # the last training step's head input (gradnorm)

    @property
    def aux_loss(self) -> Tensor | None:
        """The head's extra training loss of the last forward pass (AITM's calibrator), if any."""
        return getattr(self.head, "aux_loss", None)

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        h = self.embedding(sparse, dense, seqs)
        self.shared = h if self.training else None
        return self.head(h)  # (B, T) logits
