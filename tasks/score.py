"""score: every user's top-K feed recommendations, from the model a declared metric picks.

The model: among the trained feed models, the best on `score.select` (a click metric of
evaluate's metrics.json: ndcg@10, any ranking metric, or auc); its paired difference from the
runner-up on the same candidates (auc: the same test rows), with a bootstrap 95% CI
(tasks.evaluation.paired), says whether the test set supports the choice at all. The choice is
made on the test set, so the chosen model's level and its lead are optimistic by selection.

Each user is scored from their last logged feed impression (any part): their own fields and
histories (everything they did before it) stay, and every candidate's item-side fields are
swapped in, as the ranking evaluation does (tasks.evaluation.ranking). Candidates: the
`score.pool` items most served in train (0: the whole catalogue), less every item the user was
ever served.

Writes paths.recommendations/:
- top_k.parquet: raw_user_id, rank (1..K), raw_item_id, item_id (encoded), score (the click
  probability), model, model_version (md5 of its model.pt, as DVC hashes it), data_version
  (the features folder's hash in dvc.lock);
- summary.json: the choice (every model's value, the paired CI), the versions, the counts and
  the throughput (users per second);
- model/: the served model as a package other software (and the registry, dvc.yaml's
  `artifacts:` feed-ranker) can take whole: model.pt, model.onnx (where export made one), the
  features' spec.json and vocab/ it reads its inputs through, and profile.json, the profile
  of its train rows that drift checks compare new data with (tasks.serving.drift).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from tasks.config.params import Params, load_params
from tasks.evaluation import paired
from tasks.evaluation.candidates import feed_frames, item_frame, served_pairs
from tasks.io.atomic import atomic_dir
from tasks.io.features import item_side, read_spec, sample_files
from tasks.serving import drift
from tasks.training.checkpoint import load_checkpoint, resolve_device
from tasks.training.items import ItemFields
from tasks.training.tensors import (
    Histories,
    Samples,
    concat_samples,
    load_histories,
    load_samples,
    make_batch,
)

TOP_K_SCHEMA = {
    "raw_user_id": pl.Int64,
    "rank": pl.Int32,
    "raw_item_id": pl.Int64,
    "item_id": pl.Int64,
    "score": pl.Float32,
    "model": pl.Utf8,
    "model_version": pl.Utf8,
    "data_version": pl.Utf8,
}


SELECTABLE = (*paired.RANKING, "auc")  # the click metrics a paired CI exists for


def choose(params: Params) -> dict[str, Any]:
    """The model to serve: every feed model's `score.select` (a click metric of its
    metrics.json), the best, and its paired CI against the runner-up (None when only one model
    has the metric): on the same ranked clicks, or for `auc` on the same test rows."""
    metric, artifacts = params.score.select, params.paths.artifacts
    if metric not in SELECTABLE:
        raise SystemExit(f"score.select {metric!r}: not a click metric; one of {list(SELECTABLE)}")
    values = {}
    for m in params.train.models:
        path = artifacts / m / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model {m} is not evaluated; run evaluate@{m}")
        click = json.loads(path.read_text()).get("click", {})
        if metric in click:
            values[m] = float(click[metric])
    if not values:
        raise SystemExit(
            f"score: no model of train.models has click/{metric} in its metrics.json (no feed "
            "model, or ranking is off with candidates.positives 0: then score.select auc)"
        )
    ranked = sorted(values, key=lambda m: -values[m])  # stable: train.models order breaks ties
    against = None
    if len(ranked) > 1:
        a, b = ranked[:2]
        against = {"runner_up": b, **paired_ci(params, a, b, metric)}
    return {"select": f"click/{metric}", "values": values, "model": ranked[0], "against": against}


def paired_ci(params: Params, a: str, b: str, metric: str) -> dict[str, Any]:
    """Model a minus model b on click `metric`, with its bootstrap 95% CI (tasks.evaluation.paired)."""
    artifacts, r = params.paths.artifacts, params.report
    if metric != "auc":
        ranks = [pl.read_parquet(artifacts / m / "ranks.parquet") for m in (a, b)]
        return paired.rank_pairs(*ranks, r.bootstrap, r.seed)[metric]
    cols = ["file", "row", "y_click", "p_click"]
    pa, pb = (pl.read_parquet(artifacts / m / "predictions.parquet", columns=cols) for m in (a, b))
    both = pa.join(pb, on=["file", "row"], suffix="_b")
    y, p, q = (both[c].to_numpy() for c in ("y_click", "p_click", "p_click_b"))
    return paired.paired_auc(y, p, q, r.bootstrap, r.seed)


def data_version(params: Params, lock: Path = Path("dvc.lock")) -> str:
    """The features folder's hash in dvc.lock (what the model was trained and scored on)."""
    if lock.is_file():
        stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("features", {})
        for out in stage.get("outs", []):
            if Path(out["path"]) == params.paths.features:
                return str(out["md5"])
    return "unversioned"


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Context:
    """Each user's last logged feed impression, as model inputs."""

    samples: Samples
    users: np.ndarray  # (U,) raw user ids, ascending
    rows: np.ndarray  # (U,) their rows in `samples`


