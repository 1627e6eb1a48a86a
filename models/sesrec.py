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
- co-attention between the two histories: each step gets a similarity score to the other
  behaviour, which splits each history into a *similar* part (score) and a *dissimilar* part
  (1 - score); a triplet loss pulls the two similar parts together and pushes each away from its
  own dissimilar part. The paper scores a step by its best match among the other history's
  encoded steps (`split_on: encoded`, `split_pool: max`); sarflow's default scores it by the
  share of the other history that is in its category (`same_category`, `mean`: two steps'
  affinity is a learned positive weight if they share a category, a learned constant if
  not), so a search category the feed clicks often is more similar than one it clicked once.
  On the default data that split tells the planted similar interests from the dissimilar ones
  at AUC 0.87, against 0.70 for learned category embeddings (`category`) and 0.51 for the
  paper's split (BENCHMARKS.md, "The split of search interests"). Its *order* is fixed by its
  form, not learned: an untrained model ranks the steps the same way; training sets only how
  much of a step goes to each part;
- target attention of the candidate item over all / similar / dissimilar parts of each history;
- an MLP on the sample's own fields plus those interest vectors, with one tower per task.

`search_match` (an addition, off in the paper's configuration): the candidate's category matched
against each search step's, as one indicator per age bucket ("searched this category 24-36 h
ago"); an un-normalised, hard-match read of the search history that softmax target attention
cannot give (its weights sum to 1, so "how well the best step matches" is lost). On the no-search
ablation it makes the *rule model*: the no-search model plus the planted rule (candidate category
x time since the user searched it) as an explicit, fitted input.

Ablations (params): `search_history: false` drops the search encoder and everything fed by it
(with `search_match` the model still reads the search steps' categories and ages, nothing else);
`disentangle: false` keeps both histories but no co-attention split or triplet loss. The base
fields never include the pooled history features the other models get, so the no-search ablation
sees no search behaviour at all.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal, NamedTuple

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


class EncoderLayer(nn.Module):
    """A post-norm Transformer encoder layer, the same function as
    `nn.TransformerEncoderLayer(dim, n_heads, 2 * dim, dropout, batch_first=True)` with its
    parameters under the same names (checkpoints load either way), computed in fewer, larger
    ops: one QKV matmul, heads folded into the batch, the key padding one additive bias of
    `baddbmm`. On 2 CPU cores PyTorch's layer spent a fifth of SESRec's step zero-filling and
    copying its packed in-projection's gradient (BENCHMARKS.md)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        # holds in_proj_weight/bias and out_proj, initialised as PyTorch's; its forward is unused
        self.self_attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.linear1 = nn.Linear(dim, 2 * dim)
        self.linear2 = nn.Linear(2 * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.n_heads, self.dropout = n_heads, dropout

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout else x

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        """x (B, L, D); key_bias (B * heads, 1, L): 0 for a step to attend to, -inf for padding."""
        b, n, d = x.shape
        h, hd = self.n_heads, d // self.n_heads
        qkv = F.linear(x, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias)
        q, k, v = (
            t.view(b, n, h, hd).transpose(1, 2).reshape(b * h, n, hd) for t in qkv.split(d, -1)
        )
        w = torch.baddbmm(key_bias, q, k.transpose(1, 2), alpha=hd**-0.5).softmax(-1)
        a = torch.bmm(self._drop(w), v).view(b, h, n, hd).transpose(1, 2).reshape(b, n, d)
        x = self.norm1(x + self._drop(self.self_attn.out_proj(a)))
        ff = self.linear2(self._drop(F.relu(self.linear1(x))))
        return self.norm2(x + self._drop(ff))


class EncoderStack(nn.Module):
    """`n_layers` EncoderLayers, named as in nn.TransformerEncoder (`layers.0`, ...)."""

    def __init__(self, dim: int, n_layers: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, n_heads, dropout) for _ in range(n_layers))

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, key_bias)
        return x


class SequenceEncoder(nn.Module):
    """Learned positions + a Transformer encoder; padded steps come out as zeros.

    Windows are right-aligned (the newest step last, padding first; tasks.training.tensors.
    window), and most are not full: on the default data the feed windows are 72% steps, the
    search windows 44%. With `buckets` > 0 the rows are grouped by width (from a row's first
    step to the window's end) into `buckets` ranges, and each group is encoded trimmed to its
    widest row, its steps keeping their positions; rows with no step are not encoded at all
    (their output is zeros either way). The same function as encoding every row padded to the
    window (a test compares outputs and gradients), with less arithmetic. 0: every row padded.
    Under tracing (torch.export, ONNX) the padded path runs: its shapes do not depend on data."""

    def __init__(
        self, dim: int, length: int, n_layers: int, n_heads: int, dropout: float, buckets: int = 0
    ):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(length, dim))
        nn.init.normal_(self.position, std=0.02)
        self.encoder = EncoderStack(dim, n_layers, n_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.n_heads, self.buckets = n_heads, buckets

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, L, D), (B, L) valid -> (B, L, D)
        if self.buckets and not _tracing():
            return self._bucketed(x, mask)
        return self._encode(x, mask, 0)

    def _encode(self, x: Tensor, mask: Tensor, offset: int) -> Tensor:
        """Rows whose steps sit at positions offset, offset + 1, ... of the window."""
        # an empty history would make every attention row all-masked (NaN): let it see its
        # (zero) last step instead; its output is zeroed below like every padded step
        last = torch.arange(mask.shape[1], device=x.device) == mask.shape[1] - 1
        pad = ~mask & ~(~mask.any(1, keepdim=True) & last)
        bias = torch.zeros(pad.shape, dtype=x.dtype, device=x.device).masked_fill_(pad, -math.inf)
        bias = bias.repeat_interleave(self.n_heads, 0).unsqueeze(1)  # (B * heads, 1, L)
        h = self.encoder(self.norm(x + self.position[offset : offset + x.shape[1]]), bias)
        return h * mask.unsqueeze(-1).to(h.dtype)

    def _bucketed(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, d = x.shape
        has = mask.any(1)
        width = torch.where(has, n - mask.to(torch.int8).argmax(1), 0)  # 0: no step
        rows, parts, lo = [], [], 0
        for k in range(self.buckets):
            hi = math.ceil(n * (k + 1) / self.buckets)
            group = ((width > lo) & (width <= hi)).nonzero().squeeze(1)
            lo = hi
            if len(group) == 0:
                continue
            w = int(width[group].max())
            h = self._encode(x[:, n - w :].index_select(0, group), mask[group, n - w :], n - w)
            rows.append(group)
            parts.append(F.pad(h, (0, 0, n - w, 0)))  # back to the window's width
        out = x.new_zeros(b, n, d)
        return out.index_copy(0, torch.cat(rows), torch.cat(parts)) if rows else out


class TargetAttention(nn.Module):
    """The candidate item attends over a history's steps (scaled dot product, masked softmax);
    `attend` computes several of them over one history at once."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)


def attend(
    heads: list[TargetAttention], target: Tensor, h: Tensor, mask: Tensor, scales: Tensor
) -> Tensor:
    """Each head's target attention over the steps of `h` scaled by its row of `scales`: head k
    attends over `h * scales[:, k]` (scale 1: the whole history; the co-attention score: its
    similar part; 1 - score: its dissimilar part), as one pair of bmm's instead of K scaled
    copies of the history: (q . s_l h_l) = s_l (q . h_l) and sum_l w_l s_l h_l = (w * s) @ h.

    target (B, D), h (B, L, D), mask (B, L) bool, scales (B, K, L) -> (B, K, 2D): per head
    the attended vector and its element-wise product with the candidate."""
    q = torch.stack([a.query(target) for a in heads], 1)  # (B, K, D)
    logits = torch.bmm(q, h.transpose(1, 2)) * (scales / h.shape[-1] ** 0.5)
    w = logits.float().masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(-1)
    w = torch.nan_to_num(w, nan=0.0).to(h.dtype)  # an empty history attends to nothing
    att = torch.bmm(w * scales, h)  # (B, K, D)
    return torch.cat([att, att * target.unsqueeze(1).to(att.dtype)], -1)


def search_match(cat: Tensor, steps: Tensor, age: Tensor, n_ages: int) -> Tensor:
    """Per row, whether a search step of each age bucket has the candidate's category: cat (B,)
    the candidate's, steps (B, S) and age (B, S) the search steps' categories and age buckets
    (0: padding, 1..n_ages - 1 as tasks.training.tensors.age_buckets numbers them) -> (B,
    n_ages - 1) long 0/1. An unknown category (0) matches nothing."""
    hit = (steps == cat.unsqueeze(1)) & (cat.unsqueeze(1) > 0) & (age > 0)  # (B, S)
    return (F.one_hot(age, n_ages)[..., 1:] * hit.unsqueeze(-1)).amax(1)


class CoAttention(nn.Module):
    """Affinity between the two histories -> a similarity score in (0, 1) for every step: the
    sigmoid of its affinity to the other history's steps, pooled by `pool`: "max" (as similar
    as its best match there) or "mean" (as similar as the other history is on average: a
    search category the feed clicks often scores higher than one it clicked once).

    The affinity of two steps is bilinear in their vectors (r, s: (B, L, D), (B, S, D)), or with
    `dim` None, softplus(`same`) * [same category] + `other`, two learned scalars, on category
    ids (r, s: (B, L), (B, S); 0, unknown, matches nothing): with "mean" pooling a step's score
    is then a learned, increasing function of the share of the other history in its category
    (the weight is kept positive, so training moves the split's level and slope, never its
    order)."""

    def __init__(self, dim: int | None, pool: Literal["max", "mean"] = "max") -> None:
        super().__init__()
        if dim is None:
            self.same = nn.Parameter(torch.tensor(4.0))  # softplus(4): a strong match
            self.other = nn.Parameter(torch.tensor(-1.0))
        else:
            self.affinity = nn.Linear(dim, dim, bias=False)
        self.pool = pool

    def forward(
        self, r: Tensor, s: Tensor, r_mask: Tensor, s_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        if r.dim() == 2:  # category ids
            same = (r.unsqueeze(2) == s.unsqueeze(1)) & (r.unsqueeze(2) > 0)  # (B, L, S)
            a = self.other + F.softplus(self.same) * same.float()
        else:
            a = torch.einsum("bld,bsd->bls", self.affinity(r), s) / r.shape[-1] ** 0.5
        pair = r_mask.unsqueeze(2) & s_mask.unsqueeze(1)
        if self.pool == "max":
            a = a.float().masked_fill(~pair, float("-inf"))
            r_best, s_best = a.amax(2), a.amax(1)
        else:
            a = a.float() * pair
            r_best = a.sum(2) / pair.sum(2).clamp_min(1)
            s_best = a.sum(1) / pair.sum(1).clamp_min(1)
        r_score = torch.sigmoid(r_best).nan_to_num(0.0) * r_mask  # (B, L)
        s_score = torch.sigmoid(s_best).nan_to_num(0.0) * s_mask  # (B, S)
        return r_score, s_score


class Encoded(NamedTuple):
    """A batch's encoded histories: feed (B, L, D) and search (B, S, D) steps, their masks, and
    per target attention head the scale of each step (B, K, L): 1 for the whole history, the
    co-attention score for its similar part, 1 - score for its dissimilar part."""

    r: Tensor
    r_mask: Tensor
    r_scales: Tensor
    s: Tensor | None = None
    s_mask: Tensor | None = None
    s_scales: Tensor | None = None

    def take(self, idx: Tensor) -> Encoded:
        """The rows `idx` of every tensor."""
        return Encoded(*(None if t is None else t[idx] for t in self))


def repeated_histories(seqs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor] | None:
    """Rows scored as candidates of one context come in runs with the same histories (ranking,
    full ranking, recommendations): (first row of each run, each row's run), or None where
    runs save little (fewer than half the rows repeat the row before: training batches)."""
    key = torch.cat([t.reshape(len(t), -1) for t in seqs], 1)
    starts = torch.ones(len(key), dtype=torch.bool, device=key.device)
    starts[1:] = (key[1:] != key[:-1]).any(1)
    n_runs = int(starts.sum())
    if n_runs > len(key) // 2:
        return None
    return starts.nonzero().squeeze(1), starts.cumsum(0) - 1


def _tracing() -> bool:
    """Under torch.export / ONNX export / jit tracing, where a data-dependent branch cannot be
    followed (the exported graph encodes every row)."""
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


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
    # the candidate's category against each search step's, one indicator per age bucket
    search_match: bool = True
    n_layers: int = Field(1, ge=1, le=8)  # Transformer layers of each encoder
    n_heads: int = Field(2, ge=1, le=16)  # must divide 2 * train.embed_dim
    dropout: float = Field(0.0, ge=0, lt=1)  # in the encoders (slow on CPU: 0 by default)
    # encoder rows grouped into this many width ranges, each trimmed to its widest row (the same
    # function with less arithmetic; 0: every row padded to the window; SequenceEncoder)
    length_buckets: int = Field(4, ge=0, le=64)
    bottom: list[PositiveInt] = [256, 128]
    tower: list[PositiveInt] = [64]
    contrastive_weight: float = Field(0.02, ge=0)  # weight of the query-item InfoNCE loss
    triplet_weight: float = Field(0.02, ge=0)  # weight of the similar/dissimilar triplet loss
    temperature: float = Field(0.1, gt=0)  # InfoNCE temperature
    margin: float = Field(0.5, ge=0)  # triplet margin (on unit vectors)
    # the similar/dissimilar split: its co-attention's inputs (the encoded steps, the steps'
    # category embeddings, or only whether two steps share a category) and how a step's
    # affinities to the other history are pooled
    split_on: Literal["encoded", "category", "same_category"] = "same_category"
    split_pool: Literal["max", "mean"] = "mean"
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
        self.n_ages = dict(spec.extra_tables)["age"]  # age buckets, 0 (padding) included
        if o.time_gaps:  # a step's age bucket -> item space, added to the step
            self.age = nn.Linear(d, dim, bias=False)
        encoder = (dim, MAX_STEPS, o.n_layers, o.n_heads, o.dropout, o.length_buckets)
        self.rec_encoder = SequenceEncoder(*encoder)
        self.rec_attention = TargetAttention(dim)
        self.rec_heads = [self.rec_attention]  # target attentions over the feed history
        self.src_heads: list[TargetAttention] = []  # over the search history
        parts = 1
        if o.search_history:
            self.query = nn.Linear(d, dim)  # mean of the query's word embeddings -> item space
            self.src_encoder = SequenceEncoder(*encoder)
            self.src_attention = TargetAttention(dim)
            self.src_heads = [self.src_attention]
            parts += 1
            if o.disentangle:
                split_dim = {"encoded": dim, "category": d, "same_category": None}[o.split_on]
                self.co_attention = CoAttention(split_dim, o.split_pool)
                self.part_attention = nn.ModuleList(TargetAttention(dim) for _ in range(4))
                sim_r, dis_r, sim_s, dis_s = self.part_attention
                self.rec_heads += [sim_r, dis_r]  # the feed history's similar, dissimilar part
                self.src_heads += [sim_s, dis_s]
                parts += 4
        n_match = self.n_ages - 1 if o.search_match else 0  # a match per age bucket
        # the candidate item, per attention part (attended, attended * candidate), the matches
        width = self.fields.spec.out_dim + dim * (1 + 2 * parts) + n_match
        self.bottom = MLP(width, list(o.bottom))
        self.towers = Towers(n_tasks, self.bottom.out_dim, list(o.tower))
        self.aux_loss: Tensor | None = None  # the last training forward's weighted extra losses

    def _lookup(self, ids: Tensor, table: str) -> Tensor:
        return self.fields.rows(ids + self.fields.offset[table])

    def _items(self, item: Tensor, cat: Tensor) -> Tensor:
        """[item embedding; category embedding] (..., 2d), one lookup for both."""
        ids = torch.stack(
            [item + self.fields.offset["item_id"], cat + self.fields.offset["cat1"]], -1
        )
        return self.fields.rows(ids).flatten(-2)

    def _with_age(self, steps: Tensor, age: Tensor) -> Tensor:
        """History steps (B, L, D) plus their age bucket's vector when `time_gaps` is on: the
        age projection applied to the few rows of the age table, then read with index_select
        (the same as projecting every step's age embedding, bias-free; F.embedding's backward
        into this ten-row table took 4.8 ms per feed batch on 2 cores, index_select's 1.0;
        CUDA keeps F.embedding, as FeatureEmbedding.rows does)."""
        if not self.o.time_gaps:
            return steps
        start = self.fields.offset["age"]
        rows = self.fields.table.weight[start : start + self.n_ages]
        vec = self.age(rows)
        if age.is_cuda:
            return steps + F.embedding(age, vec)
        return steps + vec.index_select(0, age.reshape(-1)).view(*age.shape, -1)

    def forward(self, sparse: Tensor, dense: Tensor, seqs: tuple[Tensor, ...] = ()) -> Tensor:
        seq = {name: seqs[k] for name, k in self.seq_pos.items()}
        base = self.fields(sparse, dense)
        target = self._items(sparse[:, self.item_col], sparse[:, self.cat_col])  # (B, D)
        groups = None if self.training or _tracing() else repeated_histories(seqs)
        if groups is None:
            h = self._encode(seq)
        else:  # candidates of one context: its histories encoded once
            first, group = groups
            h = self._encode({name: t[first] for name, t in seq.items()}).take(group)
        ra = attend(self.rec_heads, target, h.r, h.r_mask, h.r_scales)
        parts = [ra[:, 0]]
        if h.s is not None:
            sa = attend(self.src_heads, target, h.s, h.s_mask, h.s_scales)
            # the order the bottom layer reads: whole feed, whole search, then the four parts
            parts += [sa[:, 0], *ra[:, 1:].unbind(1), *sa[:, 1:].unbind(1)]
        if self.o.search_match:
            hits = search_match(sparse[:, self.cat_col], seq[SRC_CAT], seq[SRC_AGE], self.n_ages)
            parts.append(hits.to(base.dtype))
        x = torch.cat([base, target, *parts], dim=1)
        return self.towers(self.bottom(x))

    def search_similarity(self, seqs: tuple[Tensor, ...]) -> Tensor:
        """(B, S): each search step's co-attention score, the weight with which the step goes to
        the similar part of the search history (1 - score: the dissimilar part); 0 at padding.
        What tasks.evaluation.interests measures against the planted truth."""
        if not self.o.disentangle:
            raise ValueError("search_similarity needs a disentangled model (disentangle: true)")
        h = self._encode({name: seqs[k] for name, k in self.seq_pos.items()})
        assert h.s_scales is not None  # disentangle implies search_history
        return h.s_scales[:, 1]

    def _encode(self, seq: dict[str, Tensor]) -> Encoded:
        """Everything that depends on the histories alone (not on the candidate): the encoded
        histories and, with `disentangle`, each step's similar/dissimilar scales; in training
        also the extra losses (`aux_loss`)."""
        o = self.o
        r_mask = seq[REC_ITEM] > 0
        r = self.rec_encoder(
            self._with_age(self._items(seq[REC_ITEM], seq[REC_CAT]), seq[REC_AGE]), r_mask
        )
        whole = lambda m: torch.ones_like(m, dtype=r.dtype).unsqueeze(1)  # noqa: E731
        self.aux_loss = None
        if not o.search_history:
            return Encoded(r, r_mask, whole(r_mask))
        aux = []
        b, n = seq[SRC_ITEM].shape
        words = seq[SRC_WORD].view(b, n, -1)  # (B, S, Q) query words of each session
        s_mask = (seq[SRC_ITEM] > 0) | (words > 0).any(-1)
        mean = masked_mean(self._lookup(words, "word").flatten(0, 1), (words > 0).flatten(0, 1))
        q = self.query(mean.view(b, n, -1))  # (B, S, D) each session's query in item space
        item = self._items(seq[SRC_ITEM], seq[SRC_CAT])
        s = self.src_encoder(q + self._with_age(item, seq[SRC_AGE]), s_mask)
        if self.training and o.contrastive_weight > 0:
            aux.append(o.contrastive_weight * self._info_nce(q, item, seq[SRC_ITEM], s_mask))
        if not o.disentangle:
            h = Encoded(r, r_mask, whole(r_mask), s, s_mask, whole(s_mask))
        else:
            if o.split_on == "encoded":
                r_in, s_in = r, s
            elif o.split_on == "category":  # what the steps are about: their categories
                r_in, s_in = self._lookup(seq[REC_CAT], "cat1"), self._lookup(seq[SRC_CAT], "cat1")
            else:  # whether two steps are about the same category
                r_in, s_in = seq[REC_CAT], seq[SRC_CAT]
            r_score, s_score = self.co_attention(r_in, s_in, r_mask, s_mask)  # (B, L), (B, S)
            # each history as a whole, its similar part (score) and its dissimilar part (1 - score)
            r_scales = torch.stack([torch.ones_like(r_score), r_score, 1 - r_score], 1).to(r.dtype)
            s_scales = torch.stack([torch.ones_like(s_score), s_score, 1 - s_score], 1).to(s.dtype)
            h = Encoded(r, r_mask, r_scales, s, s_mask, s_scales)
            if self.training and o.triplet_weight > 0:
                both = r_mask.any(1) & s_mask.any(1)
                pooled = (
                    self._pooled(r, r_mask, r_scales[:, 1:]),  # feed similar, dissimilar
                    self._pooled(s, s_mask, s_scales[:, 1:]),  # search similar, dissimilar
                )
                aux.append(o.triplet_weight * self._triplet(*pooled, both))
        self.aux_loss = torch.stack(aux).sum() if aux else None
        return h

    @staticmethod
    def _pooled(h: Tensor, mask: Tensor, scales: Tensor) -> Tensor:
        """Masked means of `h * scales[:, k]` for each k (h is zero at padded steps): (B, K, D)."""
        count = mask.sum(1).clamp_min(1).to(h.dtype).view(-1, 1, 1)
        return torch.bmm(scales, h) / count

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

    def _triplet(self, r_pooled: Tensor, s_pooled: Tensor, rows: Tensor) -> Tensor:
        """Similar parts of both histories close, each far from its own dissimilar part;
        `*_pooled` (B, 2, D): each history's mean similar and mean dissimilar step."""
        if not rows.any():
            return r_pooled.sum() * 0.0
        unit = lambda x: F.normalize(x[rows].float(), dim=-1)  # noqa: E731
        rs, rd, ss, sd = (
            unit(r_pooled[:, 0]),
            unit(r_pooled[:, 1]),
            unit(s_pooled[:, 0]),
            unit(s_pooled[:, 1]),
        )
        m = self.o.margin
        return F.triplet_margin_loss(rs, ss, rd, margin=m) + F.triplet_margin_loss(
            ss, rs, sd, margin=m
        )
