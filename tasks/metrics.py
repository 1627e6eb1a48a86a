"""Ranking and calibration metrics, vectorised: AUC, GAUC, logloss."""

from __future__ import annotations

import numpy as np
import polars as pl


def _auc_terms(y: pl.Expr, rank: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    pos = y.sum()
    neg = y.count() - pos
    return pos, neg, (rank * y).sum()


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties averaged); NaN if one class only."""
    df = pl.DataFrame(
        {"y": np.asarray(y, dtype=np.float64), "s": np.asarray(score, dtype=np.float64)}
    )
    pos, neg, rpos = _auc_terms(pl.col("y"), pl.col("s").rank("average"))
    r = df.select(pos=pos, neg=neg, rpos=rpos).row(0, named=True)
    if r["pos"] == 0 or r["neg"] == 0:
        return float("nan")
    return float((r["rpos"] - r["pos"] * (r["pos"] + 1) / 2) / (r["pos"] * r["neg"]))


def gauc(y: np.ndarray, score: np.ndarray, user: np.ndarray) -> float:
    """Per-user AUC averaged with impression weights; users with one class are skipped."""
    df = pl.DataFrame(
        {"y": np.asarray(y, dtype=np.float64), "s": np.asarray(score, dtype=np.float64), "u": user}
    )
    df = df.with_columns(r=pl.col("s").rank("average").over("u"))
    pos, neg, rpos = _auc_terms(pl.col("y"), pl.col("r"))
    g = df.group_by("u").agg(n=pl.len(), pos=pos, neg=neg, rpos=rpos)
    g = g.filter((pl.col("pos") > 0) & (pl.col("neg") > 0))
    if g.is_empty():
        return float("nan")
    u_auc = (pl.col("rpos") - pl.col("pos") * (pl.col("pos") + 1) / 2) / (
        pl.col("pos") * pl.col("neg")
    )
    return float(g.select((u_auc * pl.col("n")).sum() / pl.col("n").sum()).item())


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities p."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def task_metrics(labels: np.ndarray, probs: np.ndarray, user: np.ndarray, tasks: list[str]) -> dict:
    """{task: {auc, gauc, logloss, positives, n}} over samples in each task's sample space."""
    out = {}
    for t, name in enumerate(tasks):
        keep = ~np.isnan(labels[:, t])
        y, p, u = labels[keep, t], probs[keep, t], user[keep]
        out[name] = {
            "auc": auc(y, p),
            "gauc": gauc(y, p, u),
            "logloss": logloss(y, p),
            "positives": int(y.sum()),
            "n": int(keep.sum()),
        }
    return out
