"""oracle: the built-in generator's own truth as a ranker, to bound what a user's searches can add
to feed NDCG@10 on the ranking evaluation. Not a pipeline stage: it reads params.yaml and redraws
the generated logs (deterministic for generate.seed), so it needs no data on disk.

    python -m flows.experiments.oracle [--positives 10000 | --candidates FILE]  # one JSON object

It ranks the candidates stage's own file (paths.candidates/test.parquet, the clicks and
candidates every evaluate@ ranked) when there is one, else draws with the same protocol
(tasks.evaluation.candidates.draw): test clicks (served from split's test cut-off on; a seeded sample
of `positives`) each against candidates.negatives items drawn by train popularity, never one the
user was served. Each candidate is scored by the generator's
probability that the user is served it and clicks it, over the chance that the draw picks it as
a negative (so the score is the posterior that a candidate is the clicked one):

    log P(served | user, time) + log P(click | served) - log P(drawn as a negative)

with the served category from generate.serving_shares (and search_serving) and the click from
generate.click_signal plus the search effect (logistic-normal approximation for the noise). Two
rankers differ only in what they know about searches:
- `dynamic` knows them: the search effect on categories searched in the search_effect_hours
  before the click, and (with search_serving) the category of the last search;
- `static` knows every other planted preference, and for searches only each user's train-time
  average of the same terms: about what a model without search history learns from the feed log.
`gain` (dynamic - static) is what the planted search effect is worth on all ranked clicks to a
model that learns everything else as well as the generator knows it. It is an expectation, not a
theorem: a feed history can reveal a search a little (clicks right after it), and a trained model
is not the truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.config.params import Params, load_params
from tasks.evaluation.candidates import click_values, draw, rank_metrics, ranks_of
from tasks.evaluation.paired import paired_mean
from tasks.kuaisar import world as g
from tasks.split import cutoffs


def _log_click(logit: np.ndarray) -> np.ndarray:
    """log E[sigmoid(logit + noise)], noise ~ N(0, CLICK_NOISE^2) (probit approximation)."""
    x = logit / np.sqrt(1 + np.pi * g.CLICK_NOISE**2 / 8)
    return -np.logaddexp(0.0, -x)


def _user_means(u: np.ndarray, x: np.ndarray, n_users: int) -> np.ndarray:
    """(U, C): per user, the mean over their rows of x (n, C)."""
    n = np.maximum(np.bincount(u, minlength=n_users), 1)
    return np.stack([np.bincount(u, x[:, c], n_users) for c in range(x.shape[1])], 1) / n[:, None]


def from_candidates(
    path: Path, rec: pl.DataFrame, item_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates stage's clicks as (P,) rows of the generator's feed log and (P, W)
    generator item indices: the very candidates every evaluate@ ranked."""
    c = pl.read_parquet(path)
    log = rec.select(
        pl.col("u").alias("raw_user_id") + 1,
        pl.col("i"),
        pl.col("timestamp").cast(pl.Int64),
        pl.int_range(pl.len()).alias("log_row"),
    ).unique(["raw_user_id", "i", "timestamp"], keep="first")
    items = np.searchsorted(item_ids, np.array(c["raw_item_id"].to_list()))
    keys = c.select("raw_user_id", pl.col("timestamp").cast(pl.Int64), pl.Series("i", items[:, 0]))
    found = keys.join(log, on=["raw_user_id", "i", "timestamp"], how="left", maintain_order="left")
    if found["log_row"].null_count():
        raise ValueError(
            f"{path}: {found['log_row'].null_count()} candidate clicks are not in the "
            "generator's log for these params: drawn from another dataset"
        )
    return found["log_row"].to_numpy(), items


