"""models: shapes for every config, gates that mix, a learnable toy task, safe checkpoints."""

from __future__ import annotations

import pytest
import torch

from models.embedding import EmbeddingSpec, Sequence
from models.mmoe import MMoE
from models.ple import CGC, PLE
from models.registry import build_model
from tasks.training.tensors import window

SPEC = EmbeddingSpec(
    sparse=(("user", 30), ("item", 50), ("cat", 6)),
    n_dense=2,
    extra_tables=(("word", 40),),
    sequences=(Sequence("hist_item", "item", "item"), Sequence("words", "word")),
    dim=8,
)
CONFIGS = [
    ("shared_bottom", {"bottom": [32, 16], "tower": [8]}),
    ("shared_bottom", {"bottom": [16], "tower": []}),
    ("mmoe", {"n_experts": 3, "expert": [32, 16], "tower": [8]}),
    ("mmoe", {"n_experts": 1, "expert": [16], "tower": []}),
    ("ple", {"n_levels": 1, "n_shared": 1, "n_specific": 1, "expert": [16], "tower": [8]}),
    ("ple", {"n_levels": 3, "n_shared": 2, "n_specific": 3, "expert": [32, 16], "tower": [8]}),
    ("ple", {"n_levels": 2, "n_shared": 0, "n_specific": 2, "expert": [16], "tower": [8]}),
    ("esmm", {"tower": [16, 8]}),
    ("aitm", {"bottom": [16], "tower": [8]}),
    ("aitm", {"bottom": [16, 8], "tower": [], "calibration_weight": 0.0}),
]


def inputs(b: int, gen: torch.Generator | None = None):
    sparse = torch.stack([torch.randint(0, n, (b,), generator=gen) for _, n in SPEC.sparse], 1)
    seqs = (
        torch.randint(0, 50, (b, 7), generator=gen),
        torch.randint(0, 40, (b, 5), generator=gen),
    )
    return sparse, torch.randn(b, 2, generator=gen), seqs


@pytest.mark.parametrize("kind,cfg", CONFIGS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CONFIGS)])
@pytest.mark.parametrize("batch", [1, 5])
def test_output_is_one_logit_per_task_and_a_batch_of_one_keeps_its_dimension(kind, cfg, batch):
    model = build_model(SPEC, {"kind": kind, **cfg}, 4)
    out = model(*inputs(batch))
    assert out.shape == (batch, 4)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.net.head.parameters())


def test_models_return_logits_not_probabilities():
    torch.manual_seed(0)
    model = build_model(SPEC, {"kind": "mmoe", "n_experts": 2, "expert": [16], "tower": [8]}, 2)
    with torch.no_grad():
        model.net.head.towers.b.copy_(torch.tensor([8.0, -8.0]))  # a sigmoid could not leave [0, 1]
        out = model(*inputs(64))
    assert (out[:, 0] > 1).all() and (out[:, 1] < 0).all()


def test_mmoe_gates_are_distributions_over_experts():
    m = MMoE(12, 3, 4, [8], [4])
    w = m.gate_weights(torch.randn(9, 12))
    assert w.shape == (9, 3, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(9, 3))
    assert (w >= 0).all()


def test_ple_counts_shared_and_specific_experts_independently():
    level = CGC(10, n_tasks=2, n_shared=3, n_specific=2, expert=[8], last=False)
    assert level.experts.n_experts == 2 * 2 + 3
    h = tuple(torch.randn(3, 6, 10))  # tasks + shared, each (batch, in)
    w = level.gate_weights(h)
    assert w.shape == (6, 2, 2 + 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(6, 2))
    assert [o.shape for o in level(h)] == [(6, 8)] * 3  # task outputs + shared for the next level
    last = CGC(10, n_tasks=2, n_shared=3, n_specific=2, expert=[8], last=True)
    assert [o.shape for o in last(h)] == [(6, 8)] * 2


def test_ple_task_experts_only_see_their_own_input():
    level = CGC(4, n_tasks=2, n_shared=1, n_specific=1, expert=[3], last=True)
    h = torch.randn(3, 5, 4, requires_grad=True)
    level(tuple(h))[0].sum().backward()  # task 0's output
    assert h.grad[1].abs().sum() == 0  # task 1's input does not reach it
    assert h.grad[0].abs().sum() > 0 and h.grad[2].abs().sum() > 0


@pytest.mark.parametrize(
    "kind,cfg",
    [CONFIGS[0], CONFIGS[2], CONFIGS[5], CONFIGS[8]],
    ids=["shared_bottom", "mmoe", "ple", "aitm"],
)
def test_loss_falls_on_a_learnable_toy_task(kind, cfg):
    """Task 0 = item in the first half; task 1 = user's parity: both learnable from the ids, so
    the loss on samples the model never trained on falls too."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(SPEC, {"kind": kind, **cfg}, 2)
    train, test = inputs(1024, gen), inputs(1024, gen)

    def label(sparse: torch.Tensor) -> torch.Tensor:
        return torch.stack([(sparse[:, 1] < 25).float(), (sparse[:, 0] % 2).float()], 1)

    def held_out() -> float:
        with torch.no_grad():
            logits = model(*test)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, label(test[0])).item()

    before = held_out()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(*train), label(train[0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < 0.3 * before, (before, held_out())


def test_pooling_ignores_padding():
    torch.manual_seed(0)
    emb = build_model(
        SPEC, {"kind": "mmoe", "n_experts": 1, "expert": [4], "tower": []}, 1
    ).net.embedding
    sparse, dense, (items, words) = inputs(3)
    items[:, :3] = 0
    padded = emb(sparse, dense, (items, words))
    trimmed = emb(sparse, dense, (items[:, 3:], words))
    torch.testing.assert_close(padded, trimmed)


def test_history_window_takes_the_last_events_strictly_before():
    # flat history (row 0 = padding) of two users: user A rows 1..4, user B rows 5..6
    start, length = torch.tensor([0, 0, 4, 4]), torch.tensor([0, 3, 1, 2])
    idx = window(start, length, 2)
    assert idx.tolist() == [[0, 0], [2, 3], [0, 5], [5, 6]]


def test_ple_model_has_no_unused_experts():
    m = PLE(8, 2, n_levels=2, n_shared=1, n_specific=1, expert=[4], tower=[])
    out = m(torch.randn(3, 8))
    out.sum().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in m.levels[0].experts.parameters()
    )
