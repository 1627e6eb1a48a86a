"""SESRec training throughput: this tree's models/ against the models/ of a baseline git revision,
on the project's own features.

Run it in a project whose features and candidates stages have run (`dvc repro candidates`,
seconds on the built-in data):

    python bench/sesrec_speed.py                       # every SESRec model, against BASELINE
    python bench/sesrec_speed.py --models sesrec --rounds 5 --baseline HEAD~3

Each round runs each implementation in its own process (ABAB..., so a noisy neighbour slows
both), the baseline with the revision's models/ package first on its path and this tree's
tasks/. Both train params.yaml's section from the same initial weights (the current model's,
loaded by parameter name) on the same batches of the train stage's epoch-1 samples (one
sampled negative per click), with the engine's optimiser and losses. samples/s is the median
round; the ratio is current / baseline. The largest difference in logits and in the extra
(InfoNCE + triplet) loss on the first batch is printed: the changes measured here are meant to
compute the same function. GFLOP/s counts the current model's matmul FLOPs per step
(torch.utils.flop_counter, forward and backward); "of the matmul rate" sets it against an fp32
matmul of the feed encoder's QKV shape timed in the same run: how close the step is to what
the arithmetic alone would allow.

SESRec is not in bench/train_speed.py: it reads feed and search histories, which that script's
synthetic table does not have.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the last commit with PyTorch's nn.TransformerEncoderLayer, one target attention per part and
# nn.Embedding lookups
BASELINE = "c5048fa"
MODELS = ("sesrec", "sesrec_nodis", "sesrec_nosearch")


def baseline_tree(rev: str) -> Path:
    """A folder holding the `models` package as it was at `rev`."""
    out = Path(tempfile.mkdtemp(prefix="sesrec-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "models"], capture_output=True, check=True
    ).stdout
    tar = out / "models.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as f:
        f.extractall(out, filter="data")
    return out


def one(a: argparse.Namespace) -> None:
    """One implementation, one round: `a.steps` timed training steps (after 2 warm-up steps and
    one counted for its FLOPs)."""
    import dataclasses

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasks.config.params import load_params
    from tasks.train import epoch_samples
    from tasks.training.checkpoint import build_model, engine_options
    from tasks.training.engine import auxiliary_loss, combined_loss, make_optimizers, masked_loss
    from tasks.training.tensors import load_histories, make_batch, read_spec, scenario_samples

    torch.set_num_threads(a.threads)
    params = load_params()
    feats, device = params.paths.features, torch.device("cpu")
    spec = read_spec(feats)
    torch.manual_seed(0)
    model, config = build_model(params, a.one, spec, sparse=False)
    state = Path(a.state)
    if state.exists():  # the same initial weights as the other implementation
        model.load_state_dict(torch.load(state, weights_only=True))
    else:
        torch.save(model.state_dict(), state)
    tasks = config["tasks"]
    train = scenario_samples(feats, "train", spec, config["scenario"], tasks, device)
    samples = epoch_samples(train, spec, tasks, config["fit"]["sampled_negatives"], 0)
    samples = samples(1) if callable(samples) else samples
    hist = load_histories(feats, spec, device)
    perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    batches = perm.split(params.train.batch_size)
    torch.manual_seed(1)  # InfoNCE draws its pair subset: the same draw for both
    first = model(*make_batch(samples, hist, batches[0]))
    extra = auxiliary_loss(model)
    opts = engine_options(params.train, device, False, 0, "sesrec")
    opts = dataclasses.replace(opts, weight_decay=config["fit"]["weight_decay"])
    optimizers = make_optimizers(model, opts)

    def step(idx: torch.Tensor) -> None:
        logits = model(*make_batch(samples, hist, idx))
        per_task = masked_loss(logits, samples.labels[idx], None)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss = combined_loss(model, per_task)
        aux = auxiliary_loss(model)
        (loss if aux is None else loss + aux).backward()
        for opt in optimizers:
            opt.step()

    for idx in batches[:2]:
        step(idx)
    with FlopCounterMode(display=False) as flops:  # matmul FLOPs of one step, backward included
        step(batches[2])
    t = time.perf_counter()
    for idx in batches[3 : 3 + a.steps]:
        step(idx)
    seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "samples_per_s": a.steps * params.train.batch_size / seconds,
                "gflop_per_s": flops.get_total_flops() * a.steps / seconds / 1e9,
                "logits": first.detach().flatten()[:4096].tolist(),
                "extra": None if extra is None else float(extra.detach()),
            }
        )
    )


def matmul_rate(m: int, k: int, n: int, threads: int, repeats: int = 20) -> float:
    """GFLOP/s of an fp32 (m, k) @ (k, n) matmul on this CPU: what the arithmetic can reach."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - t) / 1e9


def run(impl_path: Path | None, model: str, state: Path, a: argparse.Namespace) -> dict:
    """One round of one implementation in a fresh process (`impl_path`: the baseline's tree)."""
    env = dict(os.environ)
    paths = ([str(impl_path)] if impl_path else []) + [str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--one", model, "--state", str(state)]
    cmd += ["--steps", str(a.steps), "--threads", str(a.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{model} ({impl_path or 'current'}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--baseline", default=BASELINE, help="a git revision (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return one(a)
    base = baseline_tree(a.baseline)
    print(
        f"SESRec training, {a.threads} threads, {a.rounds} rounds of {a.steps} steps; "
        f"baseline: models/ at {a.baseline}\n"
    )
    # the feed encoder's QKV matmul at batch 2048 x 30 steps: the model's most common shape
    ceiling = matmul_rate(61440, 32, 96, a.threads)
    print(
        "| model | baseline samples/s | current samples/s | ratio | current GFLOP/s "
        "| of the matmul rate | max logit diff | extra-loss diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.models.split(","):
        state = base / f"{name}-init.pt"
        rounds = [(run(None, name, state, a), run(base, name, state, a)) for _ in range(a.rounds)]
        cur, old = rounds[0]
        logit = max(abs(x - y) for x, y in zip(cur["logits"], old["logits"], strict=True))
        extra = 0.0 if cur["extra"] is None else abs(cur["extra"] - old["extra"])
        rate = [statistics.median(r[k]["samples_per_s"] for r in rounds) for k in (0, 1)]
        gflops = statistics.median(r[0]["gflop_per_s"] for r in rounds)
        print(
            f"| {name} | {rate[1]:,.0f} | {rate[0]:,.0f} | {rate[0] / rate[1]:.2f}x "
            f"| {gflops:.1f} | {gflops / ceiling:.0%} | {logit:.1e} | {extra:.1e} |",
            flush=True,
        )
    print(
        f"\nmatmul rate: {ceiling:.1f} GFLOP/s, fp32 (61440 x 32) @ (32 x 96) on {a.threads} "
        "threads (torch.utils.flop_counter counts the steps' matmul FLOPs, backward included)"
    )
    return None


if __name__ == "__main__":
    main()
