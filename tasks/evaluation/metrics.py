"""Ranking and calibration metrics, vectorised: AUC, GAUC, logloss."""

from __future__ import annotations

import numpy as np
import polars as pl


def _auc_from_ranks(y: np.ndarray, ranks: np.ndarray) -> float:
    pos = float(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return float((float(ranks[y > 0].sum()) - pos * (pos + 1) / 2) / (pos * neg))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties averaged); NaN if one class only."""
    y = np.asarray(y, dtype=np.float64)
    ranks = pl.Series(np.asarray(score, dtype=np.float64)).rank("average").to_numpy()
    return _auc_from_ranks(y, ranks)


def gauc(y: np.ndarray, score: np.ndarray, user: np.ndarray) -> float:
    """Per-user AUC averaged with impression weights; users with one class are skipped.

    Sums run in numpy over users in id order, so the result is bit-for-bit reproducible."""
    df = pl.DataFrame(
        {"y": np.asarray(y, dtype=np.float64), "s": np.asarray(score, dtype=np.float64), "u": user}
    )
    df = df.with_columns(r=pl.col("s").rank("average").over("u")).sort("u", maintain_order=True)
    g = (
        df.group_by("u", maintain_order=True)
        .agg(n=pl.len(), pos=pl.col("y").sum(), rpos=(pl.col("r") * pl.col("y")).sum())
        .with_columns(neg=pl.col("n") - pl.col("pos"))
        .filter((pl.col("pos") > 0) & (pl.col("neg") > 0))
    )
    if g.is_empty():
        return float("nan")
    n, pos, neg, rpos = (g[c].to_numpy().astype(np.float64) for c in ("n", "pos", "neg", "rpos"))
    per_user = (rpos - pos * (pos + 1) / 2) / (pos * neg)
    return float((per_user * n).sum() / n.sum())


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities p."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination: 1 - MSE / variance (1 is perfect, 0 predicts the mean)."""
    var = float(np.var(y))
    return 1.0 - float(np.mean((pred - y) ** 2)) / var if var > 0 else float("nan")


def task_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    user: np.ndarray | None,
    tasks: list[str],
    regression: tuple[bool, ...] = (),
) -> dict:
    """Per task, over samples in its sample space: binary tasks {auc, gauc (when samples have
    users), logloss, positives, n}; regression tasks {mse, r2, n}."""
    out = {}
    for t, name in enumerate(tasks):
        keep = ~np.isnan(labels[:, t])
        y, p = labels[keep, t].astype(np.float64), probs[keep, t].astype(np.float64)
        if regression and regression[t]:
            out[name] = {"mse": float(np.mean((p - y) ** 2)), "r2": r2(y, p), "n": int(keep.sum())}
            continue
        m = {"auc": auc(y, p)}
        if user is not None:
            m["gauc"] = gauc(y, p, user[keep])
        m |= {"logloss": logloss(y, p), "positives": int(y.sum()), "n": int(keep.sum())}
        out[name] = m
    return out


def constant_tasks(probs: np.ndarray, tasks: list[str], tol: float = 1e-7) -> list[str]:
    """The tasks whose predictions are (within `tol`) the same for every row: a model that cannot
    rank anything for them (AUC 0.5), typically a tower whose ReLU units all went inactive. Rows
    outside a task's sample space count too: a live tower varies on them as well."""
    if len(probs) == 0:
        return []
    spread = probs.max(0) - probs.min(0)
    return [t for t, s in zip(tasks, spread.tolist(), strict=True) if s <= tol]


def score(m: dict) -> float:
    """A task's headline metric, higher is better: AUC (binary) or R^2 (regression)."""
    return float(m["auc"] if "auc" in m else m["r2"])
