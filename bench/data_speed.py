"""Data-side speed and memory at KuaiSAR scale: validate, split and features on 1M, 5M, 20M actions.

For each size the built-in generator writes a KuaiSAR folder shaped like the real release scaled
down (20M actions = 25,877 users, ~6.9M items, 14.6M feed + ~5.4M search rows), then each stage
runs as its own process, as `dvc repro` runs it, in a scratch project. Per size and stage it
prints wall seconds, peak RSS (the process's own, from wait4) and actions per second; then the
floor, one process that merely reads the input CSVs once with polars, and the ratio of the data
side's total (validate + split + features) to that floor; and per-action cost at each size, to
show how cost grows. Ends with one JSON line of every figure.

    python bench/data_speed.py                       # 1M, 5M, 20M (about 40 min on 2 cores)
    python bench/data_speed.py --sizes 1e6 --keep /tmp/kuaisar-1m
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE = ["tasks", "models", "params.yaml"]
STAGES = ["validate", "split", "features"]
# the real release (KuaiSAR, CIKM 2023), which the 20M size matches
FULL = {"actions": 20_000_000, "users": 25_877, "items": 6_900_000, "feed_share": 0.73}
SEARCH_ROWS_PER_SESSION = 6.5  # the generator shows 3..10 results per session


def shape(actions: int) -> dict[str, int]:
    """Generator sizes for `actions` log rows (feed + search), proportional to the release."""
    f = actions / FULL["actions"]
    rec = round(actions * FULL["feed_share"])
    return {
        "n_users": max(200, round(FULL["users"] * f)),
        "n_items": max(2_000, round(FULL["items"] * f)),
        "n_authors": max(500, round(FULL["items"] * f / 4)),
        "n_words": 50_000,
        "rec_actions": rec,
        "search_sessions": round((actions - rec) / SEARCH_ROWS_PER_SESSION),
    }


def run(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Run `cmd`; (wall seconds, peak RSS in GiB of that process and its waited children)."""
    env = dict(os.environ, PYTHONPATH=str(cwd), SARFLOW_PROGRESS="0")
    with open(log, "a") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return wall, usage.ru_maxrss / 2**20  # KiB -> GiB


READ_FLOOR = """
import sys, polars as pl
from pathlib import Path
rows = sum(pl.read_csv(p, infer_schema=False).height for p in sorted(Path(sys.argv[1]).glob("*.csv")))
print(rows)
"""


def data_shape(raw: Path) -> dict[str, float]:
    """The release's traits, measured on the written files (lazily, column projections)."""
    import polars as pl

    rec = pl.scan_csv(raw / "rec_inter.csv")
    src = pl.scan_csv(raw / "src_inter.csv")
    per_user = rec.group_by("user_id").len().sort("len", descending=True).collect()["len"]
    top = per_user.head(max(1, len(per_user) // 10)).sum() / per_user.sum()
    r = rec.select(
        pl.col("click").mean().alias("feed_click_rate"),
        (pl.len().over("user_id", "timestamp") > 1).mean().alias("feed_rows_in_served_time_ties"),
    ).collect()
    sessions = src.group_by("search_session_id").agg(pl.col("click_cnt").max()).collect()
    types = src.select(
        (~pl.col("item_type").is_in(["VIDEO", "IMAGE_ATLAS"])).mean().alias("t")
    ).collect()
    return {
        "feed_click_rate": round(r["feed_click_rate"][0], 3),
        "search_sessions_with_click": round(sessions["click_cnt"].mean(), 3),
        "search_rows_of_types_feed_never_serves": round(types["t"][0], 3),
        "feed_rows_in_served_time_ties": round(r["feed_rows_in_served_time_ties"][0], 3),
        "feed_share_of_top_10pct_users": round(top, 3),
    }


def bench_size(actions: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        src, dst = ROOT / name, work / name
        if not dst.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["generate"].update(shape(actions))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = work / "bench.log"
    py = sys.executable
    row: dict = {"actions_target": actions, "shape": shape(actions), "stages": {}}
    if not (work / "data" / "raw" / "rec_inter.csv").is_file():
        row["generate_s"], row["generate_rss_gib"] = run([py, "-m", "tasks.generate"], work, log)
    raw = work / "data" / "raw"
    lines = {f.name: f.read_bytes().count(b"\n") - 1 for f in sorted(raw.glob("*.csv"))}
    row["actions"] = lines["rec_inter.csv"] + lines["src_inter.csv"]
    row["rows"] = lines
    row["data_shape"] = data_shape(raw)
    row["input_gib"] = sum(f.stat().st_size for f in raw.glob("*.csv")) / 2**30
    row["floor_s"], row["floor_rss_gib"] = run([py, "-c", READ_FLOOR, str(raw)], work, log)
    for stage in STAGES:
        wall, rss = run([py, "-m", f"tasks.{stage}"], work, log)
        row["stages"][stage] = {
            "wall_s": round(wall, 2),
            "peak_rss_gib": round(rss, 3),
            "actions_per_s": round(row["actions"] / wall),
        }
    total = sum(s["wall_s"] for s in row["stages"].values())
    row["data_side_s"] = round(total, 2)
    row["data_side_peak_rss_gib"] = max(s["peak_rss_gib"] for s in row["stages"].values())
    row["ratio_to_floor"] = round(total / row["floor_s"], 2)
    row["us_per_action"] = round(1e6 * total / row["actions"], 3)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,5e6,2e7", help="comma-separated action counts")
    ap.add_argument("--keep", help="work folder to keep (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sarflow-data-"))
    rows = []
    try:
        for n in sizes:
            r = bench_size(n, base / f"{n}")
            rows.append(r)
            print(
                f"\n{r['actions']:,} actions ({r['input_gib']:.2f} GiB of CSV; "
                f"generate {r.get('generate_s', 0):.0f} s)"
            )
            print("  shape: " + ", ".join(f"{k} {v}" for k, v in r["data_shape"].items()))
            print(f"  {'stage':<10} {'wall s':>8} {'peak RSS GiB':>13} {'actions/s':>12}")
            for stage, s in r["stages"].items():
                print(
                    f"  {stage:<10} {s['wall_s']:>8.1f} {s['peak_rss_gib']:>13.2f} "
                    f"{s['actions_per_s']:>12,}"
                )
            print(
                f"  {'total':<10} {r['data_side_s']:>8.1f} {r['data_side_peak_rss_gib']:>13.2f} "
                f"{round(r['actions'] / r['data_side_s']):>12,}"
            )
            print(
                f"  floor (read the CSVs once with polars): {r['floor_s']:.1f} s, "
                f"{r['floor_rss_gib']:.2f} GiB; data side = {r['ratio_to_floor']:.2f}x the floor; "
                f"{r['us_per_action']:.2f} us per action"
            )
        if len(rows) > 1:
            first = rows[0]["us_per_action"]
            print("\nper-action cost relative to the smallest size: " + ", ".join(
                f"{r['actions']:,}: {r['us_per_action'] / first:.2f}x" for r in rows
            ))  # fmt: skip
        print(json.dumps({"bench": "data_speed", "cpus": os.cpu_count(), "sizes": rows}))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
