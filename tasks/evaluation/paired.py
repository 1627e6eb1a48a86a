"""Paired comparisons of two models on the same test clicks and rows, with bootstrap 95% CIs.

Two models are compared on the same candidates (per ranked click: the difference of its metric
value, e.g. NDCG@10 from the positive's rank) and on the same test rows (AUC of each binary
task). The CI is a Poisson bootstrap (each click or row weighted by an independent Poisson(1)
draw per resample; seeded), the same resample weights for both models: the spread of the
*difference*, not of each level. A CI that excludes 0 is a difference the test set supports; one
that covers 0 is not evidence of no difference, only of none this test set can resolve.

Over several runs (seeds: each its own dataset, initialisation and training), `pooled_over_runs`
combines the runs' paired differences into one estimate whose CI also counts the spread *between*
runs, which no single run's bootstrap sees.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats as st

from tasks.evaluation.candidates import FULL, SAMPLED, click_values

SLICED = ("searched_hr@10", "searched_ndcg@10")
RANKING = (*SAMPLED, *FULL, *SLICED)


@functools.lru_cache(maxsize=4)
def poisson_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) Poisson(1) bootstrap weights, read-only: the last few are kept, as the
    report draws the same ones for every metric of every pair on the same clicks."""
    w = np.random.default_rng(seed).poisson(1.0, size=(resamples, n)).astype(np.float32)
    w.flags.writeable = False
    return w


def _ci(stats: np.ndarray, point: float) -> dict[str, Any]:
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return {
        "diff": float(point),
        "lo": float(lo),
        "hi": float(hi),
        "excludes_0": bool(lo > 0 or hi < 0),
    }


