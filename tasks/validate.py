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
from typing import Any

import polars as pl

from tasks.config.params import ValidateParams, beijing_ms, load_params
from tasks.io.atomic import write_json_atomic
from tasks.io.progress import progress
from tasks.kuaisar.schema import ITEM_TYPES, RAW_FILES, Kind

FORMATS: dict[Kind, str] = {
    "int": r"^-?\d+$",
    "float": r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$",
    "datetime": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "idlist": r"^\[\s*(?:\d+\s*(?:,\s*\d+\s*)*)?\]$",
}
# free-text columns that may be empty in the public release
NULLABLE = {"caption", "upload_type", "search_source"} | {
    f"{lvl}_level_category_{s}"
    for lvl in ("first", "second", "third", "fourth")
    for s in ("name", "name_en")
}
CAST = {"int": pl.Int64, "float": pl.Float64, "binary": pl.Int8}


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

    def line(self) -> str:
        where = f"{self.file}" + (f" column {self.column!r}" if self.column else "")
        if self.error:
            return f"{where}: {self.expectation}: {self.error}"
        at = f" at lines {self.lines}" if self.lines else ""
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
        one = ["user_id", "search_session_timestamp"]
        r.bad_sessions = (
            lf.group_by(_cast_int("search_session_id"))
            .agg(pl.struct(one).n_unique().alias("n"))
            .filter(pl.col("n") > 1)
            .collect(engine="streaming")["search_session_id"]
        )
    return r


def value_expectations(
    file: str, df: pl.DataFrame, p: ValidateParams, rel: Relations
) -> tuple[pl.DataFrame, list[Any]]:
    """The typed frame with derived relation columns, and the value expectations over it."""
    import great_expectations.expectations as gxe

    cols = set(df.columns)
    lo, hi = beijing_ms(p.min_timestamp), beijing_ms(p.max_timestamp)
    ex: list[Any] = []
    derived: dict[str, pl.Expr] = {}

    def between(col: str, min_value: float | None, max_value: float | None) -> None:
        if col in cols:
            ex.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col, min_value=min_value, max_value=max_value
                )
            )

    def must_be_null(name: str, expr: pl.Expr) -> None:
        derived[name] = expr
        ex.append(gxe.ExpectColumnValuesToBeNull(column=name))

    def flagged(col: str, bad: pl.Series, key: str | None = None) -> pl.Expr:
        """`col` where `key` (default `col`) is among `bad`, else null."""
        hit = pl.col(key or col).is_in(bad.implode()) if len(bad) else pl.lit(False)
        return pl.when(hit).then(pl.col(col)).otherwise(None)

    for col, kind in RAW_FILES[file].items():
        if kind == "int" and col in cols:
            between(col, 0, None)
    if file == "rec_inter.csv":
        between("playing_time", 0, None)
        between("duration_ms", 1, p.max_duration_ms)
        between("timestamp", lo, hi)
        if {"search", "search_item_related"} <= cols:
            must_be_null(
                "search_item_related_set_where_search_is_0",
                pl.when((pl.col("search") == 0) & (pl.col("search_item_related") != 0))
                .then(pl.col("search_item_related"))
                .otherwise(None),
            )
    if file in UNIQUE_ROWS and cols - {"row"} == set(RAW_FILES[file]):
        # holds the line number of a row that repeats an earlier one exactly
        dup = (
            rel.duplicate_rows if rel.duplicate_rows is not None else pl.Series([], dtype=pl.UInt32)
        )
        must_be_null("row_repeats_an_earlier_row", flagged("row", dup) + 2)
    if file == "src_inter.csv":
        between("search_session_timestamp", lo, hi)
        if rel.bad_sessions is not None:
            must_be_null(
                "search_session_id_with_several_users_or_times",
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
        must_be_null(f"{key}_not_unique", flagged(key, rel.duplicate_keys))
    for col, table in REFS.get(file, []):
        ids = rel.known.get(table)
        if ids is not None and col in cols:
            must_be_null(
                f"{col}_missing_from_{table}",
                pl.when(pl.col(col).is_in(ids.implode())).then(None).otherwise(pl.col(col)),
            )
    return df.with_columns(**derived), ex


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
        self.result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max_examples}
        self.max_examples = max_examples

    def run(
        self,
        file: str,
        suite_name: str,
        df: pl.DataFrame,
        expectations: list[Any],
        header: int = 1,
    ) -> list[Check]:
        """Validate one batch (`df` with its `row` numbers) against the suite `suite_name`;
        `header`: lines before the first data row, so reported lines are the file's own."""
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
        # GX 1.x takes pandas, not polars: convert here and only here; the index is the line
        # number in the file, so GX's unexpected indices point at the rows
        frame = df.drop("row").to_pandas()
        frame.index = (df["row"].cast(pl.Int64) + 1 + header).to_numpy()
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
            if cfg.type.startswith("expect_table_column") and not r.success:
                observed = res.get("observed_value")
                expected = cfg.kwargs.get("column_list") or cfg.kwargs.get("column_set")
                if expected is None:  # a column count
                    err = f"expected {cfg.kwargs.get('value')} columns, found {observed}"
                else:
                    missing = [c for c in expected if c not in (observed or [])]
                    err = f"expected columns {list(expected)}, found {observed}" + (
                        f"; missing {missing}" if missing else ""
                    )
            checks.append(
                Check(
                    file=file,
                    suite=suite_name,
                    expectation=cfg.type,
                    column=cfg.kwargs.get("column")
                    or ",".join(cfg.kwargs.get("column_list") or [])
                    or None,
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

    def build_docs(self) -> None:
        if self.docs is not None:
            self.ctx.build_data_docs(site_names=["sarflow"])


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
    values_of: Callable[[pl.DataFrame], tuple[pl.DataFrame, list[Any]]],
    p: ValidateParams,
    header: int = 1,
) -> tuple[list[Check], int]:
    """Both suites of `file` on every batch of `lf`, merged per check; (checks, data rows).
    `values_of(text batch)` gives the typed frame and its value expectations."""
    stem = file.rsplit(".", 1)[0]
    merged: dict[tuple[str, str, str], Check] = {}
    rows = 0
    for text in progress(numbered_batches(lf, p.chunk_rows), None, f"validate {file} (batches)"):
        rows += text.height
        _fold(merged, v.run(file, f"{stem}.format", text, fmt, header), p.max_examples)
        frame, expectations = values_of(text)
        if expectations:
            _fold(
                merged, v.run(file, f"{stem}.values", frame, expectations, header), p.max_examples
            )
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
            v, file, lf, fmt, lambda text: value_expectations(file, typed(file, text), p, rel), p
        )
    except UNREADABLE as e:
        error = f"cannot read {path}: {_first_line(e)}"
        return [Check(file, "files", "readable_csv", None, False, error=error)], 0
    if rows == 0:
        return [Check(file, "files", "has_rows", None, False, error=f"{path} has no data rows")], 0
    return found, rows


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


def report_of(checks: list[Check], rows: dict[str, int], files: list[str]) -> dict[str, Any]:
    """The validation report: failing checks first, then in `files` order (deterministic)."""
    checks = sorted(
        checks,
        key=lambda c: (c.success, files.index(c.file), c.suite, c.expectation, c.column or ""),
    )
    return {
        "success": all(c.success for c in checks),
        "failed": sum(not c.success for c in checks),
        "checked": len(checks),
        "rows": rows,
        "checks": [asdict(c) for c in checks],
    }


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
    return report_of(checks, rows, list(RAW_FILES))


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
                v, name, lf, fmt, lambda text, d=d, ex=values: (typed(text, d), ex), p, header
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
