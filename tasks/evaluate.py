"""evaluate@MODEL: test-set AUC, GAUC and logloss per task (a DVC metric), ROC points, gate use."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.multitask import MultiTaskModel
from tasks.config.params import load_params
from tasks.evaluation import ranking
from tasks.evaluation.metrics import task_metrics
from tasks.io.atomic import write_json_atomic
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
    model: MultiTaskModel, feats: Path, test: Samples, hist: Histories | None, task: int, e: Any
) -> dict[str, float]:
    """HR/NDCG/MRR of the test clicks against sampled negatives (tasks.evaluation.ranking), overall and
    (searched_*) on the clicks on a category searched in the last `e.searched_hours`."""
    spec = read_spec(feats)
    c = ranking.ranked_candidates(feats, e.ranking_negatives, e.ranking_positives, e.seed)
    s = ranking.scores(model, test, hist, c, spec, task)
    out = ranking.ranking_metrics(s)
    if e.searched_hours > 0 and hist is not None:
        cat = list(spec["sparse"]).index("cat1")
        searched = ranking.recently_searched(test, hist, c.rows, cat, e.searched_hours)
        out |= ranking.sliced_metrics(s, searched, "searched")
    return out


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
    e = params.evaluate
    if sample_files(spec) == "rec" and "click" in tasks and e.ranking_positives > 0:
        metrics["click"] |= feed_ranking(model, feats, test, hist, tasks.index("click"), e)
    write_json_atomic(out / "metrics.json", metrics)
    details: dict[str, Any] = {
        "roc": {
            t: roc_points(labels[:, i], probs[:, i])
            for i, t in enumerate(tasks)
            if not (regression and regression[i])
        },
        "gates": gate_use(model, test, hist),
        "kind": config["kind"],
        "scenario": scenario,
        "head": config["head"],
        "tasks": tasks,
    }
    write_json_atomic(out / "evaluation.json", details)
    for t, m in metrics.items():
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if not _count(k))
        print(f"evaluate@{args.model}: {t:10s} {shown}")


if __name__ == "__main__":
    main()
