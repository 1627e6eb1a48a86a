"""generate: the KuaiSAR contract, determinism, and the planted structure being really there."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.config.params import GenerateParams
from tasks.kuaisar.schema import FEED_ITEM_TYPES, RAW_FILES
from tasks.kuaisar.world import draw_logs, generate, make_world, similar_sessions
from tasks.split import read_raw

IDLIST = r"^\[\d+(, \d+)*\]$"


def test_files_have_the_public_column_names_in_order(raw_frames):
    assert set(raw_frames) == set(RAW_FILES)
    for name, df in raw_frames.items():
        assert df.columns == list(RAW_FILES[name]), name


def test_round_trip_through_csv_keeps_the_contract_types(raw_dir):
    rec = read_raw(raw_dir, "rec_inter.csv").collect()
    assert rec["user_id"].dtype == pl.Int64 and rec["timestamp"].dtype == pl.Float64
    src = pl.read_csv(raw_dir / "src_inter.csv", infer_schema=False)
    assert src["keyword"].str.contains(IDLIST).all()
    items = pl.read_csv(raw_dir / "item_features.csv", infer_schema=False)
    assert items["caption"].str.contains(IDLIST).all()
    assert items["upload_time"].str.contains(r"^\d{4}-\d{2}-\d{2}$").all()


def test_time_text_is_beijing_time_of_the_timestamp(raw_frames):
    rec = raw_frames["rec_inter.csv"]
    parsed = rec["time"].str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="Asia/Shanghai")
    diff = rec["timestamp"].cast(pl.Int64) - parsed.dt.epoch("ms")
    assert diff.min() >= 0 and diff.max() < 1000


def test_same_seed_same_files_other_seed_other_files(tiny_generate):
    a, b = generate(tiny_generate), generate(tiny_generate)
    c = generate(tiny_generate.model_copy(update={"seed": tiny_generate.seed + 1}))
    for name in RAW_FILES:
        assert a[name].equals(b[name]), name
    assert not a["rec_inter.csv"].equals(c["rec_inter.csv"])


def test_feed_serves_only_feed_types_and_search_returns_others(raw_frames):
    """As the release: every feed item and every VIDEO/IMAGE_ATLAS result has a feature row
    (item_features' own item_type is NORMAL or AD); other result types have none."""
    items = raw_frames["item_features.csv"]
    assert set(items["item_type"].unique()) == {"NORMAL", "AD"}
    rec, src = raw_frames["rec_inter.csv"], raw_frames["src_inter.csv"]
    assert rec["item_id"].is_in(items["item_id"].implode()).all()
    listed = src["item_id"].is_in(items["item_id"].implode())
    feed_type = src["item_type"].is_in(FEED_ITEM_TYPES)
    assert (listed == feed_type).all()
    assert 0.03 < (~feed_type).mean() < 0.2  # the release: ~5% of search rows


def test_label_rates_are_those_of_the_release(raw_frames):
    rec, src = raw_frames["rec_inter.csv"], raw_frames["src_inter.csv"]
    assert 0.4 < rec["click"].mean() < 0.6  # ~1:1
    sessions = src.group_by("search_session_id").agg(pl.col("click_cnt").max())
    assert 0.45 < sessions["click_cnt"].mean() < 0.75  # ~60% of sessions have a click
    for task in ("like", "follow", "forward"):
        assert (rec.filter(pl.col(task) == 1)["click"] == 1).all(), f"{task} without click"
    assert rec.filter(pl.col("search") == 0)["search_item_related"].max() == 0


def test_served_time_ties_exist(raw_frames):
    rec = raw_frames["rec_inter.csv"]
    assert rec.select("user_id", "timestamp").is_duplicated().any()


def test_activity_is_skewed(raw_frames):
    per_user = raw_frames["rec_inter.csv"]["user_id"].value_counts()["count"].sort(descending=True)
    top = per_user.head(max(1, len(per_user) // 10)).sum()
    assert top / per_user.sum() > 0.2  # the top 10% of users do well over 10% of actions


@pytest.mark.parametrize("overlap", [0.0, 1.0])
def test_search_rec_overlap_controls_shared_interests(overlap):
    p = GenerateParams(n_users=300, n_categories=12, search_rec_overlap=overlap)
    w = make_world(p, np.random.default_rng(0))
    shared = (w.search_cats[:, :, None] == w.feed_cats[:, None, :]).any(-1).mean()
    assert shared == pytest.approx(overlap)


def test_independent_search_interests_are_feed_interests_only_as_often_as_chance():
    """search_interests "independent": the search interests are drawn by popularity without
    looking at the feed interests, so a search-interest slot repeats a feed interest about as
    often as a second, independent draw of feed interests does (far from 0 and from 1), and
    search_rec_overlap no longer matters."""
    w0, w1, again = (
        make_world(
            GenerateParams(
                n_users=2000, search_interests="independent", search_rec_overlap=overlap
            ),
            np.random.default_rng(seed),
        )
        for overlap, seed in ((0.0, 0), (1.0, 0), (0.0, 1))
    )
    assert np.array_equal(w0.search_cats, w1.search_cats)
    shared = (w0.search_cats[:, :, None] == w0.feed_cats[:, None, :]).any(-1).mean()
    chance = (again.feed_cats[:, :, None] == w0.feed_cats[:, None, :]).any(-1).mean()
    assert 0.2 < shared < 0.6 and shared == pytest.approx(chance, abs=0.03)
    assert (np.sort(w0.search_cats, 1)[:, 1:] != np.sort(w0.search_cats, 1)[:, :-1]).all()


def test_the_default_world_is_drawn_as_before_the_independent_setting():
    """The default ("overlap") draws nothing more: its search interests are the overlap rule's."""
    p = GenerateParams(n_users=300, n_categories=12, search_rec_overlap=0.0)
    w = make_world(p, np.random.default_rng(0))
    assert not (w.search_cats[:, :, None] == w.feed_cats[:, None, :]).any()


@pytest.mark.parametrize(("overlap", "share"), [(0.0, 0.0), (1.0, 1.0), (0.5, 0.5)])
def test_the_planted_split_calls_a_session_similar_when_its_category_is_a_feed_interest(
    overlap, share
):
    p = GenerateParams(n_users=300, n_items=2000, search_sessions=3000, search_rec_overlap=overlap)
    _, w, _, search, _ = draw_logs(p)
    truth = similar_sessions(w, search)
    assert (
        truth["search_session_id"].n_unique()
        == len(truth)
        == search["search_session_id"].n_unique()
    )
    assert truth["similar"].mean() == pytest.approx(share, abs=0.15)
    one = search.filter(pl.col("search_session_id") == truth["search_session_id"][0]).row(
        0, named=True
    )
    assert truth["similar"][0] == (one["qcat"] in w.feed_cats[one["u"]])


def _sessions_and_impressions(
    frames: dict[str, pl.DataFrame],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Search sessions (user_id, cat: their results' modal category, t = searched: their time)
    and feed impressions with their category, both sorted by time t."""
    cat = frames["item_features.csv"].select("item_id", cat="first_level_category_id")
    sessions = (
        frames["src_inter.csv"]
        .join(cat, on="item_id")
        .group_by("search_session_id")
        .agg(
            pl.first("user_id"), pl.first("search_session_timestamp"), pl.col("cat").mode().first()
        )
        .select(
            "user_id",
            "cat",
            t=pl.col("search_session_timestamp").cast(pl.Float64),
            searched=pl.col("search_session_timestamp").cast(pl.Float64),
        )
        .sort("t")
    )
    rec = frames["rec_inter.csv"].join(cat, on="item_id").rename({"timestamp": "t"}).sort("t")
    return sessions, rec


def _click_lift_after_search(frames: dict[str, pl.DataFrame]) -> float:
    """Click rate on feed items of a category the user searched in the 48 h before, over the rest."""
    sessions, rec = _sessions_and_impressions(frames)
    j = rec.join_asof(
        sessions, on="t", by=["user_id", "cat"], allow_exact_matches=False, check_sortedness=False
    )
    recent = (j["t"] - j["searched"]).fill_null(float("inf")) <= 48 * 3_600_000
    return float(j.filter(recent)["click"].mean()) / float(j.filter(~recent)["click"].mean())


def test_searching_a_category_raises_later_feed_clicks_on_it():
    base = dict(n_users=300, n_items=3000, rec_actions=40_000, search_sessions=4000, seed=3)
    on = _click_lift_after_search(generate(GenerateParams(**base, search_effect=3.0)))
    off = _click_lift_after_search(generate(GenerateParams(**base, search_effect=0.0)))
    assert on > off + 0.1, (on, off)


def _share_on_last_search(frames: dict[str, pl.DataFrame], hours: float = 48) -> float:
    """Share of feed impressions in the category of the user's last search (within `hours`)."""
    sessions, rec = _sessions_and_impressions(frames)
    j = rec.join_asof(
        sessions.rename({"cat": "last_cat"}),
        on="t",
        by="user_id",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    recent = (j["t"] - j["searched"]).fill_null(float("inf")) <= hours * 3_600_000
    return float((recent & (j["cat"] == j["last_cat"])).mean())


def test_search_serving_shows_the_last_searched_category_in_the_feed():
    base = dict(n_users=300, n_items=3000, rec_actions=40_000, search_sessions=4000, seed=3)
    off = _share_on_last_search(generate(GenerateParams(**base, search_serving=0.0)))
    on = _share_on_last_search(generate(GenerateParams(**base, search_serving=0.4)))
    assert on > off + 0.15, (on, off)
