"""The promotion guard: the production model and a candidate, paired on this run's candidates.

Production was trained on an older data version, whose vocabularies and dense scaling differ
from this run's: its checkpoint cannot read this run's encoded features. So this run's split
rows (the test part and the histories it reads) are encoded again with production's own
fitted transforms (the `vocab/` and `spec.json` its package carries: what serving it on new
data does), and the candidates of this run's ranked test clicks are rebuilt from their raw item
ids. Both models then rank the same clicks against the same items, and their per-click
difference on the declared metric gets its bootstrap 95% CI (tasks.evaluation.paired); for
`auc`, on the same test rows.

A package is the folder the score stage writes under paths.recommendations/model: model.pt,
spec.json, vocab/ (the features stage's), profile.json (tasks.serving.drift).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from tasks.config.params import Params
from tasks.evaluation import paired
from tasks.evaluation.candidates import RANKS_SCHEMA, Candidates, ranks_of
from tasks.evaluation.ranking import scores
from tasks.io.features import item_side
from tasks.kuaisar.encoding import Fitted, encode, raw_sides
from tasks.training.checkpoint import load_checkpoint
from tasks.training.engine import predict
from tasks.training.tensors import load_histories, scenario_samples

# the split files a model's test scoring reads: its samples and the histories they index
SCORED = ("rec_test", "src_test", "rec_history", "src_history")


def vocabularies(package: Path) -> dict[str, pl.DataFrame]:
    """A package's (or a features folder's) vocabularies, by name."""
    return {f.stem: pl.read_parquet(f) for f in sorted((package / "vocab").glob("*.parquet"))}


def fitted(package: Path) -> tuple[Fitted, dict[str, Any]]:
    """A package's fitted transforms (vocabularies, dense (mean, std)) and its spec.json."""
    spec = json.loads((package / "spec.json").read_text())
    vocabs = vocabularies(package)
    stats = {c: (float(v["mean"]), float(v["std"])) for c, v in spec["dense_stats"].items()}
    return Fitted(vocabs, stats), spec


def reencode(
    split: Path, raw: Path, package: Path, candidates: pl.DataFrame, dest: Path
) -> tuple[dict[str, Any], Candidates]:
    """This run's test rows and histories (split/) encoded with `package`'s transforms into
    `dest`, and `candidates` (this run's candidates table: row, raw_item_id lists) as
    Candidates over those rows. Returns the package's spec and the candidates."""
    f, spec = fitted(package)
    scan = {name: pl.scan_parquet(split / f"{name}.parquet") for name in SCORED}
    items, users = raw_sides(split, raw)
    for name in SCORED:
        encode(name, scan[name], f, items, users).sink_parquet(dest / f"{name}.parquet")
    # each candidate item as a feed row of its own: encode gives its item-side fields
    ids = np.unique(np.concatenate(candidates["raw_item_id"].to_list() or [[]])).astype(np.int64)
    schema = scan["rec_test"].collect_schema()
    rows = pl.DataFrame({"item_id": ids}).with_columns(
        pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c != "item_id"
    )
    fields = encode("rec_test", rows.select(list(schema)).lazy(), f, items, users)
    fields = fields.select(item_side(spec)).collect()
    width = len(candidates["raw_item_id"][0]) if len(candidates) else 1
    raw_items = np.array(candidates["raw_item_id"].to_list(), dtype=np.int64)
    c = Candidates(
        rows=candidates["row"].to_numpy().astype(np.int64),
        items=np.searchsorted(ids, raw_items).reshape(len(candidates), width),
        fields=fields,
    )
    return spec, c


def production_results(
    params: Params, package: Path, device: torch.device
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The package's model on this run's test candidates and rows, re-encoded its way:
    per-click ranks (as evaluate's ranks.parquet) and click predictions of the feed test rows
    (file rec, row, p_click)."""
    candidates = pl.read_parquet(params.paths.candidates / "test.parquet")
    model, config = load_checkpoint(package / "model.pt")
    model.to(device).eval()
    tasks = config["tasks"]
    click = tasks.index("click")
    with tempfile.TemporaryDirectory(prefix="sarflow-guard-") as tmp:
        dest = Path(tmp)
        spec, c = reencode(params.paths.split, params.paths.source, package, candidates, dest)
        test = scenario_samples(dest, "test", spec, config.get("scenario", "feed"), tasks, device)
        hist = load_histories(dest, spec, device)
        rank = ranks_of(scores(model, test, hist, c, spec, click))
        probs = predict(model, test, hist, params.evaluate.batch_size)[:, click]
        feed_rows = pl.scan_parquet(dest / "rec_test.parquet").select(pl.len()).collect().item()
    ranks = pl.DataFrame(
        {"row": c.rows, "rank": rank, "full_rank": np.full(len(rank), -1), "searched": False},
        schema=RANKS_SCHEMA,
    )
    preds = pl.DataFrame(
        {"file": "rec", "row": np.arange(feed_rows), "p_click": probs[:feed_rows]},
        schema_overrides={"row": pl.Int64},
    )
    return ranks, preds


def against_production(
    params: Params, candidate: str, package: Path, device: torch.device
) -> dict[str, Any]:
    """Candidate model (this run's artifacts/NAME) minus the package's model on score.select,
    paired on this run's test candidates (auc: its feed test rows), with its 95% CI."""
    metric, r = params.score.select, params.report
    ranks, preds = production_results(params, package, device)
    art = params.paths.artifacts / candidate
    if metric == "auc":
        cols = ["file", "row", "y_click", "p_click"]
        mine = pl.read_parquet(art / "predictions.parquet", columns=cols).filter(file="rec")
        both = mine.join(preds, on=["file", "row"], suffix="_b")
        y, p, q = (both[c].to_numpy() for c in ("y_click", "p_click", "p_click_b"))
        return paired.paired_auc(y, p, q, r.bootstrap, r.seed)
    # production is not ranked against the full catalogue here: neither side's full ranks count
    mine = pl.read_parquet(art / "ranks.parquet").with_columns(full_rank=pl.lit(-1, pl.Int64))
    # the same clicks: the searched slice is the candidate's (a property of the click)
    theirs = ranks.drop("searched").join(mine.select("row", "searched"), on="row")
    pairs = paired.rank_pairs(mine, theirs, r.bootstrap, r.seed)
    if metric not in pairs:
        raise ValueError(
            f"score.select {metric}: the guard ranks production on the sampled candidates "
            f"only; promote on one of {sorted(pairs)}"
        )
    return pairs[metric]
