"""The sarflow pipeline as one Prefect flow: DVC's stages, in DVC's order, one task per stage group.

The order lives only in dvc.yaml: the flow reads DVC's stage graph and runs each group
(`generate`, ..., all `train@*` together, ...) with `dvc repro --single-item`, so DVC still
decides what is stale and records every result in dvc.lock. Each stage's output streams into the
run log. A stage that fails on its data is not retried; only a busy DVC lock is. Artifacts: the
validation summary (markdown, failing checks first, published even when validation fails), the
metrics comparison (table) and the served model's recommendations (markdown).

After the stages, `promote` (tasks.serving.promote, with registry.promote) checks this run's
data for drift against production's, registers the served model and promotes it only if it
beats production: the `drift` (table and picture) and `promotion` (markdown) artifacts say
what happened and why; a drifted run gets the flow-run tag `drifted`.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import networkx as nx
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.config.models import load_checked
from tasks.config.params import load_params
from tasks.report import PICTURES, interests_section
from tasks.serving.promote import DECISION, PICTURE
from tasks.validate import FAILED_REPORT, REPORT

TRANSIENT = ("is busy, it is being blocked by", "Unable to acquire lock", "rwlock")


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; `transient` says whether re-running it may help."""

    def __init__(self, group: str, returncode: int, tail: list[str], transient: bool) -> None:
        self.transient = transient
        super().__init__(f"stage {group} failed (exit {returncode}):\n" + "\n".join(tail))


