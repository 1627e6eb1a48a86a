"""validate: a Great Expectations suite over the five KuaiSAR files; non-zero exit on failure.

Two suites per file: `<file>.format` runs on the text as written (columns, nulls, number,
datetime and word-id-list forms, label values) and `<file>.values` on the typed values (ranges,
sets, and relations: `search_item_related` only where `search` = 1, log ids present in the
feature tables, unique keys and log rows, one user and time per search session). Relations are
derived columns that hold the offending value and null elsewhere, so a failure shows example
values; every failure also names the file's line numbers of its examples.

Every row is checked, in batches of `validate.chunk_rows` rows streamed from the CSV, so memory
stays bounded at any file size. Checks that relate rows to other rows (duplicates, sessions, ids
of other files) are computed first over the whole file by polars on the columns they need; each
batch then carries their verdict as derived columns. Results of a file's batches are merged into
one check per expectation. Writes `reports/validation.json` (deterministic, failing checks first)
and Data Docs HTML under `reports/data_docs/` (git-ignored; one validation result per batch).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from tasks.config.params import ValidateParams, beijing_ms, load_params
from tasks.io.atomic import write_json_atomic
from tasks.io.prefetch import ahead
from tasks.io.progress import progress
from tasks.kuaisar.schema import FEED_ITEM_TYPES, ITEM_TYPES, RAW_FILES, Kind

if TYPE_CHECKING:
    import pandas as pd

FORMATS: dict[Kind, str] = {
    "int": r"^-?\d+$",  # and within int64: the value suite's `{col}_outside_int64`
    "float": r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$",
    "datetime": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    # ids of up to 18 digits: every one fits the int64 that split parses them into
    "idlist": r"^\[\s*(?:\d{1,18}\s*(?:,\s*\d{1,18}\s*)*)?\]$",
}
# free-text columns that may be empty in the public release
NULLABLE = {"caption", "upload_type", "search_source"} | {
    f"{lvl}_level_category_{s}"
    for lvl in ("first", "second", "third", "fourth")
    for s in ("name", "name_en")
}
CAST = {"int": pl.Int64, "float": pl.Float64, "binary": pl.Int8}
PARSE = {"datetime": "%Y-%m-%d %H:%M:%S", "date": "%Y-%m-%d"}  # text dates, as calendar dates


@dataclass
class Check:
    file: str
    suite: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int = 0
    unexpected_percent: float = 0.0
    examples: list[Any] = field(default_factory=list)
    error: str | None = None
    lines: list[int] = field(default_factory=list)  # file line numbers of the examples (header = 1)
    rows_checked: int = 0
    problem: str | None = None  # a derived check: the problem it finds, in words

    def line(self) -> str:
        at = f" at lines {self.lines}" if self.lines else ""
        if self.problem:  # reads as the problem; the derived column that holds it in brackets
            return (
                f"{self.file}: {self.problem}: {self.unexpected_count} rows "
                f"({self.unexpected_percent:.3g}%), e.g. {self.examples}{at} [{self.column}]"
            )
        where = f"{self.file}" + (f" column {self.column!r}" if self.column else "")
        if self.error:
            return f"{where}: {self.expectation}: {self.error}"
        return (
            f"{where}: {self.expectation}: {self.unexpected_count} rows "
            f"({self.unexpected_percent:.3g}%) fail, e.g. {self.examples}{at}"
        )

    def merge(self, other: Check, max_examples: int) -> None:
        """Fold in the same check's result on the next batch of the file."""
        self.success &= other.success
        self.unexpected_count += other.unexpected_count
        self.rows_checked += other.rows_checked
        self.unexpected_percent = round(
            100.0 * self.unexpected_count / max(self.rows_checked, 1), 6
        )
        self.examples = (self.examples + other.examples)[:max_examples]
        self.lines = (self.lines + other.lines)[:max_examples]
        self.error = self.error or other.error


def scan_text(path: Path) -> pl.LazyFrame:
    """Every column as text, exactly as written."""
    return pl.scan_csv(path, infer_schema=False, encoding="utf8")


