"""The MMoE paper's synthetic data and the trainer's regression path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flows.experiments.synthetic import summarise, table
from flows.experiments.synthetic_data import held_out_label_variance, make_data, run


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
    var_t = held_out_label_variance(0.9, 0, n_train=6000, n_valid=1000, n_test=2000)
    r2 = 1 - np.array([r["test_mse_y1"], r["test_mse_y2"]]) / var_t
    assert r["test_r2"] == pytest.approx(r2.mean(), abs=1e-6) and r["test_r2"] > 0.5


def test_summary_reports_the_papers_ordering_paired_over_seeds():
    rng = np.random.default_rng(0)
    runs = [
        {
            "model": m,
            "p": p,
            "seed": s,
            "test_mse": base + (1 - p) * k + 0.5 * s + 0.01 * rng.normal(),
        }
        for p in (0.5, 1.0)
        for s in range(8)
        for m, base, k in (
            ("shared_bottom", 1.0, 1.0),
            ("omoe", 0.9, 0.5),
            ("mmoe", 0.8, 0.1),
            ("ple", 0.8, 0.1),
        )
    ]
    summary = summarise(runs)
    # the seed offsets (0.5 a seed) dwarf every gap between models: only pairing sees them
    assert summary["stats"]["mmoe"]["0.5"]["std"] > 1.0
    assert summary["ordering_shown"] == {"0.5": True, "1.0": True}
    sb_omoe = summary["paired"]["shared_bottom-omoe"]["0.5"]
    assert sb_omoe["diff"] == pytest.approx(0.1 + 0.25, abs=0.02) and sb_omoe["lo"] > 0
    assert sb_omoe["b_better_seeds"] == 8 and sb_omoe["sign_p"] == pytest.approx(2 / 2**8)
    assert not summary["paired"]["mmoe-ple"]["0.5"]["excludes_0"]  # same by construction
    trend = summary["gap_lowest_minus_highest_p"]
    assert trend["diff"] == pytest.approx(0.45, abs=0.02) and trend["excludes_0"]
    text = table(summary)
    assert "p = 0.5" in text and "8/8 (sign p 0.008)" in text and "p=0.5: yes" in text


def test_the_ordering_is_not_claimed_when_seeds_disagree():
    runs = [
        {"model": m, "p": 0.5, "seed": s, "test_mse": 1.0 + (0.1 if (s + i) % 2 else -0.1)}
        for s in range(10)
        for i, m in enumerate(["shared_bottom", "omoe", "mmoe", "ple"])
    ]
    summary = summarise(runs)
    assert summary["ordering_shown"] == {"0.5": False}
    assert summary["paired"]["shared_bottom-omoe"]["0.5"]["b_better_seeds"] == 5


def test_the_harder_variant_has_sharper_sinusoids():
    # frequency 0: no sinusoids left, so y1 is linear in x, and gives the projection z = w1.x
    flat = make_data(0.9, 5000, 0, frequency=0.0)
    x = np.c_[flat.x, np.ones(len(flat.x))]
    z = x @ np.linalg.lstsq(x, flat.y[:, 0], rcond=None)[0]
    assert np.corrcoef(z, flat.y[:, 0])[0, 1] > 0.99

    def smooth_r2(y):  # how much of y a degree-9 polynomial of z explains
        fit = np.polynomial.Polynomial.fit(z, y, 9)(z)
        return 1 - ((y - fit) ** 2).mean() / y.var()

    easy, hard = (make_data(0.9, 5000, 0, frequency=f).y[:, 0] for f in (1.0, 4.0))
    assert smooth_r2(easy) > 0.9 and smooth_r2(hard) < smooth_r2(easy) - 0.2


def test_from_results_rewrites_the_table_without_training(tmp_path):
    from flows.experiments.synthetic import from_results

    mse = lambda i, s: 1.0 + 0.1 * i + 0.01 * s  # noqa: E731
    runs = [  # saved without test_r2, as results.json was before runs recorded it
        {"model": m, "p": 0.5, "seed": s, "test_mse": mse(i, s)}
        | {"test_mse_y1": mse(i, s), "test_mse_y2": mse(i, s)}
        for s in range(4)
        for i, m in enumerate(["mmoe", "omoe", "shared_bottom", "ple"])
    ]
    (tmp_path / "results.json").write_text(json.dumps({"summary": {"epochs": 7}, "runs": runs}))
    summary = from_results(tmp_path)
    assert summary["epochs"] == 7 and summary["stats"]["omoe"]["0.5"]["n"] == 4
    text = (tmp_path / "table.md").read_text()
    assert "4/4 (sign p 0.125)" in text and "Test R²" in text
    # the R² is recovered from the seeded data: 1 - MSE / the test labels' variance
    worst = min((1 - mse(1, s) / held_out_label_variance(0.5, s)).mean() for s in range(4))
    assert summary["stats"]["omoe"]["0.5"]["r2_min"] == pytest.approx(worst)
    assert (tmp_path / "loss_vs_p.png").stat().st_size > 0
