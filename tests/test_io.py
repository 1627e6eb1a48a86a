"""Atomic outputs: an error or a kill -9 mid-write leaves the previous output whole."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.io.atomic import atomic_dir, atomic_path, write_text_atomic
from tests.conftest import ROOT


def test_a_failed_folder_write_keeps_the_old_folder_and_leaves_no_temp(tmp_path):
    out = tmp_path / "split"
    out.mkdir()
    (out / "a.parquet").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.parquet").write_text("new, half")
        raise RuntimeError("crash mid-write")
    assert (out / "a.parquet").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_a_finished_folder_write_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "split"
    out.mkdir()
    (out / "stale.parquet").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "a.parquet").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_a_failed_file_write_keeps_the_old_file(tmp_path):
    f = tmp_path / "model.pt"
    f.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(f) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash")
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_kill_9_in_the_middle_of_a_write_keeps_the_old_file(tmp_path):
    f = tmp_path / "metrics.json"
    write_text_atomic(f, "old\n")
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tasks.io.atomic import atomic_path\n"
        f"with atomic_path(Path({str(f)!r})) as tmp:\n"
        "    tmp.write_text('half a fi')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert proc.returncode == -9
    assert f.read_text() == "old\n"  # the temp file may remain beside it, never in its place


def test_outputs_get_the_usual_permissions_not_the_temp_files_private_ones(tmp_path):
    import os

    write_text_atomic(tmp_path / "a.json", "{}")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("1")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask
