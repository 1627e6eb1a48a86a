"""evaluate@MODEL: test-set AUC, GAUC and logloss per task and the feed click's ranking metrics
(sampled and full: tasks.evaluation.ranking) as a DVC metric; the per-click ranks and every
test prediction (for paired comparisons: tasks.evaluation.paired), ROC points, gate use, and
for a disentangled SESRec its split of search interests (tasks.evaluation.interests)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import polars as pl
import torch

from models.multitask import MultiTaskModel
from tasks.config.params import Params, load_params
from tasks.evaluation import candidates, interests, ranking
from tasks.evaluation.metrics import constant_tasks, task_metrics
from tasks.io.atomic import atomic_path, write_json_atomic
from tasks.training.checkpoint import load_checkpoint, resolve_device
from tasks.training.engine import predict
from tasks.training.tensors import (
    Histories,
    Samples,
    load_histories,
    make_batch,
    read_spec,
    sample_files,
    scenario_samples,
    task_types,
)


def roc_points(y: np.ndarray, p: np.ndarray, n: int = 200) -> dict[str, list[float]]:
    """The ROC curve, thinned to about `n` points (NaN labels dropped)."""
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    order = np.argsort(-p, kind="stable")
    tp = np.concatenate([[0.0], np.cumsum(y[order])])
    fp = np.concatenate([[0.0], np.cumsum(1 - y[order])])
    pick = np.unique(np.linspace(0, len(tp) - 1, min(n, len(tp))).astype(int))
    return {
        "fpr": (fp[pick] / max(fp[-1], 1)).round(5).tolist(),
        "tpr": (tp[pick] / max(tp[-1], 1)).round(5).tolist(),
    }


@torch.no_grad()
def gate_use(
    model: MultiTaskModel, s: Samples, h: Histories | None, n: int = 16384
) -> list[list[list[float]]]:
    """Mean gate weight per level, task and expert on the first `n` test samples ([] if no gates)."""
    head = getattr(model.net, "head", None)  # single_task and sesrec have no shared head
    if not hasattr(head, "mean_gate_weights"):
        return []
    idx = torch.arange(min(n, len(s)), device=s.sparse.device)
    x = model.net.embedding(*make_batch(s, h, idx))
    return [w.float().cpu().numpy().round(5).tolist() for w in head.mean_gate_weights(x)]


def feed_ranking(
    model: MultiTaskModel,
    params: Params,
    test: Samples,
    hist: Histories | None,
    task: int,
) -> tuple[dict[str, float], pl.DataFrame]:
    """The ranking metrics of the test clicks' candidates (paths.candidates/test.parquet):
    sampled, full (the clicks marked full) and (searched_*) on the clicks on a category
    searched in the last evaluate.searched_hours; and the per-click ranks (ranks.parquet)."""
    feats = params.paths.features
    spec = read_spec(feats)
    c = candidates.load_candidates(feats, params.paths.candidates / "test.parquet")
    if len(c.rows) == 0:  # candidates.positives 0: ranking off
        return {}, pl.DataFrame(schema=candidates.RANKS_SCHEMA)
    rank = candidates.ranks_of(ranking.scores(model, test, hist, c, spec, task))
    out = candidates.rank_metrics(rank)
    full = np.full(len(rank), -1, dtype=np.int64)  # -1: not ranked in full
    if c.full is not None and c.full.any():
        served = candidates.served_indices(feats, c)
        full[c.full] = ranking.catalogue_ranks(model, test, hist, c, served, spec, task)
        out |= candidates.rank_metrics(full[c.full], candidates.FULL)
        out["full_positives"] = int(c.full.sum())
        out["catalogue"] = len(c.fields)
    searched = np.zeros(len(rank), dtype=bool)
    hours = params.evaluate.searched_hours
    if hours > 0 and hist is not None:
        cat = list(spec["sparse"]).index("cat1")
        searched = ranking.recently_searched(test, hist, c.rows, cat, hours)
        out |= ranking.sliced_metrics(rank, searched, "searched")
    per_click = pl.DataFrame(
        {"row": c.rows, "rank": rank, "full_rank": full, "searched": searched},
        schema=candidates.RANKS_SCHEMA,
    )
    return out, per_click


def prediction_table(
    probs: np.ndarray, labels: np.ndarray, tasks: list[str], files: list[tuple[str, int]]
) -> pl.DataFrame:
    """Every test prediction with its label, by sample file (`files`: (prefix, rows) in the
    samples' order: rec or table, then src for joint models) and row there: what a paired
    comparison of two models joins on (tasks.evaluation.paired)."""
    return pl.DataFrame(
        {
            "file": [name for name, n in files for _ in range(n)],
            "row": np.concatenate([np.arange(n) for _, n in files]).astype(np.int64),
            **{f"p_{t}": probs[:, i] for i, t in enumerate(tasks)},
            **{f"y_{t}": labels[:, i] for i, t in enumerate(tasks)},
        }
    )


def sample_parts(spec: dict, scenario: str) -> list[tuple[str, int]]:
    """(file prefix, test rows) of a scenario's test samples, in scenario_samples' order."""
    feed = (sample_files(spec), int(spec["rows"][f"{sample_files(spec)}_test"]))
    search = ("src", int(spec["rows"].get("src_test", 0)))
    return {"feed": [feed], "search": [search], "joint": [feed, search]}[scenario]


def _count(metric: str) -> bool:
    return metric == "n" or metric.endswith("positives")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model name under `models:` in params.yaml")
    args = ap.parse_args(argv)
    params = load_params()
    torch.set_num_threads(params.train.threads)
    device = resolve_device(params.train.device)
    out = params.paths.artifacts / args.model
    model, config = load_checkpoint(out / "model.pt")
    model.to(device).eval()
    feats = params.paths.features
    spec = read_spec(feats)
    tasks = config["tasks"]
    scenario = config.get("scenario", "feed")
    # joint: feed rows first, then search rows; each task scored in its own scenario's rows
    test = scenario_samples(feats, "test", spec, scenario, tasks, device)
    hist = load_histories(feats, spec, device)
    regression = task_types(spec, tasks)
    probs = predict(model, test, hist, params.evaluate.batch_size, regression=regression)
    labels = test.labels.cpu().numpy()
    metrics = task_metrics(labels, probs, test.user, tasks, regression)
    out.mkdir(parents=True, exist_ok=True)
    per_click = pl.DataFrame(schema=candidates.RANKS_SCHEMA)  # none: the source has no feed clicks
    if sample_files(spec) == "rec" and "click" in tasks:
        # joint models: the feed rows come first, so candidate rows index them as they are
        ranks_metrics, per_click = feed_ranking(model, params, test, hist, tasks.index("click"))
        metrics["click"] |= ranks_metrics
    with atomic_path(out / "ranks.parquet") as tmp:
        per_click.write_parquet(tmp)
    with atomic_path(out / "predictions.parquet") as tmp:
        prediction_table(probs, labels, tasks, sample_parts(spec, scenario)).write_parquet(tmp)
    write_json_atomic(out / "metrics.json", metrics)
    details: dict[str, Any] = {
        "roc": {
            t: roc_points(labels[:, i], probs[:, i])
            for i, t in enumerate(tasks)
            if not (regression and regression[i])
        },
        "gates": gate_use(model, test, hist),
        # a disentangled SESRec: its similar/dissimilar split of search interests (else None)
        "interests": None if hist is None else interests.measure(model, config, test, hist, params),
        "kind": config["kind"],
        "scenario": scenario,
        "head": config["head"],
        "fit": config.get("fit", {}),  # how it was trained: the report states it
        "tasks": tasks,
        # tasks predicted the same for every test row (a dead tower): the report warns
        "constant_tasks": constant_tasks(probs, tasks),
    }
    write_json_atomic(out / "evaluation.json", details)
    if details["constant_tasks"]:
        print(
            f"evaluate@{args.model}: WARNING: {', '.join(details['constant_tasks'])} predicted "
            "the same for every test row: AUC 0.5 and no ranking by construction"
        )
    for t, m in metrics.items():
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if not _count(k))
        print(f"evaluate@{args.model}: {t:10s} {shown}")


if __name__ == "__main__":
    main()
