"""ONNX export: every model kind, a dynamic batch, onnxruntime logits within 1e-4 of PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tests.test_models as tm
import tests.test_sesrec as ts
from models.embedding import EmbeddingSpec
from models.registry import KINDS, build_model
from tasks.serving.onnx import OnnxScorer, as_feed, export_onnx, parity

# one config of every kind (the test files' own), SESRec with and without its search branch
CASES = [
    ("shared_bottom", tm.SPEC, tm.CONFIGS[0][1], tm.inputs),
    ("omoe", tm.SPEC, {"n_experts": 3, "expert": [16], "tower": [8]}, tm.inputs),
    ("mmoe", tm.SPEC, tm.CONFIGS[2][1], tm.inputs),
    ("mmoe", tm.SPEC, {**tm.CONFIGS[2][1], "loss_weighting": "gradnorm"}, tm.inputs),
    ("ple", tm.SPEC, tm.CONFIGS[5][1], tm.inputs),
    ("esmm", tm.SPEC, tm.CONFIGS[7][1], tm.inputs),
    ("aitm", tm.SPEC, tm.CONFIGS[8][1], tm.inputs),
    ("single_task", tm.SPEC, {"bottom": [16], "tower": [8]}, tm.inputs),
    ("sesrec", ts.SPEC, ts.FULL, ts.inputs),
    ("sesrec", ts.SPEC, ts.NOSEARCH, ts.inputs),
    ("sesrec", ts.SPEC, ts.DEFAULTS, ts.inputs),  # sarflow's split and the match input
    ("sesrec", ts.SPEC, ts.RULE, ts.inputs),
]
IDS = [f"{k}-{i}" for i, (k, *_) in enumerate(CASES)]


def test_every_kind_has_a_case():
    assert {k for k, *_ in CASES} == set(KINDS)


@pytest.mark.parametrize("kind,spec,cfg,inputs", CASES, ids=IDS)
def test_onnx_logits_match_pytorch_at_every_batch_size(tmp_path, kind, spec, cfg, inputs):
    torch.manual_seed(0)
    model = build_model(spec, {"kind": kind, **cfg}, 3).eval()
    gen = torch.Generator().manual_seed(1)
    export_onnx(model, spec, inputs(4, gen), tmp_path / "m.onnx")
    scorer = OnnxScorer(tmp_path / "m.onnx", threads=1)
    for rows in (1, 2, 37):  # the batch dimension is dynamic, a batch of one included
        batch = inputs(rows, torch.Generator().manual_seed(rows))
        assert parity(model, scorer, spec, batch) <= 1e-4
        assert scorer.logits(as_feed(spec, batch)).shape == (rows, 3)


def test_sesrec_rows_without_any_history_score_the_same(tmp_path):
    model = build_model(ts.SPEC, {"kind": "sesrec", **ts.FULL}, 2).eval()
    export_onnx(model, ts.SPEC, ts.inputs(4, torch.Generator().manual_seed(0)), tmp_path / "s.onnx")
    batch = ts.inputs(9, torch.Generator().manual_seed(3), empty=4)
    scorer = OnnxScorer(tmp_path / "s.onnx", threads=1)
    assert np.isfinite(scorer.logits(as_feed(ts.SPEC, batch))).all()
    assert parity(model, scorer, ts.SPEC, batch) <= 1e-4


@pytest.mark.parametrize("bias", [-12.0, 0.0, 6.0, 12.0])
def test_esmm_chains_agree_where_probabilities_are_near_0_and_near_1(tmp_path, bias):
    """Trained towers reach such logits (a long view after a click is near certain for some
    rows): the chain must not lose digits in either runtime there."""
    torch.manual_seed(0)
    model = build_model(tm.SPEC, {"kind": "esmm", **tm.CONFIGS[7][1]}, 3).eval()
    with torch.no_grad():
        model.net.head.towers.b.fill_(bias)
    batch = tm.inputs(64, torch.Generator().manual_seed(0))
    export_onnx(model, tm.SPEC, batch, tmp_path / "e.onnx")
    assert parity(model, OnnxScorer(tmp_path / "e.onnx", threads=1), tm.SPEC, batch) <= 1e-4


@pytest.mark.parametrize("sparse", [(("a", 10), ("b", 5)), ()], ids=["table", "numeric-only"])
def test_a_table_without_histories_exports(tmp_path, sparse):
    """A user's table (census, the MMoE paper's synthetic data) has no history inputs; a
    numeric-only one has no sparse field either (CI caught the first: torch.export refused
    the empty history tuple)."""
    spec = EmbeddingSpec(sparse=sparse, n_dense=3, dim=4)
    model = build_model(spec, {"kind": "mmoe", **tm.CONFIGS[2][1]}, 2).eval()
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, 5, (6, len(sparse)), generator=gen), torch.randn(6, 3), ())
    export_onnx(model, spec, batch, tmp_path / "t.onnx")
    scorer = OnnxScorer(tmp_path / "t.onnx", threads=1)
    assert scorer.inputs == ["sparse", "dense"]  # no history input; (B, 0) sparse if none
    assert parity(model, scorer, spec, batch) <= 1e-4


def test_a_trained_change_shows_in_the_parity_check(tmp_path):
    """The check compares against the model it is given: another model's weights fail it."""
    torch.manual_seed(0)
    cfg = {"kind": "mmoe", **tm.CONFIGS[2][1]}
    model = build_model(tm.SPEC, cfg, 2).eval()
    batch = tm.inputs(8, torch.Generator().manual_seed(0))
    export_onnx(model, tm.SPEC, batch, tmp_path / "m.onnx")
    scorer = OnnxScorer(tmp_path / "m.onnx", threads=1)
    other = build_model(tm.SPEC, cfg, 2).eval()  # other initial weights
    assert parity(other, scorer, tm.SPEC, batch) > 1e-3
    probs = scorer.probabilities(as_feed(tm.SPEC, batch))
    assert ((probs > 0) & (probs < 1)).all()


def test_a_batch_missing_an_input_names_it(tmp_path):
    model = build_model(tm.SPEC, {"kind": "mmoe", **tm.CONFIGS[2][1]}, 2).eval()
    batch = tm.inputs(4, torch.Generator().manual_seed(0))
    export_onnx(model, tm.SPEC, batch, tmp_path / "m.onnx")
    feed = as_feed(tm.SPEC, batch)
    del feed["words"]
    with pytest.raises(ValueError, match="words"):
        OnnxScorer(tmp_path / "m.onnx").logits(feed)


def test_an_example_of_one_row_is_refused(tmp_path):
    model = build_model(tm.SPEC, {"kind": "mmoe", **tm.CONFIGS[2][1]}, 2).eval()
    with pytest.raises(ValueError, match="at least 2 rows"):
        export_onnx(model, tm.SPEC, tm.inputs(1), tmp_path / "m.onnx")
