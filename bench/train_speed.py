"""Training speed: sarflow's engine against DeepCTR-Torch and torch-rechub, same data, same run.

The dataset (seeded): N training rows, 8 sparse features (vocabularies 100 to 100k, Zipf-like
ids) + 4 dense, labels click and like from a planted additive signal; embedding 16; MMoE 4
experts [256, 128], PLE 1 shared + 1 specific expert per task in 2 levels, Shared-Bottom
[256, 128]; towers [64]; batch 2048, Adam 1e-3, one epoch. Each (framework, model) runs in its
own process so peak RSS is its own. Prints samples/s (training loop only), epoch seconds, peak
RSS and per-task test AUC, the ratios to DeepCTR-Torch, then one JSON line.

    python bench/train_speed.py                      # 1M rows, CPU, sarflow + installed peers
    python bench/train_speed.py --device cuda --batch 16384
    python bench/train_speed.py --models ple --rows 200000 --profile 15   # where a step's time goes
    pip install -e '.[bench]'                        # the peers: deepctr-torch, torch-rechub
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCABS = [100, 500, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000]
N_DENSE = 4
TASKS = ["click", "like"]
MODELS = ["shared_bottom", "mmoe", "ple"]


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sparse (N, 8) int64, dense (N, 4) float32, labels (N, 2) float32."""
    rng = np.random.default_rng(seed)
    sparse = np.stack([np.minimum(rng.zipf(1.3, rows), v) - 1 for v in VOCABS], 1).astype(np.int64)
    dense = rng.normal(size=(rows, N_DENSE)).astype(np.float32)
    effects = [np.random.default_rng(seed + 1 + f).normal(0, 0.6, v) for f, v in enumerate(VOCABS)]
    shared = sum(e[sparse[:, f]] for f, e in enumerate(effects)) + dense @ np.array(
        [0.5, -0.4, 0.3, 0.0]
    )
    inter = effects[0][sparse[:, 0]] * effects[2][sparse[:, 2]]  # a cross a linear model misses
    own = (
        np.random.default_rng(seed + 99).normal(0, 0.6, VOCABS[3])[sparse[:, 3]] + 0.4 * dense[:, 3]
    )
    z = [shared + inter, 0.7 * shared + own - 1.0]
    labels = np.stack(
        [rng.random(rows) < 1 / (1 + np.exp(-(x + rng.normal(0, 0.5, rows)))) for x in z], 1
    )
    return sparse, dense, labels.astype(np.float32)


def run_sarflow(model: str, a: argparse.Namespace, data: tuple) -> dict:
    import torch

    from models.embedding import EmbeddingSpec
    from models.registry import build_model
    from tasks.evaluation.metrics import auc
    from tasks.training.engine import (
        EngineOptions,
        bf16_supported,
        fit,
        predict,
        use_sparse_embeddings,
    )
    from tasks.training.tensors import Samples

    torch.manual_seed(0)
    device = torch.device(a.device)
    (xs, xd, y), (ts, td, ty) = data

    def samples(s: np.ndarray, d: np.ndarray, lab: np.ndarray) -> Samples:
        n = len(s)
        return Samples(
            torch.from_numpy(s).to(device), torch.from_numpy(d).to(device), torch.from_numpy(lab).to(device),
            torch.zeros(n, 4, dtype=torch.long, device=device), np.zeros(n, np.int64),
        )  # fmt: skip

    spec = EmbeddingSpec(
        sparse=tuple((f"f{i}", v) for i, v in enumerate(VOCABS)), n_dense=N_DENSE, dim=16
    )
    cfg = {
        "shared_bottom": {"bottom": [256, 128], "tower": [64]},
        "mmoe": {"n_experts": 4, "expert": [256, 128], "tower": [64]},
        "ple": {"n_levels": 2, "n_shared": 1, "n_specific": 1, "expert": [256, 128], "tower": [64]},
    }[model]
    bf16 = a.precision == "bf16" or (a.precision == "auto" and bf16_supported(device))
    sparse = use_sparse_embeddings(a.embeddings, sum(VOCABS), distributed=False)
    net = build_model(spec, {"kind": model, **cfg}, len(TASKS), sparse=sparse).to(device)
    train, test = samples(xs, xd, y), samples(ts, td, ty)
    opts = EngineOptions(
        epochs=a.epochs, patience=a.epochs, batch_size=a.batch, lr=1e-3, bf16=bf16, sparse=sparse
    )
    result = fit(net, train, test, None, opts, TASKS, log=lambda m: None)
    seconds = sum(r["seconds"] for r in result.curve)
    probs = predict(net, test, None, 65536, bf16)
    return {
        "seconds": seconds,
        "auc": {t: auc(ty[:, i], probs[:, i]) for i, t in enumerate(TASKS)},
        "note": f"{'bf16' if bf16 else 'fp32'}, {'sparse' if sparse else 'dense'} embeddings",
    }


