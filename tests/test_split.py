"""split: parts partition the logs in time; no sample sees its own or a later event."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.config.params import SplitParams, beijing_ms
from tasks.kuaisar.spec import LABEL
from tasks.split import PARTS, SplitError, check_parts, cutoffs, read_raw, split_logs


@pytest.fixture(scope="module")
def splits(raw_dir):
    return split_logs(
        read_raw(raw_dir, "rec_inter.csv"), read_raw(raw_dir, "src_inter.csv"), SplitParams()
    )


def test_parts_partition_rows_and_do_not_overlap_in_time(splits, raw_frames):
    c = splits.cutoffs
    assert (c.valid_start, c.test_start) == (
        beijing_ms("2023-06-04 00:00:00"),  # the last 3 + 3 of the generator's 19 days
        beijing_ms("2023-06-07 00:00:00"),
    )
    for samples, raw in (
        (splits.rec, raw_frames["rec_inter.csv"]),
        (splits.src, raw_frames["src_inter.csv"]),
    ):
        assert len(samples) == len(raw)  # every row in exactly one part
        assert set(samples["part"].unique()) == set(PARTS)
        ts = {part: samples.filter(pl.col("part") == part)["timestamp"] for part in PARTS}
        assert ts["train"].max() < c.valid_start <= ts["valid"].min()
        assert ts["valid"].max() < c.test_start <= ts["test"].min()


def _check_history(samples: pl.DataFrame, events: pl.DataFrame, name: str) -> None:
    users, times = events["user_id"].to_numpy(), events["timestamp"].to_numpy()
    start, length = samples[f"{name}_start"].to_numpy(), samples[f"{name}_len"].to_numpy()
    su, st = samples["user_id"].to_numpy(), samples["timestamp"].to_numpy()
    assert (np.diff(users) >= 0).all()  # flat, grouped by user
    for k in range(len(samples)):
        window = slice(start[k], start[k] + length[k])
        assert (users[window] == su[k]).all()
        assert (times[window] < st[k]).all()  # strictly earlier: not itself, not a tie
        nxt = start[k] + length[k]
        if nxt < len(users) and users[nxt] == su[k]:
            assert times[nxt] >= st[k]  # and nothing earlier was left out


def test_no_sample_sees_its_own_or_a_later_event(splits):
    for samples in (splits.rec, splits.src):
        _check_history(samples, splits.rec_history, "rec_hist")
        _check_history(samples, splits.src_history, "src_hist")


def test_a_click_is_not_in_its_own_history_even_with_tied_timestamps():
    rec = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "item_id": [10, 11, 12, 10],
            "playing_time": [0.0] * 4,
            "duration_ms": [9000.0] * 4,
            "timestamp": [1000.0, 1000.0, 2000.0, 1000.0],
            "click": [1, 1, 0, 1],
            **{c: [0] * 4 for c in ("forward", "like", "follow", "search", "search_item_related")},
        }
    ).with_row_index("row")
    src = pl.DataFrame(
        {
            "user_id": [1],
            "search_session_id": [5],
            "search_session_timestamp": [1500],
            "keyword": ["[1, 2]"],
            "item_id": [10],
            "click_cnt": [0],
            "item_type": ["VIDEO"],
        }
    ).with_row_index("row")
    s = split_logs(rec.lazy(), src.lazy(), SplitParams())
    assert s.rec["rec_hist_len"].to_list() == [0, 0, 2, 0]
    assert s.rec["src_hist_len"].to_list() == [0, 0, 1, 0]
    assert s.src["rec_hist_len"].to_list() == [2]
    assert s.src_history["item_id"].to_list() == [10]  # no click: the first item shown


def test_session_item_is_the_first_click_else_the_first_shown():
    src = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 1],
            "search_session_id": [7, 7, 7, 8],
            "search_session_timestamp": [100, 100, 100, 200],
            "keyword": ["[1]", "[1]", "[1]", "[]"],
            "item_id": [30, 31, 32, 40],
            "click_cnt": [0, 1, 1, 0],
            "item_type": ["VIDEO", "LIVE", "VIDEO", "USER"],
        }
    ).with_row_index("row")
    rec = pl.DataFrame(
        schema={
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "playing_time": pl.Float64,
            "duration_ms": pl.Float64,
            "timestamp": pl.Float64,
            **{
                c: pl.Int8
                for c in ("click", "forward", "like", "follow", "search", "search_item_related")
            },
        }
    ).with_row_index("row")
    s = split_logs(rec.lazy(), src.lazy(), SplitParams())
    assert s.src_history["item_id"].to_list() == [31, 40]
    assert s.src_history["keyword"].to_list() == [[1], []]
    assert len(s.src) == 4  # search rows of every item type stay search samples


@pytest.mark.parametrize(
    "duration,played,expected",
    [(5000, 5000, 1), (5000, 4999, 0), (20000, 7001, 1), (20000, 7000, 0), (7000, 7000, 1)],
)
def test_long_view_follows_the_valid_play_rule(duration, played, expected):
    df = pl.DataFrame({"duration_ms": [float(duration)], "playing_time": [float(played)]})
    assert df.select(LABEL["long_view"].expr()).item() == expected


def test_search_rows_of_types_the_feed_never_serves_stay_search_samples(splits, raw_frames):
    src = raw_frames["src_inter.csv"]
    feed_types = {"VIDEO", "IMAGE_ATLAS"}
    other = src.filter(~pl.col("item_type").is_in(feed_types))
    assert len(other) > 0  # the generator writes them, as the release has them
    kept = splits.src.filter(~pl.col("result_type").is_in(feed_types))  # src_inter's own type
    assert len(kept) == len(other)
    assert sorted(kept["search_session_id"]) == sorted(other["search_session_id"])


def test_default_cutoffs_are_the_last_days_of_the_datas_own_span():
    last = beijing_ms("2023-05-31 23:59:59")
    c = cutoffs(SplitParams(), beijing_ms("2023-05-22 00:00:00"), last)
    assert c.describe()["valid_start"] == "2023-05-26 00:00:00"
    assert c.describe()["test_start"] == "2023-05-29 00:00:00"
    fixed = SplitParams(valid_start="2023-06-04 00:00:00", test_start="2023-06-07 00:00:00")
    assert cutoffs(fixed, 0, last).test_start == beijing_ms("2023-06-07 00:00:00")


@pytest.mark.parametrize("profile", ["kuaisar_small", "kuaisar_full"])
def test_each_release_profile_gets_non_empty_parts_from_the_default_cutoffs(tmp_path, profile):
    from tasks.kuaisar.profiles import PROFILES, profile_params
    from tasks.kuaisar.world import generate

    frames = generate(profile_params(profile, 0.002))
    for name in ("rec_inter.csv", "src_inter.csv"):
        frames[name].write_csv(tmp_path / name)
    s = split_logs(
        read_raw(tmp_path, "rec_inter.csv"), read_raw(tmp_path, "src_inter.csv"), SplitParams()
    )
    check_parts(s, SplitParams())  # raises on an empty or too-small part
    first = frames["rec_inter.csv"]["time"].min()
    assert first.startswith(PROFILES[profile].start)
    for samples in (s.rec, s.src):
        counts = dict(samples.group_by("part").len().iter_rows())
        assert all(counts[part] >= 100 for part in PARTS), counts


def test_cutoffs_that_leave_a_part_empty_stop_split_naming_it(splits):
    late = SplitParams(valid_start="2023-07-01 00:00:00", test_start="2023-07-04 00:00:00")
    rec = splits.rec.with_columns(part=pl.lit("train"))
    s = splits.__class__(**{**splits.__dict__, "rec": rec})
    with pytest.raises(SplitError) as e:
        check_parts(s, late)
    msg = str(e.value)
    assert "the feed valid part has 0 rows" in msg and "the feed test part has 0 rows" in msg
    assert "the data spans 2023-05-22" in msg and "split.valid_days" in msg
    with pytest.raises(SplitError, match="the feed train part has 0 clicks"):
        check_parts(
            splits.__class__(
                **{**splits.__dict__, "rec": splits.rec.with_columns(click=pl.lit(0.0))}
            ),
            SplitParams(),
        )