def last_impressions(params: Params, spec: dict, device: torch.device) -> Context:
    """Every feed user's latest impression in any part (the later row where two share a time)."""
    train, valid, test = (
        load_samples(params.paths.features, f"rec_{p}", spec, [], device)
        for p in ("train", "valid", "test")
    )
    s = concat_samples(concat_samples(train, valid), test)
    frame = pl.DataFrame({"user": s.user, "time": s.time.cpu().numpy()}).with_row_index("row")
    last = frame.sort(["time", "row"]).group_by("user", maintain_order=True).last().sort("user")
    return Context(s, last["user"].to_numpy(), last["row"].to_numpy().astype(np.int64))


def pool_items(params: Params, frames: dict[str, pl.DataFrame], fields: pl.DataFrame) -> np.ndarray:
    """Row indices into `fields` of the candidate pool: the score.pool most served in train
    (ties by item id), or every catalogue item."""
    if params.score.pool == 0 or params.score.pool >= len(fields):
        return np.arange(len(fields))
    top = (
        frames["train"]
        .filter(pl.col("item_id") > 0)
        .group_by("item_id")
        .len()
        .sort(["len", "item_id"], descending=[True, False])
        .head(params.score.pool)
    )
    return np.sort(np.searchsorted(fields["item_id"].to_numpy(), top["item_id"].to_numpy()))


