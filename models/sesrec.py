"""SESRec: search-enhanced sequential recommendation with disentangled search interest (Si, Sun,
Zhang, Xu, Zang, Song, Wen: "When Search Meets Recommendation: Learning Disentangled Search
Representation for Recommendation", SIGIR 2023, arXiv:2305.10822).

What is kept from the paper, on sarflow's inputs (the features stage's histories):
- two small Transformer encoders: one over the feed history (clicked items), one over the search
  history (one step per search session: its query words plus the item it led to, its first click
  or else its first shown item); with `time_gaps`, each step also carries its age at the sample's
  time (bucketed, tasks.kuaisar.spec.AGE_HOURS), so "searched this category yesterday" differs from
  "a month ago" (an addition to the paper, whose encoders see order only);
- an InfoNCE loss aligning each query with its item (in-batch negatives);
- co-attention between the two encoded histories: each step gets a similarity score to the other
  behaviour, which splits each history into a *similar* part (score) and a *dissimilar* part
  (1 - score); a triplet loss pulls the two similar parts together and pushes each away from its
  own dissimilar part;
- target attention of the candidate item over all / similar / dissimilar parts of each history;
- an MLP on the sample's own fields plus those interest vectors, with one tower per task.

Ablations (params): `search_history: false` drops the search encoder and everything fed by it;
`disentangle: false` keeps both histories but no co-attention split or triplet loss. The base
fields never include the pooled history features the other models get, so the no-search ablation
sees no search behaviour at all.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor, nn
from torch.nn import functional as F

from models.config import ConfigError, ModelConfig
from models.embedding import EmbeddingSpec, FeatureEmbedding
from models.layers import MLP, Towers

# the features stage's sequences this model reads, by name (see tasks.kuaisar.spec.FIELDS)
REC_ITEM, REC_CAT, REC_AGE, SRC_ITEM, SRC_CAT, SRC_AGE, SRC_WORD = (
    "rec_hist_item",
    "rec_hist_cat1",
    "rec_hist_age",
    "src_hist_item",
    "src_hist_cat1",
    "src_hist_age",
    "src_hist_word",
)


MAX_STEPS = 1024  # learned positions per encoder (features.history_len is at most 1000)


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:  # (B, L, D), (B, L) bool -> (B, D)
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class SequenceEncoder(nn.Module):
    """Learned positions + a Transformer encoder; padded steps come out as zeros."""

    def __init__(self, dim: int, length: int, n_layers: int, n_heads: int, dropout: float):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(length, dim))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, n_heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, L, D), (B, L) valid -> (B, L, D)
        # an empty history would make every attention row all-masked (NaN): let it see its
        # (zero) last step instead; its output is zeroed below like every padded step
        last = torch.arange(mask.shape[1], device=x.device) == mask.shape[1] - 1
        pad = ~mask & ~(~mask.any(1, keepdim=True) & last)
        h = self.encoder(self.norm(x + self.position[: x.shape[1]]), src_key_padding_mask=pad)
        return h * mask.unsqueeze(-1).to(h.dtype)


class TargetAttention(nn.Module):
    """The candidate item attends over a history's steps (scaled dot product, masked softmax);
    out: the attended vector and its element-wise product with the candidate (B, 2D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)

    def forward(self, target: Tensor, h: Tensor, mask: Tensor) -> Tensor:  # -> (B, D)
        logits = torch.einsum("bd,bld->bl", self.query(target), h) / h.shape[-1] ** 0.5
        w = logits.float().masked_fill(~mask, float("-inf")).softmax(1)
        w = torch.nan_to_num(w, nan=0.0).to(h.dtype)  # an empty history attends to nothing
        att = torch.einsum("bl,bld->bd", w, h)
        return torch.cat([att, att * target.to(att.dtype)], dim=1)