def numbered_batches(lf: pl.LazyFrame, rows: int) -> Iterator[pl.DataFrame]:
    """`lf` in batches of about `rows` rows, in file order, with `row` (0-based data row)."""
    offset = 0
    for batch in lf.collect_batches(chunk_size=rows, maintain_order=True):
        yield batch.with_row_index("row", offset=offset)
        offset += batch.height


def format_expectations(file: str, columns: list[str]) -> list[Any]:
    import great_expectations.expectations as gxe

    expected = list(RAW_FILES[file])
    out: list[Any] = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=expected)]
    for col, kind in RAW_FILES[file].items():
        if col not in columns:
            continue
        if col not in NULLABLE:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
        if kind == "binary":
            out.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=["0", "1"]))
        elif kind in FORMATS:
            out.append(gxe.ExpectColumnValuesToMatchRegex(column=col, regex=FORMATS[kind]))
    return out


def typed(file: str, text: pl.DataFrame) -> pl.DataFrame:
    """Numbers cast from text (unparseable -> null: the format suite reports those)."""
    kinds = RAW_FILES[file]
    return text.with_columns(
        pl.col(c).cast(CAST[k], strict=False)
        for c, k in kinds.items()
        if k in CAST and c in text.columns
    )


@dataclass
class Relations:
    """Verdicts that need the whole file (or other files), computed before the batches."""

    known: dict[str, pl.Series] = field(default_factory=dict)  # table -> its ids
    duplicate_rows: pl.Series | None = None  # `row`s that repeat an earlier row exactly
    duplicate_keys: pl.Series | None = None  # key values found more than once
    bad_sessions: pl.Series | None = None  # search_session_ids with several users or times


KEYS = {"user_features.csv": "user_id", "item_features.csv": "item_id"}
REFS = {
    "rec_inter.csv": [("user_id", "user_features"), ("item_id", "item_features")],
    "src_inter.csv": [("user_id", "user_features"), ("item_id", "item_features")],
    "social_network.csv": [("user_id", "user_features"), ("user_follow_id", "user_features")],
}
# (time text, timestamp) pairs that must agree
TIME_PAIRS = {
    "rec_inter.csv": [("time", "timestamp")],
    "src_inter.csv": [("search_session_time", "search_session_timestamp")],
}
# rows of these files are events: an exact repeat is a logging fault (it counts one event twice)
UNIQUE_ROWS = {"rec_inter.csv", "src_inter.csv", "social_network.csv"}


def _cast_int(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Int64, strict=False)


def relations(file: str, text: pl.LazyFrame, known: dict[str, pl.Series]) -> Relations:
    """Whole-file relations from streaming scans of only the columns each one needs."""
    lf = text.with_row_index("row")
    cols = set(lf.collect_schema().names()) - {"row"}
    r = Relations(known=known)
    if file in UNIQUE_ROWS and cols == set(RAW_FILES[file]):
        # a 64-bit hash per row finds candidates in bounded memory; candidates are then compared
        # in full, so a hash collision can never report a false duplicate
        ordered = list(RAW_FILES[file])
        h = pl.concat_str([pl.col(c).fill_null("\x00") for c in ordered], separator="\x1f").hash()
        hashes = lf.select("row", h.alias("h")).collect(engine="streaming")
        candidates = hashes.filter(pl.col("h").is_duplicated())["row"]
        if len(candidates):
            rows = lf.filter(pl.col("row").is_in(candidates.implode())).collect()
            r.duplicate_rows = rows.filter(~pl.struct(ordered).is_first_distinct())["row"]
    if file in KEYS and KEYS[file] in cols:
        key = KEYS[file]
        ids = lf.select(_cast_int(key)).collect(engine="streaming")[key].drop_nulls()
        r.duplicate_keys = ids.filter(ids.is_duplicated()).unique()
    if (
        file == "src_inter.csv"
        and {"search_session_id", "user_id", "search_session_timestamp"} <= cols
    ):
        # rows with an unreadable key are the format suite's failure, not a second one here
        one = ["user_id", "search_session_timestamp"]
        r.bad_sessions = (
            lf.filter(pl.all_horizontal(pl.col(one + ["search_session_id"]).is_not_null()))
            .group_by(_cast_int("search_session_id"))
            .agg(pl.struct(one).n_unique().alias("n"))
            .filter(pl.col("n") > 1)
            .collect(engine="streaming")["search_session_id"]
        )
    return r


