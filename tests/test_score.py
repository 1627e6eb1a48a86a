"""The score stage's parts: the model choice (paired CI against the runner-up) and the top-K of
unserved pool items, on a model whose scores are known."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from tasks.config.params import Params
from tasks.score import Context, choose, served_mask, top_k
from tasks.training.items import ItemFields
from tasks.training.tensors import Samples

# sample columns: user, item_id, cat and one dense column; all but user are item-side
SPEC = {
    "sparse": ["user", "item_id", "cat"],
    "dense": ["quality"],
    "item_side": ["item_id", "cat", "quality"],
}


class ItemScore(torch.nn.Module):
    """A model whose click logit is the row's `quality` plus 0.01 x its user: known ranks."""

    def forward(self, sparse, dense, seqs):
        logit = dense[:, 0] + 0.01 * sparse[:, 0].float()
        return torch.stack([torch.zeros_like(logit), logit], 1)  # task 1 is the click


def context(users: int) -> Context:
    s = Samples(
        sparse=torch.stack([torch.arange(users), torch.zeros(users), torch.zeros(users)], 1).long(),
        dense=torch.full((users, 1), -5.0),  # the served item's own quality: must not survive
        labels=torch.zeros(users, 2),
        hist=torch.zeros(users, 4, dtype=torch.long),
        user=np.arange(100, 100 + users),
    )
    return Context(s, s.user, np.arange(users))


def pool(n: int) -> ItemFields:
    items = pl.DataFrame(
        {"item_id": np.arange(1, n + 1), "cat": np.arange(n) % 3, "quality": np.arange(n) * 0.1}
    )
    return ItemFields.from_frame(items, SPEC)


@pytest.mark.parametrize("batch", [7, 1000])  # several forward passes, and one
def test_top_k_is_each_users_best_unserved_items_best_first(batch):
    ctx, items = context(5), pool(8)  # pool position p has quality 0.1 p: best is p = 7
    served = (np.array([0, 0, 2, 4, 4, 4, 4, 4, 4]), np.array([7, 5, 6, 0, 1, 2, 3, 4, 5]))
    best, prob = top_k(ItemScore(), ctx, None, items, served, task=1, k=3, batch=batch)
    assert best.tolist() == [[6, 4, 3], [7, 6, 5], [7, 5, 4], [7, 6, 5], [7, 6, -1]]
    # user 4 has 2 unserved items: the third place is empty
    assert np.isnan(prob[4, 2]) and np.isfinite(prob[:4]).all()
    expected = 1 / (1 + np.exp(-(0.1 * best[1] + 0.01 * 1)))
    np.testing.assert_allclose(prob[1], expected, rtol=1e-6)
    assert (np.diff(prob[:4], axis=1) <= 0).all()


def test_served_pairs_map_to_user_and_pool_positions():
    frames = {
        "train": pl.DataFrame({"raw_user_id": [100, 100, 102], "item_id": [3, 9, 3]}),
        "test": pl.DataFrame({"raw_user_id": [101, 100], "item_id": [5, 3]}),  # 3 twice: once
    }
    u, k = served_mask(frames, np.array([100, 101, 102]), np.array([3, 5, 7]))
    assert sorted(zip(u.tolist(), k.tolist(), strict=True)) == [(0, 0), (1, 1), (2, 0)]
    assert (np.diff(u) >= 0).all()  # sorted by user, as top_k reads them


def evaluated(tmp_path, ranks: dict[str, list[int]], select: str = "ndcg@10") -> Params:
    """An artifacts folder with each model's ranks of the same clicks, its predictions of the
    same test rows, and their ranking metrics and AUC in metrics.json."""
    from tasks.evaluation.candidates import rank_metrics

    for m, r in ranks.items():
        (tmp_path / m).mkdir()
        metrics = {"click": rank_metrics(np.array(r))}
        pl.DataFrame(
            {"row": np.arange(len(r)), "rank": r, "full_rank": [-1] * len(r), "searched": False}
        ).write_parquet(tmp_path / m / "ranks.parquet")
        # test rows: the click label and a score that is better the better the model ranks
        y = np.arange(200) % 2
        p = y * (1 / np.mean(r)) + np.random.default_rng(1).random(200)
        metrics["click"]["auc"] = float(np.mean(p[y == 1][:, None] > p[y == 0][None, :]))
        (tmp_path / m / "metrics.json").write_text(json.dumps(metrics))
        pl.DataFrame(
            {"file": "rec", "row": np.arange(200), "y_click": y * 1.0, "p_click": p}
        ).write_parquet(tmp_path / m / "predictions.parquet")
    return Params(
        paths={"artifacts": str(tmp_path)},
        train={"models": list(ranks)},
        models={m: {"kind": "mmoe"} for m in ranks},
        score={"select": select},
    )


def test_the_best_model_is_chosen_with_its_paired_ci_against_the_runner_up(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.integers(1, 4, 400)  # mostly in the top 3
    params = evaluated(
        tmp_path,
        {"a": list(good + 5), "b": list(good), "c": list(np.where(good < 3, good, good + 1))},
    )
    c = choose(params)
    assert c["model"] == "b" and c["against"]["runner_up"] == "c"
    assert c["values"]["b"] > c["values"]["c"] > c["values"]["a"]
    assert c["against"]["diff"] > 0 and c["against"]["excludes_0"]
    assert c["against"]["diff"] == pytest.approx(c["values"]["b"] - c["values"]["c"])


def test_auc_picks_on_the_same_test_rows(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.integers(1, 4, 400)
    c = choose(evaluated(tmp_path, {"a": list(good + 40), "b": list(good)}, select="auc"))
    assert c["select"] == "click/auc" and c["model"] == "b" and c["against"]["runner_up"] == "a"
    assert c["against"]["n"] == 200
    assert c["against"]["diff"] == pytest.approx(c["values"]["b"] - c["values"]["a"], abs=1e-9)


def test_a_tie_covers_0_and_keeps_the_declared_order(tmp_path):
    c = choose(evaluated(tmp_path, {"x": [1, 2, 3, 4], "y": [1, 2, 3, 4]}))
    assert c["model"] == "x" and not c["against"]["excludes_0"]


def test_an_unknown_metric_is_refused_by_name(tmp_path):
    params = evaluated(tmp_path, {"x": [1, 2]}, select="ndcg@11")
    with pytest.raises(SystemExit, match="ndcg@11"):
        choose(params)