class CoAttention(nn.Module):
    """Affinity between the two histories -> a similarity score in (0, 1) for every step."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.affinity = nn.Linear(dim, dim, bias=False)

    def forward(
        self, r: Tensor, s: Tensor, r_mask: Tensor, s_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        a = torch.einsum("bld,bsd->bls", self.affinity(r), s) / r.shape[-1] ** 0.5  # (B, L, S)
        pair = r_mask.unsqueeze(2) & s_mask.unsqueeze(1)
        a = a.float().masked_fill(~pair, float("-inf"))
        # a step is as similar to the other behaviour as its best match there
        r_score = torch.sigmoid(a.amax(2)).nan_to_num(0.0) * r_mask  # (B, L)
        s_score = torch.sigmoid(a.amax(1)).nan_to_num(0.0) * s_mask  # (B, S)
        return r_score, s_score


class SESRecConfig(ModelConfig):
    """SESRec's options: feed and search histories through Transformer encoders, query and item
    aligned (InfoNCE), histories split into similar/dissimilar interests (triplet)."""

    kind: Literal["sesrec"]
    SHARED_INPUT: ClassVar[bool] = False  # a whole model: no one head input (gradnorm)
    # trained with weight decay: it overfits without it (BENCHMARKS.md)
    weight_decay: float | None = Field(0.001, ge=0)
    search_history: bool = True  # false: the ablation without search history
    disentangle: bool = True  # false: the ablation without the similar/dissimilar split
    time_gaps: bool = True  # each history step carries its age at the sample's time
    n_layers: int = Field(1, ge=1, le=8)  # Transformer layers of each encoder
    n_heads: int = Field(2, ge=1, le=16)  # must divide 2 * train.embed_dim
    dropout: float = Field(0.0, ge=0, lt=1)  # in the encoders (slow on CPU: 0 by default)
    bottom: list[PositiveInt] = [256, 128]
    tower: list[PositiveInt] = [64]
    contrastive_weight: float = Field(0.02, ge=0)  # weight of the query-item InfoNCE loss
    triplet_weight: float = Field(0.02, ge=0)  # weight of the similar/dissimilar triplet loss
    temperature: float = Field(0.1, gt=0)  # InfoNCE temperature
    margin: float = Field(0.5, ge=0)  # triplet margin (on unit vectors)
    max_contrastive_pairs: int = Field(1024, ge=2)  # query-item pairs per batch in the InfoNCE

    @model_validator(mode="after")
    def _ablation(self) -> SESRecConfig:
        if self.disentangle and not self.search_history:
            raise ValueError(
                "disentangle splits feed and search history into similar/dissimilar interests, "
                "so it needs search_history: true (set disentangle: false for the no-search ablation)"
            )
        return self

    def check(self, embed_dim: int, histories: bool) -> None:
        super().check(embed_dim, histories)
        if not histories:
            raise ConfigError(
                "kind",
                "sesrec, which reads feed and search histories: that needs source.kind kuaisar "
                "(a declared table has no histories)",
            )
        if (2 * embed_dim) % self.n_heads:
            raise ConfigError(
                "n_heads",
                f"{self.n_heads} must divide its item width 2 * train.embed_dim = {2 * embed_dim}",
            )

    def build(self, spec: EmbeddingSpec, n_tasks: int, sparse: bool) -> nn.Module:
        return SESRec(spec, n_tasks, self, sparse)


class SESRec(nn.Module):
    def __init__(self, spec: EmbeddingSpec, n_tasks: int, cfg: SESRecConfig, sparse: bool):
        super().__init__()
        names = {s.name for s in spec.sequences}
        needed = {REC_ITEM, REC_CAT, REC_AGE, SRC_ITEM, SRC_CAT, SRC_AGE, SRC_WORD}
        if not needed <= names:
            raise ValueError(
                f"sesrec reads the feed and search histories ({sorted(needed)}); these features "
                f"have {sorted(names) or 'none'} (a declared table has no histories)"
            )
        self.o = o = cfg
        self.seq_pos = {s.name: k for k, s in enumerate(spec.sequences)}
        # the sample's own fields, without the pooled histories of the other models
        self.fields = FeatureEmbedding(dataclasses.replace(spec, sequences=()), sparse=sparse)
        d = spec.dim
        dim = 2 * d  # an item is [item_id embedding; category embedding]
        self.item_col = self.fields.field_pos["item_id"]
        self.cat_col = self.fields.field_pos["cat1"]
        if o.time_gaps:  # a step's age bucket -> item space, added to the step
            self.age = nn.Linear(d, dim, bias=False)
        self.rec_encoder = SequenceEncoder(dim, MAX_STEPS, o.n_layers, o.n_heads, o.dropout)
        self.rec_attention = TargetAttention(dim)
        parts = 1
        if o.search_history:
            self.query = nn.Linear(d, dim)  # mean of the query's word embeddings -> item space
            self.src_encoder = SequenceEncoder(dim, MAX_STEPS, o.n_layers, o.n_heads, o.dropout)
            self.src_attention = TargetAttention(dim)
            parts += 1
            if o.disentangle:
                self.co_attention = CoAttention(dim)
                self.part_attention = nn.ModuleList(TargetAttention(dim) for _ in range(4))
                parts += 4
        # the candidate item, then per attention part (attended, attended * candidate)
        self.bottom = MLP(self.fields.spec.out_dim + dim * (1 + 2 * parts), list(o.bottom))
        self.towers = Towers(n_tasks, self.bottom.out_dim, list(o.tower))
        self.aux_loss: Tensor | None = None  # the last training forward's weighted extra losses

    def _lookup(self, ids: Tensor, table: str) -> Tensor:
        return self.fields.table(ids + self.fields.offset[table])

    def _items(self, item: Tensor, cat: Tensor) -> Tensor:
        return torch.cat([self._lookup(item, "item_id"), self._lookup(cat, "cat1")], -1)

    def _with_age(self, steps: Tensor, age: Tensor) -> Tensor:
        """History steps (B, L, D) plus their age bucket's vector when `time_gaps` is on."""
        return steps + self.age(self._lookup(age, "age")) if self.o.time_gaps else steps

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        o = self.o
        seq = {name: seqs[k] for name, k in self.seq_pos.items()}
        base = self.fields(sparse, dense)
        target = self._items(sparse[:, self.item_col], sparse[:, self.cat_col])  # (B, D)
        r_mask = seq[REC_ITEM] > 0
        r = self.rec_encoder(
            self._with_age(self._items(seq[REC_ITEM], seq[REC_CAT]), seq[REC_AGE]), r_mask
        )
        parts = [target, self.rec_attention(target, r, r_mask)]
        aux = []
        if o.search_history:
            b, n = seq[SRC_ITEM].shape
            words = seq[SRC_WORD].view(b, n, -1)  # (B, S, Q) query words of each session
            s_mask = (seq[SRC_ITEM] > 0) | (words > 0).any(-1)
            mean = masked_mean(self._lookup(words, "word").flatten(0, 1), (words > 0).flatten(0, 1))
            q = self.query(mean.view(b, n, -1))  # (B, S, D) each session's query in item space
            item = self._items(seq[SRC_ITEM], seq[SRC_CAT])
            s = self.src_encoder(q + self._with_age(item, seq[SRC_AGE]), s_mask)
            parts.append(self.src_attention(target, s, s_mask))
            if self.training and o.contrastive_weight > 0:
                aux.append(o.contrastive_weight * self._info_nce(q, item, seq[SRC_ITEM], s_mask))
            if o.disentangle:
                r_score, s_score = self.co_attention(r, s, r_mask, s_mask)
                r_score, s_score = (
                    r_score.unsqueeze(-1).to(r.dtype),
                    s_score.unsqueeze(-1).to(r.dtype),
                )
                r_sim, r_dis, s_sim, s_dis = (
                    r * r_score,
                    r * (1 - r_score),
                    s * s_score,
                    s * (1 - s_score),
                )
                for att, (h, m) in zip(
                    self.part_attention,
                    ((r_sim, r_mask), (r_dis, r_mask), (s_sim, s_mask), (s_dis, s_mask)),
                    strict=True,
                ):
                    parts.append(att(target, h, m))
                if self.training and o.triplet_weight > 0:
                    both = r_mask.any(1) & s_mask.any(1)
                    aux.append(
                        o.triplet_weight
                        * self._triplet(r_sim, r_dis, s_sim, s_dis, r_mask, s_mask, both)
                    )
        self.aux_loss = torch.stack(aux).sum() if aux else None
        x = torch.cat([base, *parts], dim=1)
        return self.towers(self.bottom(x))

    def _info_nce(self, q: Tensor, item: Tensor, item_ids: Tensor, mask: Tensor) -> Tensor:
        """Each query against its own item and the other sessions' items in the batch."""
        qs, its, ids = q[mask], item[mask], item_ids[mask]
        if len(qs) < 2:
            return q.sum() * 0.0
        if len(qs) > self.o.max_contrastive_pairs:  # a random subset keeps the matrix small
            keep = torch.randperm(len(qs), device=qs.device)[: self.o.max_contrastive_pairs]
            qs, its, ids = qs[keep], its[keep], ids[keep]
        logits = F.normalize(qs.float(), dim=-1) @ F.normalize(its.float(), dim=-1).t()
        logits = logits / self.o.temperature
        # the same item shown for another session is not a negative
        same = (ids.unsqueeze(0) == ids.unsqueeze(1)) & ~torch.eye(
            len(ids), dtype=torch.bool, device=ids.device
        )
        logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(qs), device=qs.device))

    def _triplet(self, r_sim, r_dis, s_sim, s_dis, r_mask, s_mask, rows) -> Tensor:
        """Similar parts of both histories close, each far from its own dissimilar part."""
        if not rows.any():
            return r_sim.sum() * 0.0
        pool = lambda h, m: F.normalize(masked_mean(h, m)[rows].float(), dim=-1)  # noqa: E731
        rs, rd, ss, sd = (
            pool(r_sim, r_mask),
            pool(r_dis, r_mask),
            pool(s_sim, s_mask),
            pool(s_dis, s_mask),
        )
        m = self.o.margin
        return F.triplet_margin_loss(rs, ss, rd, margin=m) + F.triplet_margin_loss(
            ss, rs, sd, margin=m
        )