def value_expectations(
    file: str, text: pl.DataFrame, p: ValidateParams, rel: Relations
) -> tuple[pl.DataFrame, list[Any], dict[str, str]]:
    """The typed frame of the text batch `text`, with derived relation columns; the value
    expectations over it; and, per derived column, the problem it finds in words."""
    import great_expectations.expectations as gxe

    df = typed(file, text)
    cols = set(df.columns)
    kinds = RAW_FILES[file]
    lo, hi = beijing_ms(p.min_timestamp), beijing_ms(p.max_timestamp)
    ex: list[Any] = []
    derived: dict[str, pl.Expr] = {}
    problems: dict[str, str] = {}

    def between(col: str, min_value: float | None, max_value: float | None) -> None:
        if col in cols:
            ex.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col, min_value=min_value, max_value=max_value
                )
            )

    def must_be_null(name: str, problem: str, expr: pl.Expr) -> None:
        """A derived column `name`: the offending value where `problem` holds, else null."""
        derived[name] = expr
        problems[name] = problem
        ex.append(gxe.ExpectColumnValuesToBeNull(column=name))

    def flagged(col: str, bad: pl.Series, key: str | None = None) -> pl.Expr:
        """`col` where `key` (default `col`) is among `bad`, else null."""
        hit = pl.col(key or col).is_in(bad.implode()) if len(bad) else pl.lit(False)
        return pl.when(hit).then(pl.col(col)).otherwise(None)

    def as_written(col: str) -> pl.Expr:
        return pl.lit(text[col])

    for col, kind in kinds.items():
        if col not in cols:
            continue
        if kind == "int":
            between(col, 0, None)
            # written as an integer (the format suite) yet not an int64: split could not read it
            fits = as_written(col).str.contains(FORMATS["int"]) & pl.col(col).is_null()
            must_be_null(
                f"{col}_outside_int64",
                f"{col} is an integer too large for int64",
                pl.when(fits).then(as_written(col)).otherwise(None),
            )
        if kind in PARSE:
            parsed = as_written(col).str.strptime(
                pl.Datetime if kind == "datetime" else pl.Date, PARSE[kind], strict=False
            )
            well_formed = as_written(col).str.contains(FORMATS[kind])
            must_be_null(
                f"{col}_not_a_calendar_{kind}",
                f"{col} is not a real calendar {'date and time' if kind == 'datetime' else 'date'}",
                pl.when(well_formed & parsed.is_null()).then(as_written(col)).otherwise(None),
            )
    for text_col, ts_col in TIME_PAIRS.get(file, []):
        if {text_col, ts_col} <= cols:
            ms = (
                as_written(text_col)
                .str.strptime(pl.Datetime("ms"), PARSE["datetime"], strict=False)
                .dt.replace_time_zone("Asia/Shanghai")
                .dt.epoch("ms")
            )
            off = (pl.col(ts_col) - ms).abs() > p.time_tolerance_s * 1000
            must_be_null(
                f"{text_col}_disagrees_with_{ts_col}",
                f"{text_col} (Beijing) and {ts_col} differ by more than {p.time_tolerance_s:g} s",
                pl.when(off)
                .then(pl.format("{} vs {}", as_written(text_col), as_written(ts_col)))
                .otherwise(None),
            )
    if file == "rec_inter.csv":
        between("playing_time", 0, p.max_playing_time_ms)
        between("duration_ms", 1, p.max_duration_ms)
        between("timestamp", lo, hi)
        if {"search", "search_item_related"} <= cols:
            must_be_null(
                "search_item_related_set_where_search_is_0",
                "search_item_related is set where search is 0",
                pl.when((pl.col("search") == 0) & (pl.col("search_item_related") != 0))
                .then(pl.col("search_item_related"))
                .otherwise(None),
            )
    if file in UNIQUE_ROWS and cols - {"row"} == set(kinds):
        # holds the line number of a row that repeats an earlier one exactly
        dup = (
            rel.duplicate_rows if rel.duplicate_rows is not None else pl.Series([], dtype=pl.UInt32)
        )
        must_be_null(
            "row_repeats_an_earlier_row",
            "a row repeats an earlier row exactly (the line of the repeat)",
            flagged("row", dup) + 2,
        )
    if file == "src_inter.csv":
        between("search_session_timestamp", lo, hi)
        if rel.bad_sessions is not None:
            must_be_null(
                "search_session_id_with_several_users_or_times",
                "a search session has several users or times",
                flagged("search_session_id", rel.bad_sessions),
            )
        if "item_type" in cols:
            ex.append(
                gxe.ExpectColumnValuesToBeInSet(column="item_type", value_set=list(ITEM_TYPES))
            )
    if file == "user_features.csv":
        between("onehot_feat1", 0, 2)
        between("onehot_feat2", 0, 7)
    if file in KEYS and rel.duplicate_keys is not None:
        key = KEYS[file]
        must_be_null(
            f"{key}_not_unique",
            f"{key} appears on more than one row",
            flagged(key, rel.duplicate_keys),
        )
    for col, table in REFS.get(file, []):
        ids = rel.known.get(table)
        if ids is None or col not in cols:
            continue
        absent = ~pl.col(col).is_in(ids.implode()) & pl.col(col).is_not_null()
        if (file, col) == ("src_inter.csv", "item_id"):
            # search may show items the feed never serves, absent from item_features (mapped
            # to unknown); a VIDEO or IMAGE_ATLAS result must have its row
            if "item_type" not in cols:
                continue
            must_be_null(
                "search_item_absent_from_item_features",
                f"a search result of type {'/'.join(FEED_ITEM_TYPES)} is absent from "
                "item_features (item_id and its type)",
                pl.when(absent & pl.col("item_type").is_in(FEED_ITEM_TYPES))
                .then(pl.format("{} ({})", as_written(col), pl.col("item_type")))
                .otherwise(None),
            )
            continue
        what = {"rec_inter.csv": "feed item"}.get(file, col)
        must_be_null(
            f"{col}_absent_from_{table}",
            f"{what} absent from {table}" + (" (item_id)" if what == "feed item" else ""),
            pl.when(absent).then(pl.col(col)).otherwise(None),
        )
    return df.with_columns(**derived), ex, problems


