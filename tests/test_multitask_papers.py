"""ESMM's entire-space chain, AITM's transfer and calibrator, and the loss balancing options
(uncertainty weighting, GradNorm) on toy problems whose answer is known."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from models.config import ConfigError
from models.esmm import chained_logits
from models.registry import build_model, model_config
from tests.test_models import SPEC, inputs


def test_esmm_later_tasks_are_the_click_times_their_conditional():
    torch.manual_seed(0)
    model = build_model(SPEC, {"kind": "esmm", "tower": [16]}, 3)
    x = inputs(64)
    with torch.no_grad():
        p = torch.sigmoid(model(*x))
        cond = model.net.head.conditional(model.net.embedding(*x))
    torch.testing.assert_close(p[:, 0], cond[:, 0])
    torch.testing.assert_close(p[:, 1:], cond[:, :1] * cond[:, 1:])  # pCTCVR = pCTR x pCVR
    assert (p[:, 1:] <= p[:, :1] + 1e-6).all()  # never more likely than the click


def test_esmm_chain_is_finite_at_the_extremes():
    raw = torch.tensor([[30.0, 30.0], [-30.0, -30.0], [0.0, 30.0], [30.0, -30.0]])
    out = chained_logits(raw)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        torch.sigmoid(out[:, 1]), torch.sigmoid(raw[:, 0]) * torch.sigmoid(raw[:, 1])
    )
    # against the definition in float64, where p is near 1, near 0 and in between
    grid = torch.tensor([-30.0, -8.0, -1.0, 0.0, 1.0, 8.0, 16.0, 30.0], dtype=torch.float64)
    a, b = (t.flatten() for t in torch.meshgrid(grid, grid, indexing="ij"))
    p = torch.sigmoid(a) * torch.sigmoid(b)
    want = torch.log(p) - torch.log1p(-p)
    finite = p < 1 - 1e-12  # float64 itself cannot say logit(p) beyond that
    got = chained_logits(torch.stack([a, b], 1).float())[:, 1].double()
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-4)


def test_esmm_learns_a_conversion_that_only_exists_after_a_click():
    """Click from the user's parity; conversion = click and item in the first half. The CVR
    tower learns p(convert | click) = [item < 25] from every impression."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(SPEC, {"kind": "esmm", "tower": [32]}, 2)
    x = inputs(2048, gen)
    click = (x[0][:, 0] % 2).float()
    y = torch.stack([click, click * (x[0][:, 1] < 25).float()], 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        loss = F.binary_cross_entropy_with_logits(model(*x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        cvr = model.net.head.conditional(model.net.embedding(*x))[:, 1]
    # p(convert | click) is identified where there are clicks (nothing constrains it elsewhere)
    first_half, clicked = x[0][:, 1] < 25, click > 0
    assert cvr[first_half & clicked].mean() > 0.8 and cvr[~first_half & clicked].mean() < 0.2


def test_aitm_later_tasks_read_the_earlier_ones_and_the_calibrator_penalises_inversions():
    torch.manual_seed(0)
    model = build_model(SPEC, {"kind": "aitm", "bottom": [16], "tower": [8]}, 3)
    head = model.net.head
    x = inputs(16)
    h = model.net.embedding(*x).detach().requires_grad_(True)
    out = head(h)
    # task 0 reads only its own tower; task 2 gets task 1's (and so task 0's) information
    g0 = torch.autograd.grad(
        out[:, 0].sum(), head.bottoms[2].parameters(), allow_unused=True, retain_graph=True
    )
    assert all(g is None or g.abs().sum() == 0 for g in g0)
    g2 = torch.autograd.grad(out[:, 2].sum(), head.bottoms[0].parameters(), allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in g2)
    p = torch.sigmoid(out.detach())
    want = 0.6 * (p[:, 1:] - p[:, :-1]).clamp_min(0).sum(1).mean()
    torch.testing.assert_close(model.auxiliary_loss().detach(), want)
    with torch.no_grad():  # a funnel in order has nothing to calibrate
        head.towers[0][-1].bias.fill_(20.0)
        head.towers[1][-1].bias.fill_(0.0)
        head.towers[2][-1].bias.fill_(-20.0)
        head(h)
    assert float(model.auxiliary_loss()) < 1e-4


def _train_balanced(weighting: str, scale: float, steps: int = 300) -> torch.nn.Module:
    """Two regression tasks on the same inputs, task 1's loss `scale` times larger."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = {"kind": "shared_bottom", "bottom": [16], "tower": [8], "loss_weighting": weighting}
    model = build_model(SPEC, cfg, 2)
    x = inputs(512, gen)
    target = torch.stack([x[1][:, 0], scale * x[1][:, 1]], 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        per_task = ((model(*x) - target) ** 2).mean(0)
        opt.zero_grad()
        model.combine(per_task).backward()
        opt.step()
        model.after_step()
    return model


def test_uncertainty_weighting_gives_the_noisier_task_the_smaller_weight():
    model = _train_balanced("uncertainty", scale=10.0)
    w = model.loss_weights()
    # the optimum of exp(-s) L + s / 2 is exp(-s) = 1 / (2 L): weights inverse to the losses
    assert w[0] > 5 * w[1], w


def test_gradnorm_keeps_weights_summing_to_the_tasks_and_lifts_the_slower_task():
    model = _train_balanced("gradnorm", scale=10.0, steps=100)
    w = model.loss_weights()
    assert sum(w) == pytest.approx(2.0, abs=1e-4) and min(w) > 0
    assert w[0] != pytest.approx(1.0, abs=1e-3)  # the weights moved
    plain = _train_balanced("sum", scale=10.0, steps=1)
    assert plain.loss_weights() is None


def test_gradnorm_sets_its_weight_gradient_toward_equal_gradient_norms():
    torch.manual_seed(0)
    cfg = {"kind": "shared_bottom", "bottom": [16], "tower": [8], "loss_weighting": "gradnorm"}
    model = build_model(SPEC, cfg, 2)
    x = inputs(64)
    out = model(*x)
    # task 1's loss has far the larger gradient on the shared input: its weight must fall
    per_task = torch.stack([out[:, 0].pow(2).mean() * 1e-3, out[:, 1].pow(2).mean() * 10])
    model.combine(per_task)
    g = model.balance.weight.grad
    assert g[1] > 0 and g[0] < 0, g


def test_gradnorm_is_refused_where_tasks_share_no_input():
    for kind in ("single_task", "sesrec"):
        with pytest.raises(ConfigError, match="gradnorm balances gradients"):
            model_config({"kind": kind, "loss_weighting": "gradnorm"}).check(16, True)


def test_gradnorm_waits_for_a_task_absent_from_the_first_batch():
    torch.manual_seed(0)
    cfg = {"kind": "shared_bottom", "bottom": [16], "tower": [8], "loss_weighting": "gradnorm"}
    model = build_model(SPEC, cfg, 2)
    x = inputs(32)
    out = model(*x)
    model.combine(torch.stack([out[:, 0].pow(2).mean(), out[:, 1].sum() * 0]))  # no task-1 rows
    assert model.balance.initial[1] == 0 and torch.isfinite(model.balance.weight.grad).all()
    out = model(*x)
    model.combine(torch.stack([out[:, 0].pow(2).mean(), out[:, 1].pow(2).mean()]))
    assert model.balance.initial[1] > 0 and torch.isfinite(model.balance.weight.grad).all()
