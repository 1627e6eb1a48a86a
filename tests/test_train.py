"""train/evaluate: masked loss, a planted signal recovered end to end, checkpoints that load safely."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

from tasks.config.params import (
    FeaturesParams,
    GenerateParams,
    SplitParams,
    TrainParams,
    load_params,
)
from tasks.features import build_features
from tasks.kuaisar.encoding import item_table, user_table
from tasks.kuaisar.world import generate
from tasks.split import PARTS, split_logs
from tasks.training.checkpoint import build_model, load_checkpoint
from tasks.training.engine import EngineOptions, TrainingDiverged, fit, masked_bce, predict
from tasks.training.tensors import embedding_spec, load_histories, load_samples, make_batch
from tests.conftest import ROOT

TASKS = ["click", "long_view", "like"]


def test_masked_bce_ignores_samples_outside_a_tasks_space():
    logits = torch.tensor([[10.0, 0.0], [-10.0, 3.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    loss = masked_bce(logits, labels)
    assert loss[0] < 1e-3 and loss[1] == 0  # an all-masked task contributes nothing, not NaN


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """A small dataset with strong planted signal, through split and features, on disk."""
    frames = generate(
        GenerateParams(
            n_users=300, n_items=2000, rec_actions=40_000, search_sessions=3000, n_categories=10
        )
    )
    raw = tmp_path_factory.mktemp("raw")
    for name, df in frames.items():
        df.write_csv(raw / name)
    from tasks.split import read_raw

    s = split_logs(read_raw(raw, "rec_inter.csv"), read_raw(raw, "src_inter.csv"), SplitParams())
    split = {
        f"{k}_{p}": getattr(s, k).filter(pl.col("part") == p).drop("part")
        for k in ("rec", "src")
        for p in PARTS
    }
    split |= {"rec_history": s.rec_history, "src_history": s.src_history}
    out, _, spec = build_features(split, item_table(raw), user_table(raw), FeaturesParams())
    d = tmp_path_factory.mktemp("features")
    for name, df in out.items():
        df.write_parquet(d / f"{name}.parquet")
    (d / "spec.json").write_text(json.dumps(spec))
    return d, spec


def test_planted_click_signal_is_recovered_and_checkpoint_round_trips(features, tmp_path):
    d, spec = features
    params = load_params(ROOT / "params.yaml").model_copy(
        update={"train": TrainParams(tasks=TASKS, epochs=3, patience=3, batch_size=512)}
    )
    cpu = torch.device("cpu")
    train = load_samples(d, "rec_train", spec, TASKS, cpu)
    valid = load_samples(d, "rec_valid", spec, TASKS, cpu)
    hist = load_histories(d, spec, cpu)
    torch.manual_seed(0)
    model, config = build_model(params, "mmoe", spec)
    opts = EngineOptions(epochs=3, patience=3, batch_size=512, lr=params.train.lr)
    result = fit(model, train, valid, hist, opts, TASKS, log=lambda m: None)
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]
    best = result.curve[result.best_epoch - 1]
    assert best["valid_score_click"] > 0.62, best  # chance is 0.5

    path = tmp_path / "model.pt"
    torch.save({"config": config, "state_dict": result.state_dict}, path)
    loaded, loaded_config = load_checkpoint(path)  # weights_only=True inside
    assert loaded_config == config
    model.load_state_dict(result.state_dict)
    torch.testing.assert_close(
        torch.from_numpy(predict(loaded, valid, hist, 1000)),
        torch.from_numpy(predict(model, valid, hist, 777)),
    )


def test_a_checkpoint_carrying_code_is_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("this would run on load",))

    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(ValueError, match="not plain weights") as e:
        load_checkpoint(path)
    assert "corrupt" not in str(e.value)  # refused for what it holds, not for being unreadable
    assert "this would run on load" not in capsys.readouterr().out


def test_non_finite_loss_stops_training_naming_the_epoch(features):
    d, spec = features
    params = load_params(ROOT / "params.yaml")
    cpu = torch.device("cpu")
    train = load_samples(d, "rec_train", spec, TASKS, cpu)
    valid = load_samples(d, "rec_valid", spec, TASKS, cpu)
    model, _ = build_model(
        params.model_copy(update={"train": TrainParams(tasks=TASKS)}), "shared_bottom", spec
    )
    with torch.no_grad():
        model.net.head.towers.b.fill_(math.nan)
    opts = EngineOptions(epochs=1, patience=1, batch_size=512, lr=0.01)
    with pytest.raises(TrainingDiverged, match="at step 1 of epoch 1"):
        fit(model, train, valid, load_histories(d, spec, cpu), opts, TASKS)


def test_a_corrupted_checkpoint_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"config": {}, "state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])  # truncated on disk
    with pytest.raises(ValueError, match="truncated or corrupt") as e:
        load_checkpoint(path)
    assert "not plain weights" not in str(e.value)


def test_ranking_candidates_are_seeded_unseen_and_popularity_drawn(features):
    from tasks.evaluation import candidates

    d, spec = features
    frames = {p: pl.read_parquet(d / f"rec_{p}.parquet") for p in PARTS}
    served = pl.concat([f.select("raw_user_id", "item_id") for f in frames.values()])
    c = candidates.draw(frames["train"], frames["test"], served, 99, 300, seed=5)
    again = candidates.draw(frames["train"], frames["test"], served, 99, 300, seed=5)
    assert np.array_equal(c.items, again.items) and c.items.shape == (300, 100)
    ids = c.fields["item_id"].to_numpy()
    test = frames["test"]
    for n, r in enumerate(c.rows):
        assert test["click"][int(r)] == 1 and ids[c.items[n, 0]] == test["item_id"][int(r)]
        seen = set(served.filter(pl.col("raw_user_id") == test["raw_user_id"][int(r)])["item_id"])
        negs = ids[c.items[n, 1:]]
        assert len(set(negs)) == 99 and not (set(negs) & seen)
    # popular items are drawn more often: draw counts follow train impressions
    pop = frames["train"].group_by("item_id").len()
    drawn = pl.DataFrame({"item_id": ids[c.items[:, 1:]].ravel()}).group_by("item_id").len()
    both = pop.join(drawn, on="item_id", suffix="_drawn")
    assert np.corrcoef(both["len"], both["len_drawn"])[0, 1] > 0.5


def test_ranking_metrics_on_known_score_tables():
    from tasks.evaluation.ranking import ranking_metrics

    rng = np.random.default_rng(0)
    best = ranking_metrics(np.c_[np.ones(50), np.zeros((50, 99))])
    assert best == {
        "hr@1": 1.0,
        "hr@5": 1.0,
        "hr@10": 1.0,
        "ndcg@5": 1.0,
        "ndcg@10": 1.0,
        "mrr": 1.0,
    }
    worst = ranking_metrics(np.c_[np.zeros(50), np.ones((50, 99))])
    assert worst["hr@10"] == 0.0 and worst["mrr"] == pytest.approx(0.01)
    rand = ranking_metrics(rng.random((20_000, 100)))
    assert rand["hr@10"] == pytest.approx(0.10, abs=0.01)
    assert rand["ndcg@10"] < rand["hr@10"]


def test_trained_model_ranks_clicks_above_sampled_negatives(features):
    from tasks.evaluation import candidates, ranking

    d, spec = features
    cpu = torch.device("cpu")
    train = load_samples(d, "rec_train", spec, TASKS, cpu)
    valid = load_samples(d, "rec_valid", spec, TASKS, cpu)
    test = load_samples(d, "rec_test", spec, TASKS, cpu)
    hist = load_histories(d, spec, cpu)
    params = load_params(ROOT / "params.yaml").model_copy(
        update={"train": TrainParams(tasks=TASKS)}
    )
    torch.manual_seed(0)
    model, _ = build_model(params, "mmoe", spec)
    fit(
        model,
        train,
        valid,
        hist,
        EngineOptions(epochs=2, patience=2, batch_size=512, lr=0.005),
        TASKS,
        log=lambda _: None,
    )
    frames = {p: pl.read_parquet(d / f"rec_{p}.parquet") for p in PARTS}
    served = pl.concat([f.select("raw_user_id", "item_id") for f in frames.values()])
    c = candidates.draw(frames["train"], frames["test"], served, 99, 400, 0, spec["item_side"])
    s = ranking.scores(model, test, hist, c, spec, TASKS.index("click"))
    # column 0 is the positive's own row, unchanged: it scores as plain prediction does
    own = predict(model, test, hist, 1000)[c.rows, TASKS.index("click")]
    assert np.allclose(1 / (1 + np.exp(-s[:, 0])), own, atol=1e-4)
    m = ranking.ranking_metrics(s)
    assert m["hr@10"] > 0.2, m  # random is 0.10


@pytest.mark.parametrize("order", [list, sorted, lambda k: list(reversed(list(k)))])
def test_history_sequences_reach_the_model_by_name_in_any_spec_order(features, order):
    """spec.json is written with sorted keys: each sequence must still carry its own ids."""
    d, spec = features
    spec = spec | {"sequences": {k: spec["sequences"][k] for k in order(spec["sequences"])}}
    cpu = torch.device("cpu")
    s = load_samples(d, "rec_train", spec, TASKS, cpu)
    idx = torch.nonzero((s.hist[:, 1] > 0) & (s.hist[:, 3] > 0)).squeeze(1)[:256]
    _, _, seqs = make_batch(s, load_histories(d, spec, cpu), idx)
    emb = embedding_spec(spec, 8)
    sizes = dict(emb.sparse) | dict(emb.extra_tables)
    by_name = dict(zip([q.name for q in emb.sequences], seqs, strict=True))
    for q in emb.sequences:  # every id fits the table the model looks it up in
        assert int(by_name[q.name].max()) < sizes[q.table], q
    hist = pl.read_parquet(d / "rec_history.parquet")
    cat_of = dict(zip(hist["item"].to_list(), hist["cat1"].to_list(), strict=True))
    items, cats = by_name["rec_hist_item"], by_name["rec_hist_cat1"]
    assert int(items.max()) > sizes["cat1"]  # item ids, not categories
    pairs = [
        (i, c) for i, c in zip(items.flatten().tolist(), cats.flatten().tolist(), strict=True) if i
    ]
    assert pairs and all(cat_of[i] == c for i, c in pairs)


def test_history_ages_are_bucketed_against_each_samples_own_time(features):
    """src_hist_age/rec_hist_age: each step's age at the sample's timestamp, as spec buckets."""
    from tasks.training.tensors import age_buckets

    d, spec = features
    cpu = torch.device("cpu")
    s = load_samples(d, "rec_test", spec, TASKS, cpu)
    hist = load_histories(d, spec, cpu)
    idx = torch.nonzero(s.hist[:, 3] > 0).squeeze(1)[:300]
    _, _, seqs = make_batch(s, hist, idx)
    by_name = dict(zip(hist.order, seqs, strict=True))
    edges = np.array(spec["age_hours"]) * 3_600_000
    for kind, col, size in (
        ("src", 2, spec["search_history_len"]),
        ("rec", 0, spec["history_len"]),
    ):
        times = pl.read_parquet(d / f"{kind}_history.parquet")["timestamp"].to_numpy()
        ages = by_name[f"{kind}_hist_age"].numpy()
        for row, k in enumerate(idx.tolist()):
            start, n = int(s.hist[k, col]), int(s.hist[k, col + 1])
            events = times[start + max(0, n - size) : start + n]
            age = int(s.time[k]) - events
            assert (age > 0).all()  # a sample sees only strictly earlier events
            want = 1 + np.searchsorted(edges, age, side="left")
            assert ages[row, size - len(events) :].tolist() == want.tolist()
            assert (ages[row, : size - len(events)] == 0).all()  # padding
    hour = 3_600_000
    got = age_buckets(
        torch.tensor([1, 48 * hour, 48 * hour + 1, 10**12, 5]),
        torch.tensor([True, True, True, True, False]),
        torch.tensor([h * hour for h in spec["age_hours"]]),
    )
    at_48 = 1 + spec["age_hours"].index(48)
    assert got.tolist() == [1, at_48, at_48 + 1, len(spec["age_hours"]) + 1, 0]


def test_the_searched_slice_is_the_clicks_on_a_category_searched_shortly_before(features):
    from tasks.evaluation.candidates import ranks_of
    from tasks.evaluation.ranking import recently_searched, searched_categories, sliced_metrics

    d, spec = features
    cpu = torch.device("cpu")
    s = load_samples(d, "rec_test", spec, TASKS, cpu)
    hist = load_histories(d, spec, cpu)
    rows = np.arange(0, len(s), 7)
    cat_col = list(spec["sparse"]).index("cat1")
    got = recently_searched(s, hist, rows, cat_col, 48)
    recent = searched_categories(s, hist, rows, 48)
    sessions = pl.read_parquet(d / "src_history.parquet")
    cats, times = sessions["cat1"].to_numpy(), sessions["timestamp"].to_numpy()
    size = spec["search_history_len"]
    want, want_cats = [], []
    for r in rows:
        start, n = int(s.hist[r, 2]), int(s.hist[r, 3])
        seen = slice(start + max(0, n - size), start + n)
        age = int(s.time[r]) - times[seen]
        hit = (cats[seen] == int(s.sparse[r, cat_col])) & (cats[seen] > 0) & (age <= 48 * 3600e3)
        want.append(bool(hit.any()))
        want_cats.append(set(cats[seen][(age <= 48 * 3600e3) & (cats[seen] > 0)].tolist()))
    assert got.tolist() == want
    assert [set(c.tolist()) - {0} for c in recent] == want_cats
    assert any(want_cats) and recent.shape == (len(rows), size)
    assert 0 < got.sum() < len(got)
    assert recently_searched(s, hist, rows, cat_col, 24 * 365).sum() > got.sum()
    scores = np.random.default_rng(0).random((len(rows), 100))
    scores[got, 0] = 2.0  # every searched positive first: the slice's HR@1 is 1
    m = sliced_metrics(ranks_of(scores), got, "searched")
    assert m["searched_positives"] == got.sum() and m["searched_hr@1"] == 1.0
    assert sliced_metrics(ranks_of(scores), np.zeros(len(rows), bool), "x") == {"x_positives": 0}


def test_search_samples_carry_their_own_query_and_feed_samples_none(features):
    from tasks.training.tensors import scenario_samples

    d, spec = features
    cpu = torch.device("cpu")
    tasks = ["click", "search_click"]
    joint = scenario_samples(d, "test", spec, "joint", tasks, cpu)
    hist = load_histories(d, spec, cpu)
    n_feed = len(pl.read_parquet(d / "rec_test.parquet", columns=["click"]))
    keywords = pl.read_parquet(d / "src_test.parquet", columns=["keyword"])["keyword"].to_list()
    rows = torch.tensor([0, 5, n_feed - 1, n_feed, n_feed + 3, len(joint) - 1])
    _, _, seqs = make_batch(joint, hist, rows)
    query = dict(zip(hist.order, seqs, strict=True))["query_word"]
    assert query.shape == (len(rows), spec["max_query_words"])
    assert (query[:3] == 0).all()  # feed rows: no query
    for got, r in zip(query[3:].tolist(), rows[3:].tolist(), strict=True):
        words = keywords[r - n_feed]
        assert got == words + [0] * (len(got) - len(words)) and any(got)


def test_sampled_negatives_are_unserved_popular_items_on_each_clicks_own_row(features):
    from tasks.training.negatives import with_sampled_negatives

    d, spec = features
    fields = list(spec["sparse"])
    train = load_samples(d, "rec_train", spec, TASKS, torch.device("cpu"))
    out = with_sampled_negatives(train, spec, TASKS.index("click"), 3, seed=1)
    again = with_sampled_negatives(train, spec, TASKS.index("click"), 3, seed=1)
    assert torch.equal(out.sparse, again.sparse)  # seeded
    clicks = np.flatnonzero(train.labels[:, 0].numpy() == 1)
    n = len(train)
    assert len(out) == n + 3 * len(clicks)
    assert torch.equal(out.sparse[:n], train.sparse) and torch.equal(out.labels[:n], train.labels)
    src = torch.from_numpy(np.repeat(clicks, 3))
    item_cols = [fields.index(c) for c in spec["item_side"] if c in fields]
    dense_cols = [spec["dense"].index(c) for c in spec["item_side"] if c in spec["dense"]]
    assert dense_cols, "the spec declares an item-side dense field (log_duration)"
    other = [k for k in range(len(fields)) if k not in item_cols]
    neg = out.sparse[n:]
    # the click's own user, features, histories and time; only the item's fields differ
    assert torch.equal(neg[:, other], train.sparse[src][:, other])
    assert torch.equal(out.hist[n:], train.hist[src]) and torch.equal(out.time[n:], train.time[src])
    assert (out.user[n:] == train.user[src.numpy()]).all()
    assert (out.labels[n:, 0] == 0).all() and out.labels[n:, 1:].isnan().all()  # click only
    # each drawn item carries its own fields, sparse and dense (none of the click's item's),
    # and was never served to that user in train
    sp, dn = train.sparse.numpy(), train.dense.numpy()
    own = {int(r[0]): tuple(r) for r in np.c_[sp[:, item_cols], dn[:, dense_cols]]}
    got = np.c_[neg[:, item_cols].numpy(), out.dense[n:][:, dense_cols].numpy()]
    assert all(own[int(r[0])] == tuple(r) for r in got)
    u, i = fields.index("user_id"), fields.index("item_id")
    served = set(zip(sp[:, u].tolist(), sp[:, i].tolist(), strict=True))
    drawn = set(zip(neg[:, u].tolist(), neg[:, i].tolist(), strict=True))
    assert not (drawn & served)
    # popular items are drawn more often
    pop = np.bincount(sp[:, i], minlength=sp[:, i].max() + 1)
    hits = np.bincount(neg[:, i].numpy(), minlength=len(pop))
    assert np.corrcoef(pop[1:], hits[1 : len(pop)])[0, 1] > 0.5


def test_a_models_training_options_go_to_its_fit_config_not_its_architecture(features):
    d, spec = features
    params = load_params(ROOT / "params.yaml")
    section = {**params.models["mmoe"], "weight_decay": 0.01, "sampled_negatives": 2}
    params = params.model_copy(
        update={"train": TrainParams(tasks=TASKS), "models": {**params.models, "mmoe": section}}
    )
    _, config = build_model(params, "mmoe", spec)
    assert config["fit"] == {"weight_decay": 0.01, "sampled_negatives": 2, "select": "ndcg@10"}
    assert not {"weight_decay", "sampled_negatives", "select"} & set(config["head"])


def test_every_ranking_candidate_carries_every_item_side_field_of_its_own_item(features):
    """No field of the positive (sparse or dense) survives in a candidate's row."""
    from tasks.evaluation import candidates, ranking

    d, spec = features
    cpu = torch.device("cpu")
    test = load_samples(d, "rec_test", spec, TASKS, cpu)
    hist = load_histories(d, spec, cpu)
    frames = {p: pl.read_parquet(d / f"rec_{p}.parquet") for p in PARTS}
    served = pl.concat([f.select("raw_user_id", "item_id") for f in frames.values()])
    c = candidates.draw(frames["train"], frames["test"], served, 9, 50, 0, spec["item_side"])
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Probe(torch.nn.Module):  # records what a model is given
        def forward(self, sparse, dense, seqs):
            seen.append((sparse, dense))
            return torch.zeros(len(sparse), len(TASKS))

    ranking.scores(Probe(), test, hist, c, spec, 0)
    sparse, dense = (torch.cat(x).numpy() for x in zip(*seen, strict=True))
    items = pl.concat([frames["train"], frames["test"]]).unique("item_id", keep="first")
    sparse_side = [f for f in spec["item_side"] if f in spec["sparse"]]
    dense_side = [f for f in spec["item_side"] if f in spec["dense"]]
    assert dense_side == ["log_duration"]
    own = {r["item_id"]: r for r in items.select(spec["item_side"]).to_dicts()}
    names = list(spec["sparse"])
    for row_s, row_d in zip(sparse, dense, strict=True):
        item = own[int(row_s[names.index("item_id")])]
        assert all(row_s[names.index(f)] == item[f] for f in sparse_side)
        assert all(
            row_d[spec["dense"].index(f)] == pytest.approx(item[f], abs=1e-6) for f in dense_side
        )
    # the candidates differ in duration: the positive's value was not kept
    assert len(set(dense[:, spec["dense"].index("log_duration")].round(5))) > 10


