"""The MMoE paper's synthetic benchmark: two regression tasks whose correlation is a chosen p.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, section 4.2: take orthogonal unit vectors u1, u2 in R^d; set
w1 = c u1 and w2 = c (p u1 + sqrt(1 - p^2) u2); draw x ~ N(0, I_d); then

    y_k = w_k^T x + sum_{i=1..m} sin(alpha_i w_k^T x + beta_i) + eps_k,   eps_k ~ N(0, 0.01)

so the tasks' Pearson correlation falls with p (the cosine of w1 and w2). Our choices where the
paper leaves values open: d = 100, c = 1, m = 10, alpha_i and beta_i ~ N(0, 1) drawn once per
dataset seed. Test loss is the mean squared error averaged over the two tasks.

`frequency` scales the alphas (alpha_i ~ N(0, frequency^2)): 1 is the paper's data, which the
models here fit to R^2 ~ 0.96; higher values give the harder variant of sharper sinusoids that
every model of this size fits little better than linear regression.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.embedding import EmbeddingSpec
from models.registry import build_model
from tasks.training.engine import EngineOptions, fit, predict
from tasks.training.tensors import Samples

D, C, M, NOISE_STD = 100, 1.0, 10, 0.1
TASKS = ["y1", "y2"]
# sizes after the paper: Shared-Bottom's bottom about as large as the 8 experts of MMoE together
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "shared_bottom": ("shared_bottom", {"bottom": [128], "tower": [8]}),
    "omoe": ("omoe", {"n_experts": 8, "expert": [16], "tower": [8]}),
    "mmoe": ("mmoe", {"n_experts": 8, "expert": [16], "tower": [8]}),
    "ple": (
        "ple",
        {"n_levels": 1, "n_shared": 4, "n_specific": 2, "expert": [16], "tower": [8]},
    ),
}


@dataclass(frozen=True)
class Data:
    x: np.ndarray  # (N, d) float32
    y: np.ndarray  # (N, 2) float32


def make_data(p: float, n: int, seed: int, frequency: float = 1.0) -> Data:
    """n samples of the two tasks with weight cosine p (the paper's procedure, seeded)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, 2)))  # two orthonormal columns
    u1, u2 = q[:, 0], q[:, 1]
    w1 = C * u1
    w2 = C * (p * u1 + math.sqrt(max(0.0, 1 - p * p)) * u2)
    alpha, beta = frequency * rng.normal(size=M), rng.normal(size=M)
    x = rng.normal(size=(n, D))
    ys = []
    for w in (w1, w2):
        z = x @ w
        y = z + np.sin(np.outer(z, alpha) + beta).sum(1) + rng.normal(0, NOISE_STD, n)
        ys.append(y)
    return Data(x.astype(np.float32), np.stack(ys, 1).astype(np.float32))


def r2(mse: np.ndarray, var: np.ndarray) -> float:
    """1 - MSE / label variance per task, averaged: comparable across seeds, whose label
    variances differ (a lot on the harder variant)."""
    return float((1 - mse / var).mean())


def held_out_label_variance(
    p: float,
    seed: int,
    frequency: float = 1.0,
    n_train: int = 20_000,
    n_valid: int = 4_000,
    n_test: int = 10_000,
) -> np.ndarray:
    """The variance of each task's test labels of run()'s dataset (the data are seeded, so a
    saved run's R² can be recovered from its MSE)."""
    y = make_data(p, n_train + n_valid + n_test, seed, frequency).y[n_train + n_valid :]
    return y.var(0)


def samples(d: Data) -> Samples:
    n = len(d.x)
    return Samples(
        sparse=torch.zeros(n, 0, dtype=torch.long),
        dense=torch.from_numpy(d.x),
        labels=torch.from_numpy(d.y),
        hist=torch.zeros(n, 4, dtype=torch.long),
        user=None,
    )


def run(
    model: str,
    p: float,
    seed: int,
    n_train: int = 20_000,
    n_valid: int = 4_000,
    n_test: int = 10_000,
    epochs: int = 60,
    lr: float = 3e-3,
    batch_size: int = 256,
    patience: int = 5,
    frequency: float = 1.0,
) -> dict[str, Any]:
    """Train one model on one (p, seed) dataset; test MSE per task and averaged."""
    data = make_data(p, n_train + n_valid + n_test, seed, frequency)
    cut = [n_train, n_train + n_valid]
    parts = [Data(x, y) for x, y in zip(np.split(data.x, cut), np.split(data.y, cut), strict=True)]
    train, valid, test = (samples(d) for d in parts)
    torch.manual_seed(seed)
    kind, cfg = MODELS[model]
    net = build_model(EmbeddingSpec(sparse=(), n_dense=D), {"kind": kind, **cfg}, len(TASKS))
    opts = EngineOptions(
        epochs=epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        regression=(True, True),
    )
    t0 = time.perf_counter()
    result = fit(net, train, valid, None, opts, TASKS, log=lambda _: None)
    net.load_state_dict(result.state_dict)
    pred = predict(net, test, None, 65536, regression=(True, True))
    mse = ((pred - parts[2].y) ** 2).mean(0)
    var = parts[2].y.var(0)
    corr = float(np.corrcoef(data.y[:, 0], data.y[:, 1])[0, 1])
    return {
        "model": model,
        "p": p,
        "seed": seed,
        "frequency": frequency,
        "test_mse": float(mse.mean()),
        "test_mse_y1": float(mse[0]),
        "test_mse_y2": float(mse[1]),
        "test_r2": r2(mse, var),
        "label_correlation": round(corr, 4),
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - t0, 2),
        "parameters": sum(x.numel() for x in net.parameters()),
    }
