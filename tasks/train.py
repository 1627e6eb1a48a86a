"""train@MODEL: multi-task training on the feed labels (or a table's), early stopping on valid.

The loop lives in tasks.training.engine (tensors on the device, masked per-task BCE, sparse embedding
updates, bf16 where supported, resume after a crash, DDP under torchrun). The best epoch's
weights are saved with their config and feature spec; `torch.load(weights_only=True)` reads
them back. Distributed: `torchrun --nproc_per_node=N -m tasks.train MODEL`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tasks.config.models import model_config
from tasks.config.params import Params, TrainParams, load_params
from tasks.evaluation import candidates, ranking
from tasks.io.atomic import write_json_atomic
from tasks.training.checkpoint import build_model, engine_options, resolve_device
from tasks.training.engine import fit, init_distributed, save_checkpoint
from tasks.training.negatives import with_sampled_negatives
from tasks.training.tensors import (
    Histories,
    Samples,
    load_histories,
    read_spec,
    sample_files,
    scenario_samples,
    task_types,
)


def fingerprint(config: dict[str, Any], p: TrainParams, features: Path) -> str:
    """What a resume checkpoint must match: model config, train params, the features' identity."""
    h = hashlib.sha256(json.dumps([config, p.model_dump()], sort_keys=True).encode())
    h.update((features / "spec.json").read_bytes())
    prefix = sample_files(json.loads((features / "spec.json").read_text()))
    for name in (f"{prefix}_train.parquet", f"{prefix}_valid.parquet"):
        st = (features / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def resume_path(params: Params, name: str, fp: str) -> Path:
    """This run's resume checkpoint; stale ones of the same model (other fingerprints) are removed."""
    folder = params.paths.checkpoints / name
    for old in folder.glob("resume-*.pt"):
        if old.name != f"resume-{fp}.pt":
            old.unlink(missing_ok=True)
    return folder / f"resume-{fp}.pt"


def _fault_hook(row: dict[str, Any]) -> None:
    """Fault injection for the crash tests: SARFLOW_FAULT_KILL_AFTER_EPOCH=N sends this process
    SIGKILL right after epoch N's resume checkpoint is written (nothing else is cleaned up)."""
    if os.environ.get("SARFLOW_FAULT_KILL_AFTER_EPOCH") == str(row["epoch"]):
        os.kill(os.getpid(), signal.SIGKILL)


def epoch_samples(
    train: Samples, spec: dict, tasks: list[str], k: int, seed: int
) -> Samples | Callable[[int], Samples]:
    """The training samples, or with `k` sampled negatives per click (the ranking task) a
    function of the epoch that draws fresh ones each epoch, seeded by (seed, epoch): over the
    epochs a model sees k times more unserved items than one fixed draw would show it."""
    if not k:
        return train
    if "click" not in tasks:
        raise SystemExit(
            f"sampled_negatives draws negatives for feed clicks; tasks {tasks} lack it"
        )
    click = tasks.index("click")
    return lambda epoch: with_sampled_negatives(train, spec, click, k, seed=seed * 10_007 + epoch)


def selection(
    params: Params,
    select: str,
    valid: Samples,
    hist: Histories | None,
    spec: dict,
    tasks: list[str],
) -> tuple[str, Callable[[torch.nn.Module], float]] | None:
    """None (the engine's mean valid AUC), or for `select: ndcg@10` the valid feed click
    ranking on the candidates stage's valid candidates."""
    if select == "auc":
        return None
    c = candidates.load_candidates(params.paths.features, params.paths.candidates / "valid.parquet")
    if len(c.rows) == 0:
        raise SystemExit(
            f"select: {select} ranks valid clicks, but candidates.valid_positives is 0"
        )
    click = tasks.index("click")

    def score(model: torch.nn.Module) -> float:
        rank = candidates.ranks_of(ranking.scores(model, valid, hist, c, spec, click))
        return candidates.rank_metrics(rank, (select,))[select]

    return select, score


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model name under `models:` in params.yaml")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.train
    torch.manual_seed(p.seed)
    torch.set_num_threads(p.threads)
    rank, world, device = init_distributed(p.device)
    if world == 1:
        device = resolve_device(p.device)
    feats = params.paths.features
    spec = read_spec(feats)
    table_rows = sum(spec["sparse"].values()) + sum(spec["extra_tables"].values())
    kind = model_config(params, args.model).kind
    opts = engine_options(p, device, world > 1, table_rows, kind)
    model, config = build_model(params, args.model, spec, sparse=opts.sparse)
    tasks = config["tasks"]
    fit_opts = config["fit"]
    opts = dataclasses.replace(
        opts, regression=task_types(spec, tasks), weight_decay=fit_opts["weight_decay"]
    )
    train = scenario_samples(feats, "train", spec, config["scenario"], tasks, device)
    samples = epoch_samples(train, spec, tasks, fit_opts["sampled_negatives"], p.seed)
    valid = scenario_samples(feats, "valid", spec, config["scenario"], tasks, device)
    hist = load_histories(feats, spec, device)
    select = selection(params, fit_opts["select"], valid, hist, spec, tasks)
    model.to(device)
    n_params = sum(x.numel() for x in model.parameters())
    say = (lambda m: print(m, flush=True)) if rank == 0 else (lambda m: None)
    source = "table" if sample_files(spec) == "table" else config["scenario"]
    say(
        f"train@{args.model}: {config['kind']} ({source}: {', '.join(tasks)}), "
        f"{n_params:,} parameters, {len(train):,} samples"
        + (
            f" + {fit_opts['sampled_negatives']} sampled negative(s) per click, redrawn each epoch"
            if fit_opts["sampled_negatives"]
            else ""
        )
        + f", selected on valid {fit_opts['select']}, "
        f"device {device}{f' x {world} ranks' if world > 1 else ''}, "
        f"{'bf16' if opts.bf16 else 'fp32'}, {'sparse' if opts.sparse else 'dense'} embedding updates"
    )
    wrapped = (
        torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        if world > 1
        else model
    )
    resume = resume_path(params, args.model, fingerprint(config, p, feats))
    result = fit(
        wrapped,
        samples,
        valid,
        hist,
        opts,
        tasks,
        resume=resume,
        log=say,
        on_epoch=_fault_hook,
        select=select,
    )
    if rank == 0:
        out = params.paths.artifacts / args.model
        ckpt = {"config": config, "state_dict": result.state_dict, "best_epoch": result.best_epoch}
        save_checkpoint(ckpt, out / "model.pt")
        write_json_atomic(out / "curve.json", {"curve": result.curve})
        resume.unlink(missing_ok=True)  # finished: nothing to resume
        say(f"train@{args.model}: best epoch {result.best_epoch} -> {out}/model.pt")
        dead = result.curve[result.best_epoch - 1].get("constant_tasks") if result.curve else None
        if dead:
            say(
                f"train@{args.model}: WARNING: the kept epoch predicts {', '.join(dead)} the same "
                "for every valid row: it ranks nothing there (the report says so too)"
            )
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
