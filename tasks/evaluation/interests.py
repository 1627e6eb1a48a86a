"""Which of a user's search interests a disentangled SESRec calls *similar* to their feed
interests, and how well that matches the truth: the seed paper's main claim, measured.

SESRec's co-attention gives each step of a sample's search history a score in (0, 1): how
similar it is to the feed behaviour (models.sesrec.CoAttention); the step goes to the similar
part with that weight and to the dissimilar part with the rest. For each test user this takes
the user's last test feed sample, whose search window holds their most recent search sessions,
and scores its steps three ways:
- `model`: the trained model's co-attention score;
- `heuristic`: the rule of SESRec's authors: similar (1) if the step's category is among the
  categories of the user's feed clicks in the 7 days before the search, else 0;
- `untrained`: a model of the same shape, freshly initialised (what the shape alone gives).

On the built-in dataset the generator knows the truth (tasks.kuaisar.world.similar_sessions: a
session is similar when its query's category is one of the user's feed interests) and each score
gets its AUC against it; on real data there is no truth and the scores are described only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from models.multitask import MultiTaskModel
from models.sesrec import SESRec
from tasks.config.params import Params
from tasks.evaluation.metrics import auc
from tasks.kuaisar import world
from tasks.training.checkpoint import model_from_config
from tasks.training.tensors import HOUR_MS, Histories, Samples, make_batch, window

HEURISTIC_DAYS = 7  # the authors' rule: the feed categories of the 7 days before the search


def disentangled(model: MultiTaskModel) -> SESRec | None:
    """The model's SESRec network if it splits search interests (disentangle: true), else None."""
    net = model.net
    return net if isinstance(net, SESRec) and net.o.disentangle else None


def last_rows(test: Samples) -> np.ndarray:
    """Per test user, the row of their last feed sample (the latest timestamp, then the last
    row), in user order."""
    if test.user is None or test.time is None:
        raise ValueError("these samples have no users or timestamps: no search histories")
    df = pl.DataFrame({"u": test.user, "t": test.time.cpu().numpy()}).with_row_index("row")
    last = df.sort("u", "t", "row").group_by("u", maintain_order=True).agg(pl.last("row"))
    return last["row"].to_numpy().astype(np.int64)


def window_rows(test: Samples, hist: Histories, rows: np.ndarray) -> np.ndarray:
    """(P, S) rows of the padded flat search history in each sample's window; 0: padding."""
    hs = test.hist[torch.from_numpy(rows).to(test.hist.device)]
    return window(hs[:, 2], hs[:, 3], hist.src_len).cpu().numpy()


@torch.no_grad()
def split_scores(
    net: SESRec, test: Samples, hist: Histories, rows: np.ndarray, batch: int
) -> np.ndarray:
    """(P, S) co-attention score of every search step in the windows of samples `rows`: the
    weight with which the model puts the step into the similar part (0 at padding)."""
    was = net.training
    net.eval()
    out = []
    try:
        for lo in range(0, len(rows), batch):
            idx = torch.from_numpy(rows[lo : lo + batch]).to(test.sparse.device)
            _, _, seqs = make_batch(test, hist, idx)
            out.append(net.search_similarity(seqs).float().cpu().numpy())
    finally:
        net.train(was)
    return np.concatenate(out) if out else np.zeros((0, hist.src_len), dtype=np.float32)


def feed_category_rule(
    steps: pl.DataFrame, feed: pl.DataFrame, days: float = HEURISTIC_DAYS
) -> pl.Series:
    """The authors' heuristic per step (`steps`: user, cat, time): 1 where the user clicked an
    item of the step's category in the feed in the `days` before the search, else 0. `feed`:
    the feed clicks (user, cat, time) of every part the model's histories hold."""
    span = int(days * 24 * HOUR_MS)
    hit = (
        steps.with_row_index("step")
        .join(feed, on=["user", "cat"], how="inner", suffix="_feed")
        .filter(
            (pl.col("time_feed") < pl.col("time")) & (pl.col("time_feed") >= pl.col("time") - span)
        )
        .select("step")
        .unique()
    )
    out = np.zeros(len(steps), dtype=np.float64)
    out[hit["step"].to_numpy()] = 1.0
    return pl.Series("heuristic", out)


