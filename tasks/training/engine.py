"""The training engine: one readable loop, fast on CPU and GPU, resumable, optionally distributed.

- All data are tensors on the device; an epoch is an index permutation, a batch a slice of it.
- No host synchronisation inside a step: losses accumulate on the device, read once an epoch.
- AdamW with decoupled weight decay on weight matrices only: never on embedding tables, biases
  or norms (as nanoGPT's configure_optimizers), so rarely updated rows (query words, search-only
  items) are not shrunk the fastest. Sparse embedding gradients use SparseAdam (no decay).
- bf16 autocast where the hardware supports it, experts batched into one matmul (models.layers).
- The training samples may be redrawn every epoch (`train` a function of the epoch: fresh
  sampled negatives, seeded by the epoch); the kept epoch is chosen by the mean valid AUC, or by
  a `select` function (valid ranking) for models trained for ranking.
- A resume checkpoint (model, optimizers, every RNG in use: torch CPU and CUDA, numpy; epoch,
  best weights, curve) is written atomically after every epoch; a killed run started again
  continues from it and ends where an uninterrupted run would.
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

from tasks.evaluation.metrics import auc, constant_tasks, r2
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


def decay_groups(model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """(decayed, not decayed, sparse) parameters: weight matrices (2-D and up: linear layers,
    batched experts, attention) decay; embedding tables, biases and norms (1-D) do not; sparse
    embedding tables go to SparseAdam."""
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    sparse = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse
    }
    table_ids = {id(t) for t in tables}
    decay, keep, sp = [], [], []
    for p in model.parameters():
        if id(p) in sparse:
            sp.append(p)
        elif id(p) in table_ids or p.dim() < 2:
            keep.append(p)
        else:
            decay.append(p)
    return decay, keep, sp


def make_optimizers(model: nn.Module, o: EngineOptions) -> list[torch.optim.Optimizer]:
    """AdamW (decoupled weight decay on weight matrices only: `decay_groups`), SparseAdam for
    sparse-gradient embeddings."""
    decay, keep, sparse = decay_groups(model)
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]
    # fused: one kernel for all dense parameters instead of a loop of small ops
    opts: list[torch.optim.Optimizer] = [
        torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, fused=True)
    ]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=o.lr))
    return opts


def rng_state() -> dict[str, Any]:
    """Every RNG training draws from: torch CPU and CUDA, numpy's global one (as tensors, so a
    `weights_only` load reads them back)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def auxiliary_loss(model: nn.Module) -> Tensor | None:
    """A model's extra training loss of its last forward pass (SESRec's), if it has one."""
    core = getattr(model, "module", model)  # under DDP the model is wrapped
    return core.auxiliary_loss() if hasattr(core, "auxiliary_loss") else None


def combined_loss(model: nn.Module, per_task: Tensor) -> Tensor:
    """The step's loss: the model's loss balancing (models.balancing) of the per-task losses,
    else their sum."""
    core = getattr(model, "module", model)
    return core.combine(per_task) if hasattr(core, "combine") else per_task.sum()


def fit(
    model: nn.Module,
    train: Samples | Callable[[int], Samples],
    valid: Samples,
    hist: Histories | None,
    o: EngineOptions,
    tasks: list[str],
    resume: Path | None = None,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    select: tuple[str, Callable[[nn.Module], float]] | None = None,
) -> FitResult:
    """Train; keep the weights of the epoch with the best valid score (early stopping): the mean
    valid AUC (R^2 for regression tasks), or `select` = (name, model -> score), e.g. valid
    ranking NDCG@10 for a model trained for ranking.

    `train`: the samples, or a function of the epoch (1, 2, ...) that draws them (sampled
    negatives redrawn every epoch); every rank must draw the same ones. `model` may be wrapped
    in DistributedDataParallel; `resume` is the resume-checkpoint path."""
    rank, world = _rank_world()
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    opts = make_optimizers(model, o)
    gen = torch.Generator(device="cpu").manual_seed(o.seed)
    samples_of = train if callable(train) else (lambda epoch: train)
    device = valid.sparse.device
    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad": 0, "curve": []}
    best_state = copy.deepcopy(core.state_dict())
    resumed_from = 0
    if resume is not None and resume.is_file():
        ck = torch.load(resume, map_location=device, weights_only=True)
        core.load_state_dict(ck["model"])
        for opt, sd in zip(opts, ck["optimizers"], strict=True):
            opt.load_state_dict(sd)
        gen.set_state(ck["generator"])
        set_rng_state(ck["rng"])
        best_state, state = ck["best_state"], ck["state"]
        resumed_from = state["epoch"]
        log(f"resumed from {resume} after epoch {resumed_from}")
    valid_labels = valid.labels.cpu().numpy()
    reg = torch.tensor(o.regression, device=device) if any(o.regression) else None
    for epoch in range(state["epoch"] + 1, o.epochs + 1):
        if state["bad"] >= o.patience:
            break
        t0 = time.perf_counter()
        train_e = samples_of(epoch)
        n = len(train_e)
        shard = n // world  # equal step counts on every rank
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
                logits = model(*make_batch(train_e, hist, idx))
            weight = train_e.weight[idx] if train_e.weight is not None else None
            per_task = masked_loss(logits, train_e.labels[idx], reg, weight)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss = combined_loss(model, per_task)  # after zero_grad: gradnorm sets its grads
            aux = auxiliary_loss(model)
            (loss if aux is None else loss + aux).backward()
            for opt in opts:
                opt.step()
            if hasattr(core, "after_step"):
                core.after_step()
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
        # on the process group's device: NCCL broadcasts CUDA tensors only
        stop = torch.zeros(1, device=device)
        if rank == 0:
            probs = predict(core, valid, hist, o.eval_batch_size, o.bf16, o.regression)
            aucs = valid_scores(probs, valid_labels, tasks, o.regression)
            dead = constant_tasks(probs, tasks)
            mean_auc = float(np.nanmean(list(aucs.values())))
            extra = {} if select is None else {f"valid_{select[0]}": float(select[1](core))}
            score = mean_auc if select is None else extra[f"valid_{select[0]}"]
            row = {
                "epoch": epoch,
                "train_loss": float(train_loss.sum()),
                **{f"train_loss_{t}": float(v) for t, v in zip(tasks, train_loss, strict=True)},
                # what selects the epoch: `select`'s score, else the mean over tasks of AUC
                # (binary) or R^2 (regression)
                "valid_score": score,
                "valid_mean_auc": mean_auc,
                **extra,
                **{f"valid_score_{t}": v for t, v in aucs.items()},
                # tasks predicted the same for every valid row: nothing to rank (a dead tower)
                "constant_tasks": dead,
                "seconds": seconds,
                "samples_per_s": shard * world / seconds,
            }
            weights = core.loss_weights() if hasattr(core, "loss_weights") else None
            if weights is not None:  # loss balancing: the task weights it has learnt
                row["loss_weights"] = dict(zip(tasks, weights, strict=True))
            state["curve"].append(row)
            log(
                f"epoch {epoch}/{o.epochs} loss {row['train_loss']:.4f} valid score {score:.4f} "
                + (f"({select[0]}; mean auc {mean_auc:.4f}) " if select else "")
                + f"({', '.join(f'{t} {v:.3f}' for t, v in aucs.items())}) "
                f"{seconds:.1f}s {row['samples_per_s']:,.0f} samples/s"
            )
            if dead:
                log(
                    f"warning: epoch {epoch}'s valid predictions of {', '.join(dead)} are the "
                    "same for every row (its tower's units all inactive?): try another "
                    "train.seed, wider towers or a lower train.lr"
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
            "rng": rng_state(),
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