def paired_mean(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """mean(a - b) over paired units (per-click metric values), with its bootstrap 95% CI."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        raise ValueError("no paired units to compare")
    w = poisson_weights(len(d), resamples, seed)
    stats = (w @ d) / np.maximum(w.sum(1), 1)
    return _ci(stats, d.mean()) | {"n": len(d)}


@dataclass(frozen=True)
class _Ranked:
    """Scores sorted once (ascending), for the weighted AUC of any number of weight rows."""

    order: np.ndarray  # the sorting permutation
    starts: np.ndarray  # where each group of tied scores starts, in sorted order
    y: np.ndarray  # the labels in sorted order

    @classmethod
    def of(cls, y: np.ndarray, s: np.ndarray) -> _Ranked:
        order = np.argsort(s, kind="stable")
        sorted_s = s[order]
        starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
        return cls(order, starts, y[order])


def _weighted_auc(r: _Ranked, w: np.ndarray, rows: int = 8) -> np.ndarray:
    """AUC (ties count half) of the sorted scores `r` under each row of weights `w` (R, n),
    `rows` rows at a time: small arrays stay in cache and are not mapped and page-faulted anew
    (3.7x faster than 100 rows at once on 35k test rows)."""
    return np.concatenate([_auc_rows(r, w[i : i + rows]) for i in range(0, len(w), rows)])


def _auc_rows(r: _Ranked, w: np.ndarray) -> np.ndarray:
    w = w[:, r.order].astype(np.float64)
    wy = w * r.y
    if len(r.starts) == len(r.y):  # no ties: every group is one row
        pos, neg = wy, w - wy
    else:
        pos = np.add.reduceat(wy, r.starts, axis=1)
        neg = np.add.reduceat(w, r.starts, axis=1) - pos
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
    num = (pos * (below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


# paired_auc's bootstrap weights of the last (rows, resamples, seed): the report pairs every model
# on the same test rows, and drawing them is a third of the work. uint8: Poisson(1) draws stay
# far below 256. Kept only up to CACHE_BYTES (1,000 resamples of 35k rows: 35 MB).
CACHE_BYTES = 256 << 20
_weights: dict[tuple[int, int, int], list[np.ndarray]] = {}


def _auc_weights(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    """Blocks of 100 resamples' Poisson(1) weights (bounded memory per block)."""
    key = (n, resamples, seed)
    if key in _weights:
        return _weights[key]
    blocks = [
        np.random.default_rng([seed, start])
        .poisson(1.0, (min(100, resamples - start), n))
        .astype(np.uint8)
        for start in range(0, resamples, 100)
    ]
    _weights.clear()
    if n * resamples <= CACHE_BYTES:
        _weights[key] = blocks
    return blocks


def paired_auc(
    y: np.ndarray, pa: np.ndarray, pb: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict:
    """AUC(a) - AUC(b) on the same rows, with its bootstrap 95% CI (rows with a NaN label drop)."""
    keep = ~np.isnan(y)
    y, pa, pb = (np.asarray(v, dtype=np.float64)[keep] for v in (y, pa, pb))
    (point_a, boot_a), (point_b, boot_b) = (bootstrap_auc(y, p, resamples, seed) for p in (pa, pb))
    return _ci(boot_a - boot_b, point_a - point_b) | {"n": int(len(y))}


# bootstrap_auc's results by (labels, scores, resamples, seed): the report pairs each model with
# several others on the same rows and weights, and the bootstrap was 90% of its time
_boots: dict[tuple[bytes, int, int], tuple[float, np.ndarray]] = {}


def bootstrap_auc(
    y: np.ndarray, p: np.ndarray, resamples: int, seed: int
) -> tuple[float, np.ndarray]:
    """AUC of scores `p` on labels `y` (float64, no NaN), and its value under each of the
    `resamples` Poisson weight rows of `seed` (the rows every paired_auc on these rows shares),
    computed once per distinct (y, p, resamples, seed) in a process."""
    digest = hashlib.blake2b(y.tobytes(), digest_size=16)
    digest.update(p.tobytes())
    key = (digest.digest(), resamples, seed)
    if key not in _boots:
        r = _Ranked.of(y, p)
        point = float(_weighted_auc(r, np.ones((1, len(y))))[0])
        boots = [_weighted_auc(r, w) for w in _auc_weights(len(y), resamples, seed)]
        _boots[key] = (point, np.concatenate(boots))
    return _boots[key]


def rank_pairs(ra: pl.DataFrame, rb: pl.DataFrame, resamples: int, seed: int) -> dict[str, dict]:
    """Every ranking metric of two models' ranks.parquet (the same candidates): paired CIs."""
    both = ra.join(rb, on="row", suffix="_b")
    if len(both) != len(ra) or len(both) != len(rb):
        raise ValueError(
            "the two models ranked different clicks: evaluate both on the same candidates"
        )
    out = {}
    for m in RANKING:
        if m.startswith("full_"):
            sel = both.filter(pl.col("full_rank") > 0)
            a, b = sel["full_rank"].to_numpy(), sel["full_rank_b"].to_numpy()
        elif m.startswith("searched_"):
            sel = both.filter(pl.col("searched"))
            a, b = sel["rank"].to_numpy(), sel["rank_b"].to_numpy()
        else:
            a, b = both["rank"].to_numpy(), both["rank_b"].to_numpy()
        if len(a):
            out[m] = paired_mean(click_values(a, m), click_values(b, m), resamples, seed)
    return out


def auc_pairs(pa: pl.DataFrame, pb: pl.DataFrame, resamples: int, seed: int) -> dict[str, dict]:
    """AUC of every binary task two models' predictions.parquet share, on the rows both scored."""
    tasks = [c[2:] for c in pa.columns if c.startswith("p_") and f"p_{c[2:]}" in pb.columns]
    both = pa.join(pb, on=["file", "row"], suffix="_b")
    out = {}
    for t in tasks:
        y = both[f"y_{t}"].to_numpy()
        keep = ~np.isnan(y)
        if keep.sum() == 0 or len(np.unique(y[keep])) != 2:
            continue  # a regression task or one class only
        out[f"{t}/auc"] = paired_auc(
            y, both[f"p_{t}"].to_numpy(), both[f"p_{t}_b"].to_numpy(), resamples, seed
        )
    return out


def compare(artifacts: Path, a: str, b: str, resamples: int = 1000, seed: int = 0) -> dict:
    """Model `a` minus model `b` (evaluate@'s outputs under `artifacts`): {task/metric: CI}, the
    ranking metrics under click/."""
    out = {}
    ra, rb = (artifacts / m / "ranks.parquet" for m in (a, b))
    if ra.is_file() and rb.is_file():
        ranks = (pl.read_parquet(ra), pl.read_parquet(rb))
        if len(ranks[0]) and len(ranks[1]):
            for m, ci in rank_pairs(*ranks, resamples, seed).items():
                out[f"click/{m}"] = ci
    preds = [pl.read_parquet(artifacts / m / "predictions.parquet") for m in (a, b)]
    return out | auc_pairs(*preds, resamples, seed)


def ci_text(c: dict) -> str:
    """'+0.0123 [+0.0051, +0.0190]', starred where the CI excludes 0."""
    star = " *" if c["excludes_0"] else ""
    return f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]{star}"


Z95 = float(st.norm.ppf(0.975))


def pooled_over_runs(diffs: list[float], cis: list[list[float]]) -> dict[str, Any]:
    """Random-effects pooling of independent runs' paired differences (each with its bootstrap
    95% CI [lo, hi], read as a standard error (hi - lo) / (2 x 1.96)).

    `tau` is the spread between runs beyond what each run's test clicks explain (DerSimonian-
    Laird); `heterogeneity_p` tests "every run estimates the same difference" (Cochran's Q). The
    pooled mean weights each run by 1 / (se^2 + tau^2); its 95% CI is Hartung-Knapp's (a t
    quantile with runs - 1 degrees of freedom; its variance at least the plain random-effects
    one, as Roever et al. 2015 advise), which keeps its coverage with as few as 3 runs where the
    normal one does not. So with 3 seeds the CI is wide by design: it says what 3 runs can tell
    apart."""
    y = np.asarray(diffs, dtype=np.float64)
    bounds = np.asarray(cis, dtype=np.float64).reshape(len(y), 2)
    k = len(y)
    if k < 2:
        raise ValueError(f"pooling over runs needs 2 runs or more, got {k}")
    se = (bounds[:, 1] - bounds[:, 0]) / (2 * Z95)
    if (se <= 0).any():
        raise ValueError(f"every run's CI must have a positive width, got {bounds.tolist()}")
    w = 1 / se**2
    fixed = float((w * y).sum() / w.sum())
    q = float((w * (y - fixed) ** 2).sum())
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w**2).sum() / w.sum()))
    wr = 1 / (se**2 + tau2)
    mean = float((wr * y).sum() / wr.sum())
    # Hartung-Knapp's variance, never below the plain random-effects one (runs that agree
    # better than their CIs predict would otherwise give a CI narrower than any one run's)
    var = max(float((wr * (y - mean) ** 2).sum() / (k - 1)), 1.0) / float(wr.sum())
    half = float(st.t.ppf(0.975, k - 1) * np.sqrt(var))
    return {
        "diff": mean,
        "lo": mean - half,
        "hi": mean + half,
        "excludes_0": bool(mean - half > 0 or mean + half < 0),
        "tau": float(np.sqrt(tau2)),
        "heterogeneity_p": float(st.chi2.sf(q, k - 1)),
        "runs": k,
    }