def step_table(
    test: Samples, hist: Histories, rows: np.ndarray, scores: dict[str, np.ndarray]
) -> pl.DataFrame:
    """One row per scored step (padding dropped): user, session (flat search-history row),
    cat, time and each (P, S) score of `scores`."""
    flat = window_rows(test, hist, rows)
    keep = flat > 0
    src = hist.src[torch.from_numpy(flat[keep]).to(hist.src.device)].cpu().numpy()
    users = np.broadcast_to(test.user[rows][:, None], flat.shape)[keep]  # type: ignore[index]
    return pl.DataFrame(
        {
            "user": users,
            "session": flat[keep] - 1,  # row 0 of the padded history is padding
            "cat": src[:, 1],
            "time": src[:, 2],
            **{name: s[keep].astype(np.float64) for name, s in scores.items()},
        }
    )


def summary(table: pl.DataFrame, truth: np.ndarray | None, names: list[str]) -> dict:
    """Per score: its mean, the share of steps it calls similar (> 0.5) and, given the truth
    (1 similar, 0 dissimilar, per row of `table`), its AUC (left out where the truth has one
    class, as with search_rec_overlap 0 or 1: JSON has no NaN); the truth's own share."""
    out: dict = {"steps": len(table), "users": table["user"].n_unique()}
    if truth is not None:
        out["truth_similar_share"] = round(float(truth.mean()), 5) if len(truth) else None
    for name in names:
        s = table[name].to_numpy()
        row = {"mean": float(s.mean()), "similar_share": float((s > 0.5).mean())}
        if truth is not None and 0 < truth.sum() < len(truth):
            row["auc"] = auc(truth, s)
        out[name] = {k: round(v, 5) for k, v in row.items()}
    return out


def feed_clicks(split: Path, features: Path) -> pl.DataFrame:
    """Every feed click of the model's histories (user, encoded cat, time): the flat feed
    history of the features stage, whose rows are split's rec_history's (which names the user)."""
    users = pl.read_parquet(split / "rec_history.parquet", columns=["user_id"])["user_id"]
    rec = pl.read_parquet(features / "rec_history.parquet", columns=["cat1", "timestamp"])
    return pl.DataFrame({"user": users, "cat": rec["cat1"], "time": rec["timestamp"]})


def planted_truth(params: Params, sessions: pl.Series) -> np.ndarray:
    """1.0 where the generator planted the search session (by flat search-history row of
    `sessions`) as similar, else 0.0: the built-in dataset only (its logs are redrawn)."""
    ids = pl.read_parquet(params.paths.split / "src_history.parquet", columns=["search_session_id"])
    _, w, _, search, _ = world.draw_logs(params.generate)
    truth = world.similar_sessions(w, search)
    steps = ids["search_session_id"].gather(sessions.to_numpy()).to_frame()
    found = steps.join(truth, on="search_session_id", how="left", maintain_order="left")
    if found["similar"].null_count():
        raise ValueError(
            f"{params.paths.split / 'src_history.parquet'}: {found['similar'].null_count()} "
            "search sessions are not in the generator's log for these params: drawn from another "
            "dataset"
        )
    return found["similar"].to_numpy().astype(np.float64)


SHOWN_USERS = 12  # users drawn in the report's picture


def measure(
    model: MultiTaskModel, config: dict, test: Samples, hist: Histories, params: Params
) -> dict | None:
    """The split's summary (`summary`) for a disentangled SESRec (None for any other model) and,
    for the first SHOWN_USERS test users, every scored step: evaluation.json's `interests`."""
    net = disentangled(model)
    if net is None:
        return None
    rows = last_rows(test)
    batch = params.evaluate.batch_size
    torch.manual_seed(params.train.seed)  # the untrained model: the seed's initialisation
    fresh = disentangled(model_from_config(config))
    assert fresh is not None
    scores = {
        "model": split_scores(net, test, hist, rows, batch),
        "untrained": split_scores(fresh.to(test.sparse.device), test, hist, rows, batch),
    }
    table = step_table(test, hist, rows, scores)
    feed = feed_clicks(params.paths.split, params.paths.features)
    table = table.with_columns(heuristic=feed_category_rule(table, feed))
    truth = planted_truth(params, table["session"]) if params.generated else None
    if truth is not None:
        table = table.with_columns(truth=truth)
    out = summary(table, truth, ["model", "heuristic", "untrained"])
    shown = table["user"].unique(maintain_order=True).head(SHOWN_USERS)
    out["shown"] = (
        table.filter(pl.col("user").is_in(shown.implode()))
        .select(["user", "cat", "model", "heuristic", *(["truth"] if truth is not None else [])])
        .with_columns(pl.col("model").round(4))
        .to_dicts()
    )
    return out
