"""Adam with L2 in the gradient (sarflow before 2026-12-02) against AdamW with decoupled decay on
weight matrices only (now), for one model, everything else the same (data, protocol, seed,
epochs, selection). Paired on the candidates stage's test clicks (per-click NDCG@10, bootstrap 95%
CI) and the test rows (click AUC). Run from the project root after `make run`:

    .venv/bin/python bench/optimizer.py [MODEL] [--weight-decay W]

Trains the model twice (a SESRec model: ~5 min each on 2 CPU cores); writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.config.params import load_params  # noqa: E402
from tasks.evaluation import candidates, ranking  # noqa: E402
from tasks.evaluation.paired import paired_auc, paired_mean  # noqa: E402
from tasks.train import epoch_samples, selection  # noqa: E402
from tasks.training import engine  # noqa: E402
from tasks.training.checkpoint import build_model, engine_options, resolve_device  # noqa: E402
from tasks.training.engine import fit, predict  # noqa: E402
from tasks.training.tensors import load_histories, read_spec, scenario_samples  # noqa: E402


def adam_l2(model: torch.nn.Module, o: engine.EngineOptions) -> list[torch.optim.Optimizer]:
    """The former optimiser: Adam, L2 added to every dense parameter's gradient."""
    return [torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="sesrec")
    ap.add_argument("--weight-decay", type=float, default=None, help="default: the model's")
    args = ap.parse_args(argv)
    p = load_params()
    torch.set_num_threads(p.train.threads)
    device = resolve_device(p.train.device)
    feats = p.paths.features
    spec = read_spec(feats)
    c = candidates.load_candidates(feats, p.paths.candidates / "test.parquet")
    hist = load_histories(feats, spec, device)
    results = {}
    for name, make in (("adam_l2", adam_l2), ("adamw", engine.make_optimizers)):
        torch.manual_seed(p.train.seed)
        model, config = build_model(p, args.model, spec)
        tasks, fo = config["tasks"], config["fit"]
        wd = fo["weight_decay"] if args.weight_decay is None else args.weight_decay
        opts = dataclasses.replace(
            engine_options(p.train, device, False, 0, config["kind"]), weight_decay=wd
        )
        train = scenario_samples(feats, "train", spec, "feed", tasks, device)
        valid = scenario_samples(feats, "valid", spec, "feed", tasks, device)
        test = scenario_samples(feats, "test", spec, "feed", tasks, device)
        samples = epoch_samples(train, spec, tasks, fo["sampled_negatives"], p.train.seed)
        select = selection(p, fo["select"], valid, hist, spec, tasks)
        engine.make_optimizers, original = make, engine.make_optimizers
        try:
            result = fit(model, samples, valid, hist, opts, tasks, log=print, select=select)
        finally:
            engine.make_optimizers = original
        model.load_state_dict(result.state_dict)
        click = tasks.index("click")
        rank = candidates.ranks_of(ranking.scores(model, test, hist, c, spec, click))
        probs = predict(model, test, hist, 16384)[:, click]
        results[name] = (rank, probs, result.best_epoch, test.labels[:, click].cpu().numpy())
    (ra, pa, ea, y), (rb, pb, eb, _) = results["adamw"], results["adam_l2"]
    nd = paired_mean(candidates.click_values(ra, "ndcg@10"), candidates.click_values(rb, "ndcg@10"))
    au = paired_auc(y, pa, pb)
    mean = lambda r: float(candidates.click_values(r, "ndcg@10").mean())  # noqa: E731
    print(f"{args.model}: weight decay {wd:g}; best epoch adam_l2 {eb}, adamw {ea}")
    print(
        f"  NDCG@10 adam_l2 {mean(rb):.4f}  adamw {mean(ra):.4f}  "
        f"adamw - adam_l2 {nd['diff']:+.4f} [{nd['lo']:+.4f}, {nd['hi']:+.4f}]"
    )
    print(f"  click AUC adamw - adam_l2 {au['diff']:+.4f} [{au['lo']:+.4f}, {au['hi']:+.4f}]")


if __name__ == "__main__":
    main()