def unknown_search_items(raw: Path, known: dict[str, pl.Series]) -> dict[str, int]:
    """Search rows whose item has no item_features row, per src_inter item_type (the types the
    feed never serves are allowed to: the features stage maps their item fields to unknown)."""
    ids = known.get("item_features")
    path = raw / "src_inter.csv"
    if ids is None or not path.is_file():
        return {}
    try:
        counts = (
            scan_text(path)
            .select(_cast_int("item_id"), "item_type")
            .filter(~pl.col("item_id").is_in(ids.implode()) & pl.col("item_id").is_not_null())
            .group_by("item_type")
            .len()
            .sort("item_type")
            .collect(engine="streaming")
        )
    except UNREADABLE + (pl.exceptions.ColumnNotFoundError,):
        return {}  # the file's own checks say why
    return {str(t): int(n) for t, n in counts.iter_rows()}


def pandas_batch(df: pl.DataFrame, header: int = 1) -> pd.DataFrame:
    """`df` (with its `row` numbers) as GX 1.x takes it: pandas, not polars (converted here and
    only here). The index is the line number in the file (`header`: lines before the first data
    row), so GX's unexpected indices are the file's own lines."""
    frame = df.drop("row").to_pandas()
    frame.index = (df["row"].cast(pl.Int64) + 1 + header).to_numpy()
    return frame


def skip_batch_fingerprint() -> None:
    """Turn off the MD5 of every pandas batch that GX 1.x stores as a batch marker
    (`pandas_data_fingerprint`, computed for frames under `HASH_THRESHOLD` bytes): it hashes
    every value of the batch, 35% of a batch's validation at 1M rows, and nothing reads it."""
    import great_expectations.execution_engine.pandas_execution_engine as engine

    if not hasattr(engine, "HASH_THRESHOLD"):  # GX changed: keep its default behaviour
        return
    engine.HASH_THRESHOLD = 0


