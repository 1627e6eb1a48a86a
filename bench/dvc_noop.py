"""A no-op `dvc repro` (every stage up to date): its wall time, with ruamel.yaml's C parser and
without it, in the same run.

DVC parses params.yaml once per stage that reads params and dvc.lock and dvc.yaml more than
once per call; with ruamel.yaml.clib missing (ruamel.yaml 0.19 no longer pulls it in) every parse
runs in pure Python. requirements.lock pins the C extension; the baseline here is the same
command with it hidden (`_ruamel_yaml` blocked before DVC starts).

Run in a project whose pipeline is up to date (after `make run` or `dvc repro`):

    python bench/dvc_noop.py [--repeats 5]

Prints the medians and their ratio, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CALL = "import sys; {block}from dvc.cli import main; sys.exit(main(['repro']))"
BLOCK = "sys.modules['_ruamel_yaml'] = None; "  # ruamel.yaml then falls back to pure Python


def repro(c_parser: bool) -> float:
    code = CALL.format(block="" if c_parser else BLOCK)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or "up to date" not in proc.stdout:
        raise SystemExit(
            "dvc repro is not a no-op here (run the pipeline first):\n"
            + (proc.stdout + proc.stderr)[-2000:]
        )
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    repro(True)  # warm the file cache and DVC's state database
    times: dict[str, list[float]] = {"c": [], "pure": []}
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        times["c"].append(repro(True))
        times["pure"].append(repro(False))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"no-op dvc repro, median of {args.repeats}: {med['c']:.2f} s with ruamel.yaml's C "
        f"parser, {med['pure']:.2f} s without ({med['pure'] / med['c']:.2f}x)"
    )
    print(json.dumps({"median_s": med, "runs_s": times, "ratio": med["pure"] / med["c"]}))


if __name__ == "__main__":
    main()
