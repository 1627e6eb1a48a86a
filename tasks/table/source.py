"""Bring your own multi-task table: declarations, readers of the papers' datasets, validate and
split for `source.kind: table`.

A table is one file (split by rule) or given train / test (/ valid) files, CSV or parquet, with
declared categorical, numeric and label columns (binary or regression) and an optional sample
weight. Presets declare the public benchmarks the MMoE and PLE papers use, read in their original
formats (nothing is shipped or downloaded; see the README for where to get them):

- `census_income`: UCI Census-Income (KDD), `census-income.data` / `census-income.test`: 42
  comma-separated fields, no header, `?` for missing, labels with trailing periods. Group 1 (the
  MMoE paper): income > 50K and marital status = never married; group 2: education at least
  college (an associate, bachelor, master, professional or doctoral degree) and never married.
  The columns that define a group's labels are not features; the census instance weight is not a
  feature either. The 99,762-row test file is split 1:1 into valid and test with `split.seed`.
- `ali_ccp`: Ali-CCP in its common CSV form (`ali_ccp_train.csv`, `ali_ccp_val.csv`,
  `ali_ccp_test.csv`, header row): labels click and purchase, `D*` columns numeric, the rest
  categorical.
- `aliexpress`: AliExpress in its common CSV form (`train.csv`, `test.csv`, header row):
  `categorical_*` and `numerical_*` columns, labels click and conversion, `search_id` dropped;
  valid is half of the test file, as for census.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.config.params import TableParams, TableSplit

PARTS = ("train", "valid", "test")

CENSUS_COLUMNS = [
    "age", "class_of_worker", "detailed_industry_recode", "detailed_occupation_recode",
    "education", "wage_per_hour", "enroll_in_edu_inst_last_wk", "marital_stat",
    "major_industry_code", "major_occupation_code", "race", "hispanic_origin", "sex",
    "member_of_a_labor_union", "reason_for_unemployment", "full_or_part_time_employment_stat",
    "capital_gains", "capital_losses", "dividends_from_stocks", "tax_filer_stat",
    "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household",
    "instance_weight", "migration_code_change_in_msa", "migration_code_change_in_reg",
    "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother",
    "country_of_birth_self", "citizenship", "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits", "weeks_worked_in_year",
    "year", "income",
]  # fmt: skip
CENSUS_NUMERIC = [
    "age", "wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks",
    "num_persons_worked_for_employer", "weeks_worked_in_year",
]  # fmt: skip
CENSUS_INCOME = ("- 50000.", "50000+.")
COLLEGE = [
    "Associates degree-academic program", "Associates degree-occup /vocational",
    "Bachelors degree(BA AB BS)", "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)", "Doctorate degree(PhD EdD)",
]  # fmt: skip


@dataclass(frozen=True)
class Positive:
    """A binary label derived from a text column: 1 where the value is one of `values`."""

    column: str
    values: tuple[str, ...]
    allowed: tuple[str, ...] | None = None  # every value the column may hold (None: any)


@dataclass(frozen=True)
class Declaration:
    """A table's full description, from params (or a preset)."""

    files: dict[str, str]  # role (data | train | valid | test) -> file name in paths.source
    format: str = "csv"
    has_header: bool = True
    separator: str = ","
    null_values: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()  # names in file order, when the file has no header
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # name -> binary | regression
    derived: dict[str, Positive] = field(default_factory=dict)  # labels made from a text column
    weight: str | None = None
    split: TableSplit = TableSplit()

    def required(self) -> list[str]:
        """The columns the file must have."""
        cols = [*self.categorical, *self.numeric]
        cols += [d.column for d in self.derived.values()]
        cols += [name for name in self.labels if name not in self.derived]
        cols += [self.weight] if self.weight else []
        if self.split.rule == "time" and self.split.time_column:
            cols.append(self.split.time_column)
        if self.split.rule == "column" and self.split.column:
            cols.append(self.split.column)
        return list(dict.fromkeys(cols))

    def not_inputs(self) -> set[str]:
        """Columns a glob never selects as a model input: labels and their sources, the
        weight, the split's columns."""
        out = {*self.labels, *(d.column for d in self.derived.values())}
        out |= {c for c in (self.weight, self.split.time_column, self.split.column) if c}
        return out


