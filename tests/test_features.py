"""features: vocabularies from train only; unknown values map to 0."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.config.params import FeaturesParams, SplitParams
from tasks.features import build_features
from tasks.kuaisar.encoding import fit_vocab, item_table, user_table
from tasks.split import PARTS, read_raw, split_logs

NEW_ID = 10**12


@pytest.fixture(scope="module")
def built(raw_dir):
    s = split_logs(
        read_raw(raw_dir, "rec_inter.csv"), read_raw(raw_dir, "src_inter.csv"), SplitParams()
    )
    frames = {f"rec_{p}": s.rec.filter(pl.col("part") == p).drop("part") for p in PARTS}
    frames |= {f"src_{p}": s.src.filter(pl.col("part") == p).drop("part") for p in PARTS}
    frames |= {"rec_history": s.rec_history, "src_history": s.src_history}
    # an item, a user and a query word that only the test part has
    first = pl.int_range(pl.len()) == 0
    frames["rec_test"] = frames["rec_test"].with_columns(
        item_id=pl.when(first).then(NEW_ID).otherwise(pl.col("item_id")),
        user_id=pl.when(first).then(NEW_ID).otherwise(pl.col("user_id")),
    )
    frames["src_test"] = frames["src_test"].with_columns(
        keyword=pl.when(first).then(pl.lit([NEW_ID])).otherwise(pl.col("keyword"))
    )
    return frames, build_features(
        frames, item_table(raw_dir), user_table(raw_dir), FeaturesParams()
    )


def test_fit_vocab_orders_by_frequency_and_drops_rare_values():
    v = fit_vocab(pl.Series("x", [5, 5, 5, 9, 9, 2, None]), min_count=2)
    assert v["x"].to_list() == [5, 9] and v["index"].to_list() == [1, 2]


def test_vocabularies_come_from_train_only(built):
    split, (out, vocabs, spec) = built
    train_items = set(split["rec_train"]["item_id"]) | set(split["src_train"]["item_id"])
    assert set(vocabs["item_id"]["item_id"]) == train_items
    assert spec["sparse"]["item_id"] == len(train_items) + 1  # + the unknown index 0
    assert NEW_ID not in set(vocabs["item_id"]["item_id"]) | set(vocabs["user_id"]["user_id"])
    for name, col in (("rec_test", "item_id"), ("rec_test", "user_id")):
        raw, enc = split[name][col].to_list(), out[name][col].to_list()
        assert [e == 0 for e in enc] == [r not in set(vocabs[col][col]) for r in raw]
        assert enc[0] == 0
    assert out["src_test"]["keyword"][0].to_list() == [0]


def test_encoded_frames_keep_rows_and_history_alignment(built):
    split, (out, _, spec) = built
    for name in split:
        assert len(out[name]) == len(split[name]), name
    assert out["rec_train"]["rec_hist_start"].equals(split["rec_train"]["rec_hist_start"])
    assert out["rec_history"]["item"].min() >= 0
    assert set(spec["sequences"]) == {
        "rec_hist_item",
        "rec_hist_cat1",
        "src_hist_item",
        "src_hist_cat1",
        "src_hist_word",
        "rec_hist_age",
        "src_hist_age",
        "query_word",
    }
    assert spec["extra_tables"]["age"] == len(spec["age_hours"]) + 2  # + padding, + the oldest
    for name in ("rec_history", "src_history"):  # ages are taken against these at batch time
        assert out[name]["timestamp"].equals(split[name]["timestamp"])
    for f, size in spec["sparse"].items():
        assert out["rec_test"][f].max() < size, f


def test_a_search_sessions_category_is_the_modal_category_of_what_it_showed():
    from tasks.kuaisar.encoding import with_session_category

    items = pl.LazyFrame({"item_id": [1, 2, 3, 4], "cat1": [7, 8, 8, 9]})
    sessions = pl.LazyFrame(
        {
            "item_id": [1, 1, 4, 5],  # the item each session led to (5: no item row)
            "results": [[1, 2, 3], [1, 4], [5, 6], [5]],
            "cat1": [7, 7, 9, None],  # that item's category, as the join gives it
        }
    )
    got = with_session_category(sessions, items).collect()["cat1"].to_list()
    # 8 outvotes the clicked item's 7; a tie goes to the session's own item (7 over 9); no
    # result with a category keeps the item's (9), or none
    assert got == [8, 7, 9, None]
