"""evaluate@MODEL: test-set AUC, GAUC and logloss per task, into a DVC metrics file."""

from __future__ import annotations

import argparse

import torch

from tasks.io import write_json_atomic
from tasks.metrics import task_metrics
from tasks.params import load_params
from tasks.tensors import load_histories, load_samples, read_spec
from tasks.train import load_checkpoint, predict, resolve_device


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model name under `models:` in params.yaml")
    args = ap.parse_args(argv)
    params = load_params()
    torch.set_num_threads(params.train.threads)
    device = resolve_device(params.train.device)
    out = params.paths.artifacts / args.model
    model, config = load_checkpoint(out / "model.pt")
    model.to(device)
    feats = params.paths.features
    spec = read_spec(feats)
    tasks = config["tasks"]
    test = load_samples(feats, "rec_test", spec, tasks, device)
    probs = predict(model, test, load_histories(feats, spec, device), params.evaluate.batch_size)
    metrics = task_metrics(test.labels.cpu().numpy(), probs, test.user, tasks)
    write_json_atomic(out / "metrics.json", metrics)
    for t, m in metrics.items():
        print(
            f"evaluate@{args.model}: {t:10s} AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}"
        )


if __name__ == "__main__":
    main()
