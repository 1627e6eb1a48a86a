"""Data drift between a model's reference data and new data: polars only.

A served model carries a `profile` of the feed rows it was trained on (its train part): for
every categorical field (the sparse fields of the feature spec) the shares of its most frequent
values and of the rest, for every dense field the shares of its reference deciles, and the rate
of every feed label. `compare` puts new rows through the same bins and reports, per field, the
population stability index (PSI, sum over bins of (new - ref) * ln(new / ref)), the share of new
rows whose value the model's vocabulary does not hold (the model reads them as 0, unknown), and
per label the change of its rate. A run is drifted when any of them passes its threshold in
params (`drift`).

Why not Evidently (0.7.23, the latest on PyPI here): it takes pandas and brings 25 further
requirements, among them its own web server (litestar, uvicorn), nltk, statsmodels, plotly < 6
and a usage-telemetry client (iterative-telemetry), for three statistics that are a few polars
expressions over columns this pipeline already reads with polars.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.kuaisar.encoding import raw_sides, row_keys, with_sides
from tasks.kuaisar.spec import DENSE, FEED_LABELS, FIELD, SPARSE

# a feed row's categorical fields: the sparse ones but a search query's own (0 on feed rows)
CATEGORICAL = tuple(c for c in SPARSE if FIELD[c].side != "query")

OTHER = "(other)"
EPS = 1e-4  # a bin no row falls in counts as this share (PSI's log needs > 0)


def feed_rows(split: Path, raw: Path, part: str) -> pl.DataFrame:
    """The feed rows of split part `part` with their raw field values (the feature spec's
    sparse and dense fields, by name, before encoding) and labels."""
    items, users = raw_sides(split, raw)
    rows = pl.scan_parquet(split / f"rec_{part}.parquet")
    sides = with_sides(row_keys(rows), items, users).select(*CATEGORICAL, *DENSE)
    labels = rows.select(*FEED_LABELS)
    return pl.concat([sides, labels], how="horizontal").collect()


def _text(s: pl.Series) -> pl.Series:
    return s.cast(pl.Utf8).fill_null("(null)")


def profile(rows: pl.DataFrame, bins: int) -> dict[str, Any]:
    """The reference profile of `rows` (feed_rows): what `compare` measures new rows against."""
    columns: dict[str, Any] = {}
    for c in CATEGORICAL:
        values = _text(rows[c])
        top = values.value_counts(name="n").sort(["n", c], descending=[True, False]).head(bins)
        kept = top[c].to_list()
        columns[c] = {"kind": "categorical", "values": kept, "shares": _cat_shares(values, kept)}
    for c in DENSE:
        x = rows[c].drop_nulls().to_numpy().astype(np.float64)
        edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])) if len(x) else []
        columns[c] = {
            "kind": "numeric",
            "edges": [float(e) for e in edges],
            "shares": _num_shares(rows[c], list(edges)),
        }
    labels = {t: float(rows[t].cast(pl.Float64).mean() or 0.0) for t in FEED_LABELS}
    return {"rows": len(rows), "columns": columns, "labels": labels}


def _cat_shares(values: pl.Series, kept: list[str]) -> list[float]:
    """Shares of each kept value, then of every other value (OTHER)."""
    n = max(len(values), 1)
    counts = dict(values.value_counts(name="n").iter_rows())
    inside = [counts.get(v, 0) / n for v in kept]
    return [*inside, max(0.0, 1.0 - sum(inside))]


def _num_shares(x: pl.Series, edges: list[float]) -> list[float]:
    """Shares of the bins (-inf, e1], (e1, e2], ..., (ek, inf), and of missing values."""
    v = x.to_numpy().astype(np.float64)
    n = max(len(v), 1)
    missing = np.isnan(v)
    k = np.searchsorted(np.asarray(edges, dtype=np.float64), v[~missing], side="left")
    counts = np.bincount(k, minlength=len(edges) + 1)
    return [*(counts / n).tolist(), float(missing.sum() / n)]


def psi(ref: list[float], new: list[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    return float(
        sum((b - a) * math.log(max(b, EPS) / max(a, EPS)) for a, b in zip(ref, new, strict=True))
    )


def unseen_share(values: pl.Series, vocab: pl.DataFrame) -> float:
    """Share of `values` outside `vocab` (a features vocabulary): what the model reads as 0."""
    if len(values) == 0:
        return 0.0
    known = values.is_in(vocab[vocab.columns[0]].implode()).fill_null(False)
    return float(1.0 - known.cast(pl.Float64).mean())


def compare(
    reference: dict[str, Any], vocabs: dict[str, pl.DataFrame], rows: pl.DataFrame
) -> list[dict[str, Any]]:
    """One row per field and label: the PSI of `rows` against `reference` (profile), the share
    of unseen values (sparse fields, against the model's `vocabs`), a label's rate change."""
    out = []
    for c, ref in reference["columns"].items():
        if ref["kind"] == "categorical":
            new = _cat_shares(_text(rows[c]), ref["values"])
            unseen = unseen_share(rows[c], vocabs[c]) if c in vocabs else None
        else:
            new, unseen = _num_shares(rows[c], ref["edges"]), None
        out.append(
            {"field": c, "kind": ref["kind"], "psi": round(psi(ref["shares"], new), 5)}
            | {"unseen": None if unseen is None else round(unseen, 5)}
            | {"reference_rate": None, "rate": None}
        )
    for t, rate in reference["labels"].items():
        now = float(rows[t].cast(pl.Float64).mean() or 0.0)
        out.append(
            {"field": t, "kind": "label", "psi": None, "unseen": None}
            | {"reference_rate": round(rate, 5), "rate": round(now, 5)}
        )
    return out


def drifted(
    rows: list[dict[str, Any]], psi_max: float, unseen_max: float, rate_max: float
) -> list[str]:
    """Why `compare`'s rows mark a run as drifted (empty: not drifted)."""
    why = []
    for r in rows:
        if r["psi"] is not None and r["psi"] > psi_max:
            why.append(f"{r['field']}: PSI {r['psi']:.3f} > {psi_max}")
        if r["unseen"] is not None and r["unseen"] > unseen_max:
            why.append(
                f"{r['field']}: {r['unseen']:.1%} of rows unseen in training > {unseen_max:.0%}"
            )
        if r["rate"] is not None and abs(r["rate"] - r["reference_rate"]) > rate_max:
            why.append(
                f"{r['field']} rate {r['reference_rate']:.3f} -> {r['rate']:.3f} "
                f"(change > {rate_max})"
            )
    return why
