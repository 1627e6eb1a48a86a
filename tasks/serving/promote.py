"""promote: after a run, check the new data for drift, register the served model, and promote it
to production only if it beats production on this run's data.

    python -m tasks.serving.promote      # in the project folder; the flow runs it after `score`

1. Drift (tasks.serving.drift): this run's newest rows (the test part) against production's
   reference (the train rows its package profiled), with production's vocabularies. Past a
   `drift` threshold the run is marked drifted and nothing is promoted.
2. The guard (tasks.serving.guard): the candidate (the model the score stage serves) minus
   production on `score.select`, paired on this run's candidates, production re-encoded its own
   way. Promoted only if the 95% CI excludes 0 and the difference is positive.
3. The registry (tasks.serving.registry): the candidate's package is registered as a new
   version of `registry.artifact` (unless that exact model and data version already is one),
   and assigned `registry.stage` when promoted. The first version is promoted when there is no
   production to beat: drift and the guard need one.

Writes paths.reports/promotion.json (the decision, why, the drift table) and drift.png, and
exits 0 whatever the decision: not promoting is a result, not a failure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import torch

from tasks.config.params import Params, load_params
from tasks.evaluation import paired
from tasks.io.atomic import write_json_atomic
from tasks.serving import drift, guard, registry
from tasks.training.checkpoint import resolve_device

DECISION = "promotion.json"
PICTURE = "drift.png"


def package_drift(params: Params, package: Path, current: pl.DataFrame) -> dict[str, Any]:
    """`current` rows against a package's reference profile and vocabularies."""
    reference = json.loads((package / "profile.json").read_text())
    rows = drift.compare(reference, guard.vocabularies(package), current)
    d = params.drift
    why = drift.drifted(rows, d.psi, d.unseen, d.label_rate)
    return {"rows": rows, "why": why, "drifted": bool(why), "reference_rows": reference["rows"]}


def decide(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Drift, the guard and the registry for this run (see the module's docstring)."""
    reg = params.registry
    folder = params.paths.recommendations
    summary = json.loads((folder / "summary.json").read_text())
    out: dict[str, Any] = {"artifact": reg.artifact, "stage": reg.stage, "promoted": False}
    out |= {"registered": None, "production": None, "drift": None, "against": None}
    if not summary.get("scored"):
        return out | {"why": f"nothing is served: {summary.get('why', '')}"}
    if not registry.is_repo(root):
        return out | {"why": f"{root.resolve()} is not a git repository: the registry is git tags"}
    candidate = {k: summary[k] for k in ("model", "model_version", "data_version")}
    out["candidate"] = candidate | {"select": params.score.select}
    current = drift.feed_rows(params.paths.split, params.paths.source, "test")
    prod = registry.production(root, reg.artifact, reg.stage)
    out["production"] = prod
    same = prod is not None and _versions_match(prod["card"], candidate)
    if prod is None:
        # nothing to compare with: this run's test rows against its own train rows, for the record
        out["drift"] = package_drift(params, folder / "model", current) | {"against": "own train"}
        promote, why = True, "the first version: no production model to beat"
    else:
        with tempfile.TemporaryDirectory(prefix="sarflow-production-") as tmp:
            try:
                package = registry.fetch(root, reg.artifact, reg.stage, Path(tmp) / "package")
            except Exception as e:  # noqa: BLE001 - DVC's errors vary: the decision names it
                return out | {
                    "why": f"production {prod['version']}'s files cannot be fetched ({e}): "
                    "nothing is compared or promoted; `dvc pull` or a DVC remote that holds "
                    "them (make remote) fixes it"
                }
            out["drift"] = package_drift(params, package, current) | {"against": "production"}
            if not same:
                torch.set_num_threads(params.train.threads)
                device = resolve_device(params.train.device)
                ci = guard.against_production(params, candidate["model"], package, device)
                out["against"] = ci
        promote, why = verdict(out, prod, same, params.score.select)
    latest = registry.latest(root, reg.artifact)
    if latest and _versions_match(latest["card"], candidate):
        out["registered"] = latest["version"]  # this exact model is a version already
    else:
        card = candidate | {
            "value": summary["values"][candidate["model"]],
            "against_production": out["against"],
            "drifted": out["drift"]["drifted"],
        }
        line = f"{candidate['model']} ({params.score.select} {card['value']:.4f}), data {candidate['data_version']}"
        commit = registry.snapshot(root, f"sarflow run: {reg.artifact} {line}")
        out["registered"] = registry.register(root, reg.artifact, commit, line, card)
    if promote:
        registry.assign(root, reg.artifact, out["registered"], reg.stage, why)
    return out | {"promoted": promote, "why": why}


def _versions_match(card: dict[str, Any], candidate: dict[str, Any]) -> bool:
    """Whether a registered version's card is this candidate: its model, model and data version."""
    return all(card.get(k) == v for k, v in candidate.items())


def verdict(out: dict[str, Any], prod: dict[str, Any], same: bool, metric: str) -> tuple[bool, str]:
    """Whether the candidate replaces production, and why (or why not)."""
    version = prod["version"]
    if same:
        return False, f"this model and data version are production already ({version})"
    if out["drift"]["drifted"]:
        return False, "the data drifted from production's: " + "; ".join(out["drift"]["why"])
    ci = out["against"]
    text = (
        f"{metric} {paired.ci_text(ci)} against production {version} ({prod['card'].get('model')})"
    )
    if ci["excludes_0"] and ci["diff"] > 0:
        return True, f"beats production: {text}"
    return False, f"does not beat production (the 95% CI must exclude 0): {text}"


def drift_picture(decision: dict[str, Any], params: Params, path: Path) -> None:
    """PSI per field, the unseen shares, label rates: this run against the reference."""
    from tasks.evaluation.plots import plt, save_png

    rows = decision["drift"]["rows"] if decision.get("drift") else []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, limit, title in (
        (axes[0], "psi", params.drift.psi, "PSI (new vs reference)"),
        (axes[1], "unseen", params.drift.unseen, "share of rows unseen in training"),
    ):
        shown = [r for r in rows if r[key] is not None]
        ax.barh([r["field"] for r in shown], [r[key] for r in shown], color="tab:blue")
        ax.axvline(limit, color="tab:red", linestyle="--", label=f"threshold {limit}")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
    labels = [r for r in rows if r["rate"] is not None]
    y = range(len(labels))
    axes[2].barh(
        [i + 0.2 for i in y], [r["reference_rate"] for r in labels], 0.4, label="reference"
    )
    axes[2].barh([i - 0.2 for i in y], [r["rate"] for r in labels], 0.4, label="new")
    axes[2].set_yticks(list(y), [r["field"] for r in labels])
    axes[2].set_title("label rates")
    axes[2].legend(loc="best", fontsize=8)
    against = (decision.get("drift") or {}).get("against", "none")
    fig.suptitle(f"Drift: this run's test rows against {against}'s reference rows")
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params()
    decision = decide(params)
    reports = params.paths.reports
    write_json_atomic(reports / DECISION, decision)
    drift_picture(decision, params, reports / PICTURE)
    d = decision.get("drift") or {}
    print(
        f"promote: {'PROMOTED' if decision['promoted'] else 'not promoted'} "
        f"{decision['artifact']} {decision.get('registered') or ''}: {decision['why']}"
    )
    if d.get("drifted"):
        print("promote: the data drifted: " + "; ".join(d["why"]))


if __name__ == "__main__":
    main()