def test_candidates_round_trip_through_their_file_and_full_ranks_match_a_brute_force(
    features, tmp_path
):
    from tasks.evaluation import candidates, ranking

    d, spec = features
    frames = candidates.feed_frames(d)
    served = candidates.served_pairs(frames)
    c = candidates.draw(frames["train"], frames["test"], served, 9, 60, 0, spec["item_side"])
    full = np.arange(len(c.rows)) % 4 == 0
    vocab = pl.DataFrame(
        {"item_id": np.arange(1, 10_000) * 7, "index": np.arange(1, 10_000)}
    )  # raw id = 7 x code
    table = candidates.candidate_table(c, frames["test"], vocab, full)
    assert (
        table["raw_item_id"].to_list() == (table["item_id"].list.eval(pl.element() * 7)).to_list()
    )
    table.write_parquet(tmp_path / "test.parquet")
    back = candidates.load_candidates(d, tmp_path / "test.parquet")
    ids = c.fields["item_id"].to_numpy()
    assert np.array_equal(back.rows, c.rows) and np.array_equal(back.full, full)
    assert np.array_equal(back.fields["item_id"].to_numpy()[back.items], ids[c.items])

    cpu = torch.device("cpu")
    test = load_samples(d, "rec_test", spec, TASKS, cpu)
    hist = load_histories(d, spec, cpu)
    col = list(spec["sparse"]).index("item_id")

    class ByItem(torch.nn.Module):  # a model whose score is the item's encoded id
        def forward(self, sparse, dense, seqs):
            return sparse[:, col : col + 1].float().repeat(1, len(TASKS))

    seen = candidates.served_indices(d, back)
    ranks = ranking.catalogue_ranks(ByItem(), test, hist, back, seen, spec, 0, batch=500)
    cat = back.fields["item_id"].to_numpy()
    by_user = served.group_by("raw_user_id").agg(pl.col("item_id").unique())
    by_user = dict(zip(by_user["raw_user_id"].to_list(), by_user["item_id"].to_list(), strict=True))
    users = frames["test"]["raw_user_id"].to_numpy()
    for r, pos, got in zip(back.rows[full], back.items[full, 0], ranks, strict=True):
        unserved = cat[~np.isin(cat, by_user[users[r]])]
        assert got == 1 + int((unserved > cat[pos]).sum())
    assert len(ranks) == full.sum() and ranks.max() > 10


