"""split: feed and search logs -> samples by scenario, temporal train/valid/test, leak-free history.

Each user's chronological sequences (clicked feed items; search sessions) are stored once, flat;
every sample carries (start, length) into them: its history is the `length` events of its user
that happened strictly before it (as SESRec stores histories). Served-time ties are ordered by
(user, timestamp, row in the file), so the result is deterministic, and a sample never sees an
event with its own timestamp, its own click included.

Cut-offs fit the data (`cutoffs`): by default the last `split.test_days` Beijing calendar days of
the logs are test and the `split.valid_days` before them valid; absolute times are an option. A
part with fewer than `split.min_part_rows` feed or search rows, or a feed part without both click
values, stops the stage with a `SplitError` naming the part, its rows and the data's time range,
before anything is written.

Labels are derived as tasks.kuaisar.spec.LABELS declares them (long view follows the release's
valid-play rule). A search row keeps src_inter's own `item_type` as `result_type` (a LIVE result
is not a video). `search_item_related` is not used (it only means something where search = 1),
nor is social_network.csv.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from tasks.config.params import BEIJING, Params, SplitParams, beijing_ms, load_params
from tasks.io.atomic import atomic_dir, write_json_atomic
from tasks.kuaisar.schema import parse_idlist, polars_schema
from tasks.kuaisar.spec import FEED_LABELS, LABEL, PARTS, SEARCH_TASK


@dataclass(frozen=True)
class Splits:
    rec: pl.DataFrame  # one row per feed impression, with `part`
    src: pl.DataFrame  # one row per search result shown, with `part`
    rec_history: pl.DataFrame  # clicked feed items, flat, chronological per user
    src_history: pl.DataFrame  # search sessions, flat, chronological per user
    cutoffs: Cutoffs
    first_ms: int  # the data's time range (both logs)
    last_ms: int


def read_raw(raw: Path, name: str) -> pl.LazyFrame:
    """A raw KuaiSAR file with its contract types, plus its row number in the file."""
    return pl.scan_csv(raw / name, schema=polars_schema(name)).with_row_index("row")


DAY_MS = 86_400_000


class SplitError(ValueError):
    """The cut-offs do not fit the data: a part would be empty or too small to use."""


@dataclass(frozen=True)
class Cutoffs:
    valid_start: int  # Unix ms: train is before, valid is [valid_start, test_start)
    test_start: int
    rule: str  # how they were chosen, in words

    def describe(self) -> dict[str, str]:
        return {
            "valid_start": beijing_text(self.valid_start),
            "test_start": beijing_text(self.test_start),
            "rule": self.rule,
        }


def beijing_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def cutoffs(p: SplitParams, first_ms: int, last_ms: int) -> Cutoffs:
    """The cut-offs for logs whose events span [first_ms, last_ms] (Unix ms): absolute when
    split.valid_start/test_start are set, else the last test_days and valid_days before them
    (Beijing calendar days; the last day is the day of the last event)."""
    if p.valid_start is not None and p.test_start is not None:
        return Cutoffs(beijing_ms(p.valid_start), beijing_ms(p.test_start), "absolute")
    last_day = datetime.fromtimestamp(last_ms / 1000, BEIJING).date()
    end = beijing_ms(f"{last_day + timedelta(days=1)} 00:00:00")  # midnight after the last day
    test = end - p.test_days * DAY_MS
    rule = f"the last {p.test_days} days are test, the {p.valid_days} before them valid"
    return Cutoffs(test - p.valid_days * DAY_MS, test, rule)


def _part(c: Cutoffs) -> pl.Expr:
    ts = pl.col("timestamp")
    return (
        pl.when(ts < c.valid_start)
        .then(pl.lit("train"))
        .when(ts < c.test_start)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
    )


def data_range(rec: pl.LazyFrame, src: pl.LazyFrame) -> tuple[int, int]:
    """(first, last) event time over both logs, Unix ms."""
    ends = pl.concat(
        [
            rec.select(pl.col("timestamp").cast(pl.Int64)),
            src.select(pl.col("search_session_timestamp").cast(pl.Int64).alias("timestamp")),
        ]
    ).select(pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last"))
    row = ends.collect().row(0)
    if row[0] is None:
        raise SplitError("split: the feed and search logs have no rows")
    return int(row[0]), int(row[1])


def check_parts(s: Splits, p: SplitParams) -> None:
    """SplitError unless every part holds at least `min_part_rows` feed and search rows, and
    every feed part both click values (a ranking or an AUC needs both)."""
    span = f"the data spans {beijing_text(s.first_ms)} to {beijing_text(s.last_ms)} (Beijing)"
    cut = f"cut-offs valid_start {beijing_text(s.cutoffs.valid_start)}, test_start " + (
        f"{beijing_text(s.cutoffs.test_start)} ({s.cutoffs.rule})"
    )
    problems = []
    for scenario, frame in (("feed", s.rec), ("search", s.src)):
        counts = dict(frame.group_by("part").len().iter_rows())
        for part in PARTS:
            n = int(counts.get(part, 0))
            if n < p.min_part_rows:
                problems.append(
                    f"the {scenario} {part} part has {n:,} rows (split.min_part_rows: "
                    f"{p.min_part_rows:,})"
                )
            elif scenario == "feed":
                clicks = int(frame.filter(pl.col("part") == part)["click"].sum())
                if clicks in (0, n):
                    problems.append(f"the feed {part} part has {clicks:,} clicks in {n:,} rows")
    if problems:
        raise SplitError(
            "split: " + "; ".join(problems) + f"; {span}; {cut}. Set split.valid_days/"
            "test_days (or split.valid_start/test_start) to fit the data."
        )


def attach_history(samples: pl.LazyFrame, events: pl.LazyFrame, name: str) -> pl.LazyFrame:
    """Add `{name}_start`, `{name}_len`: where the user's events begin in the flat `events`
    (sorted by user, timestamp) and how many happened strictly before the sample's timestamp."""
    ev = events.with_row_index("pos")
    starts = ev.group_by("user_id").agg(pl.col("pos").min().alias(f"{name}_start"))
    upto = (
        ev.group_by("user_id", "timestamp")
        .agg(pl.len().alias("n"))
        .sort("user_id", "timestamp")
        .with_columns(pl.col("n").cum_sum().over("user_id").alias(f"{name}_len"))
        .drop("n")
        .sort("timestamp")
    )
    return (
        samples.sort("timestamp")
        .join_asof(
            upto,
            on="timestamp",
            by="user_id",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .join(starts, on="user_id", how="left")
        .with_columns(
            pl.col(f"{name}_len").fill_null(0).cast(pl.Int64),
            pl.col(f"{name}_start").fill_null(0).cast(pl.Int64),
        )
    )


def split_logs(rec: pl.LazyFrame, src: pl.LazyFrame, p: SplitParams) -> Splits:
    """Pure: raw feed and search logs (with `row`) in, samples and flat histories out; the
    cut-offs as `cutoffs` chooses them for the logs' own time range."""
    first_ms, last_ms = data_range(rec, src)
    cut = cutoffs(p, first_ms, last_ms)
    rec = rec.with_columns(
        pl.col("timestamp").cast(pl.Int64), *[LABEL[n].expr().alias(n) for n in FEED_LABELS]
    )
    rec_history = (
        rec.filter(pl.col("click") == 1)
        .select("user_id", "item_id", "timestamp", "row")
        .sort("user_id", "timestamp", "row")
        .drop("row")
    )
    # a search sample's label is stored as `click` (tensors load it as search_click)
    src = src.rename(
        {"search_session_timestamp": "timestamp", "item_type": "result_type"}
    ).with_columns(
        LABEL[SEARCH_TASK].expr().alias("click"),
        pl.col("timestamp").cast(pl.Int64),
        parse_idlist("keyword").list.head(p.max_query_words).alias("keyword"),
    )
    # one row per session: its query, the item it led to (first click, else first shown) and
    # every item it showed (features takes the session's category from them)
    src_history = (
        src.sort("row")
        .group_by("search_session_id")
        .agg(
            pl.first("user_id", "timestamp", "keyword"),
            pl.col("item_id").filter(pl.col("click") == 1).first().alias("clicked"),
            pl.first("item_id").alias("first_shown"),
            pl.col("item_id").alias("results"),
        )
        .select(
            "user_id",
            "search_session_id",
            "timestamp",
            "keyword",
            pl.coalesce("clicked", "first_shown").alias("item_id"),
            "results",
        )
        .sort("user_id", "timestamp", "search_session_id")
    )

    def samples(frame: pl.LazyFrame, cols: list[str]) -> pl.DataFrame:
        out = attach_history(frame.select(cols + ["row"]), rec_history, "rec_hist")
        out = attach_history(out, src_history, "src_hist")
        return out.with_columns(_part(cut).alias("part")).sort("row").drop("row").collect()

    rec_cols = ["user_id", "item_id", "timestamp", "duration_ms", *FEED_LABELS]
    src_cols = [
        "user_id",
        "search_session_id",
        "timestamp",
        "keyword",
        "item_id",
        "result_type",
        "click",
    ]
    return Splits(
        rec=samples(rec, rec_cols),
        src=samples(src, src_cols),
        rec_history=rec_history.collect(),
        src_history=src_history.collect(),
        cutoffs=cut,
        first_ms=first_ms,
        last_ms=last_ms,
    )


def summary(s: Splits) -> dict[str, object]:
    """Row counts and label rates per part: a small JSON that shows what the split did."""

    def per_part(df: pl.DataFrame, labels: list[str]) -> dict[str, dict[str, float]]:
        g = df.group_by("part").agg(pl.len().alias("rows"), *[pl.col(c).mean() for c in labels])
        return {r["part"]: {k: v for k, v in r.items() if k != "part"} for r in g.to_dicts()}

    return {
        "rec": per_part(s.rec, list(FEED_LABELS)),
        "search": per_part(s.src, ["click"]),
        "rec_history_events": len(s.rec_history),
        "search_history_sessions": len(s.src_history),
        "cutoffs": s.cutoffs.describe(),
        "data_range": {"first": beijing_text(s.first_ms), "last": beijing_text(s.last_ms)},
    }


def split_table_source(params: Params) -> None:
    """source.kind table: the declared files, split by the declared rule, as table_PART.parquet."""
    from tasks.table.source import describe, read_parts, split_parts

    d, frames = read_parts(params.paths.source, params.table)
    parts = split_parts(frames, d)
    keep = [*d.categorical, *d.numeric, *d.labels, *([d.weight] if d.weight else [])]
    with atomic_dir(params.paths.split) as tmp:
        for part, df in parts.items():
            df.select(keep).write_parquet(tmp / f"table_{part}.parquet")
        summary = {
            "table": describe(d),
            "rows": {k: v.height for k, v in parts.items()},
            "label_means": {k: {t: v[t].mean() for t in d.labels} for k, v in parts.items()},
        }
        write_json_atomic(tmp / "summary.json", summary)
    print(f"split: table {summary['rows']} -> {params.paths.split}/")


def main(argv: list[str] | None = None) -> None:
    """Read paths.source, write paths.split atomically."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    if params.source.kind == "table":
        split_table_source(params)
        return
    raw = params.paths.source
    try:
        s = split_logs(read_raw(raw, "rec_inter.csv"), read_raw(raw, "src_inter.csv"), params.split)
        check_parts(s, params.split)
    except SplitError as e:
        sys.exit(f"{e}\nsplit: nothing written; {params.paths.split}/ is as it was")
    with atomic_dir(params.paths.split) as tmp:
        for part in PARTS:
            s.rec.filter(pl.col("part") == part).drop("part").write_parquet(
                tmp / f"rec_{part}.parquet"
            )
            s.src.filter(pl.col("part") == part).drop("part").write_parquet(
                tmp / f"src_{part}.parquet"
            )
        s.rec_history.write_parquet(tmp / "rec_history.parquet")
        s.src_history.write_parquet(tmp / "src_history.parquet")
        write_json_atomic(tmp / "summary.json", summary(s))
    counts = {p: int((s.rec["part"] == p).sum()) for p in PARTS}
    cut = s.cutoffs.describe()
    print(
        f"split: rec samples {counts}, search rows {len(s.src):,} -> {params.paths.split}/ "
        f"(valid from {cut['valid_start']}, test from {cut['test_start']}: {cut['rule']})"
    )


if __name__ == "__main__":
    main()
