"""validate: good data passes; each kind of bad input fails with the file, column and a value."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml

from tasks.config.params import ValidateParams
from tasks.validate import main, validate_folder

P = ValidateParams()


def _edit(name: str, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        df = pl.read_csv(d / name, infer_schema=False)
        fn(df).write_csv(d / name)

    return apply


def _set(col: str, value: str, row: int = 3) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def fn(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.when(pl.int_range(pl.len()) == row)
            .then(pl.lit(value))
            .otherwise(pl.col(col))
            .alias(col)
        )

    return fn


# (case, mutation, failing file, failing column or None, a substring of the reported failure)
CASES = [
    (
        "label outside 0/1",
        _edit("rec_inter.csv", _set("click", "2")),
        "rec_inter.csv",
        "click",
        "2",
    ),
    (
        "malformed word-id list",
        _edit("src_inter.csv", _set("keyword", "[12, x]")),
        "src_inter.csv",
        "keyword",
        "[12, x]",
    ),
    (
        "text in an id column",
        _edit("rec_inter.csv", _set("user_id", "abc")),
        "rec_inter.csv",
        "user_id",
        "abc",
    ),
    (
        "unknown item id",
        _edit("rec_inter.csv", _set("item_id", "999999999")),
        "rec_inter.csv",
        "item_id_missing_from_item_features",
        "999999999",
    ),
    (
        "search_item_related where search = 0",
        _edit(
            "rec_inter.csv",
            lambda df: df.with_columns(
                search=pl.lit("0"),
                search_item_related=pl.when(pl.int_range(pl.len()) == 2)
                .then(pl.lit("1"))
                .otherwise(pl.lit("0")),
            ),
        ),
        "rec_inter.csv",
        "search_item_related_set_where_search_is_0",
        "1",
    ),
    (
        "renamed column",
        _edit("user_features.csv", lambda df: df.rename({"onehot_feat1": "feat1"})),
        "user_features.csv",
        None,
        "feat1",
    ),
    (
        "duplicate user",
        _edit("user_features.csv", lambda df: pl.concat([df, df.head(1)])),
        "user_features.csv",
        "user_id_not_unique",
        "",
    ),
    (
        "far-future timestamp",
        _edit("src_inter.csv", _set("search_session_timestamp", "4102444800000")),
        "src_inter.csv",
        "search_session_timestamp",
        "4102444800000",
    ),
    (
        "missing file",
        lambda d: (d / "social_network.csv").unlink(),
        "social_network.csv",
        None,
        "not found",
    ),
]


@pytest.fixture(scope="module")
def good_report(raw_dir):
    return validate_folder(raw_dir, P)


def test_generated_data_passes_every_check(good_report):
    failed = [c for c in good_report["checks"] if not c["success"]]
    assert good_report["success"] and not failed, failed
    assert good_report["checked"] > 60  # every file has its suites
    assert all(c["error"] is None for c in good_report["checks"])  # the validator itself worked


@pytest.mark.parametrize("case,mutate,file,column,shown", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_naming_file_column_and_value(
    raw_dir, tmp_path, case, mutate, file, column, shown
):
    d = tmp_path / "raw"
    shutil.copytree(raw_dir, d)
    mutate(d)
    report = validate_folder(d, P)
    assert not report["success"]
    failed = [c for c in report["checks"] if not c["success"]]
    hits = [c for c in failed if c["file"] == file and (column is None or c["column"] == column)]
    assert hits, f"{case}: no failing check on {file} {column}: {failed}"
    text = json.dumps(hits)
    assert shown in text, f"{case}: {shown!r} not shown in {text}"
    assert report["checks"][0]["success"] is False  # failing checks come first


def test_main_writes_report_and_exits_nonzero_on_bad_data(raw_dir, tmp_path, monkeypatch, capsys):
    shutil.copytree(raw_dir, tmp_path / "data" / "raw")
    _edit("rec_inter.csv", _set("like", "7"))(tmp_path / "data" / "raw")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": {}, "train": {"models": []}}))
    # the stage's paths.source default is data/raw
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "FAILED rec_inter.csv column 'like'" in out and "['7']" in out
    report = json.loads((tmp_path / "reports" / "validation_failed.json").read_text())
    assert report["success"] is False and report["failed"] == 1
    assert not (tmp_path / "reports" / "validation.json").exists()  # kept for passing runs only
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()


def test_failures_name_the_line_in_the_file(raw_dir, tmp_path):
    d = tmp_path / "raw"
    shutil.copytree(raw_dir, d)
    _edit("src_inter.csv", _set("keyword", "[12, x]", row=41))(d)
    report = validate_folder(d, P)
    (hit,) = [c for c in report["checks"] if not c["success"]]
    assert hit["column"] == "keyword" and hit["examples"] == ["[12, x]"]
    assert hit["lines"] == [43]  # data row 41 (0-based) is line 43: header, then 1-based
    lines = (d / "src_inter.csv").read_text().splitlines()
    assert "[12, x]" in lines[hit["lines"][0] - 1]


def test_batches_give_the_same_report_as_one_pass(raw_dir, tmp_path):
    """Bounded memory changes nothing: every row is still checked, relations span batches."""
    d = tmp_path / "raw"
    shutil.copytree(raw_dir, d)
    # a duplicate log row far from its original, a session of two users, a bad cell late on
    _edit("rec_inter.csv", lambda df: pl.concat([df, df.slice(5, 1)]))(d)
    _edit("src_inter.csv", _set("click_cnt", "7", row=2500))(d)
    n_rec = pl.read_csv(d / "rec_inter.csv", infer_schema=False).height
    assert n_rec > 3 * 1_000
    one = validate_folder(d, P.model_copy(update={"chunk_rows": 10_000_000}))
    many = validate_folder(d, P.model_copy(update={"chunk_rows": 1_000}))
    assert many == one
    failed = {c["column"]: c for c in many["checks"] if not c["success"]}
    assert set(failed) == {"row_repeats_an_earlier_row", "click_cnt"}
    assert failed["row_repeats_an_earlier_row"]["examples"] == [n_rec + 1]  # its line number
    assert failed["click_cnt"]["lines"] == [2502]
    assert many["rows"]["rec_inter.csv"] == n_rec
    rec_checks = [c for c in many["checks"] if c["file"] == "rec_inter.csv"]
    assert all(c["rows_checked"] == n_rec for c in rec_checks if c["suite"].endswith("values"))