def test_training_redraws_its_negatives_each_epoch_and_selects_on_the_given_score(features):
    from tasks.train import epoch_samples

    d, spec = features
    cpu = torch.device("cpu")
    train = load_samples(d, "rec_train", spec, TASKS, cpu)
    valid = load_samples(d, "rec_valid", spec, TASKS, cpu)
    draw = epoch_samples(train, spec, TASKS, 1, seed=0)
    one, two, again = draw(1), draw(2), draw(1)
    assert len(one) == len(two) > len(train)
    assert torch.equal(one.sparse, again.sparse)  # seeded by the epoch
    assert not torch.equal(one.sparse[len(train) :], two.sparse[len(train) :])
    assert epoch_samples(train, spec, TASKS, 0, seed=0) is train

    params = load_params(ROOT / "params.yaml").model_copy(
        update={"train": TrainParams(tasks=TASKS)}
    )
    model, _ = build_model(params, "shared_bottom", spec)
    drawn, marks = [], iter([0.1, 0.5, 0.2, 0.3])

    def samples(epoch):
        drawn.append(epoch)
        return draw(epoch)

    opts = EngineOptions(epochs=4, patience=3, batch_size=2048, lr=0.005)
    hist = load_histories(d, spec, cpu)
    result = fit(
        model, samples, valid, hist, opts, TASKS, log=lambda m: None,
        select=("fake", lambda m: next(marks)),
    )  # fmt: skip
    assert drawn == [1, 2, 3, 4] and result.best_epoch == 2
    assert [r["valid_fake"] for r in result.curve] == [0.1, 0.5, 0.2, 0.3]
    assert result.curve[0]["valid_score"] == 0.1 and "valid_mean_auc" in result.curve[0]


