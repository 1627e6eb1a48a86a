"""flows/experiments/oracle.py: the generator's truth as a ranker, and its model of the generator."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from flows.experiments.oracle import search_gain_bound
from flows.project import ROOT
from tasks.config.params import GenerateParams, Params
from tasks.kuaisar import world as g

SMALL = dict(n_users=300, n_items=3000, rec_actions=40_000, search_sessions=4000, seed=3)


def params(**generate) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["generate"] |= SMALL | generate
    raw["candidates"] |= {"positives": 1500, "full_positives": 0}
    return Params.model_validate(raw)


def test_without_a_search_effect_knowing_the_searches_is_worth_nothing():
    r = search_gain_bound(params(search_effect=0.0, search_serving=0.0))
    assert r["ranked_clicks"] == 1500
    assert r["dynamic"] == r["static"] and all(v == 0 for v in r["gain"].values())
    # the truth ranks far above chance (NDCG@10 of a random ranking of 100: ~0.05)
    assert r["dynamic"]["ndcg@10"] > 0.25 and 0 < r["searched_share"] < 1


def test_a_feed_that_answers_searches_makes_them_worth_much_more_than_the_click_effect_alone():
    click_only = search_gain_bound(params(search_effect=1.5, search_serving=0.0))["gain"]
    serving = search_gain_bound(params(search_effect=1.5, search_serving=0.3))["gain"]
    assert click_only["searched_ndcg@10"] > 0 and abs(click_only["ndcg@10"]) < 0.01
    assert serving["ndcg@10"] > 0.015 and serving["ndcg@10"] > 5 * click_only["ndcg@10"]


def test_serving_shares_are_the_feeds_category_mix():
    p = GenerateParams(**SMALL, search_serving=0.0)  # the mix before the feed answers searches
    _, w, _, _, rec = g.draw_logs(p)
    u, cat = rec["u"].to_numpy(), w.item_cat[rec["i"].to_numpy()]
    shares = g.serving_shares(w, u)
    assert np.allclose(shares.sum(1), 1.0)
    n_cats = len(w.cat_pop)
    seen = np.bincount(cat, minlength=n_cats) / len(cat)
    assert np.abs(seen - shares.mean(0)).max() < 0.01
    # per user: the category the 50 most active users are served most is the expected one
    users = np.argsort(-np.bincount(u))[:50]
    top = np.array([np.bincount(cat[u == k], minlength=n_cats).argmax() for k in users])
    expected = np.array([shares[u == k][0].argmax() for k in users])
    assert (top == expected).mean() > 0.8


def test_the_click_signal_is_the_one_clicks_follow():
    _, w, _, _, rec = g.draw_logs(GenerateParams(**SMALL, search_effect=0.0))
    signal = g.click_signal(w, rec["u"].to_numpy(), rec["i"].to_numpy())
    click = rec["click"].to_numpy()
    high = signal > np.median(signal)
    assert click[high].mean() > click[~high].mean() + 0.2
    # the written-off bias is the generator's calibration: clicks ~1:1
    p = 1 / (1 + np.exp(-(signal + rec["click_bias"][0])))
    assert p.mean() == pytest.approx(click.mean(), abs=0.03)
