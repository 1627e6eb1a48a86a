"""Bad input: every kind is refused by validate, naming the file, column and a value (in-process,
through validate's function); a few kinds of each class also end to end, where they stop
`dvc repro` at validate, exit non-zero, and leave everything the last good run produced
byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml

from tasks.config.params import ValidateParams
from tasks.validate import Check, validate_folder
from tests.conftest import dvc, make_project

Mutation = Callable[[Path], None]


def text_edit(name: str, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Mutation:
    def apply(raw: Path) -> None:
        fn(pl.read_csv(raw / name, infer_schema=False)).write_csv(raw / name)

    return apply


def set_cell(name: str, col: str, value: str | None, row: int = 3) -> Mutation:
    at = pl.int_range(pl.len()) == row
    lit = pl.lit(value, dtype=pl.String)
    return text_edit(
        name, lambda df: df.with_columns(pl.when(at).then(lit).otherwise(pl.col(col)).alias(col))
    )


def byte_edit(name: str, fn: Callable[[bytes], bytes]) -> Mutation:
    def apply(raw: Path) -> None:
        (raw / name).write_bytes(fn((raw / name).read_bytes()))

    return apply


def rec_search_0_related_1(df: pl.DataFrame) -> pl.DataFrame:
    at = pl.int_range(pl.len()) == 5
    return df.with_columns(
        search=pl.when(at).then(pl.lit("0")).otherwise(pl.col("search")),
        search_item_related=pl.when(at).then(pl.lit("1")).otherwise(pl.col("search_item_related")),
    )


def session_of_two_users(df: pl.DataFrame) -> pl.DataFrame:
    first = df["search_session_id"][0]
    other = str(int(df.filter(pl.col("search_session_id") == first)["user_id"][0]) + 1)
    row0 = pl.int_range(pl.len()) == 0
    return df.with_columns(user_id=pl.when(row0).then(pl.lit(other)).otherwise(pl.col("user_id")))


def shift_time_text(df: pl.DataFrame) -> pl.DataFrame:
    at = pl.int_range(pl.len()) == 4
    return df.with_columns(time=pl.when(at).then(pl.lit("2020-01-01 08:00:00")).otherwise("time"))


def video_result_unknown(df: pl.DataFrame) -> pl.DataFrame:
    at = pl.int_range(pl.len()) == 6
    return df.with_columns(
        item_id=pl.when(at).then(pl.lit("987654321")).otherwise("item_id"),
        item_type=pl.when(at).then(pl.lit("VIDEO")).otherwise("item_type"),
    )


REC, SRC, USR, ITM, NET = (
    "rec_inter.csv",
    "src_inter.csv",
    "user_features.csv",
    "item_features.csv",
    "social_network.csv",
)
# (kind, mutation, file named, column named or None, text that must appear in the message)
CORPUS: list[tuple[str, Mutation, str, str | None, str]] = [
    ("missing file", lambda raw: (raw / NET).unlink(), NET, None, "not found"),
    ("empty file", byte_edit(USR, lambda b: b""), USR, None, "cannot read"),
    ("header only", byte_edit(ITM, lambda b: b.split(b"\n")[0] + b"\n"), ITM, None, "no data rows"),
    (
        "missing column",
        text_edit(REC, lambda df: df.drop("like")),
        REC,
        None,
        "missing column ['like']",
    ),
    (
        "extra column",
        text_edit(USR, lambda df: df.with_columns(surplus=pl.lit("1"))),
        USR,
        None,
        "extra column ['surplus']",
    ),
    (
        "columns in another order",
        text_edit(USR, lambda df: df.select(df.columns[1], df.columns[0], *df.columns[2:])),
        USR,
        None,
        "wrong order",
    ),
    (
        "renamed column",
        text_edit(USR, lambda df: df.rename({"onehot_feat2": "feat2"})),
        USR,
        None,
        "feat2",
    ),
    ("text in an id", set_cell(REC, "user_id", "abc"), REC, "user_id", "abc"),
    ("fraction in an id", set_cell(SRC, "item_id", "12.5"), SRC, "item_id", "12.5"),
    ("NaN id", set_cell(REC, "item_id", "NaN"), REC, "item_id", "NaN"),
    ("empty id", set_cell(SRC, "user_id", None), SRC, "user_id", "not_be_null"),
    ("empty label", set_cell(REC, "click", None), REC, "click", "not_be_null"),
    ("label outside 0/1", set_cell(REC, "follow", "2"), REC, "follow", "2"),
    ("label written as float", set_cell(SRC, "click_cnt", "1.0"), SRC, "click_cnt", "1.0"),
    ("negative timestamp", set_cell(REC, "timestamp", "-5"), REC, "timestamp", "-5"),
    (
        "far-future timestamp",
        set_cell(SRC, "search_session_timestamp", "4102444800000"),
        SRC,
        "search_session_timestamp",
        "4102444800000",
    ),
    (
        "malformed datetime text",
        set_cell(REC, "time", "2023/05/22 10:00"),
        REC,
        "time",
        "2023/05/22 10:00",
    ),
    (
        "malformed date",
        set_cell(ITM, "upload_time", "22-05-2023"),
        ITM,
        "upload_time",
        "22-05-2023",
    ),
    ("malformed word-id list", set_cell(SRC, "keyword", "[12, x]"), SRC, "keyword", "[12, x]"),
    ("word-id list not closed", set_cell(ITM, "caption", "[1, 2"), ITM, "caption", "[1, 2"),
    ("negative play time", set_cell(REC, "playing_time", "-100"), REC, "playing_time", "-100"),
    ("zero duration", set_cell(REC, "duration_ms", "0"), REC, "duration_ms", "0"),
    (
        "absurd duration",
        set_cell(REC, "duration_ms", "999999999999"),
        REC,
        "duration_ms",
        "999999999999",
    ),
    ("unknown item type", set_cell(SRC, "item_type", "BANANA"), SRC, "item_type", "BANANA"),
    (
        "day 32",
        set_cell(REC, "time", "2023-05-32 10:00:00"),
        REC,
        "time_not_a_calendar_datetime",
        "2023-05-32 10:00:00",
    ),
    (
        "hour 25",
        set_cell(SRC, "search_session_time", "2023-05-23 25:10:00"),
        SRC,
        "search_session_time_not_a_calendar_datetime",
        "2023-05-23 25:10:00",
    ),
    (
        "February 30",
        set_cell(ITM, "upload_time", "2023-02-30"),
        ITM,
        "upload_time_not_a_calendar_date",
        "2023-02-30",
    ),
    (
        "time text disagrees with the timestamp",
        text_edit(REC, shift_time_text),
        REC,
        "time_disagrees_with_timestamp",
        "2020-01-01 08:00:00 vs",
    ),
    (
        "absurd play time",
        set_cell(REC, "playing_time", "1e12"),
        REC,
        "playing_time",
        "1000000000000",
    ),
    (
        "id too large for int64",
        set_cell(REC, "user_id", "99999999999999999999"),
        REC,
        "user_id_outside_int64",
        "99999999999999999999",
    ),
    (
        "word id too large for int64",
        set_cell(SRC, "keyword", "[99999999999999999999]"),
        SRC,
        "keyword",
        "[99999999999999999999]",
    ),
    (
        "video search result absent from item_features",
        text_edit(SRC, video_result_unknown),
        SRC,
        "search_item_absent_from_item_features",
        "987654321 (VIDEO)",
    ),
    ("one-hot feature out of range", set_cell(USR, "onehot_feat1", "5"), USR, "onehot_feat1", "5"),
    (
        "item id missing from item_features",
        set_cell(REC, "item_id", "987654321"),
        REC,
        "item_id_absent_from_item_features",
        "987654321",
    ),
    (
        "user id missing from user_features",
        set_cell(SRC, "user_id", "987654321"),
        SRC,
        "user_id_absent_from_user_features",
        "987654321",
    ),
    (
        "followed user unknown",
        set_cell(NET, "user_follow_id", "987654321"),
        NET,
        "user_follow_id_absent_from_user_features",
        "987654321",
    ),
    (
        "search_item_related where search = 0",
        text_edit(REC, rec_search_0_related_1),
        REC,
        "search_item_related_set_where_search_is_0",
        "1",
    ),
    (
        "duplicate log row",
        text_edit(REC, lambda df: pl.concat([df, df.slice(7, 1)])),
        REC,
        "row_repeats_an_earlier_row",
        "repeats an earlier row",
    ),
    (
        "duplicate user",
        text_edit(USR, lambda df: pl.concat([df, df.head(1)])),
        USR,
        "user_id_not_unique",
        "appears on more than one row",
    ),
    (
        "duplicate item",
        text_edit(ITM, lambda df: pl.concat([df, df.tail(1)])),
        ITM,
        "item_id_not_unique",
        "appears on more than one row",
    ),
    (
        "search session of two users",
        text_edit(SRC, session_of_two_users),
        SRC,
        "search_session_id_with_several_users_or_times",
        "several users or times",
    ),
    (
        "non-UTF-8 bytes",
        byte_edit(SRC, lambda b: b.replace(b"USER_INPUT", b"USER_\xff\xfeNPUT", 1)),
        SRC,
        None,
        "column 'search_source'",
    ),
    (
        "truncated last line",
        byte_edit(REC, lambda b: b.rstrip(b"\n").rsplit(b",", 3)[0] + b"\n"),
        REC,
        None,
        "rec_inter.csv",
    ),
    (
        "semicolon-separated file",
        byte_edit(USR, lambda b: b.replace(b",", b";")),
        USR,
        None,
        "separated by ';'",
    ),
]


# end to end through dvc repro: one of each class (a file, a header, a value, a relation, a row)
END_TO_END = (
    "missing file",
    "missing column",
    "label outside 0/1",
    "item id missing from item_features",
    "duplicate log row",
)


def named_failure(lines: list[str], kind: str, file: str, column: str | None, shown: str) -> None:
    """One FAILED line names `file` (and `column`) and shows `shown`."""
    named = [
        line
        for line in lines
        if file in line and (column is None or f"'{column}'" in line or f"[{column}]" in line)
    ]
    assert named, f"{kind}: no failure names {file} {column}:\n" + "\n".join(lines)
    assert any(shown in line for line in named), f"{kind}: {shown!r} not in {named}"


def snapshot(d: Path) -> dict[str, str]:
    """sha256 of every output of the last good run (Data Docs pages are a log: left out)."""
    files = [d / "dvc.lock"]
    for folder in (
        "data/raw",
        "data/split",
        "data/features",
        "data/candidates",
        "artifacts",
        "reports",
        "recommendations",
    ):
        files += [
            p
            for p in (d / folder).rglob("*")
            if p.is_file() and "data_docs" not in p.parts and p.name != "validation_failed.json"
        ]
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


SMALL_SCALE = 0.003  # KuaiSAR-small's dates and shape, ~80 users


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A good folder shaped like KuaiSAR-small (its 10 days, search items without feature rows),
    written as a release would be: not by the project's generate stage."""
    from tasks.kuaisar.profiles import profile_params
    from tasks.kuaisar.world import generate

    folder = tmp_path_factory.mktemp("pristine")
    for name, df in generate(profile_params("kuaisar_small", SMALL_SCALE)).items():
        df.write_csv(folder / name)
    return folder


