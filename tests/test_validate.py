"""validate: good data passes; each kind of bad input fails with the file, column and a value."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml

from tasks.config.params import ValidateParams
from tasks.validate import Check, header_problem, main, utf8_error_at, validate_folder

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
        "item_id_absent_from_item_features",
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


def test_data_docs_hold_each_batch_once_and_the_failing_one_in_detail(raw_dir, tmp_path):
    """A failing batch is checked twice (pass/fail first, then for its details): only the
    detailed result reaches Data Docs, so the pages per suite are the batches, no more."""
    d = tmp_path / "raw"
    shutil.copytree(raw_dir, d)
    _edit("rec_inter.csv", _set("click", "2", row=2500))(d)
    n_rec = pl.read_csv(d / "rec_inter.csv", infer_schema=False).height
    docs = tmp_path / "docs"
    report = validate_folder(d, P.model_copy(update={"chunk_rows": 1_000}), docs)
    assert report["failed"] == 1
    for suite in ("format", "values"):
        pages = sorted((docs / "validations" / "rec_inter" / suite).rglob("*.html"))
        assert len(pages) == -(-n_rec // 1_000), suite
    texts = [_page_text(p) for p in (docs / "validations" / "rec_inter").rglob("*.html")]
    (failing,) = [t for t in texts if "Unsuccessful Expectations 1 " in t]
    # SUMMARY's table of unexpected values and their counts; the quick BASIC pass has none
    assert "Unexpected Value Count 2 1 " in failing


def _page_text(page: Path) -> str:
    """A Data Docs page's words: scripts, styles and tags dropped, whitespace collapsed."""
    html = re.sub(r"<(script|style).*?</\1>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


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


def test_search_results_the_feed_never_serves_may_lack_features_and_are_counted(good_report):
    """The release: search returns LIVE, USER, ... items absent from item_features. They pass,
    and the report counts them per type (the generator writes them as the release does)."""
    unknown = good_report["search_items_without_features"]
    assert unknown and set(unknown) <= {"USER", "LIVE", "COMMODITY", "MUSIC", "ADVERT"}
    assert all(n > 0 for n in unknown.values())


def test_a_video_result_without_features_fails_but_a_live_one_passes(raw_dir, tmp_path):
    def result(item_type: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
        at = pl.int_range(pl.len()) == 3
        return lambda df: df.with_columns(
            item_id=pl.when(at).then(pl.lit("987654321")).otherwise("item_id"),
            item_type=pl.when(at).then(pl.lit(item_type)).otherwise("item_type"),
        )

    reports = {}
    for item_type in ("LIVE", "IMAGE_ATLAS"):
        d = tmp_path / item_type
        shutil.copytree(raw_dir, d)
        _edit("src_inter.csv", result(item_type))(d)
        reports[item_type] = validate_folder(d, P)
    assert reports["LIVE"]["success"]
    (hit,) = [c for c in reports["IMAGE_ATLAS"]["checks"] if not c["success"]]
    assert hit["examples"] == ["987654321 (IMAGE_ATLAS)"] and hit["lines"] == [5]
    assert "absent from item_features" in Check(**hit).line()
    assert "expect_column_values" not in Check(**hit).line()  # reads as the problem


@pytest.mark.parametrize("file,col", [("src_inter.csv", "user_id"), ("rec_inter.csv", "item_id")])
def test_an_empty_id_is_one_failure_not_two(raw_dir, tmp_path, file, col):
    d = tmp_path / "raw"
    shutil.copytree(raw_dir, d)
    _edit(
        file,
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col(col)).alias(col)
        ),
    )(d)
    failed = [c for c in validate_folder(d, P)["checks"] if not c["success"]]
    assert [(c["column"], c["expectation"]) for c in failed] == [
        (col, "expect_column_values_to_not_be_null")
    ]


def test_a_header_mismatch_shows_only_the_names_that_differ():
    assert header_problem(["a", "b", "c"], ["a", "b", "c", "x"]).startswith("extra column ['x']")
    renamed = header_problem(["a", "b", "c"], ["a", "bb", "c"])
    assert "missing column ['b']" in renamed and "extra column ['bb']" in renamed
    assert "'a'" not in renamed and "'c'" not in renamed  # the names that agree are not listed
    assert "wrong order" in header_problem(["a", "b", "c"], ["b", "a", "c"])


def test_a_utf8_error_names_the_line_and_the_column(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b'a,b,c\n1,"[1, 2]",x\n2,"[3, 4]",y\xffz\n')
    assert utf8_error_at(path) == "; first invalid byte 0xff at line 3, column 'c'"
    assert utf8_error_at(path, chunk=4) == utf8_error_at(path)  # across read chunks too
    path.write_bytes(b"a,b\n1,2\n")
    assert utf8_error_at(path) == ""
