"""The training engine: one readable loop, fast on CPU and GPU, resumable, optionally distributed.

- All data are tensors on the device; an epoch is an index permutation, a batch a slice of it.
- No host synchronisation inside a step: losses accumulate on the device, read once an epoch.
- Sparse embedding gradients with SparseAdam (dense Adam for the rest), bf16 autocast where the
  hardware supports it, experts batched into one matmul (see models.layers).
- A resume checkpoint (model, optimizers, RNG, epoch, best weights, curve) is written atomically
  after every epoch; a killed run started again continues from it and ends where an
  uninterrupted run would.
- Under `torchrun` each rank trains on its shard of every epoch's permutation with
  DistributedDataParallel; rank 0 evaluates and decides early stopping for all.
"""

from __future__ import annotations

import copy
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from tasks.evaluation.metrics import auc, r2
from tasks.io.atomic import write_bytes_atomic
from tasks.io.progress import progress
from tasks.training.tensors import Histories, Samples, make_batch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class EngineOptions:
    epochs: int
    patience: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    seed: int = 0
    bf16: bool = False
    sparse: bool = False  # sparse embedding gradients + SparseAdam (else dense, fused Adam)
    eval_batch_size: int = 16384
    regression: tuple[bool, ...] = ()  # per task: MSE on raw outputs (else BCE on logits)


@dataclass
class FitResult:
    state_dict: dict[str, Tensor]
    best_epoch: int
    curve: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


SPARSE_FROM_ROWS = 1_000_000


def use_sparse_embeddings(choice: str, table_rows: int, distributed: bool) -> bool:
    """Sparse updates pay off for big tables; dense fused Adam learns as well and is simpler.

    Measured (BENCHMARKS.md): on a 187k-row table dense fused Adam was as fast and reached a
    higher AUC than SparseAdam, whose lazy moments lag for rare rows. NCCL has no sparse
    all-reduce, so distributed runs are dense."""
    if distributed:
        return False
    return choice == "sparse" or (choice == "auto" and table_rows > SPARSE_FROM_ROWS)


def masked_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-task mean BCE over samples whose label is not NaN. (B,T),(B,T) -> (T,)"""
    mask = ~torch.isnan(labels)
    y = torch.nan_to_num(labels, nan=0.0)
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")
    return (loss * mask).sum(0) / mask.sum(0).clamp_min(1)


def masked_loss(
    out: Tensor, labels: Tensor, regression: Tensor | None, weight: Tensor | None = None
) -> Tensor:
    """Per-task loss over samples whose label is not NaN: BCE on logits for binary tasks, MSE
    for the tasks `regression` (T,) marks; `weight` (B,) weights samples. (B,T),(B,T) -> (T,)"""
    if regression is None and weight is None:
        return masked_bce(out, labels)
    mask = (~torch.isnan(labels)).float()
    y = torch.nan_to_num(labels, nan=0.0)
    out = out.float()
    bce = nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none")
    loss = torch.where(regression, (out - y) ** 2, bce) if regression is not None else bce
    if weight is not None:
        mask = mask * weight.unsqueeze(1)
    return (loss * mask).sum(0) / mask.sum(0).clamp_min(1e-12)


@torch.no_grad()
def predict(
    model: nn.Module,
    s: Samples,
    h: Histories | None,
    batch_size: int,
    bf16: bool = False,
    regression: tuple[bool, ...] = (),
) -> np.ndarray:
    """Probabilities (N, T), or raw values for regression tasks; sigmoid only here, at evaluation."""
    was_training = model.training
    model.eval()
    out = []
    device = s.sparse.device
    for i in range(0, len(s), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(s)), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(model(*make_batch(s, h, idx)).float())
    model.train(was_training)
    if out:
        raw = torch.cat(out)
        if any(regression):
            reg = torch.tensor(regression, device=raw.device)
            return torch.where(reg, raw, torch.sigmoid(raw)).cpu().numpy()
        return torch.sigmoid(raw).cpu().numpy()
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, s.labels.shape[1]), np.float32)


def valid_scores(
    probs: np.ndarray, labels: np.ndarray, tasks: list[str], regression: tuple[bool, ...] = ()
) -> dict[str, float]:
    """Per task, higher is better: AUC for binary tasks, R^2 for regression ones."""
    out = {}
    for t, name in enumerate(tasks):
        keep = ~np.isnan(labels[:, t])
        score = r2 if regression and regression[t] else auc
        out[name] = score(labels[keep, t], probs[keep, t])
    return out


def make_optimizers(model: nn.Module, o: EngineOptions) -> list[torch.optim.Optimizer]:
    """SparseAdam for sparse-gradient embeddings, Adam for everything else."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    # fused: one kernel for all dense parameters instead of a loop of small ops
    opts: list[torch.optim.Optimizer] = [
        torch.optim.Adam(dense, lr=o.lr, weight_decay=o.weight_decay, fused=True)
    ]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=o.lr))
    return opts


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def auxiliary_loss(model: nn.Module) -> Tensor | None:
    """A model's extra training loss of its last forward pass (SESRec's), if it has one."""
    core = getattr(model, "module", model)  # under DDP the model is wrapped
    return core.auxiliary_loss() if hasattr(core, "auxiliary_loss") else None


