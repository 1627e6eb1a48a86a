"""metrics: AUC and logloss agree with scikit-learn; GAUC weights users by impressions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from tasks.evaluation.metrics import auc, constant_tasks, gauc, logloss, task_metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.random(2000) + 0.4 * y, 2)  # rounded: many ties
    u = rng.integers(0, 40, 2000)
    return y, s, u


def test_auc_matches_sklearn_with_ties(data):
    y, s, _ = data
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_gauc_is_the_impression_weighted_mean_of_per_user_auc(data):
    y, s, u = data
    u = u.copy()
    u[:5], y[:5] = 999, 1  # a user with one class only: skipped
    per_user = [
        (roc_auc_score(y[u == k], s[u == k]), (u == k).sum())
        for k in np.unique(u)
        if len(set(y[u == k])) == 2
    ]
    expected = sum(a * n for a, n in per_user) / sum(n for _, n in per_user)
    assert gauc(y, s, u) == pytest.approx(expected, abs=1e-12)


def test_logloss_matches_sklearn(data):
    y, s, _ = data
    p = np.clip(s / 1.5, 0.01, 0.99)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), abs=1e-12)


def test_one_class_gives_nan_not_a_crash():
    assert math.isnan(auc(np.ones(5), np.arange(5)))
    assert math.isnan(gauc(np.ones(5), np.arange(5), np.zeros(5)))


def test_task_metrics_skip_samples_outside_a_tasks_space(data):
    y, s, u = data
    labels = np.stack([y, np.where(np.arange(len(y)) % 2 == 0, y, np.nan)], 1).astype(float)
    probs = np.stack([s, s], 1) / 1.5
    m = task_metrics(labels, probs, u, ["a", "b"])
    assert m["a"]["n"] == len(y) and m["b"]["n"] == (len(y) + 1) // 2
    assert m["b"]["auc"] == pytest.approx(roc_auc_score(y[::2], s[::2]))


def test_a_task_predicted_the_same_for_every_row_is_named_and_a_live_one_is_not():
    p = np.array([[0.2, 0.31, 0.5], [0.7, 0.31, 0.5], [0.4, 0.31, 0.5 + 1e-3]])
    assert constant_tasks(p, ["click", "like", "follow"]) == ["like"]
    assert constant_tasks(np.zeros((0, 2)), ["a", "b"]) == []
