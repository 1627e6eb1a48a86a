"""The MMoE paper's synthetic data and the trainer's regression path."""

from __future__ import annotations

import numpy as np
import pytest

from flows.experiments.synthetic import summarise, table
from flows.experiments.synthetic_data import make_data, run


def test_task_correlation_follows_p():
    corr = {p: np.corrcoef(make_data(p, 20_000, 0).y.T)[0, 1] for p in (0.0, 0.5, 0.9, 1.0)}
    assert corr[1.0] > 0.99  # same weights, only the noise differs
    assert corr[0.0] < corr[0.5] < corr[0.9] < corr[1.0]
    assert abs(corr[0.0]) < 0.1


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = make_data(0.7, 100, 1), make_data(0.7, 100, 1), make_data(0.7, 100, 2)
    assert np.array_equal(a.y, b.y) and not np.array_equal(a.y, c.y)


@pytest.mark.parametrize("model", ["shared_bottom", "omoe", "mmoe", "ple"])
def test_regression_training_beats_predicting_the_mean(model):
    r = run(model, 0.9, 0, n_train=6000, n_valid=1000, n_test=2000, epochs=15)
    var = float(make_data(0.9, 9000, 0).y[7000:].var(0).mean())
    assert r["test_mse"] < 0.5 * var, (r, var)  # R^2 > 0.5


def test_summary_reports_the_papers_ordering():
    runs = [
        {"model": m, "p": p, "seed": s, "test_mse": base + (1 - p) * k + 0.01 * s}
        for p in (0.5, 1.0)
        for s in (0, 1)
        for m, base, k in (
            ("shared_bottom", 1.0, 1.0),
            ("omoe", 0.9, 0.5),
            ("mmoe", 0.8, 0.1),
            ("ple", 0.8, 0.1),
        )
    ]
    summary = summarise(runs)
    assert summary["mmoe_le_omoe_le_sb"] == {"0.5": True, "1.0": True}
    assert summary["sb_minus_mmoe"]["0.5"] > summary["sb_minus_mmoe"]["1.0"]
    assert "p = 0.5" in table(summary) and "± 0.0050" in table(summary)