def fit(
    model: nn.Module,
    train: Samples,
    valid: Samples,
    hist: Histories | None,
    o: EngineOptions,
    tasks: list[str],
    resume: Path | None = None,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train; keep the weights of the epoch with the best mean valid AUC (early stopping).

    `model` may be wrapped in DistributedDataParallel; `resume` is the resume-checkpoint path."""
    rank, world = _rank_world()
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    opts = make_optimizers(model, o)
    gen = torch.Generator(device="cpu").manual_seed(o.seed)
    device = train.sparse.device
    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad": 0, "curve": []}
    best_state = copy.deepcopy(core.state_dict())
    resumed_from = 0
    if resume is not None and resume.is_file():
        ck = torch.load(resume, map_location=device, weights_only=True)
        core.load_state_dict(ck["model"])
        for opt, sd in zip(opts, ck["optimizers"], strict=True):
            opt.load_state_dict(sd)
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        best_state, state = ck["best_state"], ck["state"]
        resumed_from = state["epoch"]
        log(f"resumed from {resume} after epoch {resumed_from}")
    valid_labels = valid.labels.cpu().numpy()
    reg = torch.tensor(o.regression, device=device) if any(o.regression) else None
    n = len(train)
    shard = n // world  # equal step counts on every rank
    for epoch in range(state["epoch"] + 1, o.epochs + 1):
        if state["bad"] >= o.patience:
            break
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)[rank * shard : (rank + 1) * shard]
        total = torch.zeros(len(tasks), device=device)
        # first step of the epoch whose loss was not finite (-1: none), tracked on the device
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        steps = 0
        batches = range(0, shard, o.batch_size)
        if rank == 0:  # one bar, not one per process
            batches = progress(batches, len(batches), f"epoch {epoch}/{o.epochs}")
        for i in batches:
            idx = perm[i : i + o.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=o.bf16):
                logits = model(*make_batch(train, hist, idx))
            weight = train.weight[idx] if train.weight is not None else None
            per_task = masked_loss(logits, train.labels[idx], reg, weight)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            aux = auxiliary_loss(model)
            (per_task.sum() if aux is None else per_task.sum() + aux).backward()
            for opt in opts:
                opt.step()
            total += per_task.detach()
            bad_now = (first_bad < 0) & ~torch.isfinite(per_task.detach()).all()
            first_bad = torch.where(bad_now, torch.full_like(first_bad, steps + 1), first_bad)
            steps += 1
        train_loss = (total / max(steps, 1)).cpu()  # the one host sync of the epoch
        if not torch.isfinite(train_loss).all():
            bad = [
                t for t, v in zip(tasks, train_loss.tolist(), strict=True) if not math.isfinite(v)
            ]
            raise TrainingDiverged(
                f"loss became non-finite at step {int(first_bad)} of epoch {epoch} "
                f"({steps} steps an epoch) for tasks {bad}: lower train.lr, or check the inputs"
            )
        seconds = time.perf_counter() - t0
        stop = torch.zeros(1)
        if rank == 0:
            probs = predict(core, valid, hist, o.eval_batch_size, o.bf16, o.regression)
            aucs = valid_scores(probs, valid_labels, tasks, o.regression)
            score = float(np.nanmean(list(aucs.values())))
            row = {
                "epoch": epoch,
                "train_loss": float(train_loss.sum()),
                **{f"train_loss_{t}": float(v) for t, v in zip(tasks, train_loss, strict=True)},
                "valid_score": score,  # mean over tasks of AUC (binary) or R^2 (regression)
                **{f"valid_score_{t}": v for t, v in aucs.items()},
                "seconds": seconds,
                "samples_per_s": shard * world / seconds,
            }
            state["curve"].append(row)
            log(
                f"epoch {epoch}/{o.epochs} loss {row['train_loss']:.4f} valid score {score:.4f} "
                f"({', '.join(f'{t} {v:.3f}' for t, v in aucs.items())}) "
                f"{seconds:.1f}s {row['samples_per_s']:,.0f} samples/s"
            )
            if score > state["best"]:
                state.update(best=score, best_epoch=epoch, bad=0)
                best_state = copy.deepcopy(core.state_dict())
            else:
                state["bad"] += 1
            state["epoch"] = epoch
            if resume is not None:
                _save_resume(resume, core, opts, gen, best_state, state)
            if on_epoch is not None:
                on_epoch(row)
            stop[0] = float(state["bad"] >= o.patience)
        if world > 1:
            dist.broadcast(stop, src=0)
        if stop.item():
            if rank == 0:
                log(
                    f"early stop: no valid improvement for {state['bad']} epochs (best epoch {state['best_epoch']})"
                )
            break
    return FitResult(best_state, state["best_epoch"], state["curve"], resumed_from)


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """torch.save, atomically and byte-for-byte reproducible (serialised in memory first: a
    file name would end up inside the archive)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def _save_resume(
    path: Path,
    model: nn.Module,
    opts: list[torch.optim.Optimizer],
    gen: torch.Generator,
    best_state: dict[str, Tensor],
    state: dict[str, Any],
) -> None:
    save_checkpoint(
        {
            "model": model.state_dict(),
            "optimizers": [o.state_dict() for o in opts],
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_state": best_state,
            "state": state,
        },
        path,
    )


def init_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    """Join the torchrun process group if there is one: (rank, world size, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, torch.device("cpu")
    use_cuda = device_choice != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), world, device
