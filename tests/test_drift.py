"""Drift (tasks.serving.drift) on frames whose shift is known, and the promotion verdict."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.kuaisar.spec import DENSE, FEED_LABELS
from tasks.serving import drift
from tasks.serving.promote import verdict


def rows(n: int = 4000, seed: int = 0, items: int = 50, shift: float = 0.0, click: float = 0.5):
    """Feed rows with every profiled field: ids 1..items, a dense field N(shift, 1), labels."""
    rng = np.random.default_rng(seed)
    cols = {c: rng.integers(1, 6, n) for c in drift.CATEGORICAL}
    cols["item_id"] = rng.integers(1, items + 1, n)
    cols |= {c: rng.normal(shift, 1.0, n) for c in DENSE}
    cols |= {
        t: (rng.random(n) < (click if t == "click" else 0.1)).astype(np.int8) for t in FEED_LABELS
    }
    return pl.DataFrame(cols)


def vocabs(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {c: frame.select(pl.col(c).unique()) for c in drift.CATEGORICAL}


def by_field(out):
    return {r["field"]: r for r in out}


def test_the_same_distribution_does_not_drift():
    ref = rows(seed=0)
    out = by_field(drift.compare(drift.profile(ref, 10), vocabs(ref), rows(seed=1)))
    assert set(out) == {*drift.CATEGORICAL, *DENSE, *FEED_LABELS}
    assert all(r["psi"] < 0.02 for r in out.values() if r["psi"] is not None)
    assert all(r["unseen"] == 0.0 for r in out.values() if r["unseen"] is not None)
    assert drift.drifted(list(out.values()), 0.2, 0.2, 0.05) == []


def test_a_shifted_dense_field_a_new_catalogue_and_a_label_rate_are_each_named():
    ref = rows(seed=0)
    new = rows(seed=1, items=100, shift=1.0, click=0.6)  # half the items are new
    out = drift.compare(drift.profile(ref, 10), vocabs(ref), new)
    r = by_field(out)
    dense = DENSE[0]
    assert r[dense]["psi"] > 0.2  # one standard deviation: PSI about 1
    assert r["item_id"]["unseen"] == pytest.approx((new["item_id"] > 50).mean(), abs=1e-9)
    assert r["click"]["reference_rate"] == pytest.approx(ref["click"].mean())
    why = drift.drifted(out, 0.2, 0.2, 0.05)
    assert any(w.startswith(f"{dense}: PSI") for w in why)
    assert any(w.startswith("item_id:") and "unseen" in w for w in why)
    assert any(w.startswith("click rate") for w in why)
    assert not any(w.startswith("user_id") for w in why)


def test_psi_is_zero_on_equal_shares_and_grows_with_the_shift():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert 0 < drift.psi([0.5, 0.5], [0.6, 0.4]) < drift.psi([0.5, 0.5], [0.9, 0.1])
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) > 0  # an empty reference bin counts


def test_missing_dense_values_have_their_own_bin():
    ref = rows()
    new = ref.with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(None)
        .otherwise(pl.col(DENSE[0]))
        .alias(DENSE[0])
    )
    r = by_field(drift.compare(drift.profile(ref, 10), vocabs(ref), new))
    assert r[DENSE[0]]["psi"] > 1.0  # half the rows moved to the missing bin


CI = {"lo": 0.001, "hi": 0.02, "n": 2000}
PROD = {"version": "v0.0.1", "card": {"model": "ple"}}
CALM = {"drift": {"drifted": False, "why": []}}


def test_promotion_needs_a_positive_difference_with_its_ci_above_zero():
    ok, why = verdict(
        CALM | {"against": CI | {"diff": 0.01, "excludes_0": True}}, PROD, False, "ndcg@10"
    )
    assert ok and "beats production" in why and "v0.0.1" in why
    worse = CI | {"diff": -0.01, "lo": -0.02, "hi": -0.001, "excludes_0": True}
    assert verdict(CALM | {"against": worse}, PROD, False, "ndcg@10")[0] is False
    unsure = CI | {"diff": 0.01, "lo": -0.001, "excludes_0": False}
    ok, why = verdict(CALM | {"against": unsure}, PROD, False, "ndcg@10")
    assert not ok and "does not beat production" in why


def test_drift_or_the_same_model_blocks_promotion_whatever_the_ci():
    better = CI | {"diff": 0.01, "excludes_0": True}
    drifted = {"drift": {"drifted": True, "why": ["item_id: 90% unseen"]}, "against": better}
    ok, why = verdict(drifted, PROD, False, "ndcg@10")
    assert not ok and "item_id: 90% unseen" in why
    ok, why = verdict(CALM | {"against": None}, PROD, True, "ndcg@10")
    assert not ok and "production already" in why