def run_deepctr(model: str, a: argparse.Namespace, data: tuple) -> dict:
    import requests  # DeepCTR-Torch checks PyPI for a new version on import: never let it

    def offline(*args: object, **kwargs: object) -> None:
        raise requests.ConnectionError("network disabled in the benchmark")

    requests.get = offline  # type: ignore[assignment]
    import torch
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import MMOE, PLE, SharedBottom

    from tasks.evaluation.metrics import auc

    torch.manual_seed(0)
    (xs, xd, y), (ts, td, ty) = data
    cols = [SparseFeat(f"f{i}", v, embedding_dim=16) for i, v in enumerate(VOCABS)]
    cols += [DenseFeat(f"d{i}", 1) for i in range(N_DENSE)]
    common = {
        "tower_dnn_hidden_units": (64,),
        "task_types": ("binary",) * 2,
        "task_names": tuple(TASKS),
        "device": a.device,
    }
    if model == "mmoe":
        net = MMOE(
            cols,
            num_experts=4,
            expert_dnn_hidden_units=(256, 128),
            gate_dnn_hidden_units=(),
            **common,
        )
    elif model == "ple":
        net = PLE(
            cols,
            shared_expert_num=1,
            specific_expert_num=1,
            num_levels=2,
            expert_dnn_hidden_units=(256, 128),
            gate_dnn_hidden_units=(),
            **common,
        )
    else:
        net = SharedBottom(cols, bottom_dnn_hidden_units=(256, 128), **common)
    net.compile("adam", loss=["binary_crossentropy"] * 2)

    def inputs(s: np.ndarray, d: np.ndarray) -> dict:
        return {
            **{f"f{i}": s[:, i] for i in range(len(VOCABS))},
            **{f"d{i}": d[:, i] for i in range(N_DENSE)},
        }

    t0 = time.perf_counter()
    net.fit(inputs(xs, xd), y, batch_size=a.batch, epochs=a.epochs, verbose=0)
    seconds = time.perf_counter() - t0
    probs = net.predict(inputs(ts, td), batch_size=65536)
    return {
        "seconds": seconds,
        "auc": {t: auc(ty[:, i], probs[:, i]) for i, t in enumerate(TASKS)},
        "note": "fp32",
    }


def run_rechub(model: str, a: argparse.Namespace, data: tuple) -> dict:
    import torch
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE, PLE, SharedBottom
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.manual_seed(0)
    os.environ.setdefault("TQDM_DISABLE", "1")
    (xs, xd, y), (ts, td, ty) = data
    feats = [SparseFeature(f"f{i}", v, embed_dim=16) for i, v in enumerate(VOCABS)]
    feats += [DenseFeature(f"d{i}") for i in range(N_DENSE)]
    types = ["classification"] * 2
    towers = [{"dims": [64]}] * 2
    if model == "mmoe":
        net = MMOE(
            feats, types, n_expert=4, expert_params={"dims": [256, 128]}, tower_params_list=towers
        )
    elif model == "ple":
        net = PLE(
            feats,
            types,
            n_level=2,
            n_expert_specific=1,
            n_expert_shared=1,
            expert_params={"dims": [256, 128]},
            tower_params_list=towers,
        )
    else:
        net = SharedBottom(
            feats, types, bottom_params={"dims": [256, 128]}, tower_params_list=towers
        )

    def inputs(s: np.ndarray, d: np.ndarray) -> dict:
        return {
            **{f"f{i}": s[:, i] for i in range(len(VOCABS))},
            **{f"d{i}": d[:, i] for i in range(N_DENSE)},
        }

    train_dl, _, test_dl = DataGenerator(inputs(xs, xd), y).generate_dataloader(
        x_val=inputs(ts[:10], td[:10]),
        y_val=ty[:10],
        x_test=inputs(ts, td),
        y_test=ty,
        batch_size=a.batch,
    )
    trainer = MTLTrainer(
        net,
        types,
        optimizer_params={"lr": 1e-3, "weight_decay": 1e-5},
        n_epoch=a.epochs,
        device=a.device,
        model_path=str(Path(a.tmp)),
    )
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        trainer.train_one_epoch(train_dl)
    seconds = time.perf_counter() - t0
    scores = trainer.evaluate(trainer.model, test_dl)
    return {
        "seconds": seconds,
        "auc": dict(zip(TASKS, map(float, scores), strict=True)),
        "note": "fp32",
    }


