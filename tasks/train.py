"""train@MODEL: multi-task training on the feed labels, early stopping on valid.

The loop lives in tasks.engine (tensors on the device, masked per-task BCE, sparse embedding
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
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from models.embedding import EmbeddingSpec
from models.multitask import MultiTaskModel
from tasks.engine import (
    EngineOptions,
    bf16_supported,
    fit,
    init_distributed,
    save_checkpoint,
    use_sparse_embeddings,
)
from tasks.engine import masked_bce as masked_bce  # re-exported: the loss of every model
from tasks.engine import predict as predict
from tasks.io import write_json_atomic
from tasks.params import Params, TrainParams, load_params
from tasks.ranking import with_sampled_negatives
from tasks.tensors import (
    embedding_spec,
    load_histories,
    read_spec,
    sample_files,
    scenario_samples,
    task_types,
)


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


# kinds whose CPU training is slower under bf16 autocast (SESRec's attention: 4,430 vs 7,063
# samples/s fp32 on a 2-core AMX machine; PLE: 24,141 vs 13,456, so it keeps bf16)
FP32_ON_CPU = ("sesrec",)


# a model section's keys that say how it is trained, not what it is (config["fit"])
FIT_OPTIONS = ("weight_decay", "sampled_negatives")


def engine_options(
    p: TrainParams, device: torch.device, distributed: bool, table_rows: int, kind: str = ""
) -> EngineOptions:
    auto_bf16 = bf16_supported(device) and not (device.type == "cpu" and kind in FP32_ON_CPU)
    bf16 = p.precision == "bf16" or (p.precision == "auto" and auto_bf16)
    return EngineOptions(
        epochs=p.epochs,
        patience=p.patience,
        batch_size=p.batch_size,
        lr=p.lr,
        weight_decay=p.weight_decay,
        seed=p.seed,
        bf16=bf16,
        sparse=use_sparse_embeddings(p.sparse_embeddings, table_rows, distributed),
    )


def build_model(
    params: Params, name: str, spec: dict, sparse: bool = False
) -> tuple[MultiTaskModel, dict[str, Any]]:
    """The model named `name` in params, and the config its checkpoint carries."""
    if name not in params.models:
        raise SystemExit(f"unknown model {name!r}: params.yaml models has {sorted(params.models)}")
    section = params.models[name]
    head = section.model_dump()
    kind = head.pop("kind")
    scenario = head.pop("scenario")
    fit = {k: head.pop(k) for k in FIT_OPTIONS}
    emb = embedding_spec(spec, params.train.embed_dim)
    config = {
        "name": name,
        "kind": kind,
        "scenario": scenario,
        "head": head,
        "fit": fit,
        "tasks": section.task_names(list(params.train.tasks)),
        "embedding": json.loads(json.dumps(dataclasses.asdict(emb))),
    }
    return model_from_config(config, sparse), config


def model_from_config(config: dict[str, Any], sparse: bool = False) -> MultiTaskModel:
    emb = EmbeddingSpec.from_dict(config["embedding"])
    return MultiTaskModel(emb, config["kind"], len(config["tasks"]), config["head"], sparse=sparse)


def load_checkpoint(path: Path) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild a trained model from its checkpoint (weights only: no code is unpickled)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: refused to load checkpoint (Weights only load failed or corrupt): {e}"
        ) from e
    model = model_from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt["config"]


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
    kind = params.models[args.model].kind if args.model in params.models else ""
    opts = engine_options(p, device, world > 1, table_rows, kind)
    model, config = build_model(params, args.model, spec, sparse=opts.sparse)
    tasks = config["tasks"]
    fit_opts = config["fit"]
    opts = dataclasses.replace(
        opts,
        regression=task_types(spec, tasks),
        weight_decay=p.weight_decay
        if fit_opts["weight_decay"] is None
        else fit_opts["weight_decay"],
    )
    train = scenario_samples(feats, "train", spec, config["scenario"], tasks, device)
    if fit_opts["sampled_negatives"]:
        if "click" not in tasks:
            raise SystemExit(
                f"models.{args.model}.sampled_negatives draws negatives for feed clicks; "
                f"this model's tasks {tasks} have no click"
            )
        train = with_sampled_negatives(
            train, list(spec["sparse"]), tasks.index("click"), fit_opts["sampled_negatives"], p.seed
        )
    valid = scenario_samples(feats, "valid", spec, config["scenario"], tasks, device)
    hist = load_histories(feats, spec, device)
    model.to(device)
    n_params = sum(x.numel() for x in model.parameters())
    say = (lambda m: print(m, flush=True)) if rank == 0 else (lambda m: None)
    say(
        f"train@{args.model}: {config['kind']} ({config['scenario']}: {', '.join(tasks)}), "
        f"{n_params:,} parameters, {len(train):,} samples, "
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
        wrapped, train, valid, hist, opts, tasks, resume=resume, log=say, on_epoch=_fault_hook
    )
    if rank == 0:
        out = params.paths.artifacts / args.model
        ckpt = {"config": config, "state_dict": result.state_dict, "best_epoch": result.best_epoch}
        save_checkpoint(ckpt, out / "model.pt")
        write_json_atomic(out / "curve.json", {"curve": result.curve})
        resume.unlink(missing_ok=True)  # finished: nothing to resume
        say(f"train@{args.model}: best epoch {result.best_epoch} -> {out}/model.pt")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
