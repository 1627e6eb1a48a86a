"""The ranking evaluation's candidates and per-click metrics: numpy and polars only (no model).

The candidates stage (tasks.candidates) draws each ranked click's candidates once, with `draw`:
each sampled test (and valid) feed click against `negatives` items drawn in proportion to their
train popularity, never an item the user was served in any part of the log. The user's own
earlier clicks are served items, so they are never negatives: a negative is an item the user
has not been shown. A seeded subset of the test clicks (`full`) is also ranked against every
item of the catalogue (every known feed item) that the user was not served. Scoring them is
tasks.evaluation.ranking; every metric is a mean over clicks of a value of the positive's rank
(`click_values`), so two models are compared click by click (tasks.evaluation.paired).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks.io.features import item_side, read_spec

# the sampled metrics (1 + negatives candidates) and the full-ranking ones (the catalogue)
SAMPLED = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")
FULL = ("full_recall@10", "full_recall@50", "full_ndcg@10", "full_ndcg@50")
PARTS = ("train", "valid", "test")
# ranks.parquet (evaluate@): per ranked test click, its row in rec_test, the positive's rank
# among its sampled candidates and in the full catalogue (-1: not ranked in full), searched_*
RANKS_SCHEMA = {"row": pl.Int64, "rank": pl.Int64, "full_rank": pl.Int64, "searched": pl.Boolean}


@dataclass(frozen=True)
class Candidates:
    rows: np.ndarray  # (P,) rows of the positives in their part's rec_PART.parquet
    items: np.ndarray  # (P, 1 + negatives) row indices into `fields`; column 0 is the positive
    fields: pl.DataFrame  # item_id and every item-side field, one row per item (sorted by id)
    full: np.ndarray | None = None  # (P,) bool: also ranked against the whole catalogue


def draw(
    train: pl.DataFrame,
    test: pl.DataFrame,
    served: pl.DataFrame,
    negatives: int,
    positives: int,
    seed: int,
    item_cols: list[str] | None = None,
) -> Candidates:
    """The candidates of every sampled test click (frames are encoded feed samples);
    `item_cols`: the item-side fields candidates carry (spec.json's item_side; None: item_id)."""
    rng = np.random.default_rng(seed)
    fields = item_frame([train, test], item_cols or ["item_id"])
    index = {int(i): k for k, i in enumerate(fields["item_id"].to_list())}
    pop = (
        train.filter(pl.col("item_id") > 0)
        .group_by("item_id")
        .len()
        .join(fields.select("item_id").with_row_index("k"), on="item_id")
        .sort("k")
    )
    weight = np.zeros(len(fields))
    weight[pop["k"].to_numpy()] = pop["len"].to_numpy()
    weight /= weight.sum()
    cdf = np.cumsum(weight)
    ids = fields["item_id"].to_numpy()
    clicks = np.flatnonzero((test["click"].to_numpy() == 1) & (test["item_id"].to_numpy() > 0))
    rows = np.sort(rng.choice(clicks, min(positives, len(clicks)), replace=False))
    seen = served.group_by("raw_user_id").agg(pl.col("item_id").unique())
    seen_by = dict(zip(seen["raw_user_id"].to_list(), seen["item_id"].to_list(), strict=True))
    user, item = test["raw_user_id"].to_numpy(), test["item_id"].to_numpy()
    out = np.zeros((len(rows), 1 + negatives), dtype=np.int64)
    for n, r in enumerate(rows):
        banned = np.array([*seen_by.get(user[r], []), item[r]], dtype=ids.dtype)
        picked = np.zeros(0, dtype=np.int64)
        for attempt in range(1000):
            if len(picked) >= negatives:
                break
            if attempt == 20:  # slow going: are there enough items at all? (costs O(items))
                eligible = int(((weight > 0) & ~np.isin(ids, banned)).sum())
                if eligible < negatives:
                    raise ValueError(
                        f"only {eligible} items are left to sample as negatives for user "
                        f"{user[r]}; lower candidates.negatives (now {negatives})"
                    )
            k = np.searchsorted(cdf, rng.random(4 * negatives) * cdf[-1], side="right")
            k = np.minimum(k, len(ids) - 1)
            k = k[~np.isin(ids[k], banned) & (weight[k] > 0)]
            both = np.concatenate([picked, k])
            _, first = np.unique(both, return_index=True)
            picked = both[np.sort(first)]  # distinct, in draw order
        if len(picked) < negatives:
            raise ValueError(
                f"could not draw {negatives} distinct unseen items for user {user[r]}; "
                "lower candidates.negatives"
            )
        out[n, 0] = index[int(item[r])]
        out[n, 1:] = picked[:negatives]
    return Candidates(rows, out, fields)


def feed_frames(feats: Path) -> dict[str, pl.DataFrame]:
    """The encoded feed samples of every part (rec_train, rec_valid, rec_test)."""
    return {p: pl.read_parquet(feats / f"rec_{p}.parquet") for p in PARTS}


def served_pairs(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(raw_user_id, item_id) of every impression in every part: what a user was shown."""
    return pl.concat([f.select("raw_user_id", "item_id") for f in frames.values()])


def candidate_table(
    c: Candidates, part: pl.DataFrame, raw_items: pl.DataFrame, full: np.ndarray
) -> pl.DataFrame:
    """What the candidates stage writes, one row per ranked click: its `row` in the part's
    rec_PART.parquet, the user, the candidates as encoded `item_id`s and as the release's
    `raw_item_id`s (the positive first), and whether it is also ranked in full. `part`: the
    encoded samples the clicks are rows of; `raw_items`: vocab/item_id.parquet."""
    users, times = part["raw_user_id"].to_numpy(), part["timestamp"].to_numpy()
    ids = c.fields["item_id"].to_numpy()[c.items]  # (P, W) encoded ids
    raw = dict(zip(raw_items["index"].to_list(), raw_items["item_id"].to_list(), strict=True))
    return pl.DataFrame(
        {
            "row": c.rows.astype(np.int64),
            "raw_user_id": users[c.rows],
            "timestamp": times[c.rows],
            "item_id": ids.tolist(),
            "raw_item_id": [[raw[int(i)] for i in r] for r in ids],
            "full": full,
        },
        schema_overrides={"item_id": pl.List(pl.Int64)},
    )


def item_frame(frames: list[pl.DataFrame], item_cols: list[str]) -> pl.DataFrame:
    """item_id and the `item_cols` of each known item (encoded item_id > 0), from encoded
    sample frames, one row per item, sorted by item_id."""
    cols = ["item_id", *[c for c in item_cols if c != "item_id"]]
    items = pl.concat([f.select(cols) for f in frames]).filter(pl.col("item_id") > 0)
    return items.unique("item_id", keep="first").sort("item_id")


def load_candidates(feats: Path, path: Path) -> Candidates:
    """A candidates file (tasks.candidates) against the features folder it was drawn from."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no candidates; run the candidates stage first")
    table = pl.read_parquet(path)
    frames = feed_frames(feats)
    fields = item_frame(list(frames.values()), item_side(read_spec(feats)))
    ids = fields["item_id"].to_numpy()
    width = len(table["item_id"][0]) if len(table) else 1
    items = np.array(table["item_id"].to_list(), dtype=np.int64).reshape(len(table), width)
    k = np.searchsorted(ids, items)
    if len(table) and (k.max() >= len(ids) or not np.array_equal(ids[k], items)):
        raise ValueError(
            f"{path}: candidate items missing from {feats}: drawn from other features; "
            "rerun the candidates stage (dvc repro candidates)"
        )
    rows, full = table["row"].to_numpy().copy(), table["full"].to_numpy().copy()
    return Candidates(rows, k, fields, full)


def served_indices(feats: Path, c: Candidates, part: str = "test") -> list[np.ndarray]:
    """Per full-ranked click of `c` (c.full), the catalogue rows (indices into c.fields) of the
    items its user was served in any part, the positive among them."""
    frames = feed_frames(feats)
    users = frames[part]["raw_user_id"].to_numpy()
    seen = served_pairs(frames).group_by("raw_user_id").agg(pl.col("item_id").unique())
    seen_by = dict(zip(seen["raw_user_id"].to_list(), seen["item_id"].to_list(), strict=True))
    ids = c.fields["item_id"].to_numpy()
    out = []
    for r in c.rows[c.full]:
        seen_ids = np.asarray(seen_by[users[r]], dtype=ids.dtype)
        k = np.searchsorted(ids, seen_ids)
        inside = k < len(ids)
        k, seen_ids = k[inside], seen_ids[inside]
        out.append(k[ids[k] == seen_ids])  # unknown items (id 0) are not in the catalogue
    return out


def ranks_of(s: np.ndarray) -> np.ndarray:
    """(P,) rank of column 0 (the positive) among each row's candidates; a negative scored the
    same as the positive ranks above it: a model earns a place only by scoring the positive
    higher (ties given to the positive once ranked a degenerate model, whose saturated score
    was the same for a whole category, first on a third of the clicks)."""
    return 1 + (s[:, 1:] >= s[:, :1]).sum(1)


def click_values(rank: np.ndarray, metric: str) -> np.ndarray:
    """Per click, the value of `metric` (hr@K, recall@K, ndcg@K, mrr; any prefix such as
    full_ or searched_ ignored) given the positive's rank: the mean over clicks is the metric."""
    name = metric.rsplit("_", 1)[-1]
    rank = np.asarray(rank, dtype=np.float64)
    if name == "mrr":
        return 1 / rank
    kind, k = name.split("@")
    if kind in ("hr", "recall"):
        return (rank <= int(k)).astype(np.float64)
    if kind == "ndcg":
        return np.where(rank <= int(k), 1 / np.log2(rank + 1), 0.0)
    raise ValueError(f"unknown ranking metric {metric!r}")


def rank_metrics(rank: np.ndarray, names: tuple[str, ...] = SAMPLED) -> dict[str, float]:
    """The mean over clicks of each metric in `names`, from the positives' ranks."""
    return {m: float(click_values(rank, m).mean()) for m in names}