def stage_graph(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """DVC's stages in declaration order and its edges (stage, a stage it depends on)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        return [s.name for s in repo.index.stages], [(a.name, b.name) for a, b in graph.edges]


def left_out(root: Path) -> list[str]:
    """Stages not part of this pipeline: connected to no other stage. `generate` is, when
    paths.source is a real folder: no stage reads what it writes."""
    declared, edges = stage_graph(root)
    linked = {s for edge in edges for s in edge}
    return [s for s in declared if s not in linked] if len(declared) > 1 else []


def stage_groups(root: Path) -> list[tuple[str, list[str]]]:
    """DVC's stages as (group, [stage, ...]) in an order DVC would run them, without the stages
    `left_out` names.

    `train@a`, `train@b` form the group `train@*`; groups are ordered by contracting DVC's graph."""
    declared, edges = stage_graph(root)
    skip = set(left_out(root))
    declared = [s for s in declared if s not in skip]
    group_of = {s: (s.split("@")[0] + "@*" if "@" in s else s) for s in declared}
    g = nx.DiGraph()
    g.add_nodes_from(dict.fromkeys(group_of.values()))
    g.add_edges_from((group_of[b], group_of[a]) for a, b in edges if group_of[a] != group_of[b])
    if not nx.is_directed_acyclic_graph(g):  # grouping would break the order: one task per stage
        group_of = {s: s for s in declared}
        g = nx.DiGraph([(b, a) for a, b in edges])
        g.add_nodes_from(declared)
    order = list(
        nx.lexicographical_topological_sort(g, key=lambda n: declared.index(_first(n, group_of)))
    )
    return [(grp, [s for s in declared if group_of[s] == grp]) for grp in order]


def _first(group: str, group_of: dict[str, str]) -> str:
    return next(s for s, grp in group_of.items() if grp == group)


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except StageFailed as e:
        return e.transient
    except Exception:
        return False
    return False


def _logged(group: str, cmd: list[str], root: str, progress: Any) -> None:
    """Run `cmd` in `root`, each output line to the run log; StageFailed if it exits non-zero."""
    log = get_run_logger()
    env = dict(os.environ)
    # the stage commands say `python`: make it this interpreter (the project's venv)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    log.info("$ %s", " ".join(cmd[2:]))
    tail: list[str] = []
    with subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            log.info("%s", line)
            progress.see(line)
            tail = (tail + [line])[-40:]
    if proc.returncode != 0:
        transient = any(marker in line for line in tail for marker in TRANSIENT)
        raise StageFailed(group, proc.returncode, tail, transient)
    progress.finish()


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_transient,
    task_run_name="dvc {group}",
)
def run_stages(group: str, stages: list[str], root: str) -> None:
    """`dvc repro --single-item STAGE...`, its output forwarded line by line to the run log."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *stages]
    progress = TrainingProgress(len(stages)) if group == "train@*" else _NoProgress()
    _logged(group, cmd, root, progress)


@task(task_run_name="promote")
def promote(root: str) -> None:
    """tasks.serving.promote in the project folder (drift, the guard, the registry)."""
    _logged("promote", [sys.executable, "-m", "tasks.serving.promote"], root, _NoProgress())


class PipelineBusy(RuntimeError):
    """Another pipeline run holds this workspace."""


@contextmanager
def pipeline_lock(project: Path) -> Iterator[None]:
    """One pipeline run per workspace: a second run is refused at once, before touching anything.

    An advisory lock (flock) on a file under .dvc/tmp: released by the kernel if the holder dies,
    so a crash never leaves the workspace locked."""
    path = project / ".dvc" / "tmp" / "sarflow-pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise PipelineBusy(
                f"another sarflow pipeline run is in progress in {project} ({holder}); "
                "refusing to start a second one (runs of one workspace must not overlap)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


class TrainingProgress:
    """A live progress artifact for the train group, fed by the stages' own log lines.

    `Running stage 'train@m'` starts a model, `epoch e/E` moves it; the group reaches 100% when
    its stages succeed (early stopping can end a model before its last epoch)."""

    STAGE = re.compile(r"Running stage 'train@")
    EPOCH = re.compile(r"^epoch (\d+)/(\d+) ")

    def __init__(self, n_models: int) -> None:
        self.n_models, self.started, self.fraction = n_models, 0, 0.0
        self.artifact: Any = None

    def see(self, line: str) -> None:
        if self.STAGE.search(line):
            self.started, self.fraction = self.started + 1, 0.0
        elif m := self.EPOCH.match(line):
            self.fraction = int(m.group(1)) / int(m.group(2))
        else:
            return
        done = max(self.started - 1, 0) + self.fraction
        self._publish(100.0 * done / self.n_models, f"model {self.started} of {self.n_models}")

    def finish(self) -> None:
        self._publish(100.0, f"{self.n_models} of {self.n_models} models trained")

    def _publish(self, pct: float, description: str) -> None:
        pct = min(100.0, pct)
        if self.artifact is None:
            self.artifact = create_progress_artifact(
                pct, key="training-progress", description=description
            )
        else:
            update_progress_artifact(self.artifact, pct, description=description)


class _NoProgress:
    def see(self, line: str) -> None:
        pass

    def finish(self) -> None:
        pass


def validation_markdown(report: dict[str, Any]) -> str:
    """The validation summary: verdict, row counts, then failing checks first."""
    status = (
        "passed"
        if report["success"]
        else f"FAILED ({report['failed']} of {report['checked']} checks)"
    )
    lines = [f"# Data validation {status}", "", "| file | rows |", "|---|---|"]
    lines += [f"| {f} | {n:,} |" for f, n in report.get("rows", {}).items()]
    lines += [
        "",
        "| result | file | column | check | failing rows | examples |",
        "|---|---|---|---|---|---|",
    ]
    for c in report["checks"]:
        examples = "" if c["success"] else (c.get("error") or ", ".join(map(str, c["examples"])))
        lines.append(
            f"| {'ok' if c['success'] else '**FAILED**'} | {c['file']} | {c['column'] or ''} | "
            f"{c['expectation']} | {c['unexpected_count']} | {examples} |"
        )
    return "\n".join(lines)


def publish_validation(reports: Path, failed: bool) -> None:
    path = reports / (FAILED_REPORT if failed else REPORT)
    if path.is_file():
        report = json.loads(path.read_text())
        create_markdown_artifact(
            key="validation-summary",
            markdown=validation_markdown(report),
            description="Great Expectations checks on the raw KuaiSAR files",
        )


def publish_metrics(reports: Path) -> list[dict[str, Any]]:
    rows = json.loads((reports / "comparison.json").read_text())["rows"]
    # one column set for every row (ranking metrics exist for feed clicks only): blank elsewhere
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = [{k: r.get(k) for k in columns} for r in rows]
    create_table_artifact(
        key="metrics-comparison", table=table, description="Test metrics per model and task"
    )
    return rows


def publish_links(reports: Path) -> None:
    """Links to what the run left on disk: the Data Docs and the comparison figures."""
    docs = reports / "data_docs" / "index.html"
    if docs.is_file():
        create_link_artifact(
            key="data-docs", link=docs.resolve().as_uri(), link_text="Great Expectations Data Docs"
        )
    figures = [reports / name for name in PICTURES if (reports / name).is_file()]
    if figures:
        lines = [f"- [{f.stem.replace('_', ' ')}]({f.resolve().as_uri()})" for f in figures]
        create_markdown_artifact(
            key="model-comparison-figures",
            markdown="# Model comparison figures\n\n" + "\n".join(lines),
            description="PNG files under reports/ (also DVC plots)",
        )


def recommendations_markdown(summary: dict[str, Any], top: list[dict[str, Any]]) -> str:
    """The score stage's choice and a sample of its recommendations."""
    if not summary.get("scored"):
        return f"# No recommendations\n\n{summary.get('why', '')}"
    model, metric = summary["model"], summary["select"]
    ci = summary["against"]
    if ci is None:
        against = "It is the only model that ranks the feed."
    else:
        supported = ci["excludes_0"]
        verdict = (
            "the test set supports the choice." if supported else "not resolved by the test set."
        )
        against = (
            f"Against the runner-up {ci['runner_up']} (paired, bootstrap 95% CI): "
            f"{ci['diff']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]; {verdict}"
        )
    lines = [
        f"# Serving {model}: top {summary['k']} for {summary['users']:,} users",
        "",
        f"Chosen on test {metric}: {summary['values'][model]:.4f}.",
        against,
        "",
        f"Model version {summary['model_version']}, data version {summary['data_version']}; "
        f"candidates: {summary['pool']:,} of {summary['catalogue']:,} items, less each user's "
        f"served ones; {summary['users_per_s']:,.0f} users/s.",
        "",
        "| user | rank | item | p(click) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['raw_user_id']} | {r['rank']} | {r['raw_item_id']} | {r['score']:.4f} |" for r in top
    ]
    return "\n".join(lines)


