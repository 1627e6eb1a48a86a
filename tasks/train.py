"""train@MODEL: multi-task training on the feed labels, early stopping on valid.

One readable loop: all data as tensors on the device, shuffling by index permutation, batches by
slicing, a masked per-task BCE (a task counts only on samples in its sample space), no host
synchronisation inside a step. The best epoch's weights are saved with their config and feature
spec; `torch.load(weights_only=True)` reads them back.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.embedding import EmbeddingSpec
from models.multitask import MultiTaskModel
from tasks.io import atomic_path, write_json_atomic
from tasks.metrics import auc
from tasks.params import Params, TrainParams, load_params
from tasks.tensors import (
    Histories,
    Samples,
    embedding_spec,
    load_histories,
    load_samples,
    make_batch,
    read_spec,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def masked_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-task mean BCE over samples whose label is not NaN. (B,T),(B,T) -> (T,)"""
    mask = ~torch.isnan(labels)
    y = torch.nan_to_num(labels, nan=0.0)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (loss * mask).sum(0) / mask.sum(0).clamp_min(1)


@torch.no_grad()
def predict(model: nn.Module, s: Samples, h: Histories, batch_size: int) -> np.ndarray:
    """Probabilities (N, T); sigmoid is applied only here, at evaluation."""
    model.eval()
    out = []
    for i in range(0, len(s), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(s)), device=s.sparse.device)
        out.append(torch.sigmoid(model(*make_batch(s, h, idx)).float()))
    model.train()
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, s.labels.shape[1]), np.float32)


def valid_aucs(probs: np.ndarray, labels: np.ndarray, tasks: list[str]) -> dict[str, float]:
    out = {}
    for t, name in enumerate(tasks):
        keep = ~np.isnan(labels[:, t])
        out[name] = auc(labels[keep, t], probs[keep, t])
    return out


@dataclass
class FitResult:
    state_dict: dict[str, Tensor]
    best_epoch: int
    curve: list[dict[str, Any]]


def fit(
    model: nn.Module,
    train: Samples,
    valid: Samples,
    hist: Histories,
    p: TrainParams,
    tasks: list[str],
    log: Any = print,
) -> FitResult:
    """Train with Adam; keep the weights of the epoch with the best mean valid AUC."""
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(p.seed)
    device = train.sparse.device
    best, best_epoch, bad, curve = -math.inf, 0, 0, []
    best_state = copy.deepcopy(model.state_dict())
    valid_labels = valid.labels.cpu().numpy()
    n = len(train)
    for epoch in range(1, p.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros(len(tasks), device=device)
        steps = 0
        for i in range(0, n, p.batch_size):
            idx = perm[i : i + p.batch_size]
            per_task = masked_bce(model(*make_batch(train, hist, idx)), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            per_task.sum().backward()
            opt.step()
            total += per_task.detach()
            steps += 1
        train_loss = (total / max(steps, 1)).cpu()  # the one host sync of the epoch
        if not torch.isfinite(train_loss).all():
            bad_tasks = [
                t for t, v in zip(tasks, train_loss.tolist(), strict=True) if not math.isfinite(v)
            ]
            raise TrainingDiverged(f"loss became non-finite in epoch {epoch} for tasks {bad_tasks}")
        seconds = time.perf_counter() - t0
        aucs = valid_aucs(predict(model, valid, hist, 16384), valid_labels, tasks)
        score = float(np.nanmean(list(aucs.values())))
        curve.append(
            {
                "epoch": epoch,
                "train_loss": float(train_loss.sum()),
                **{f"train_loss_{t}": float(v) for t, v in zip(tasks, train_loss, strict=True)},
                "valid_mean_auc": score,
                **{f"valid_auc_{t}": v for t, v in aucs.items()},
                "seconds": seconds,
                "samples_per_s": n / seconds,
            }
        )
        log(
            f"epoch {epoch}/{p.epochs} loss {float(train_loss.sum()):.4f} "
            f"valid AUC {score:.4f} ({', '.join(f'{t} {v:.3f}' for t, v in aucs.items())}) "
            f"{seconds:.1f}s {n / seconds:,.0f} samples/s"
        )
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= p.patience:
                log(f"early stop: no valid improvement for {bad} epochs (best epoch {best_epoch})")
                break
    return FitResult(best_state, best_epoch, curve)


def build_model(params: Params, name: str, spec: dict) -> tuple[MultiTaskModel, dict[str, Any]]:
    """The model named `name` in params, and the config its checkpoint carries."""
    if name not in params.models:
        raise SystemExit(f"unknown model {name!r}: params.yaml models has {sorted(params.models)}")
    head = params.models[name].model_dump()
    kind = head.pop("kind")
    emb = embedding_spec(spec, params.train.embed_dim)
    config = {
        "name": name,
        "kind": kind,
        "head": head,
        "tasks": list(params.train.tasks),
        "embedding": json.loads(json.dumps(dataclasses.asdict(emb))),
    }
    return model_from_config(config), config


def model_from_config(config: dict[str, Any]) -> MultiTaskModel:
    emb = EmbeddingSpec.from_dict(config["embedding"])
    return MultiTaskModel(emb, config["kind"], len(config["tasks"]), config["head"])


def load_checkpoint(path: Path) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild a trained model from its checkpoint (weights only: no code is unpickled)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = model_from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt["config"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model name under `models:` in params.yaml")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.train
    torch.manual_seed(p.seed)
    torch.set_num_threads(p.threads)
    device = resolve_device(p.device)
    feats = params.paths.features
    spec = read_spec(feats)
    tasks = list(p.tasks)
    train = load_samples(feats, "rec_train", spec, tasks, device)
    valid = load_samples(feats, "rec_valid", spec, tasks, device)
    hist = load_histories(feats, spec, device)
    model, config = build_model(params, args.model, spec)
    model.to(device)
    n_params = sum(x.numel() for x in model.parameters())
    print(
        f"train@{args.model}: {config['kind']}, {n_params:,} parameters, {len(train):,} samples on {device}"
    )
    sys.stdout.flush()
    result = fit(model, train, valid, hist, p, tasks, log=lambda m: print(m, flush=True))
    out = params.paths.artifacts / args.model
    with atomic_path(out / "model.pt") as tmp:
        ckpt = {"config": config, "state_dict": result.state_dict, "best_epoch": result.best_epoch}
        torch.save(ckpt, tmp)
    write_json_atomic(out / "curve.json", {"curve": result.curve})
    print(f"train@{args.model}: best epoch {result.best_epoch} -> {out}/model.pt")


if __name__ == "__main__":
    main()