def declaration(p: TableParams) -> Declaration:
    """The declaration of `p`: its preset's, or the one written in params."""
    if p.preset == "census_income":
        group = {
            1: {"income_50k": Positive("income", (CENSUS_INCOME[1],), CENSUS_INCOME)},
            2: {"education_college": Positive("education", tuple(COLLEGE))},
        }[p.group]
        derived = {**group, "never_married": Positive("marital_stat", ("Never married",))}
        sources = {d.column for d in derived.values()}
        skip = sources | {"instance_weight"} | set(CENSUS_NUMERIC)
        return Declaration(
            files={"train": "census-income.data", "test": "census-income.test"},
            has_header=False,
            null_values=("?",),
            columns=tuple(CENSUS_COLUMNS),
            categorical=tuple(c for c in CENSUS_COLUMNS if c not in skip),
            numeric=tuple(CENSUS_NUMERIC),
            labels=dict.fromkeys(derived, "binary"),
            derived=derived,
            split=TableSplit(rule="given", seed=p.split.seed),
        )
    if p.preset in ("ali_ccp", "aliexpress"):
        return Declaration(  # columns come from the header: see resolve_columns
            files=(
                {
                    "train": "ali_ccp_train.csv",
                    "valid": "ali_ccp_val.csv",
                    "test": "ali_ccp_test.csv",
                }
                if p.preset == "ali_ccp"
                else {"train": "train.csv", "test": "test.csv"}
            ),
            labels=(
                {"click": "binary", "purchase": "binary"}
                if p.preset == "ali_ccp"
                else {"click": "binary", "conversion": "binary"}
            ),
            split=TableSplit(rule="given", seed=p.split.seed),
        )
    return Declaration(
        files=dict(p.files),
        format=p.format,
        has_header=p.has_header,
        separator=p.separator,
        null_values=tuple(p.null_values),
        columns=tuple(p.columns),
        categorical=tuple(p.categorical),
        numeric=tuple(p.numeric),
        labels=dict(p.labels),
        weight=p.weight,
        split=p.split,
    )


GLOB = set("*?[")


def expand(patterns: tuple[str, ...], header: list[str], skip: set[str], key: str) -> list[str]:
    """Names as given, globs (fnmatch: `x_*`, `num_??`) as the header's matching columns, in
    header order, leaving out `skip`; a glob that matches nothing is an error naming it."""
    out: list[str] = []
    for pat in patterns:
        if not GLOB & set(pat):
            out.append(pat)
            continue
        hits = [c for c in header if fnmatch.fnmatchcase(c, pat) and c not in skip]
        if not hits:
            raise TableError(
                f"table.{key} glob {pat!r} matches no input column of the table (header: "
                f"{header[:12]}{' ...' if len(header) > 12 else ''})"
            )
        out += hits
    return list(dict.fromkeys(out))


def resolve_columns(d: Declaration, header: list[str], preset: str | None) -> Declaration:
    """The feature columns, resolved against the file's header: the globs of a declared table,
    or the presets whose columns are known only from it (Ali-CCP, AliExpress)."""
    if preset is None:
        explicit = {c for c in (*d.categorical, *d.numeric) if not GLOB & set(c)}
        skip = d.not_inputs() | explicit
        categorical = expand(d.categorical, header, skip, "categorical")
        numeric = expand(d.numeric, header, skip | set(categorical), "numeric")
        both = sorted(set(categorical) & set(numeric))
        if both:
            raise TableError(f"table columns {both} are selected both categorical and numeric")
        return Declaration(
            **{**d.__dict__, "categorical": tuple(categorical), "numeric": tuple(numeric)}
        )
    if preset == "ali_ccp":
        feats = [c for c in header if c not in d.labels]
        numeric = tuple(c for c in feats if c.startswith("D"))
        categorical = tuple(c for c in feats if not c.startswith("D"))
    elif preset == "aliexpress":
        categorical = tuple(c for c in header if c.startswith("categorical"))
        numeric = tuple(c for c in header if c.startswith("numerical"))
    else:
        return d
    return Declaration(**{**d.__dict__, "categorical": categorical, "numeric": numeric})


class TableError(ValueError):
    """A table file that cannot be read as declared; names the file and what was expected."""


def scan_text(path: Path, d: Declaration) -> pl.LazyFrame:
    """The file's columns as text, stripped of surrounding spaces, declared nulls as null."""
    if not path.is_file():
        raise TableError(f"{path} not found (declared in table.files)")
    if d.format == "parquet":
        lf = pl.scan_parquet(path)
        lf = lf.select(pl.all().cast(pl.Utf8))
    else:
        lf = pl.scan_csv(
            path,
            has_header=d.has_header,
            separator=d.separator,
            infer_schema=False,
            encoding="utf8",
            new_columns=list(d.columns) if not d.has_header and d.columns else None,
        )
    nulls = list(d.null_values)
    return lf.with_columns(
        pl.when(pl.all().str.strip_chars().is_in(nulls) if nulls else pl.lit(False))
        .then(None)
        .otherwise(pl.all().str.strip_chars())
        .name.keep()
    )