def test_adamw_decays_weight_matrices_only(features):
    from tasks.training.engine import decay_groups, make_optimizers

    d, spec = features
    params = load_params(ROOT / "params.yaml").model_copy(
        update={"train": TrainParams(tasks=TASKS)}
    )
    for name in ("mmoe", "sesrec"):
        model, _ = build_model(params, name, spec)
        decay, keep, sparse = decay_groups(model)
        named = {id(p): n for n, p in model.named_parameters()}
        assert len(decay) + len(keep) + len(sparse) == len(list(model.parameters()))
        tables = {
            id(m.weight)
            for m in model.modules()
            if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)
        }
        assert tables and tables <= {id(p) for p in keep}
        assert all(p.dim() >= 2 for p in decay) and all(id(p) not in tables for p in decay)
        assert any("bias" in named[id(p)] for p in keep) and not sparse
        opt = make_optimizers(model, EngineOptions(1, 1, 8, 0.01, weight_decay=0.1))[0]
        assert isinstance(opt, torch.optim.AdamW)
        assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_every_rng_is_restored():
    from tasks.training.engine import rng_state, set_rng_state

    np.random.seed(5)
    torch.manual_seed(5)
    state = rng_state()
    first = (np.random.random(3), torch.rand(3))
    set_rng_state(state)
    again = (np.random.random(3), torch.rand(3))
    assert np.array_equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_an_epoch_whose_tower_is_dead_is_flagged_in_the_curve_and_the_log(features):
    d, spec = features
    cpu = torch.device("cpu")
    train = load_samples(d, "rec_train", spec, TASKS, cpu)
    valid = load_samples(d, "rec_valid", spec, TASKS, cpu)
    params = load_params(ROOT / "params.yaml").model_copy(
        update={"train": TrainParams(tasks=TASKS)}
    )
    torch.manual_seed(0)
    model, _ = build_model(params, "shared_bottom", spec)
    towers = model.net.head.towers
    with torch.no_grad():  # the like tower's hidden units all inactive: a constant logit
        towers.hidden.biases[0][TASKS.index("like")].fill_(-1e4)
    logged: list[str] = []
    opts = EngineOptions(epochs=1, patience=1, batch_size=2048, lr=0.005)
    result = fit(model, train, valid, load_histories(d, spec, cpu), opts, TASKS, log=logged.append)
    assert result.curve[0]["constant_tasks"] == ["like"]  # dead units get no gradient: still dead
    assert any("warning" in m and "like" in m for m in logged)
    torch.manual_seed(0)
    live, _ = build_model(params, "shared_bottom", spec)
    ok = fit(live, train, valid, load_histories(d, spec, cpu), opts, TASKS, log=lambda m: None)
    assert ok.curve[0]["constant_tasks"] == []