def search_gain_bound(
    p: Params, positives: int | None = None, candidates: Path | None = None
) -> dict[str, Any]:
    """Ranking metrics of the `dynamic` and `static` truth rankers (module docstring), on the
    candidates stage's file `candidates` when given (the clicks every model ranked), else on
    a draw of `positives` test clicks with the same protocol."""
    gp, cp = p.generate, p.candidates
    _, w, item_ids, search, rec = g.draw_logs(gp)
    u, i = rec["u"].to_numpy(), rec["i"].to_numpy()
    t = rec["timestamp"].to_numpy().astype(np.int64)
    # split's own rule over both logs' time range (tasks.split.cutoffs)
    ends = np.concatenate([t, search["search_session_timestamp"].to_numpy()])
    cut = cutoffs(p.split, int(ends.min()), int(ends.max()))
    valid_start, test_start = cut.valid_start, cut.test_start
    in_train = t < valid_start
    if candidates is not None:
        test, items = from_candidates(candidates, rec, item_ids)
    else:
        frame = pl.DataFrame({"raw_user_id": u, "click": rec["click"], "item_id": i + 1})
        c = draw(
            frame.filter(in_train),
            frame.filter(t >= test_start),
            frame,
            cp.negatives,
            positives or cp.positives,
            cp.seed,
        )
        test = np.flatnonzero(t >= test_start)[c.rows]
        items = c.fields["item_id"].to_numpy()[c.items] - 1  # (P, W) generator item indices
    users = np.broadcast_to(u[test][:, None], items.shape)
    cats, times = w.item_cat[items], np.broadcast_to(t[test][:, None], items.shape)
    n_users, n_cats = len(w.feed_cats), len(w.cat_pop)
    hours = gp.search_effect_hours

    def recent(uu: np.ndarray, cc: np.ndarray, tt: np.ndarray, within: float = hours) -> np.ndarray:
        flat = g.recently_searched(uu.ravel(), cc.ravel(), tt.ravel(), search, within)
        return flat.reshape(uu.shape)

    # the same terms at every train impression, averaged per user: what `static` knows
    ut, tt = u[in_train], t[in_train]
    every_cat = np.broadcast_to(np.arange(n_cats), (len(ut), n_cats))
    r_mean = _user_means(
        ut,
        recent(np.repeat(ut[:, None], n_cats, 1), every_cat, np.repeat(tt[:, None], n_cats, 1)),
        n_users,
    )

    shares = np.take_along_axis(g.serving_shares(w, u[test]), cats, 1)
    serve_dyn, serve_static = shares, shares
    if gp.search_serving > 0:  # that share of impressions shows the last searched category
        k = gp.search_serving
        last = g.last_searched(u[test], t[test], search, hours)[:, None]
        serve_dyn = np.where(last >= 0, (1 - k) * shares + k * (cats == last), shares)
        last_t = g.last_searched(ut, tt, search, hours)
        per_cat = _user_means(ut, (last_t[:, None] == np.arange(n_cats)).astype(float), n_users)
        any_cat = per_cat.sum(1)  # the share of impressions with a recent search at all
        serve_static = (1 - k * any_cat[users]) * shares + k * per_cat[users, cats]
    # the feed picks uniformly inside a category; the negative draw by train popularity (a
    # positive never served in train counts half an impression)
    feed_items = np.isin(w.item_type, g.FEED_ITEM_TYPES)
    in_category = np.log(np.bincount(w.item_cat[feed_items], minlength=n_cats)[cats])
    popularity = np.bincount(i[in_train], minlength=len(w.item_cat))
    drawn = np.log(np.maximum(popularity[items], 0.5))
    base = g.click_signal(w, users, items) + rec["click_bias"][0]
    effect = gp.search_effect
    click_dyn = _log_click(base + effect * recent(users, cats, times))
    r = r_mean[users, cats]
    click_static = np.log(
        r * np.exp(_log_click(base + effect)) + (1 - r) * np.exp(_log_click(base))
    )
    dynamic = np.log(serve_dyn) - in_category + click_dyn - drawn
    static = np.log(serve_static) - in_category + click_static - drawn
    searched = None
    hours = p.evaluate.searched_hours
    if hours > 0:  # evaluate@'s searched_* slice (its window, not the effect's)
        searched = recent(users[:, :1], cats[:, :1], times[:, :1], hours)[:, 0] > 0
    out: dict[str, Any] = {"ranked_clicks": len(test), "on_candidates_file": candidates is not None}
    ranks = {name: ranks_of(s) for name, s in (("dynamic", dynamic), ("static", static))}
    for name, rank in ranks.items():
        out[name] = rank_metrics(rank)
        if searched is not None and searched.any():
            out[name]["searched_ndcg@10"] = rank_metrics(rank[searched], ("ndcg@10",))["ndcg@10"]
    out["gain"] = {k: out["dynamic"][k] - out["static"][k] for k in out["dynamic"]}
    # per click, paired: what knowing the searches is worth, with its bootstrap 95% CI
    out["gain_ci"] = {"ndcg@10": paired_mean(*(click_values(ranks[n], "ndcg@10") for n in ranks))}
    if searched is not None and searched.any():
        vals = (click_values(ranks[n][searched], "ndcg@10") for n in ranks)
        out["gain_ci"]["searched_ndcg@10"] = paired_mean(*vals)
    out["searched_share"] = float(searched.mean()) if searched is not None else None
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positives", type=int, default=None, help="ranked test clicks (params)")
    ap.add_argument(
        "--candidates",
        type=Path,
        default=None,
        help="a candidates stage file (default: paths.candidates/test.parquet when it exists; "
        "else a fresh draw of --positives clicks)",
    )
    args = ap.parse_args(argv)
    params = load_params()
    path = args.candidates or params.paths.candidates / "test.parquet"
    use = path if (args.candidates or (args.positives is None and path.is_file())) else None
    print(json.dumps(search_gain_bound(params, args.positives, use)))


if __name__ == "__main__":
    main()