def publish_recommendations(folder: Path, users: int = 3) -> None:
    path = folder / "summary.json"
    if path.is_file():
        import polars as pl

        top = pl.read_parquet(folder / "top_k.parquet")
        first = top["raw_user_id"].unique(maintain_order=True).head(users)
        sample = top.filter(pl.col("raw_user_id").is_in(first.implode())).to_dicts()
        create_markdown_artifact(
            key="recommendations",
            markdown=recommendations_markdown(json.loads(path.read_text()), sample),
            description="The score stage: the served model, its paired CI, sample top-K",
        )


def promotion_markdown(d: dict[str, Any]) -> str:
    """The promotion decision: what was registered, whether it is production now, and why."""
    head = "Promoted" if d["promoted"] else "Not promoted"
    name = d["artifact"]
    why = d["why"][:1].upper() + d["why"][1:] + "."
    lines = [f"# {head}: {name} {d.get('registered') or ''}".rstrip(), "", why, ""]
    if cand := d.get("candidate"):
        lines.append(
            f"Candidate: {cand['model']}, model version {cand['model_version']}, "
            f"data version {cand['data_version']}."
        )
    prod = d.get("production")
    if d["promoted"]:
        lines.append(f"Production ({d['stage']}) is now {name} {d['registered']}.")
    elif prod:
        lines.append(
            f"Production ({d['stage']}) stays {name} {prod['version']} ({prod['card'].get('model')})."
        )
    if ci := d.get("against"):
        lines.append(
            f"Against production, paired on this run's candidates: {ci['diff']:+.4f} "
            f"[{ci['lo']:+.4f}, {ci['hi']:+.4f}] (95% CI, n = {ci['n']})."
        )
    lines += [
        "",
        f"`dvc artifacts get . {name} --stage {d['stage']}` fetches production's package.",
    ]
    return "\n".join(lines)


