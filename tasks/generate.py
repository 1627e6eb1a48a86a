"""generate: write the built-in dataset (tasks.kuaisar.world) in the KuaiSAR layout to paths.raw.

It depends on `params.generate` only. Which folder the pipeline reads is `paths.source`, a
dependency of validate: with a real KuaiSAR folder nothing reads paths.raw, so the flow leaves
this stage out, and pointing paths.source anywhere never changes this stage's dvc.lock entry.

`python -m tasks.generate --profile kuaisar_small --scale 0.01 --out DIR` writes a folder shaped
like a public release (tasks.kuaisar.profiles) outside the pipeline, e.g. to try a real-data run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.config.params import load_params
from tasks.io.atomic import atomic_dir
from tasks.kuaisar.profiles import PROFILES, profile_params
from tasks.kuaisar.world import generate


def write_folder(folder: Path, frames: dict) -> None:
    with atomic_dir(folder) as tmp:
        for name, df in frames.items():
            df.write_csv(tmp / name)


def main(argv: list[str] | None = None) -> None:
    """Write the five files to paths.raw (or --out), atomically (all or nothing)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), help="a release's shape, not params")
    ap.add_argument("--scale", type=float, default=1.0, help="with --profile: sizes x this")
    ap.add_argument("--seed", type=int, default=7, help="with --profile")
    ap.add_argument("--out", type=Path, help="with --profile: the folder to write")
    args = ap.parse_args(argv)
    if args.profile:
        if args.out is None:
            ap.error("--profile writes outside the pipeline: give --out DIR")
        p, out = profile_params(args.profile, args.scale, args.seed), args.out
    else:
        params = load_params()
        p, out = params.generate, params.paths.raw
    frames = generate(p)
    write_folder(out, frames)
    sizes = ", ".join(f"{k}: {len(v):,}" for k, v in frames.items())
    print(f"generate: wrote {out}/ ({sizes})")


if __name__ == "__main__":
    main()