class Validator:
    """A Great Expectations ephemeral context with one pandas data source and a Data Docs site."""

    def __init__(self, docs: Path | None, max_examples: int) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        self.gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.docs = docs
        if docs is not None:
            docs.mkdir(parents=True, exist_ok=True)
            backend = {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs.resolve()),
            }
            self.ctx.add_data_docs_site(
                site_name="sarflow",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": backend,
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        self.source = self.ctx.data_sources.add_pandas("kuaisar")
        self.definitions: dict[str, Any] = {}
        # a batch is first checked for pass/fail only; one with a failure is checked again for
        # its counts, examples and line numbers (SUMMARY evaluates each condition three times)
        self.quick = {"result_format": "BASIC", "partial_unexpected_count": max_examples}
        self.result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max_examples}
        self.max_examples = max_examples
        skip_batch_fingerprint()

    def run(
        self,
        file: str,
        suite_name: str,
        frame: pd.DataFrame,
        expectations: list[Any],
        problems: dict[str, str] | None = None,
    ) -> list[Check]:
        """Validate one batch (`pandas_batch`'s frame) against the suite `suite_name`;
        `problems`: derived column -> the problem it finds, in words."""
        gx = self.gx
        vd = self.definitions.get(suite_name)
        if vd is None:  # first batch of this suite: declare it
            asset = self.source.add_dataframe_asset(suite_name)
            batch = asset.add_batch_definition_whole_dataframe("all rows")
            suite = self.ctx.suites.add(gx.ExpectationSuite(name=suite_name))
            for e in expectations:
                suite.add_expectation(e)
            vd = self.definitions[suite_name] = self.ctx.validation_definitions.add(
                gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
            )
        result = vd.run(batch_parameters={"dataframe": frame}, result_format=self.quick)
        if not result.success:  # again with the details; only the detailed result is kept
            self._forget(result)
            result = vd.run(batch_parameters={"dataframe": frame}, result_format=self.result_format)
        checks = []
        for r in result.results:
            cfg = r.expectation_config
            err = (
                r.exception_info.get("exception_message")
                if r.exception_info.get("raised_exception")
                else None
            )
            res = r.result or {}
            examples = [_plain(v) for v in (res.get("partial_unexpected_list") or [])][
                : self.max_examples
            ]
            lines = [int(i) for i in (res.get("partial_unexpected_index_list") or [])]
            table_check = cfg.type.startswith("expect_table_column")
            if table_check and not r.success:
                observed = res.get("observed_value")
                expected = cfg.kwargs.get("column_list") or cfg.kwargs.get("column_set")
                if expected is None:  # a column count
                    err = f"expected {cfg.kwargs.get('value')} columns, found {observed}"
                else:
                    err = header_problem(list(expected), list(observed or []))
            column = cfg.kwargs.get("column")
            checks.append(
                Check(
                    file=file,
                    suite=suite_name,
                    expectation=cfg.type,
                    column=None if table_check else column,
                    problem=(problems or {}).get(column or ""),
                    success=bool(r.success) and err is None,
                    unexpected_count=int(res.get("unexpected_count") or 0),
                    unexpected_percent=round(float(res.get("unexpected_percent") or 0.0), 6),
                    examples=examples,
                    error=None if r.success else err,
                    lines=lines[: self.max_examples],
                    rows_checked=len(frame),
                )
            )
        return checks

    def _forget(self, result: Any) -> None:
        """Drop a stored validation result (the quick pass of a batch that failed) from the
        results store, so Data Docs show each batch once."""
        store = self.ctx.validation_results_store
        for key in store.list_keys():
            if key.run_id == result.meta["run_id"]:
                store.remove_key(key)

    def build_docs(self) -> None:
        if self.docs is not None:
            self.ctx.build_data_docs(site_names=["sarflow"])