def served_mask(
    frames: dict[str, pl.DataFrame], users: np.ndarray, pool_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(user position, pool position) of every pool item each user was served, sorted by user."""
    seen = (
        served_pairs(frames)
        .unique()
        .join(pl.DataFrame({"raw_user_id": users}).with_row_index("u"), on="raw_user_id")
        .join(pl.DataFrame({"item_id": pool_ids}).with_row_index("k"), on="item_id")
        .sort("u")
    )
    return seen["u"].to_numpy().astype(np.int64), seen["k"].to_numpy().astype(np.int64)


@dataclass(frozen=True)
class Pool:
    """The candidate pool: its items' ids and item-side fields, and what each user was served."""

    ids: np.ndarray  # (I,) encoded item ids
    items: ItemFields  # their item-side fields, on the scoring device
    served: tuple[np.ndarray, np.ndarray]  # served_mask's pairs
    catalogue: int  # items known in any part


def score_inputs(
    params: Params, spec: dict, device: torch.device
) -> tuple[Context, Histories | None, Pool]:
    """What top_k reads: each user's context, the histories and the candidate pool."""
    feats = params.paths.features
    ctx = last_impressions(params, spec, device)
    frames = feed_frames(feats)
    fields = item_frame(list(frames.values()), item_side(spec))
    pool = pool_items(params, frames, fields)
    ids = fields["item_id"].to_numpy()[pool]
    items = ItemFields.from_frame(fields[pool], spec).to(device)
    served = served_mask(frames, ctx.users, ids)
    return ctx, load_histories(feats, spec, device), Pool(ids, items, served, len(fields))


@torch.no_grad()
def top_k(
    model: torch.nn.Module,
    ctx: Context,
    hist: Histories | None,
    items: ItemFields,
    served: tuple[np.ndarray, np.ndarray],
    task: int,
    k: int,
    batch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(U, k) positions in `items` (the pool) and click probabilities of each user's best
    unserved items, best first; a user with fewer than k unserved pool items gets -1 / NaN in
    the remaining places. `served`: (user position, pool position) pairs, sorted by user."""
    device = ctx.samples.sparse.device
    n, width = len(ctx.users), len(items.ids)
    per = max(1, batch // width)  # users per forward pass
    pool_t = torch.arange(width, device=device)
    su, sk = (torch.from_numpy(a) for a in served)
    best_k = np.full((n, min(k, width)), -1, dtype=np.int64)
    best_p = np.full((n, min(k, width)), np.nan, dtype=np.float32)
    for u0 in range(0, n, per):
        u1 = min(u0 + per, n)
        rows = torch.from_numpy(ctx.rows[u0:u1]).to(device).repeat_interleave(width)
        sparse, dense, seqs = make_batch(ctx.samples, hist, rows)
        sparse, dense = items.swap(sparse, dense, pool_t.repeat(u1 - u0))
        logit = model(sparse, dense, seqs)[:, task].float().reshape(u1 - u0, width).cpu()
        lo, hi = np.searchsorted(served[0], [u0, u1])
        logit[su[lo:hi] - u0, sk[lo:hi]] = -torch.inf  # already served: not a candidate
        value, pos = logit.topk(best_k.shape[1], dim=1)
        ok = torch.isfinite(value)
        best_k[u0:u1] = torch.where(ok, pos, -1).numpy()
        best_p[u0:u1] = torch.where(ok, torch.sigmoid(value), torch.nan).numpy()
    return best_k, best_p


def package(params: Params, name: str, dest: Path) -> None:
    """The served model's package (see the module's docstring) in `dest`."""
    dest.mkdir()
    for f in ("model.pt", "model.onnx"):
        if (params.paths.artifacts / name / f).is_file():
            shutil.copy2(params.paths.artifacts / name / f, dest / f)
    shutil.copy2(params.paths.features / "spec.json", dest / "spec.json")
    shutil.copytree(params.paths.features / "vocab", dest / "vocab")
    rows = drift.feed_rows(params.paths.split, params.paths.source, "train")
    reference = drift.profile(rows, params.drift.bins)
    (dest / "profile.json").write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    feats, out = params.paths.features, params.paths.recommendations
    spec = read_spec(feats)
    if sample_files(spec) != "rec":
        with atomic_dir(out) as tmp:
            pl.DataFrame(schema=TOP_K_SCHEMA).write_parquet(tmp / "top_k.parquet")
            (tmp / "summary.json").write_text(
                json.dumps({"scored": False, "why": "the source has no feed to recommend"})
            )
        print("score: none (the source has no feed to recommend)")
        return
    choice = choose(params)
    name = choice["model"]
    torch.set_num_threads(params.train.threads)
    device = resolve_device(params.train.device)
    model, config = load_checkpoint(params.paths.artifacts / name / "model.pt")
    model.to(device).eval()
    t0 = time.perf_counter()
    ctx, hist, pool = score_inputs(params, spec, device)
    best, prob = top_k(
        model,
        ctx,
        hist,
        pool.items,
        pool.served,
        config["tasks"].index("click"),
        params.score.k,
        params.evaluate.batch_size,
    )
    seconds = time.perf_counter() - t0
    raw = pl.read_parquet(feats / "vocab" / "item_id.parquet")
    raw_of = dict(zip(raw["index"].to_list(), raw["item_id"].to_list(), strict=True))
    keep = best >= 0
    user_pos, rank0 = np.nonzero(keep)
    item_ids = pool.ids[best[keep]]
    versions = {
        "model": name,
        "model_version": file_md5(params.paths.artifacts / name / "model.pt"),
        "data_version": data_version(params),
    }
    recs = pl.DataFrame(
        {
            "raw_user_id": ctx.users[user_pos].astype(np.int64),
            "rank": (rank0 + 1).astype(np.int32),
            "raw_item_id": np.array([raw_of[int(i)] for i in item_ids], dtype=np.int64),
            "item_id": item_ids.astype(np.int64),
            "score": prob[keep],
            **{k: [v] * int(keep.sum()) for k, v in versions.items()},
        },
        schema=TOP_K_SCHEMA,
    )
    summary = {
        "scored": True,
        **choice,
        **versions,
        "k": params.score.k,
        "pool": len(pool.ids),
        "catalogue": pool.catalogue,
        "users": len(ctx.users),
        "users_short_of_k": int((~keep).any(1).sum()),
        "context": "each user's last logged feed impression (any part)",
        "seconds": round(seconds, 3),
        "users_per_s": round(len(ctx.users) / seconds, 1),
        "threads": params.train.threads,
    }
    with atomic_dir(out) as tmp:
        recs.write_parquet(tmp / "top_k.parquet")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        package(params, name, tmp / "model")
    ci = choice["against"]
    vs = f"; against {ci['runner_up']}: {paired.ci_text(ci)}" if ci else " (the only ranked model)"
    print(
        f"score: {name} ({choice['select']} {choice['values'][name]:.4f}{vs}); top {params.score.k}"
        f" of {len(pool.ids):,} items for {len(ctx.users):,} users in {seconds:.1f} s "
        f"({summary['users_per_s']:,.0f} users/s) -> {out}/top_k.parquet"
    )


if __name__ == "__main__":
    main()
