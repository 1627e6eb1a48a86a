"""Tables: the presets' readers on files in the original formats, declared tables, splits,
validation from the declaration, and the trainer's regression and weighted losses."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from tasks.config.params import TableParams, TableSplit, ValidateParams
from tasks.table.source import PARTS, TableError, read_parts, split_parts
from tasks.training.engine import masked_loss
from tasks.validate import validate_table
from tests.table_files import write_ali_ccp, write_aliexpress, write_census


def census(group: int = 1, seed: int = 0) -> TableParams:
    return TableParams(preset="census_income", group=group, split=TableSplit(seed=seed))


@pytest.fixture(scope="module")
def census_dir(tmp_path_factory):
    return write_census(tmp_path_factory.mktemp("census"))


def test_census_reader_derives_the_papers_labels_from_the_original_text(census_dir):
    d, frames = read_parts(census_dir, census(1))
    train = frames["train"]
    lines = (census_dir / "census-income.data").read_text().splitlines()
    assert train.height == len(lines)
    raw_income = [line.rsplit(", ", 1)[1] for line in lines]
    assert train["income_50k"].to_list() == [float(v == "50000+.") for v in raw_income]
    marital = [line.split(", ")[7] for line in lines]
    assert train["never_married"].to_list() == [float(v == "Never married") for v in marital]
    assert 0.05 < train["income_50k"].mean() < 0.6  # both classes present
    # label sources and the census weight are not features; '?' is missing
    assert {"income", "marital_stat", "instance_weight"}.isdisjoint(d.categorical + d.numeric)
    assert "education" in d.categorical and "age" in d.numeric
    assert train["class_of_worker"].null_count() > 0
    assert "?" not in train["class_of_worker"].drop_nulls().to_list()
    assert not train["class_of_worker"].drop_nulls().str.starts_with(" ").any()


def test_census_group_2_is_education_and_never_married(census_dir):
    d, frames = read_parts(census_dir, census(2))
    assert list(d.labels) == ["education_college", "never_married"]
    assert "education" not in d.categorical and "income" in d.categorical
    college = frames["train"].filter(pl.col("education_college") == 1)["education"].unique()
    assert set(college.to_list()) <= {
        "Associates degree-academic program",
        "Associates degree-occup /vocational",
        "Bachelors degree(BA AB BS)",
        "Masters degree(MA MS MEng MEd MSW MBA)",
        "Prof school degree (MD DDS DVM LLB JD)",
        "Doctorate degree(PhD EdD)",
    }


def test_census_test_file_splits_one_to_one_into_valid_and_test_with_the_seed(census_dir):
    d, frames = read_parts(census_dir, census(1, seed=3))
    parts = split_parts(frames, d)
    test_rows = frames["test"].height
    assert parts["valid"].height + parts["test"].height == test_rows
    assert abs(parts["valid"].height - parts["test"].height) <= 1
    assert parts["train"].height == frames["train"].height
    key = pl.concat_str(pl.all().cast(pl.Utf8).fill_null("-"))
    both = pl.concat([parts["valid"], parts["test"]]).select(key.alias("k"))["k"].sort()
    assert both.to_list() == frames["test"].select(key.alias("k"))["k"].sort().to_list()
    again = split_parts(frames, d)
    assert again["valid"].equals(parts["valid"])  # seeded
    d4, f4 = read_parts(census_dir, census(1, seed=4))
    other = split_parts(f4, d4)
    assert not other["valid"].equals(parts["valid"])


def test_census_validates_clean_and_names_a_bad_label_with_its_line(census_dir, tmp_path):
    p = ValidateParams()
    good = validate_table(census_dir, census(1), p, None)
    assert good["success"], [c for c in good["checks"] if not c["success"]]
    bad = tmp_path / "census"
    bad.mkdir()
    lines = (census_dir / "census-income.data").read_text().splitlines()
    lines[9] = lines[9].rsplit(", ", 1)[0] + ", 50000+"  # the period is part of the format
    (bad / "census-income.data").write_text("\n".join(lines) + "\n")
    (bad / "census-income.test").write_text((census_dir / "census-income.test").read_text())
    report = validate_table(bad, census(1), p, None)
    failed = [c for c in report["checks"] if not c["success"]]
    assert [(c["file"], c["column"]) for c in failed] == [("census-income.data", "income")]
    assert failed[0]["examples"] == ["50000+"] and failed[0]["lines"] == [10]  # no header


def test_census_with_a_missing_field_fails_validation(census_dir, tmp_path):
    bad = tmp_path / "census"
    bad.mkdir()
    lines = (census_dir / "census-income.test").read_text().splitlines()
    (bad / "census-income.data").write_text((census_dir / "census-income.data").read_text())
    lines[4] = lines[4].split(", ", 1)[1]  # 41 fields
    (bad / "census-income.test").write_text("\n".join(lines) + "\n")
    report = validate_table(bad, census(1), ValidateParams(), None)
    assert not report["success"]
    failed = [c for c in report["checks"] if not c["success"]]
    assert all(c["file"] == "census-income.test" for c in failed)
    assert "census-income.test" in str(failed)


def test_ali_ccp_reader_finds_ids_dense_and_both_labels(tmp_path):
    folder = write_ali_ccp(tmp_path / "ali")
    tp = TableParams(preset="ali_ccp")
    d, frames = read_parts(folder, tp)
    assert d.numeric == ("D109_14", "D110_14") and d.categorical == ("101", "121", "122")
    assert list(d.labels) == ["click", "purchase"]
    assert set(frames) == {"train", "valid", "test"}
    parts = split_parts(frames, d)
    assert parts["valid"].height == frames["valid"].height  # a given valid file is used as is
    assert validate_table(folder, tp, ValidateParams(), None)["success"]


def test_aliexpress_reader_drops_search_id_and_splits_test_for_valid(tmp_path):
    folder = write_aliexpress(tmp_path / "ae")
    tp = TableParams(preset="aliexpress")
    d, frames = read_parts(folder, tp)
    assert "search_id" not in d.categorical + d.numeric
    assert d.categorical[0] == "categorical_1" and d.numeric[-1] == "numerical_3"
    parts = split_parts(frames, d)
    assert parts["valid"].height + parts["test"].height == frames["test"].height
    assert validate_table(folder, tp, ValidateParams(), None)["success"]


def declared(folder, **kw) -> TableParams:
    base = dict(
        files={"data": "t.csv"},
        categorical=["city"],
        numeric=["x"],
        labels={"buy": "binary", "spend": "regression"},
    )
    return TableParams(**(base | kw))


def write_table(folder, n: int = 400) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pl.DataFrame(
        {
            "city": rng.choice(["a", "b", "c"], n),
            "x": rng.normal(size=n).round(3),
            "day": rng.permutation(n),
            "buy": rng.integers(0, 2, n),
            "spend": rng.normal(10, 2, n).round(2),
            "w": rng.uniform(0.5, 2, n).round(2),
        }
    ).write_csv(folder / "t.csv")


def test_declared_table_random_and_time_splits(tmp_path):
    write_table(tmp_path / "t")
    d, frames = read_parts(tmp_path / "t", declared(tmp_path))
    parts = split_parts(frames, d)
    assert [parts[p].height for p in PARTS] == [320, 40, 40]
    tp = declared(tmp_path, split=TableSplit(rule="time", time_column="day", valid=0.2, test=0.25))
    d, frames = read_parts(tmp_path / "t", tp)
    parts = split_parts(frames, d)
    days = {p: parts[p]["day"].cast(pl.Int64) for p in PARTS}
    assert days["train"].max() < days["valid"].min() and days["valid"].max() < days["test"].min()
    assert parts["test"].height == 100


def test_declared_table_validation_names_the_bad_value(tmp_path):
    write_table(tmp_path / "t")
    df = pl.read_csv(tmp_path / "t" / "t.csv", infer_schema=False)
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(pl.lit("two"))
        .otherwise(pl.col("spend"))
        .alias("spend"),
        pl.when(pl.int_range(pl.len()) == 7)
        .then(pl.lit("3"))
        .otherwise(pl.col("buy"))
        .alias("buy"),
    )
    df.write_csv(tmp_path / "t" / "t.csv")
    report = validate_table(tmp_path / "t", declared(tmp_path), ValidateParams(), None)
    failed = {(c["column"], c["expectation"]): c for c in report["checks"] if not c["success"]}
    assert failed[("spend", "expect_column_values_to_match_regex")]["examples"] == ["two"]
    assert failed[("buy", "expect_column_values_to_be_in_set")]["examples"] == [3]
    assert failed[("buy", "expect_column_values_to_be_in_set")]["lines"] == [9]  # header + 1-based


def test_a_declared_column_missing_from_the_file_is_named(tmp_path):
    write_table(tmp_path / "t")
    report = validate_table(
        tmp_path / "t", declared(tmp_path, numeric=["x", "height"]), ValidateParams(), None
    )
    assert not report["success"]
    assert "height" in str([c for c in report["checks"] if not c["success"]])


def test_a_missing_declared_file_is_a_clear_error(tmp_path):
    with pytest.raises(TableError, match="t.csv not found"):
        read_parts(tmp_path, declared(tmp_path))


def test_regression_and_weighted_losses():
    out = torch.tensor([[0.0, 2.0], [0.0, 5.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, float("nan")]])
    reg = torch.tensor([False, True])
    loss = masked_loss(out, y, reg)
    assert loss[0] == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], y[:, 0]))
    )
    assert loss[1] == pytest.approx(1.0)  # (2 - 1)^2; the NaN row is outside the sample space
    w = torch.tensor([3.0, 1.0])
    weighted = masked_loss(out, torch.tensor([[1.0, 1.0], [0.0, 4.0]]), reg, w)
    assert weighted[1] == pytest.approx((3 * 1.0 + 1 * 1.0) / 4)


def test_a_parquet_table_with_weights_reaches_the_features(tmp_path):
    from tasks.config.params import FeaturesParams
    from tasks.features import table_features
    from tasks.table.source import describe

    write_table(tmp_path / "t")
    pl.read_csv(tmp_path / "t" / "t.csv").write_parquet(tmp_path / "t" / "t.parquet")
    tp = declared(tmp_path, files={"data": "t.parquet"}, format="parquet", weight="w")
    assert validate_table(tmp_path / "t", tp, ValidateParams(), None)["success"]
    d, frames = read_parts(tmp_path / "t", tp)
    parts = split_parts(frames, d)
    out, vocabs, spec = table_features(parts, describe(d), FeaturesParams())
    assert spec["weighted"] and spec["task_types"] == {"buy": "binary", "spend": "regression"}
    assert out["table_train"]["weight"].to_list() == parts["train"]["w"].cast(pl.Float32).to_list()
    assert spec["sparse"] == {"city": len(vocabs["city"]) + 1} == {"city": 4}
    x = out["table_train"]["x"]
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-3  # standardised on train


def write_numeric(folder, n: int = 600, width: int = 30) -> None:
    """The MMoE paper's kind of table: only numeric inputs, two regression labels, and the
    table's own part column."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, width)).round(4)
    cols = {f"x_{i:03d}": x[:, i] for i in range(width)}
    part = np.where(np.arange(n) % 10 < 8, "tr", np.where(np.arange(n) % 10 == 8, "va", "te"))
    pl.DataFrame(
        {**cols, "y1": x[:, 0] + 0.1 * x[:, 1], "y2": x[:, 0] - x[:, 2], "part": part}
    ).write_csv(folder / "t.csv")