RUNNERS = {"sarflow": run_sarflow, "deepctr-torch": run_deepctr, "torch-rechub": run_rechub}


def one(a: argparse.Namespace) -> None:
    """Child process: one (framework, model) run; prints one JSON line."""
    import torch

    torch.set_num_threads(a.threads)
    framework, model = a.one.split(":")
    xs, xd, y = make_data(a.rows + a.test_rows, seed=0)
    data = ((xs[: a.rows], xd[: a.rows], y[: a.rows]), (xs[a.rows :], xd[a.rows :], y[a.rows :]))
    from contextlib import nullcontext

    from torch.profiler import ProfilerActivity, profile

    # with --profile: torch.profiler around the whole run (training and the test prediction)
    prof = profile(activities=[ProfilerActivity.CPU]) if a.profile else nullcontext()
    with prof:
        out = RUNNERS[framework](model, a, data)
    if a.profile:
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.profile)
        out["profile"] = table
    out.update(
        framework=framework,
        model=model,
        samples_per_s=a.rows * a.epochs / out["seconds"],
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print("RESULT " + json.dumps(out), flush=True)


def available(framework: str) -> bool:
    module = {"sarflow": "torch", "deepctr-torch": "deepctr_torch", "torch-rechub": "torch_rechub"}[
        framework
    ]
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--test-rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--embeddings", choices=["auto", "sparse", "dense"], default="auto")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--frameworks", default="sarflow,deepctr-torch,torch-rechub")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print each run's N costliest ops (torch.profiler, self CPU time); slows the runs",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return one(a)
    results = []
    for framework in a.frameworks.split(","):
        if not available(framework):
            print(f"{framework}: not installed, skipped (pip install -e '.[bench]')")
            continue
        for model in a.models.split(","):
            cmd = [sys.executable, __file__, "--one", f"{framework}:{model}", *sys.argv[1:]]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1")
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{framework} {model}: failed\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
                continue
            r = json.loads(line[7:])
            table = r.pop("profile", None)
            results.append(r)
            aucs = ", ".join(f"{t} {v:.4f}" for t, v in r["auc"].items())
            print(
                f"{framework:14s} {model:14s} {r['samples_per_s']:>10,.0f} samples/s  epoch {r['seconds']:6.1f}s  "
                f"peak RSS {r['peak_rss_mib']:6.0f} MiB  test AUC {aucs}  ({r['note']})",
                flush=True,
            )
            if table:
                print(table, flush=True)
    by = {(r["framework"], r["model"]): r for r in results}
    ratios = {}
    for model in a.models.split(","):
        s = by.get(("sarflow", model))
        for peer in ("deepctr-torch", "torch-rechub"):
            if s and (peer, model) in by:
                ratios[f"{model}_vs_{peer}"] = s["samples_per_s"] / by[peer, model]["samples_per_s"]
                print(f"ratio sarflow/{peer} {model}: {ratios[f'{model}_vs_{peer}']:.2f}x")
    setup = {
        k: getattr(a, k)
        for k in (
            "rows",
            "test_rows",
            "epochs",
            "batch",
            "device",
            "threads",
            "precision",
            "embeddings",
        )
    }
    print(json.dumps({"setup": setup, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