def inline_png(path: Path, alt: str) -> str:
    """Markdown that shows the PNG inline, so the dashboard draws it (a file:// link it cannot)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def publish_interests(artifacts: Path, reports: Path, models: list[str]) -> str | None:
    """The split of search interests (the report's section and its picture) as an artifact,
    where a model of this run has one; the markdown, else None."""
    evals = {}
    for m in models:
        path = artifacts / m / "evaluation.json"
        if path.is_file():
            evals[m] = json.loads(path.read_text())
    section = interests_section(evals)
    if not section:
        return None
    picture = reports / "interests.png"
    markdown = section.replace("\n## ", "# ", 1) + (
        f"\n{inline_png(picture, 'search interests')}\n" if picture.is_file() else ""
    )
    create_markdown_artifact(
        key="search-interests",
        markdown=markdown,
        description="Which search interests the model calls similar to the feed's, against the truth",
    )
    return markdown


def publish_promotion(reports: Path) -> dict[str, Any] | None:
    """The promotion and drift artifacts; a drifted run's flow run is tagged `drifted`."""
    path = reports / DECISION
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    create_markdown_artifact(
        key="promotion",
        markdown=promotion_markdown(d),
        description="The registry: the candidate against production, promoted or not, and why",
    )
    drift = d.get("drift")
    if drift:
        create_table_artifact(
            key="drift",
            table=drift["rows"],
            description=(
                f"This run's test rows against {drift['against']}'s train rows: "
                + (
                    "DRIFTED: " + "; ".join(drift["why"])
                    if drift["drifted"]
                    else "within thresholds"
                )
            ),
        )
        picture = reports / PICTURE
        if picture.is_file():
            create_markdown_artifact(
                key="drift-picture",
                markdown=f"# Drift\n\n{inline_png(picture, 'drift')}\n",
                description="PSI per field, the shares of unseen values, the label rates",
            )
        if drift["drifted"] and drift["against"] == "production":
            tag_run("drifted")
    return d


def tag_run(tag: str) -> None:
    """Add `tag` to the running flow run (shown on its dashboard page, filterable)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=sorted({*run.tags, tag}))
    get_run_logger().warning("flow run tagged %r", tag)


@task(retries=3, retry_delay_seconds=30, task_run_name="dvc push")
def push(root: str) -> None:
    """Send data and models to the default DVC remote (network I/O: retried)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "push"], cwd=root, capture_output=True, text=True
    )
    log = get_run_logger()
    for line in (proc.stdout + proc.stderr).splitlines():
        log.info("%s", line)
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc push failed (exit {proc.returncode}); is a default remote set? (make remote)"
        )


@flow(name="sarflow-pipeline", log_prints=True)
def pipeline(root: str = ".", push_to_remote: bool = False) -> list[dict[str, Any]]:
    """Run every DVC stage group in order; publish validation and metrics artifacts."""
    project = Path(root).resolve()
    params = load_checked(project / "params.yaml")  # refuses bad params before any stage
    reports = project / params.paths.reports
    with pipeline_lock(project):
        for stage in left_out(project):
            print(
                f"{stage}: not part of this run: no stage reads its outputs "
                f"(the pipeline reads paths.source {params.paths.source})"
            )
        for group, stages in stage_groups(project):
            try:
                run_stages.with_options(name=f"dvc {group}")(group, stages, str(project))
            except StageFailed:
                if group == "validate":
                    publish_validation(reports, failed=True)
                    publish_links(reports)  # the failing checks are in the Data Docs too
                raise
            if group == "validate":
                publish_validation(reports, failed=False)
        rows = publish_metrics(reports)
        publish_links(reports)
        publish_interests(project / params.paths.artifacts, reports, params.train.models)
        publish_recommendations(project / params.paths.recommendations)
        if params.registry.promote:
            promote(str(project))
            publish_promotion(reports)
        if push_to_remote:
            push(str(project))
        return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="the project folder (holds dvc.yaml)")
    args = ap.parse_args(argv)
    pipeline(args.root)
    print(
        (
            Path(args.root)
            / load_params(Path(args.root) / "params.yaml").paths.reports
            / "comparison.md"
        ).read_text()
    )


if __name__ == "__main__":
    main()