def typed(text: pl.DataFrame, d: Declaration) -> pl.DataFrame:
    """Declared types: categorical text, numeric and labels Float64 (unparseable -> null)."""
    cols = set(text.columns)
    exprs: list[pl.Expr] = []
    for c in d.numeric:
        if c in cols:
            exprs.append(pl.col(c).cast(pl.Float64, strict=False))
    for name in d.labels:
        rule = d.derived.get(name)
        if rule is not None and rule.column in cols:
            exprs.append(pl.col(rule.column).is_in(list(rule.values)).cast(pl.Float64).alias(name))
        elif rule is None and name in cols:
            exprs.append(pl.col(name).cast(pl.Float64, strict=False))
    if d.weight and d.weight in cols:
        exprs.append(pl.col(d.weight).cast(pl.Float64, strict=False))
    return text.with_columns(exprs)


def read_parts(folder: Path, p: TableParams) -> tuple[Declaration, dict[str, pl.DataFrame]]:
    """The declared files as typed frames, keyed by role (data | train | valid | test)."""
    d = declaration(p)
    frames: dict[str, pl.DataFrame] = {}
    for role, name in d.files.items():
        text = scan_text(folder / name, d)
        if not frames:
            d = resolve_columns(d, text.collect_schema().names(), p.preset)
        frames[role] = typed(text.collect(), d)
    return d, frames


def split_parts(frames: dict[str, pl.DataFrame], d: Declaration) -> dict[str, pl.DataFrame]:
    """train / valid / test by the declared rule; seeded, deterministic."""
    s = d.split
    rng = np.random.default_rng(s.seed)
    if s.rule == "given":
        if "train" not in frames or "test" not in frames:
            raise TableError(
                f"split.rule 'given' needs table.files train and test, got {sorted(frames)}"
            )
        if "valid" in frames:
            return {k: frames[k] for k in PARTS}
        test = frames["test"]
        order = rng.permutation(test.height)  # the census protocol: test split 1:1
        half = test.height // 2
        return {
            "train": frames["train"],
            "valid": test[np.sort(order[:half])],
            "test": test[np.sort(order[half:])],
        }
    data = frames.get("data")
    if data is None:
        raise TableError(f"split.rule {s.rule!r} needs table.files data, got {sorted(frames)}")
    if s.rule == "column":
        return by_column(data, s)
    n = data.height
    n_test, n_valid = round(n * s.test), round(n * s.valid)
    if s.rule == "random":
        order = rng.permutation(n)
    else:  # time: the latest rows are test, the ones before them valid
        order = np.argsort(time_key(data, s.time_column).to_numpy(), kind="stable")
    cut_v, cut_t = n - n_test - n_valid, n - n_test
    return {
        "train": data[np.sort(order[:cut_v])],
        "valid": data[np.sort(order[cut_v:cut_t])],
        "test": data[np.sort(order[cut_t:])],
    }


def by_column(data: pl.DataFrame, s: TableSplit) -> dict[str, pl.DataFrame]:
    """The table's own parts: the rows whose `s.column` holds each part's value."""
    col = s.column or ""
    if col not in data.columns:
        raise TableError(f"table.split.column {col!r} is not a column of the table")
    known = set(s.values.values())
    other = data[col].filter(~data[col].is_in(list(known)) | data[col].is_null())
    if other.len():
        raise TableError(
            f"table.split.column {col!r} holds values other than {sorted(known)} "
            f"(table.split.values) in {other.len()} rows, e.g. {other.unique().head(3).to_list()}"
        )
    parts = {part: data.filter(pl.col(col) == s.values[part]) for part in PARTS}
    empty = [p for p in PARTS if parts[p].height == 0]
    if empty:
        raise TableError(
            f"table.split.column {col!r}: no rows of {empty} "
            f"(values {[s.values[p] for p in empty]})"
        )
    return parts


def time_key(data: pl.DataFrame, column: str) -> pl.Series:
    """The time column as something that orders in time: numbers, or datetimes parsed from text."""
    if column not in data.columns:
        raise TableError(f"table.split.time_column {column!r} is not a column of the table")
    col = data[column]
    if col.dtype != pl.Utf8:
        return col
    for parse in (
        lambda c: c.cast(pl.Float64, strict=False),
        lambda c: c.str.to_datetime(strict=False),
    ):
        key = parse(col)
        if key.null_count() == col.null_count():
            return key.fill_null(key.min())
    bad = col.filter(parse(col).is_null() & col.is_not_null()).head(3).to_list()
    raise TableError(
        f"table.split.time_column {column!r} holds values that are neither numbers nor "
        f"datetimes, e.g. {bad}"
    )


def describe(d: Declaration) -> dict[str, Any]:
    return {
        "categorical": list(d.categorical),
        "numeric": list(d.numeric),
        "labels": d.labels,
        "weight": d.weight,
    }
