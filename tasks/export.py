"""export@MODEL: the trained model as ONNX for software outside PyTorch, checked before it lands.

Writes `artifacts/MODEL/model.onnx` (tasks.serving.onnx: dynamic batch, the weights inside) and
`export.json`: the file's size, its inputs, the largest absolute logit difference between
onnxruntime and PyTorch on the first `export.rows` test rows, and each one's latency per 1,000
rows (median of `export.repeats`, `train.threads` threads). A difference above
`export.tolerance` fails the stage and leaves the previous model.onnx in place.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from models.embedding import EmbeddingSpec
from tasks.config.params import Params, load_params
from tasks.io.atomic import atomic_path, write_json_atomic
from tasks.serving.onnx import Batch, OnnxScorer, as_feed, export_onnx, latency_ms, parity
from tasks.training.checkpoint import load_checkpoint
from tasks.training.tensors import load_histories, make_batch, read_spec, scenario_samples


def test_batch(params: Params, config: dict[str, Any], rows: int) -> Batch:
    """A model's inputs for its first `rows` test samples (CPU), in evaluate's order: the rows
    whose predictions are the first of its predictions.parquet."""
    spec_json = read_spec(params.paths.features)
    cpu = torch.device("cpu")
    scenario = config.get("scenario", "feed")
    test = scenario_samples(
        params.paths.features, "test", spec_json, scenario, config["tasks"], cpu
    )
    hist = load_histories(params.paths.features, spec_json, cpu)
    return make_batch(test, hist, torch.arange(min(rows, len(test))))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model name under `models:` in params.yaml")
    args = ap.parse_args(argv)
    params = load_params()
    opts = params.export
    torch.set_num_threads(params.train.threads)
    out = params.paths.artifacts / args.model
    model, config = load_checkpoint(out / "model.pt")
    model.eval()
    tasks = config["tasks"]
    batch = test_batch(params, config, opts.rows)
    if len(batch[0]) < 2:
        raise SystemExit(f"export@{args.model}: {len(batch[0])} test rows; an export needs 2+")
    spec = EmbeddingSpec.from_dict(config["embedding"])
    with atomic_path(out / "model.onnx") as tmp:
        export_onnx(model, spec, batch, tmp)
        scorer = OnnxScorer(tmp, threads=params.train.threads)
        diff = parity(model, scorer, spec, batch)
        if diff > opts.tolerance:
            raise SystemExit(
                f"export@{args.model}: onnxruntime and PyTorch logits differ by up to {diff:.3g} "
                f"on {len(batch[0])} test rows (export.tolerance {opts.tolerance:g}); "
                f"{out / 'model.onnx'} is left as it was"
            )
        size = tmp.stat().st_size
        feed = as_feed(spec, batch)
        per_1000 = 1000 / len(batch[0])
        with torch.no_grad():
            ort_ms = latency_ms(lambda: scorer.logits(feed), opts.repeats) * per_1000
            torch_ms = latency_ms(lambda: model(*batch), opts.repeats) * per_1000
    report = {
        "format": "onnx",
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "bytes": size,
        "inputs": scorer.inputs,
        "tasks": tasks,
        "rows": len(batch[0]),
        "max_abs_logit_diff": diff,
        "tolerance": opts.tolerance,
        "latency_ms_per_1000_rows": {"onnxruntime": ort_ms, "torch": torch_ms},
        "threads": params.train.threads,
    }
    write_json_atomic(out / "export.json", report)
    print(
        f"export@{args.model}: model.onnx {size / 1e6:.2f} MB, max |logit diff| {diff:.2e} on "
        f"{len(batch[0])} test rows; per 1,000 rows onnxruntime {ort_ms:.2f} ms, "
        f"torch {torch_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