def numeric_params(**kw) -> TableParams:
    base = dict(
        files={"data": "t.csv"},
        numeric=["x_*"],
        labels={"y1": "regression", "y2": "regression"},
        split=TableSplit(
            rule="column", column="part", values={"train": "tr", "valid": "va", "test": "te"}
        ),
    )
    return TableParams(**(base | kw))


def test_globs_select_columns_and_the_table_gives_its_own_parts(tmp_path):
    write_numeric(tmp_path / "t")
    d, frames = read_parts(tmp_path / "t", numeric_params())
    assert d.numeric == tuple(f"x_{i:03d}" for i in range(30)) and d.categorical == ()
    parts = split_parts(frames, d)
    assert [parts[p].height for p in PARTS] == [480, 60, 60]
    assert set(parts["valid"]["part"]) == {"va"}
    # an explicit categorical name wins over a numeric glob that also matches it
    d, _ = read_parts(tmp_path / "t", numeric_params(categorical=["x_000"], numeric=["x_0*"]))
    assert d.categorical == ("x_000",) and d.numeric == tuple(f"x_{i:03d}" for i in range(1, 30))
    assert validate_table(tmp_path / "t", numeric_params(), ValidateParams(), None)["success"]


def test_a_glob_matching_nothing_and_a_foreign_part_value_are_named(tmp_path):
    write_numeric(tmp_path / "t")
    with pytest.raises(TableError, match=r"table.numeric glob 'z_\*' matches no input column"):
        read_parts(tmp_path / "t", numeric_params(numeric=["x_001", "z_*"]))
    with pytest.raises(TableError, match=r"glob 'y\*' matches no input column"):
        read_parts(tmp_path / "t", numeric_params(numeric=["y*"]))  # labels are never inputs
    report = validate_table(tmp_path / "t", numeric_params(numeric=["z_*"]), ValidateParams(), None)
    assert not report["success"] and "z_*" in str(report["checks"])
    df = pl.read_csv(tmp_path / "t" / "t.csv")
    df.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("holdout")).otherwise("part").alias("part")
    ).write_csv(tmp_path / "t" / "t.csv")
    d, frames = read_parts(tmp_path / "t", numeric_params())
    with pytest.raises(
        TableError, match=r"'part' holds values other than \['te', 'tr', 'va'\].*holdout"
    ):
        split_parts(frames, d)
    report = validate_table(tmp_path / "t", numeric_params(), ValidateParams(), None)
    bad = [c for c in report["checks"] if not c["success"]]
    assert [(c["column"], c["examples"], c["lines"]) for c in bad] == [("part", ["holdout"], [5])]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"numeric": []}, "table declares no model input"),
        ({"numeric": ["x_*", "y1"]}, r"\['y1'\] are declared both as model inputs and as a label"),
        ({"numeric": ["x_*", "part"]}, r"\['part'\] are declared both as model inputs"),
        ({"categorical": ["x_001"], "numeric": ["x_001"]}, "both categorical and numeric"),
        ({"split": {"rule": "column"}}, "needs table.split.column"),
        (
            {
                "split": {
                    "rule": "column",
                    "column": "part",
                    "values": {"train": "a", "valid": "a", "test": "b"},
                }
            },
            "three different values",
        ),
    ],
)
def test_a_declaration_without_inputs_or_reading_its_labels_is_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        numeric_params(**kw)


def test_samples_of_a_numeric_only_table_keep_their_rows(tmp_path):
    from tasks.config.params import FeaturesParams
    from tasks.features import table_features
    from tasks.table.source import describe
    from tasks.training.tensors import load_samples

    write_numeric(tmp_path / "t")
    d, frames = read_parts(tmp_path / "t", numeric_params())
    out, _, spec = table_features(split_parts(frames, d), describe(d), FeaturesParams())
    (tmp_path / "f").mkdir()
    out["table_train"].write_parquet(tmp_path / "f" / "table_train.parquet")
    s = load_samples(tmp_path / "f", "table_train", spec, ["y1", "y2"], torch.device("cpu"))
    # polars' select of no columns has no rows: the sparse inputs must keep all 480
    assert len(s) == 480 and s.sparse.shape == (480, 0) and s.dense.shape == (480, 30)