@pytest.fixture(scope="module")
def good(tmp_path_factory, pristine):
    """A project after one good run on a real-source folder outside it (as real KuaiSAR is)."""
    base = tmp_path_factory.mktemp("reliability")
    source = base / "kuaisar"
    d = make_project(base / "sarflow", {"train": {"epochs": 1, "models": ["mmoe"]}})
    shutil.copytree(pristine, source)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["paths"]["source"] = str(source)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", cwd=d)
    return d, source, pristine, snapshot(d)


def status(d: Path) -> str:
    return dvc("status", cwd=d).stdout


@pytest.mark.slow
def test_a_folder_shaped_like_kuaisar_small_runs_with_default_params(good):
    """Default cut-offs fit its own 10 days (no absolute dates); every metric is a number."""
    d, *_ = good
    summary = json.loads((d / "data" / "split" / "summary.json").read_text())
    assert summary["data_range"]["first"].startswith("2023-05-22")
    assert summary["data_range"]["last"].startswith("2023-05-31")
    assert summary["cutoffs"]["valid_start"] == "2023-05-26 00:00:00"
    assert summary["cutoffs"]["test_start"] == "2023-05-29 00:00:00"
    metrics = json.loads((d / "artifacts" / "mmoe" / "metrics.json").read_text())
    numbers = [v for v in _leaves(metrics) if isinstance(v, float)]
    assert len(numbers) > 10 and all(math.isfinite(v) for v in numbers), metrics
    report = json.loads((d / "reports" / "validation.json").read_text())
    assert sum(report["search_items_without_features"].values()) > 0  # accepted, and counted


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, list):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def _set_params(d: Path, **sections) -> None:
    params = yaml.safe_load((d / "params.yaml").read_text())
    for section, values in sections.items():
        params[section] = {**params[section], **values}
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_a_stage_that_fails_after_validate_keeps_the_last_good_outputs(good):
    """The release's old absolute cut-offs leave KuaiSAR-small's valid and test empty: split
    fails naming the parts, and every output (DVC would delete them before the stage) stays."""
    d, _, _, before = good
    params = (d / "params.yaml").read_bytes()
    try:
        _set_params(
            d, split={"valid_start": "2023-06-04 00:00:00", "test_start": "2023-06-07 00:00:00"}
        )
        status_before = status(d)
        proc = dvc("repro", cwd=d, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Running stage 'split'" in out
        assert "the feed valid part has 0 rows" in out and "the data spans 2023-05-22" in out
        assert "Running stage 'features'" not in out and "Traceback" not in out
        assert snapshot(d) == before  # data/split/ included: not deleted, not half-written
        assert status(d) == status_before
    finally:
        (d / "params.yaml").write_bytes(params)
    assert "changed" not in status(d)


@pytest.mark.slow
def test_pointing_the_source_at_a_bad_or_missing_folder_changes_nothing(good, tmp_path):
    d, _, pristine, before = good
    params = (d / "params.yaml").read_bytes()
    bad = tmp_path / "bad"
    shutil.copytree(pristine, bad)
    set_cell(REC, "click", "7")(bad)
    try:
        for folder, shown in (
            (bad, "FAILED rec_inter.csv column 'click'"),
            (tmp_path / "gone", ""),
        ):
            _set_params(d, paths={"source": str(folder)})
            proc = dvc("repro", cwd=d, check=False)
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0 and shown in out, out[-2000:]
            assert "Running stage 'generate'" not in out  # not its business
            assert snapshot(d) == before, folder
    finally:
        (d / "params.yaml").write_bytes(params)


def test_the_corpus_has_at_least_25_kinds():
    assert len({kind for kind, *_ in CORPUS}) >= 25


def test_the_end_to_end_kinds_are_in_the_corpus():
    assert set(END_TO_END) <= {kind for kind, *_ in CORPUS}


@pytest.mark.parametrize("kind,mutate,file,column,shown", CORPUS, ids=[c[0] for c in CORPUS])
def test_validate_refuses_each_bad_input_naming_it(
    tmp_path, pristine, kind, mutate, file, column, shown
):
    raw = tmp_path / "kuaisar"
    shutil.copytree(pristine, raw)
    mutate(raw)
    report = validate_folder(raw, ValidateParams())
    assert not report["success"], f"{kind}: validate passed"
    lines = [Check(**c).line() for c in report["checks"] if not c["success"]]
    named_failure(lines, kind, file, column, shown)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,mutate,file,column,shown",
    [c for c in CORPUS if c[0] in END_TO_END],
    ids=list(END_TO_END),
)
def test_bad_input_stops_at_validate_and_changes_nothing(good, kind, mutate, file, column, shown):
    d, raw, pristine, before = good
    shutil.rmtree(raw)
    shutil.copytree(pristine, raw)
    mutate(raw)
    try:
        proc = dvc("repro", cwd=d, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{kind}: dvc repro succeeded\n{out}"
        assert "Running stage 'validate'" in out and "Running stage 'split'" not in out
        failed = [line for line in out.splitlines() if line.strip().startswith("FAILED")]
        named_failure(failed or [out[-2000:]], kind, file, column, shown)
        assert snapshot(d) == before, f"{kind}: a previous output changed"
    finally:
        shutil.rmtree(raw)
        shutil.copytree(pristine, raw)


@pytest.mark.slow
def test_after_the_bad_inputs_the_good_data_still_runs_clean(good):
    d, _, _, before = good
    out = dvc("repro", cwd=d).stdout
    assert (
        "Running stage 'split'" not in out
    )  # same data as the good run: nothing downstream re-runs
    assert snapshot(d) == before


@pytest.mark.slow
def test_a_changed_real_source_file_reruns_what_reads_it(good):
    """The real-source folder is a DVC dependency: a valid edit of one of its files re-runs
    validate, split and what follows; restoring it brings back the recorded results."""
    d, raw, pristine, before = good
    recorded = {
        p: json.loads((d / p).read_text())
        for p in ("artifacts/mmoe/export.json", "recommendations/summary.json")
    }
    try:
        # one more feed impression: a valid row (a copy of row 3 a millisecond later)
        text_edit(
            REC,
            lambda df: pl.concat(
                [
                    df,
                    df.slice(3, 1).with_columns(
                        (pl.col("timestamp").cast(pl.Float64) + 1).cast(pl.Utf8)
                    ),
                ]
            ),
        )(raw)
        out = dvc("repro", cwd=d).stdout
        for stage in ("validate", "split", "features", "train@mmoe"):
            assert f"Running stage '{stage}'" in out, out[-2000:]
        assert snapshot(d) != before
    finally:
        shutil.rmtree(raw)
        shutil.copytree(pristine, raw)
    dvc("repro", cwd=d)
    # same inputs, same bytes: re-run (persisted stages do not use DVC's run-cache), every
    # output is identical but the wall times, which dvc.lock hashes with them: the learning
    # curve's and the export's latencies and the scoring's throughput (the rest must match)
    wall = {
        "artifacts/mmoe/export.json": ("latency_ms_per_1000_rows",),
        "recommendations/summary.json": ("seconds", "users_per_s"),
    }
    timed = {"dvc.lock", *wall, *(k for k in before if k.endswith("curve.json"))}
    after = snapshot(d)
    assert {k: v for k, v in after.items() if k not in timed} == {
        k: v for k, v in before.items() if k not in timed
    }
    for path, keys in wall.items():
        now = json.loads((d / path).read_text())
        assert {**now, **dict.fromkeys(keys)} == {**recorded[path], **dict.fromkeys(keys)}, path
    assert "changed" not in status(d)
