"""torch-rechub as a peer on sarflow's own table split: the same rows, features and test set.

Reads a sarflow project whose source is a table (e.g. the census_income preset) after its
`dvc repro`: the encoded train / valid / test parquet and spec.json of `paths.features` (train-only
vocabularies, standardised numeric columns), and each sarflow model's test predictions. Trains
torch-rechub's SharedBottom, MMOE, PLE and AITM on exactly those encoded rows, with the widths
of the project's model sections, early stopping on valid AUC of the first task (rechub's own
rule), and compares the two frameworks' test AUCs per task on the same rows with a paired
bootstrap 95% CI (tasks/evaluation/paired.py).

    pip install --no-deps torch-rechub==0.9.0          # (make bench installs it)
    python bench/table_peer.py --project DIR [--epochs 8] [--out reports/table_peer]
    python bench/table_peer.py --census CENSUS_DIR --project DIR   # make DIR first: a copy of
        # the project on census-income.data / .test (the census_income preset, group 1), with
        # the models of params.yaml that have a rechub peer, then its `dvc repro`
    python bench/table_peer.py ... --planted   # census-format files from
        # tests/table_files.write_census (no real data): also the planted truth's test AUC

Nothing is downloaded. torch-rechub's README figures come from its own preprocessing and
split; this script puts both frameworks on one split instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.evaluation.metrics import auc  # noqa: E402
from tasks.evaluation.paired import auc_pairs  # noqa: E402

# sarflow model name in the project -> the rechub class that is its peer
PEERS = {
    "shared_bottom": "SharedBottom",
    "mmoe": "MMOE",
    "ple": "PLE",
    "aitm": "AITM",
    # rechub's AITM has no calibrator (the penalty on p(task t) > p(task t-1)): sarflow's aitm
    # with calibration_weight 0 is its like for like; the census project trains both
    "aitm_nocal": "AITM",
}


def rechub_model(kind: str, section: dict[str, Any], feats: list, n_tasks: int) -> Any:
    """rechub's model of the same widths as sarflow's section."""
    from torch_rechub.models import multi_task as mt

    types = ["classification"] * n_tasks
    towers = [{"dims": list(section.get("tower", [64]))}] * n_tasks
    if kind == "mmoe":
        return mt.MMOE(
            feats,
            types,
            n_expert=section["n_experts"],
            expert_params={"dims": section["expert"]},
            tower_params_list=towers,
        )
    if kind == "ple":
        return mt.PLE(
            feats,
            types,
            n_level=section["n_levels"],
            n_expert_specific=section["n_specific"],
            n_expert_shared=section["n_shared"],
            expert_params={"dims": section["expert"]},
            tower_params_list=towers,
        )
    if kind == "aitm":
        return mt.AITM(feats, n_tasks, {"dims": section["bottom"]}, towers)
    return mt.SharedBottom(
        feats, types, bottom_params={"dims": section["bottom"]}, tower_params_list=towers
    )


def run_peer(name: str, project: Path, a: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator, PredictDataset

    params = yaml.safe_load((project / "params.yaml").read_text())
    feats_dir = project / params["paths"]["features"]
    spec = json.loads((feats_dir / "spec.json").read_text())
    tasks = params["train"]["tasks"]
    section = params["models"][name]
    dim = params["train"]["embed_dim"]
    torch.manual_seed(a.seed)
    torch.set_num_threads(params["train"]["threads"])
    os.environ.setdefault("TQDM_DISABLE", "1")
    feats = [SparseFeature(c, n, embed_dim=dim) for c, n in spec["sparse"].items()]
    feats += [DenseFeature(c) for c in spec["dense"]]
    parts = {
        p: pl.read_parquet(feats_dir / f"table_{p}.parquet") for p in ("train", "valid", "test")
    }

    def xy(df: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x = {c: df[c].to_numpy() for c in spec["sparse"]}
        x |= {c: df[c].to_numpy().astype(np.float32) for c in spec["dense"]}
        return x, df.select(tasks).to_numpy().astype(np.float32)

    (xt, yt), (xv, yv), (xs, ys) = (xy(parts[p]) for p in ("train", "valid", "test"))
    train_dl, valid_dl, _ = DataGenerator(xt, yt).generate_dataloader(
        x_val=xv, y_val=yv, x_test=xs, y_test=ys, batch_size=params["train"]["batch_size"]
    )
    net = rechub_model(section["kind"], section, feats, len(tasks))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = MTLTrainer(
            net,
            ["classification"] * len(tasks),
            optimizer_params={"lr": a.lr, "weight_decay": 1e-5},  # rechub's census example
            n_epoch=a.epochs,
            earlystop_patience=params["train"]["patience"],
            device="cpu",
            model_path=tmp,
        )
        epochs = [0]  # how many epochs rechub's early stopping ran
        one_epoch = trainer.train_one_epoch

        def counted(loader: Any) -> Any:
            epochs[0] += 1
            return one_epoch(loader)

        trainer.train_one_epoch = counted
        t0 = time.perf_counter()
        trainer.fit(train_dl, valid_dl)
        seconds = time.perf_counter() - t0
        test_x = DataLoader(PredictDataset(xs), batch_size=8192, shuffle=False)
        probs = np.asarray(trainer.predict(trainer.model, test_x), dtype=np.float64)
    return {
        "probs": probs,
        "labels": ys,
        "seconds": round(seconds, 1),
        "epochs": epochs[0],
        # fit's whole time, each epoch's valid evaluation included
        "samples_per_s": round(len(yt) * epochs[0] / seconds),
        "auc": {t: float(auc(ys[:, i], probs[:, i])) for i, t in enumerate(tasks)},
    }


def compare(name: str, project: Path, peer: dict[str, Any], a: argparse.Namespace) -> dict:
    """sarflow minus rechub, per task, paired on the test rows."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    tasks = params["train"]["tasks"]
    ours = pl.read_parquet(project / params["paths"]["artifacts"] / name / "predictions.parquet")
    if len(ours) != len(peer["labels"]):
        raise SystemExit(
            f"{name}: sarflow scored {len(ours)} test rows, rechub {len(peer['labels'])}"
        )
    for i, t in enumerate(tasks):  # the same rows in the same order: the labels agree
        if not np.array_equal(ours[f"y_{t}"].to_numpy(), peer["labels"][:, i]):
            raise SystemExit(f"{name}: the two frameworks' test rows differ ({t})")
    theirs = ours.select("file", "row", *(f"y_{t}" for t in tasks)).with_columns(
        pl.Series(f"p_{t}", peer["probs"][:, i]) for i, t in enumerate(tasks)
    )
    return auc_pairs(ours, theirs, a.bootstrap, 0)


