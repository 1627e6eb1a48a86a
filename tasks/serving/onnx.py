"""A trained model as ONNX, and scoring it with onnxruntime: what software outside PyTorch loads.

Every kind (Shared-Bottom, OMoE, MMoE, PLE, ESMM, AITM, single-task, SESRec) exports through
`torch.onnx.export(dynamo=True)`, torch's supported exporter (torch.export, then ONNX), with the
batch dimension dynamic; no kind needs the TorchScript fallback. The graph's inputs are named by
the model's inputs: `sparse` (B, fields) int64, `dense` (B, n_dense) float32 and one per
history sequence, by its name in the feature spec (`rec_hist_item`, ...); an input the model
never reads (a history the no-search ablation ignores) is pruned from the graph, so
`OnnxScorer` feeds each graph only the inputs it declares. The output is `logits` (B, tasks).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.embedding import EmbeddingSpec
from models.multitask import MultiTaskModel

Batch = tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]


def input_names(spec: EmbeddingSpec) -> list[str]:
    """The graph's input names, in the model's argument order."""
    return ["sparse", "dense", *(s.name for s in spec.sequences)]


def as_feed(spec: EmbeddingSpec, batch: Batch) -> dict[str, np.ndarray]:
    """A batch of model inputs as onnxruntime's name -> array feed."""
    sparse, dense, seqs = batch
    arrays = [sparse, dense, *seqs]
    return {n: t.detach().cpu().numpy() for n, t in zip(input_names(spec), arrays, strict=True)}


def export_onnx(model: MultiTaskModel, spec: EmbeddingSpec, batch: Batch, path: Path) -> None:
    """Write `model` (eval mode, fp32, CPU) as ONNX with a dynamic batch to `path` (a stage
    writes to a temp path and renames it once checked). `batch` is an example input (two rows or
    more, so that torch.export does not specialise the batch dimension to 1)."""
    sparse, dense, seqs = batch
    if len(sparse) < 2:
        raise ValueError(f"{path}: an export example needs at least 2 rows, got {len(sparse)}")
    model = model.float().cpu().eval()
    rows = torch.export.Dim("batch", min=1)
    # the histories go as a list: torch.onnx turns an empty tuple of shapes (a table has no
    # histories) into a list, and torch.export then refuses it against a tuple input
    shapes = ({0: rows}, {0: rows}, [{0: rows} for _ in seqs])
    with torch.no_grad(), warnings.catch_warnings():
        # torch.export's notes that change nothing here: the inputs share one batch axis, and
        # AITM / SESRec set their training-only auxiliary loss during the traced forward
        warnings.filterwarnings("ignore", message="# The axis name")
        warnings.filterwarnings("ignore", message="The tensor attribute .*aux_loss")
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
        # an input the model never reads is pruned (see above), so fewer inputs than shapes
        warnings.filterwarnings("ignore", message="# ONNX model has different number of inputs")
        torch.onnx.export(
            model,
            (sparse, dense, list(seqs)),
            str(path),
            input_names=input_names(spec),
            output_names=["logits"],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,  # one file: the weights inside the graph
            verbose=False,
        )


class OnnxScorer:
    """An exported model on onnxruntime (CPU): logits or probabilities for a batch of inputs."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def logits(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        missing = [n for n in self.inputs if n not in feed]
        if missing:
            raise ValueError(f"{self.path}: the graph needs inputs {missing}, not in the batch")
        return self.session.run(["logits"], {n: feed[n] for n in self.inputs})[0]

    def probabilities(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return 1 / (1 + np.exp(-self.logits(feed)))


def parity(model: MultiTaskModel, scorer: OnnxScorer, spec: EmbeddingSpec, batch: Batch) -> float:
    """The largest absolute logit difference between PyTorch and onnxruntime on `batch`."""
    with torch.no_grad():
        ours = model.float().cpu().eval()(batch[0], batch[1], batch[2]).numpy()
    return float(np.abs(scorer.logits(as_feed(spec, batch)) - ours).max())


def latency_ms(run: Any, repeats: int) -> float:
    """The median wall time of `run()` in milliseconds over `repeats` calls, after one warm-up."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)