def header_problem(expected: list[str], found: list[str]) -> str:
    """What differs between the expected and the found header: only the names that differ."""
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing column{'s' * (len(missing) > 1)} {missing}")
    if extra:
        parts.append(f"extra column{'s' * (len(extra) > 1)} {extra}")
    if len(missing) == len(extra) == 1:
        parts.append(f"({extra[0]!r} may be {missing[0]!r} renamed)")
    if len(found) == 1 and any(sep in found[0] for sep in ";\t|"):
        sep = next(sep for sep in ";\t|" if sep in found[0])
        parts.append(f"the file looks separated by {sep!r}, not ','")
    if not parts:  # the same names in another order
        shared = [c for c in found if c in expected]
        moved = [
            f"position {i + 1}: expected {e!r}, found {f!r}"
            for i, (e, f) in enumerate(zip(expected, shared, strict=False))
            if e != f
        ]
        parts.append("columns in the wrong order: " + "; ".join(moved[:3]))
    return "; ".join(parts) + f" ({len(expected)} columns expected, {len(found)} found)"


def _plain(v: Any) -> Any:
    """JSON-safe example value (numpy scalars, NaN)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return None if v != v else int(v) if v.is_integer() else v
    return v


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _fold(checks: dict[tuple[str, str, str], Check], batch: list[Check], max_examples: int) -> None:
    for c in batch:
        key = (c.suite, c.expectation, c.column or "")
        if key in checks:
            checks[key].merge(c, max_examples)
        else:
            checks[key] = c


# what polars raises on a file it cannot parse as CSV (not on a bug of ours: those propagate)
UNREADABLE = (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError, UnicodeDecodeError)


def run_batches(
    v: Validator,
    file: str,
    lf: pl.LazyFrame,
    fmt: list[Any],
    values_of: Callable[[pl.DataFrame], tuple[pl.DataFrame, list[Any], dict[str, str]]],
    p: ValidateParams,
    header: int = 1,
) -> tuple[list[Check], int]:
    """Both suites of `file` on every batch of `lf`, merged per check; (checks, data rows).
    `values_of(text batch)` gives the typed frame, its value expectations and the problems
    its derived columns find."""
    stem = file.rsplit(".", 1)[0]

    def prepared() -> Iterator[tuple[int, pd.DataFrame, pd.DataFrame | None, list, dict]]:
        """Per batch, what GX checks: polars and pandas work, run ahead in a thread."""
        for text in numbered_batches(lf, p.chunk_rows):
            frame, expectations, problems = values_of(text)
            values = pandas_batch(frame, header) if expectations else None
            yield text.height, pandas_batch(text, header), values, expectations, problems

    merged: dict[tuple[str, str, str], Check] = {}
    rows = 0
    batches = progress(ahead(prepared()), None, f"validate {file} (batches)")
    for n, text, values, expectations, problems in batches:
        rows += n
        _fold(merged, v.run(file, f"{stem}.format", text, fmt), p.max_examples)
        if values is not None:
            found = v.run(file, f"{stem}.values", values, expectations, problems)
            _fold(merged, found, p.max_examples)
    return list(merged.values()), rows


def validate_file(
    v: Validator, file: str, path: Path, p: ValidateParams, known: dict[str, pl.Series]
) -> tuple[list[Check], int]:
    """Every check on one KuaiSAR file, batch by batch; (checks, data rows)."""
    try:
        lf = scan_text(path)
        rel = relations(file, lf, known)
        fmt = format_expectations(file, lf.collect_schema().names())
        found, rows = run_batches(
            v, file, lf, fmt, lambda text: value_expectations(file, text, p, rel), p
        )
    except UNREADABLE as e:
        error = f"cannot read {path}: {_first_line(e)}"
        if isinstance(e, UnicodeDecodeError) or "utf-8" in str(e).lower():
            error += utf8_error_at(path)  # a second pass over the file, for this error only
        return [Check(file, "files", "readable_csv", None, False, error=error)], 0
    if rows == 0:
        return [Check(file, "files", "has_rows", None, False, error=f"{path} has no data rows")], 0
    return found, rows


def _fields_before(line: bytes) -> int:
    """How many complete CSV fields precede the end of `line` (commas outside quotes)."""
    quoted, n = False, 0
    for byte in line:
        if byte == 34:  # '"'
            quoted = not quoted
        elif byte == 44 and not quoted:  # ','
            n += 1
    return n


def utf8_error_at(path: Path, chunk: int = 1 << 20) -> str:
    """Where the first byte that is not UTF-8 sits: '; first invalid byte 0x.. at line N,
    column NAME'; '' if none (read in chunks: bounded memory at any file size)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    header, tail, line = b"", b"", 1  # tail: the current line's bytes from earlier chunks
    with open(path, "rb") as f:
        while block := f.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                before = block[: e.start]
                line += before.count(b"\n")
                nl = before.rfind(b"\n")
                current = before[nl + 1 :] if nl >= 0 else tail + before
                if not header:
                    header = (tail + block).split(b"\n", 1)[0]
                names = header.decode("utf-8", "replace").strip().split(",")
                k = _fields_before(current)
                name = names[k] if k < len(names) else f"#{k + 1}"
                return (
                    f"; first invalid byte 0x{block[e.start]:02x} at line {line}, column {name!r}"
                )
            if not header and b"\n" in tail + block:
                header = (tail + block).split(b"\n", 1)[0]
            line += block.count(b"\n")
            nl = block.rfind(b"\n")
            tail = block[nl + 1 :] if nl >= 0 else tail + block
    return ""


