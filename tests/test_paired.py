"""Paired comparisons: per-click metric values, paired bootstrap CIs, and the report's tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats as st

from tasks.config.params import ReportParams
from tasks.evaluation import paired
from tasks.evaluation.candidates import click_values, rank_metrics, ranks_of
from tasks.evaluation.metrics import auc
from tasks.evaluation.paired import (
    _boots,
    _Ranked,
    _weighted_auc,
    compare,
    paired_auc,
    paired_mean,
)
from tasks.report import ci_table, kendall_tau, paired_rows, sampled_vs_full


def test_a_negative_scored_the_same_as_the_positive_ranks_above_it():
    s = np.array([[0.5, 0.1, 0.9, 0.2], [0.5, 0.5, 0.5, 0.1], [0.7, 0.7, 0.7, 0.7]])
    assert ranks_of(s).tolist() == [2, 3, 4]  # a constant model ranks its positive last
    assert rank_metrics(ranks_of(np.zeros((5, 100))))["hr@10"] == 0.0


def test_per_click_values_average_to_the_metrics():
    rank = np.array([1, 2, 10, 11, 60])
    assert click_values(rank, "hr@10").tolist() == [1, 1, 1, 0, 0]
    assert click_values(rank, "full_recall@50").tolist() == [1, 1, 1, 1, 0]
    assert click_values(rank, "mrr")[1] == 0.5
    ndcg = click_values(rank, "searched_ndcg@10")
    assert ndcg[0] == 1.0 and ndcg[2] == pytest.approx(1 / np.log2(11)) and ndcg[3] == 0
    assert rank_metrics(rank, ("hr@10",)) == {"hr@10": 0.6}
    with pytest.raises(ValueError, match="unknown ranking metric"):
        click_values(rank, "map@10")


def test_a_paired_ci_excludes_0_for_a_real_gain_and_covers_it_for_none():
    rng = np.random.default_rng(0)
    base = rng.random(2000)
    gain = paired_mean(base + 0.02 + rng.normal(0, 0.05, 2000), base)
    assert gain["excludes_0"] and gain["lo"] > 0 and gain["lo"] < gain["diff"] < gain["hi"]
    none = paired_mean(base + rng.normal(0, 0.05, 2000), base)
    assert not none["excludes_0"] and none["lo"] < 0 < none["hi"]
    assert paired_mean(base, base)["diff"] == 0 and not paired_mean(base, base)["excludes_0"]
    # pairing is what makes it tight: the same gain on unpaired levels would be lost in the spread
    assert gain["hi"] - gain["lo"] < 0.01 < 2 * 1.96 * base.std() / np.sqrt(2000)
    assert paired_mean(base + 0.02, base, seed=3) == paired_mean(base + 0.02, base, seed=3)


def test_the_bootstrap_auc_is_the_plain_auc_with_unit_weights_ties_included():
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.3).astype(float)
    s = np.round(y * 0.3 + rng.random(500), 1)  # many ties
    assert _weighted_auc(_Ranked.of(y, s), np.ones((1, 500)))[0] == pytest.approx(auc(y, s))


def test_a_paired_auc_ci_tells_a_better_model_from_an_equal_one():
    rng = np.random.default_rng(2)
    y = (rng.random(4000) < 0.4).astype(float)
    good, also_good = y + rng.normal(0, 1, 4000), y + rng.normal(0, 1, 4000)
    worse = y + rng.normal(0, 2, 4000)
    better = paired_auc(y, good, worse, resamples=300)
    assert better["excludes_0"] and better["lo"] > 0
    assert better["diff"] == pytest.approx(auc(y, good) - auc(y, worse))
    assert not paired_auc(y, good, also_good, resamples=300)["excludes_0"]
    y[:10] = np.nan  # outside the task's sample space: dropped
    assert paired_auc(y, good, worse, resamples=100)["n"] == 3990


def test_a_models_bootstrap_kept_for_its_next_pair_is_keyed_by_its_scores():
    """bootstrap_auc keeps a model's resampled AUCs for its next pair on the same rows: a pair
    gives the same CI with the kept ones as drawn afresh, in either order (negated), and scores
    changed in place are not mistaken for the kept ones."""
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.4).astype(float)
    a, b, c = (y + rng.normal(0, s, 3000) for s in (1.0, 1.5, 2.0))
    first = paired_auc(y, a, b, resamples=200)
    paired_auc(y, a, c, resamples=200)  # a's resamples kept from the pair before
    _boots.clear()
    assert paired_auc(y, a, b, resamples=200) == first
    back = paired_auc(y, b, a, resamples=200)  # both kept
    assert [back[k] for k in ("diff", "lo", "hi")] == pytest.approx(
        [-first[k] for k in ("diff", "hi", "lo")], abs=1e-12
    )
    a[y == 1] -= 3.0  # the same array object, now a worse model
    assert paired_auc(y, a, b, resamples=200)["diff"] == pytest.approx(auc(y, a) - auc(y, b))
    assert paired_auc(y, a, b, resamples=200)["diff"] < 0 < first["diff"]


def _artifacts(tmp_path, ranks: dict[str, np.ndarray], probs: dict[str, np.ndarray], y):
    n = len(next(iter(ranks.values())))
    for m in ranks:
        d = tmp_path / m
        d.mkdir(parents=True)
        pl.DataFrame(
            {
                "row": np.arange(n),
                "rank": ranks[m],
                "full_rank": np.where(np.arange(n) < n // 2, ranks[m] * 50, -1),
                "searched": np.arange(n) % 3 == 0,
            }
        ).write_parquet(d / "ranks.parquet")
        pl.DataFrame(
            {"file": ["rec"] * len(y), "row": np.arange(len(y)), "p_click": probs[m], "y_click": y}
        ).write_parquet(d / "predictions.parquet")
    return tmp_path


def test_the_report_compares_every_model_with_the_baseline_click_by_click(tmp_path):
    rng = np.random.default_rng(4)
    y = (rng.random(3000) < 0.5).astype(float)
    base_rank = rng.integers(1, 101, 1500)
    art = _artifacts(
        tmp_path,
        {"base": base_rank, "good": np.maximum(1, base_rank - 20), "same": base_rank.copy()},
        {
            "base": y + rng.normal(0, 2, 3000),
            "good": y + rng.normal(0, 1, 3000),
            "same": y + rng.normal(0, 2, 3000),
        },
        y,
    )
    got = compare(art, "good", "base", resamples=200)
    assert got["click/ndcg@10"]["excludes_0"] and got["click/ndcg@10"]["diff"] > 0
    assert got["click/full_recall@50"]["n"] == 750 and got["click/searched_hr@10"]["n"] == 500
    assert got["click/auc"]["excludes_0"] and got["click/auc"]["lo"] > 0
    same = compare(art, "same", "base", resamples=200)
    assert same["click/ndcg@10"]["diff"] == 0 and not same["click/ndcg@10"]["excludes_0"]
    rows = paired_rows(
        art, ["base", "good", "same"], ReportParams(baseline="base", pairs=["good-same"])
    )
    assert {(r["a"], r["b"]) for r in rows} == {
        ("good", "base"),
        ("same", "base"),
        ("good", "same"),
    }
    table = ci_table(rows)
    assert "| click/ndcg@10 |" in table and "good − base" in table and " *" in table


def test_different_candidates_are_refused_as_a_comparison(tmp_path):
    z = np.zeros(0)
    art = _artifacts(tmp_path, {"a": np.arange(1, 11), "b": np.arange(1, 11)}, {"a": z, "b": z}, z)
    pl.DataFrame(
        {"row": np.arange(5, 15), "rank": np.arange(1, 11), "full_rank": -1, "searched": False}
    ).write_parquet(art / "b" / "ranks.parquet")
    with pytest.raises(ValueError, match="ranked different clicks"):
        compare(art, "a", "b", resamples=100)


def test_sampled_and_full_orderings_are_compared():
    m = lambda s, f: {"click": {"ndcg@10": s, "full_ndcg@10": f}}  # noqa: E731
    same = sampled_vs_full({"a": m(0.3, 0.05), "b": m(0.2, 0.04), "c": m(0.1, 0.01)})
    assert same["kendall_tau"] == 1.0 and same["disagree"] == []
    flip = sampled_vs_full({"a": m(0.3, 0.01), "b": m(0.2, 0.04), "c": m(0.1, 0.05)})
    assert flip["kendall_tau"] == -1.0 and ("a", "b") in flip["disagree"]
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)


def test_runs_that_agree_pool_to_their_mean_with_a_ci_no_narrower_than_the_pooled_error():
    half = 0.01  # each run: se = 0.01 / 1.96
    p = paired.pooled_over_runs([0.02, 0.02, 0.02], [[0.01, 0.03]] * 3)
    assert p["diff"] == pytest.approx(0.02) and p["tau"] == 0.0 and p["runs"] == 3
    assert p["heterogeneity_p"] == pytest.approx(1.0)
    # identical estimates: the variance floor (se^2 / 3) times t(2)'s quantile, not zero width
    se = half / paired.Z95
    want = st.t.ppf(0.975, 2) * se / np.sqrt(3)
    assert p["hi"] - p["diff"] == pytest.approx(want) and p["excludes_0"]


def test_runs_that_disagree_beyond_their_cis_get_a_between_run_spread_and_a_wide_ci():
    # two runs 0 and 4 with se 1: Q = 8, DerSimonian-Laird tau^2 = (8 - 1) / (2 - 1) = 7
    p = paired.pooled_over_runs(
        [0.0, 4.0], [[-paired.Z95, paired.Z95], [4 - paired.Z95, 4 + paired.Z95]]
    )
    assert p["tau"] == pytest.approx(np.sqrt(7.0)) and p["diff"] == pytest.approx(2.0)
    assert p["heterogeneity_p"] == pytest.approx(st.chi2.sf(8.0, 1))
    assert p["lo"] < 0 < p["hi"] and not p["excludes_0"]  # each run alone excludes 0 or sits on it
    # the same estimates with tight CIs still pool to a CI covering 0: the runs disagree
    tight = paired.pooled_over_runs(
        [0.01, -0.01, 0.012], [[0.008, 0.012], [-0.012, -0.008], [0.01, 0.014]]
    )
    assert tight["tau"] > 0.005 and tight["heterogeneity_p"] < 1e-6 and not tight["excludes_0"]


def test_pooling_refuses_a_single_run_and_a_ci_without_width():
    with pytest.raises(ValueError, match="2 runs or more, got 1"):
        paired.pooled_over_runs([0.1], [[0.0, 0.2]])
    with pytest.raises(ValueError, match="positive width"):
        paired.pooled_over_runs([0.1, 0.1], [[0.0, 0.2], [0.1, 0.1]])
