"""validate: a Great Expectations suite over the five KuaiSAR files; non-zero exit on failure.

Two suites per file: `<file>.format` runs on the text as written (columns, nulls, number,
datetime and word-id-list forms, label values) and `<file>.values` on the typed values (ranges,
sets, uniqueness, and relations: `search_item_related` only where `search` = 1, log ids present in
the feature tables). Relations are derived columns that hold the offending value and null
elsewhere, so a failure shows example values. Writes `reports/validation.json` (deterministic,
failing checks first) and Data Docs HTML under `reports/data_docs/` (git-ignored).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from tasks.io import write_json_atomic
from tasks.params import ValidateParams, beijing_ms, load_params
from tasks.schema import ITEM_TYPES, RAW_FILES, Kind

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

    def line(self) -> str:
        where = f"{self.file}" + (f" column {self.column!r}" if self.column else "")
        if self.error:
            return f"{where}: {self.expectation}: {self.error}"
        return (
            f"{where}: {self.expectation}: {self.unexpected_count} rows "
            f"({self.unexpected_percent:.3g}%) fail, e.g. {self.examples}"
        )


def read_text(path: Path) -> pl.DataFrame:
    """Every column as text, exactly as written."""
    return pl.read_csv(path, infer_schema=False, encoding="utf8")


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


def value_expectations(
    file: str, df: pl.DataFrame, p: ValidateParams, known: dict[str, pl.Series]
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
    if file in ("rec_inter.csv", "src_inter.csv") and cols == set(RAW_FILES[file]):
        # an exact duplicate log row is a logging fault: it would count one event twice
        ex.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(RAW_FILES[file])))
    if file == "src_inter.csv":
        between("search_session_timestamp", lo, hi)
        if {"search_session_id", "user_id", "search_session_timestamp"} <= cols:
            one_session = ["user_id", "search_session_timestamp"]
            must_be_null(
                "search_session_id_with_several_users_or_times",
                pl.when(pl.struct(one_session).n_unique().over("search_session_id") > 1)
                .then(pl.col("search_session_id"))
                .otherwise(None),
            )
        if "item_type" in cols:
            ex.append(
                gxe.ExpectColumnValuesToBeInSet(column="item_type", value_set=list(ITEM_TYPES))
            )
    if file == "user_features.csv":
        between("onehot_feat1", 0, 2)
        between("onehot_feat2", 0, 7)
    if file in ("user_features.csv", "item_features.csv"):
        key = "user_id" if file == "user_features.csv" else "item_id"
        if key in cols:
            ex.append(gxe.ExpectColumnValuesToBeUnique(column=key))
    if file == "social_network.csv" and {"user_id", "user_follow_id"} <= cols:
        ex.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "user_follow_id"]))
    refs = {
        "rec_inter.csv": [("user_id", "user_features"), ("item_id", "item_features")],
        "src_inter.csv": [("user_id", "user_features"), ("item_id", "item_features")],
        "social_network.csv": [("user_id", "user_features"), ("user_follow_id", "user_features")],
    }
    for col, table in refs.get(file, []):
        ids = known.get(table)
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
        self.result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max_examples}
        self.max_examples = max_examples

    def run(
        self, file: str, suite_name: str, df: pl.DataFrame, expectations: list[Any]
    ) -> list[Check]:
        gx = self.gx
        asset = self.source.add_dataframe_asset(suite_name)
        batch = asset.add_batch_definition_whole_dataframe("all rows")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=suite_name))
        for e in expectations:
            suite.add_expectation(e)
        vd = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
        )
        # GX 1.x takes pandas, not polars: convert here and only here
        result = vd.run(
            batch_parameters={"dataframe": df.to_pandas()}, result_format=self.result_format
        )
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
            if cfg.type == "expect_table_columns_to_match_ordered_list" and not r.success:
                observed = res.get("observed_value")
                err = f"expected columns {cfg.kwargs['column_list']}, found {observed}"
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


def validate_folder(raw: Path, p: ValidateParams, docs: Path | None = None) -> dict[str, Any]:
    """Run every check on the KuaiSAR folder `raw`; returns the report (see module docstring)."""
    v = Validator(docs, p.max_examples)
    checks: list[Check] = []
    texts: dict[str, pl.DataFrame] = {}
    for file in RAW_FILES:
        path = raw / file
        if not path.is_file():
            checks.append(
                Check(file, "files", "file_exists", None, False, error=f"{path} not found")
            )
            continue
        try:
            texts[file] = read_text(path)
        except Exception as e:  # polars raises several kinds for unreadable CSV
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            checks.append(
                Check(
                    file, "files", "readable_csv", None, False, error=f"cannot read {path}: {first}"
                )
            )
            continue
        if texts[file].height == 0:
            checks.append(
                Check(file, "files", "has_rows", None, False, error=f"{path} has no data rows")
            )
    known: dict[str, pl.Series] = {}
    for table, key in (("user_features", "user_id"), ("item_features", "item_id")):
        t = texts.get(f"{table}.csv")
        if t is not None and key in t.columns:
            known[table] = t[key].cast(pl.Int64, strict=False).drop_nulls().unique()
    for file, text in texts.items():
        stem = file.removesuffix(".csv")
        checks += v.run(file, f"{stem}.format", text, format_expectations(file, text.columns))
        frame, expectations = value_expectations(file, typed(file, text), p, known)
        if expectations:
            checks += v.run(file, f"{stem}.values", frame, expectations)
    v.build_docs()
    checks.sort(
        key=lambda c: (
            c.success,
            list(RAW_FILES).index(c.file),
            c.suite,
            c.expectation,
            c.column or "",
        )
    )
    return {
        "success": all(c.success for c in checks),
        "failed": sum(not c.success for c in checks),
        "checked": len(checks),
        "rows": {f: t.height for f, t in texts.items()},
        "checks": [asdict(c) for c in checks],
    }


REPORT = "validation.json"  # the stage's DVC metric: written only when every check passes
FAILED_REPORT = (
    "validation_failed.json"  # a failing run's report: the last good outputs stay as they were
)


def main(argv: list[str] | None = None) -> None:
    """Validate paths.source; exit 1 if any check failed, after writing the failure report."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    reports = params.paths.reports
    report = validate_folder(params.paths.source, params.validate_, reports / "data_docs")
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