def known_ids(raw: Path) -> dict[str, pl.Series]:
    """The ids of the feature tables, for the logs' id checks (one column read of each)."""
    known: dict[str, pl.Series] = {}
    for table, key in (("user_features", "user_id"), ("item_features", "item_id")):
        path = raw / f"{table}.csv"
        try:
            ids = scan_text(path).select(_cast_int(key))
            known[table] = ids.collect(engine="streaming")[key].drop_nulls().unique()
        except Exception:  # noqa: BLE001 - missing or unreadable: that file's own checks say so
            continue
    return known


def report_of(
    checks: list[Check],
    rows: dict[str, int],
    files: list[str],
    unknown: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The validation report: failing checks first, then in `files` order (deterministic);
    `unknown`: search rows per item type whose item has no item_features row."""
    checks = sorted(
        checks,
        key=lambda c: (c.success, files.index(c.file), c.suite, c.expectation, c.column or ""),
    )
    out = {
        "success": all(c.success for c in checks),
        "failed": sum(not c.success for c in checks),
        "checked": len(checks),
        "rows": rows,
    }
    if unknown is not None:
        out["search_items_without_features"] = unknown
    return {**out, "checks": [asdict(c) for c in checks]}


def unknown_line(report: dict[str, Any]) -> str | None:
    """The summary line of search rows whose items map to unknown, or None."""
    unknown = report.get("search_items_without_features") or {}
    if not unknown:
        return None
    total, rows = sum(unknown.values()), report.get("rows", {}).get("src_inter.csv", 0)
    share = f" ({100 * total / rows:.1f}% of search rows)" if rows else ""
    per = ", ".join(f"{t} {n:,}" for t, n in unknown.items())
    return (
        f"{total:,} search rows{share} show items absent from item_features, of types the feed "
        f"never serves ({per}): their item fields map to unknown"
    )


def validate_folder(raw: Path, p: ValidateParams, docs: Path | None = None) -> dict[str, Any]:
    """Run every check on the KuaiSAR folder `raw`; returns the report (see module docstring)."""
    v = Validator(docs, p.max_examples)
    checks: list[Check] = []
    rows: dict[str, int] = {}
    known = known_ids(raw)
    for file in RAW_FILES:
        path = raw / file
        if not path.is_file():
            checks.append(
                Check(file, "files", "file_exists", None, False, error=f"{path} not found")
            )
            continue
        file_checks, n = validate_file(v, file, path, p, known)
        checks += file_checks
        if n:
            rows[file] = n
    v.build_docs()
    return report_of(checks, rows, list(RAW_FILES), unknown_search_items(raw, known))


def table_expectations(d: Any, columns: list[str]) -> tuple[list[Any], list[Any]]:
    """(format suite on the text, values suite on the typed frame) of a declared table."""
    import great_expectations.expectations as gxe

    present = set(columns)
    required = d.required()
    fmt: list[Any] = []
    if d.has_header or d.format == "parquet":
        fmt.append(gxe.ExpectTableColumnsToMatchSet(column_set=required, exact_match=False))
    else:
        fmt.append(gxe.ExpectTableColumnCountToEqual(value=len(d.columns)))
    plain_labels = [n for n in d.labels if n not in d.derived]
    for c in [*d.numeric, *plain_labels, *([d.weight] if d.weight else [])]:
        if c in present:
            fmt.append(gxe.ExpectColumnValuesToMatchRegex(column=c, regex=FORMATS["float"]))
    for rule in d.derived.values():
        if rule.allowed is not None and rule.column in present:
            fmt.append(gxe.ExpectColumnValuesToBeInSet(column=rule.column, value_set=rule.allowed))
    part = d.split.column if d.split.rule == "column" else None
    if part in present:  # the table's own part column: one of the declared values, every row
        fmt.append(gxe.ExpectColumnValuesToNotBeNull(column=part))
        fmt.append(
            gxe.ExpectColumnValuesToBeInSet(column=part, value_set=sorted(d.split.values.values()))
        )
    values: list[Any] = []
    for name, kind in d.labels.items():
        source = d.derived[name].column if name in d.derived else name
        if source not in present:
            continue
        values.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if kind == "binary":
            values.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[0.0, 1.0]))
    if d.weight and d.weight in present:
        values.append(gxe.ExpectColumnValuesToNotBeNull(column=d.weight))
        values.append(gxe.ExpectColumnValuesToBeBetween(column=d.weight, min_value=0))
    return fmt, values


def validate_table(folder: Path, tp: Any, p: ValidateParams, docs: Path | None) -> dict[str, Any]:
    """Every row of every declared table file, against the suites derived from the declaration."""
    from tasks.table.source import TableError, declaration, resolve_columns, scan_text, typed

    v = Validator(docs, p.max_examples)
    d = declaration(tp)
    checks: list[Check] = []
    rows: dict[str, int] = {}
    for role, name in d.files.items():
        path = folder / name
        if not path.is_file():
            checks.append(
                Check(name, "files", "file_exists", None, False, error=f"{path} not found")
            )
            continue
        try:
            lf = scan_text(path, d)
            columns = lf.collect_schema().names()
            d = resolve_columns(d, columns, tp.preset)
            fmt, values = table_expectations(d, columns)
            header = int(d.has_header and d.format == "csv")  # lines before the first row
            found, n = run_batches(
                v, name, lf, fmt, lambda text, d=d, ex=values: (typed(text, d), ex, {}), p, header
            )
        except (*UNREADABLE, TableError) as e:
            error = f"cannot read {path} as declared ({role}): {_first_line(e)}"
            checks.append(Check(name, "files", "readable_csv", None, False, error=error))
            continue
        if n == 0:
            checks.append(
                Check(name, "files", "has_rows", None, False, error=f"{path} has no data rows")
            )
            continue
        checks += found
        rows[name] = n
    v.build_docs()
    return report_of(checks, rows, sorted({c.file for c in checks}))


REPORT = "validation.json"  # the stage's DVC metric: written only when every check passes
FAILED_REPORT = (
    "validation_failed.json"  # a failing run's report: the last good outputs stay as they were
)


def main(argv: list[str] | None = None) -> None:
    """Validate paths.source; exit 1 if any check failed, after writing the failure report."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    reports = params.paths.reports
    docs = reports / "data_docs"
    if params.source.kind == "table":
        report = validate_table(params.paths.source, params.table, params.validate_, docs)
    else:
        report = validate_folder(params.paths.source, params.validate_, docs)
    if note := unknown_line(report):
        print(f"validate: {note}")
    if report["success"]:
        write_json_atomic(reports / REPORT, report)
        (reports / FAILED_REPORT).unlink(missing_ok=True)
        print(
            f"validate: all {report['checked']} checks passed on {params.paths.source}/ {report['rows']}"
        )
        return
    write_json_atomic(reports / FAILED_REPORT, report)
    print(
        f"validate: {report['failed']} of {report['checked']} checks FAILED on {params.paths.source}/:"
    )
    for c in report["checks"]:
        if not c["success"]:
            print("  FAILED " + Check(**c).line())
    print(
        f"validate: details in {reports / FAILED_REPORT}, Data Docs in {reports / 'data_docs'}/index.html"
    )
    sys.exit(1)


if __name__ == "__main__":
    main()