def table(rows: list[dict[str, Any]], tasks: list[str]) -> str:
    head = " | ".join(f"{t} sarflow | {t} rechub | {t} sarflow − rechub [95% CI]" for t in tasks)
    lines = [
        f"| model | {head} | epochs sarflow / rechub | train samples/s sarflow / rechub |",
        "|---|" + "---:|" * (3 * len(tasks) + 2),
    ]
    for r in rows:
        cells = []
        for t in tasks:
            c = r["paired"][f"{t}/auc"]
            star = " *" if c["excludes_0"] else ""
            cells += [
                f"{r['sarflow_auc'][t]:.4f}",
                f"{r['rechub_auc'][t]:.4f}",
                f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]{star}",
            ]
        lines.append(
            f"| {r['model']} | "
            + " | ".join(cells)
            + f" | {r['sarflow_epochs']} / {r['rechub_epochs']}"
            + f" | {r['sarflow_samples_per_s']:,} / {r['rechub_samples_per_s']:,} |"
        )
    return "\n".join(lines)


def census_project(census: Path, dest: Path) -> None:
    """A copy of the project reading the census files, trained with `dvc repro`."""
    from flows.project import copy_project, dvc

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["source"] = {"kind": "table"}
    params["table"] |= {"preset": "census_income", "group": 1}
    params["paths"]["source"] = str(census.resolve())
    params["models"]["aitm_nocal"] = params["models"]["aitm"] | {"calibration_weight": 0.0}
    params["train"] |= {"models": list(PEERS), "tasks": ["income_50k", "never_married"]}
    params["report"]["pairs"] = []
    copy_project(dest, params)
    t0 = time.perf_counter()
    dvc("repro", cwd=dest)
    print(f"{dest}: dvc repro in {time.perf_counter() - t0:.0f} s", flush=True)


def planted_ceiling(project: Path) -> dict[str, float]:
    """Test AUC of the probabilities tests/table_files.py planted, on the same test rows: the
    best any model can score, for census-format files written by write_census (not real data)."""
    from tasks.table.source import COLLEGE
    from tests.table_files import census_truth

    params = yaml.safe_load((project / "params.yaml").read_text())
    test = pl.read_parquet(project / params["paths"]["split"] / "table_test.parquet")
    truth = census_truth(
        test["age"].cast(pl.Float64).to_numpy(), test["education"].is_in(COLLEGE).to_numpy()
    )
    return {t: float(auc(test[t].to_numpy(), truth[t])) for t in params["train"]["tasks"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--project", type=Path, default=ROOT, help="a sarflow project with a table source"
    )
    ap.add_argument("--census", type=Path, help="census files: make --project from them first")
    ap.add_argument("--models", nargs="+", default=list(PEERS))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "table_peer")
    ap.add_argument(
        "--planted",
        action="store_true",
        help="files from tests/table_files.write_census: add the planted truth's test AUC",
    )
    a = ap.parse_args(argv)
    if a.census is not None:
        census_project(a.census, a.project)
    params = yaml.safe_load((a.project / "params.yaml").read_text())
    if params["source"]["kind"] != "table":
        raise SystemExit(f"{a.project}: source.kind is not table")
    tasks = params["train"]["tasks"]
    rows = []
    for name in a.models:
        metrics = json.loads(
            (a.project / params["paths"]["artifacts"] / name / "metrics.json").read_text()
        )
        curve = json.loads(
            (a.project / params["paths"]["artifacts"] / name / "curve.json").read_text()
        )["curve"]
        peer = run_peer(name, a.project, a)
        rows.append(
            {
                "model": name,
                "sarflow_auc": {t: metrics[t]["auc"] for t in tasks},
                "rechub_auc": peer["auc"],
                "rechub_seconds": peer["seconds"],
                "rechub_epochs": peer["epochs"],
                "sarflow_epochs": len(curve),
                # the training loop's own (valid evaluation apart)
                "sarflow_samples_per_s": round(np.mean([r["samples_per_s"] for r in curve])),
                "rechub_samples_per_s": peer["samples_per_s"],
                "paired": compare(name, a.project, peer, a),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    ceiling = planted_ceiling(a.project) if a.planted else None
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(
        json.dumps({"rows": rows, "epochs": a.epochs, "planted_auc": ceiling}, indent=2)
    )
    text = table(rows, tasks)
    if ceiling:
        text += "\n\nThe planted truth on the same test rows (the best AUC possible): " + ", ".join(
            f"{t} {v:.4f}" for t, v in ceiling.items()
        )
    (a.out / "table.md").write_text(
        "Test AUC on one split; sarflow − rechub paired on the same rows (* : CI excludes 0).\n\n"
        + text
        + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
