"""tasks.evaluation.interests: the authors' heuristic, the summary against the truth, the rows."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from tasks.evaluation.interests import feed_category_rule, last_rows, summary
from tasks.training.tensors import HOUR_MS, Samples

DAY = 24 * HOUR_MS


def test_the_heuristic_calls_a_step_similar_when_its_category_was_clicked_in_the_week_before():
    steps = pl.DataFrame(
        {"user": [1, 1, 1, 2, 2], "cat": [3, 4, 5, 3, 3], "time": [10 * DAY] * 4 + [30 * DAY]}
    )
    feed = pl.DataFrame(
        {
            "user": [1, 1, 1, 2],
            "cat": [3, 4, 5, 3],
            # user 1: cat 3 a day before, cat 4 eight days before, cat 5 just after the search
            "time": [9 * DAY, 2 * DAY, 10 * DAY + 1, 9 * DAY],
        }
    )
    got = feed_category_rule(steps, feed).to_list()
    # user 2's second search is 21 days after their click: outside the week
    assert got == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert feed_category_rule(steps, feed, days=10).to_list() == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_the_summary_scores_each_split_against_the_truth_and_says_what_it_calls_similar():
    table = pl.DataFrame(
        {
            "user": [1, 1, 2, 2],
            "perfect": [0.9, 0.8, 0.1, 0.2],
            "backwards": [0.1, 0.2, 0.9, 0.6],
        }
    )
    truth = np.array([1.0, 1.0, 0.0, 0.0])
    out = summary(table, truth, ["perfect", "backwards"])
    assert out["steps"] == 4 and out["users"] == 2 and out["truth_similar_share"] == 0.5
    assert out["perfect"]["auc"] == 1.0 and out["backwards"]["auc"] == 0.0
    assert out["backwards"]["similar_share"] == 0.5 and out["perfect"]["mean"] == 0.5
    assert "auc" not in summary(table, None, ["perfect"])["perfect"]  # real data: no truth
    for one_class in (np.zeros(4), np.ones(4)):  # search_rec_overlap 0 or 1: AUC undefined
        out = summary(table, one_class, ["perfect"])
        assert "auc" not in out["perfect"] and out["truth_similar_share"] == one_class[0]
        json.dumps(out, allow_nan=False)  # valid JSON: no NaN


def test_last_rows_picks_each_users_latest_sample_in_user_order():
    n = 6
    s = Samples(
        sparse=torch.zeros(n, 1, dtype=torch.long),
        dense=torch.zeros(n, 0),
        labels=torch.zeros(n, 1),
        hist=torch.zeros(n, 4, dtype=torch.long),
        user=np.array([2, 1, 2, 1, 3, 2]),
        time=torch.tensor([5, 9, 7, 9, 1, 6]),
    )
    # user 1: rows 1 and 3 tie at 9 -> the last row; user 2: row 2 (time 7); user 3: row 4
    assert last_rows(s).tolist() == [3, 2, 4]
    with pytest.raises(ValueError, match="no users or timestamps"):
        last_rows(Samples(sparse=s.sparse, dense=s.dense, labels=s.labels, hist=s.hist, user=None))


def test_the_report_says_when_a_split_ranks_steps_as_its_untrained_self_does():
    """A split whose AUC training did not move (same_category: its form sets the order) is
    called so in the report; one that training moved is not."""
    from tasks.report import interests_section

    def ev(model_auc: float, untrained_auc: float) -> dict:
        score = lambda a: {"auc": a, "mean": 0.5, "similar_share": 0.4}  # noqa: E731
        return {
            "interests": {
                "steps": 10,
                "users": 2,
                "truth_similar_share": 0.5,
                "model": score(model_auc),
                "heuristic": score(0.62),
                "untrained": score(untrained_auc),
            }
        }

    alike = interests_section({"sesrec": ev(0.874, 0.8742), "other": ev(0.70, 0.56)})
    assert "For sesrec the trained and the untrained split rank the steps alike" in alike
    assert "other the trained" not in alike and "sesrec, other" not in alike
    assert "rank the steps alike" not in interests_section({"other": ev(0.70, 0.56)})


def test_the_report_warns_of_a_model_with_a_constant_task_and_says_nothing_otherwise():
    from tasks.report import constant_section

    text = constant_section({"a": {"constant_tasks": ["click"]}, "b": {"constant_tasks": []}})
    assert "## Warning: constant predictions" in text and "- a: click" in text
    assert "- b" not in text
    assert constant_section({"b": {"constant_tasks": []}, "old": {}}) == ""  # old evaluations
