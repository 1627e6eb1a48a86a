"""Serve the pipeline as a Prefect deployment on a cron schedule, one run at a time.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve [--cron "0 3 * * *"] [--no-push]

Runs go to the Prefect server at PREFECT_API_URL (start one with `make dashboard`). A run that
comes due while another is running waits for it (deployment concurrency 1, ENQUEUE): never two
`dvc repro` in one workspace. Each scheduled run ends with `dvc push` to the default DVC remote
(`make remote` sets up a local folder outside the repository; any DVC remote URL works).
Stopping `serve` pauses the schedule (Prefect's behaviour); serving again resumes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.pipeline import pipeline
from tasks.config.params import load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="the project folder (holds dvc.yaml)")
    ap.add_argument("--cron", help="cron schedule (default: serve.cron in params.yaml)")
    ap.add_argument("--name", default="scheduled", help="deployment name")
    ap.add_argument(
        "--no-push", dest="push", action="store_false", help="skip `dvc push` after runs"
    )
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    cron = args.cron or load_params(root / "params.yaml").serve.cron
    pipeline.serve(
        name=args.name,
        cron=cron,
        parameters={"root": str(root), "push_to_remote": args.push},
        global_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        limit=1,
        description=f"sarflow pipeline in {root}, on '{cron}'",
        tags=["sarflow"],
    )


if __name__ == "__main__":
    main()
