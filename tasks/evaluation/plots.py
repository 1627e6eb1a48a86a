"""Pictures for the report, as PNG files that work offline: ROC, learning curves, gate use, seesaw,
the split of search interests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from tasks.evaluation.metrics import score  # noqa: E402
from tasks.io.atomic import write_bytes_atomic


def save_png(fig: Any, path: Path) -> None:
    """The figure as a PNG, written atomically, without a timestamp (same figure, same bytes)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _placeholder(text: str, path: Path) -> None:
    """A small picture that says why there is nothing to draw (the DVC plot still exists)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.axis("off")
    save_png(fig, path)


def roc(evals: dict[str, dict], metrics: dict[str, dict], tasks: list[str], path: Path) -> None:
    """One panel per binary task, one ROC curve per model that has the task."""
    tasks = [t for t in tasks if any(t in ev["roc"] for ev in evals.values())]
    if not tasks:
        _placeholder("no binary task in this run", path)
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for model, ev in evals.items():
            if task not in ev["roc"]:
                continue
            r = ev["roc"][task]
            ax.plot(r["fpr"], r["tpr"], label=f"{model} {metrics[model][task]['auc']:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
        ax.set(title=task, xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    save_png(fig, path)


def learning_curves(curves: dict[str, list[dict]], path: Path) -> None:
    """Train loss and mean valid score (AUC, or R^2 for regression tasks) per epoch, per model."""
    fig, (loss, auc) = plt.subplots(1, 2, figsize=(8, 3.2))
    for model, curve in curves.items():
        epochs = [r["epoch"] for r in curve]
        loss.plot(epochs, [r["train_loss"] for r in curve], marker="o", label=model)
        auc.plot(epochs, [r["valid_score"] for r in curve], marker="o", label=model)
    loss.set(title="train loss (sum over tasks)", xlabel="epoch")
    auc.set(title="valid score (mean over tasks of AUC or R^2)", xlabel="epoch")
    auc.legend(fontsize=8)
    save_png(fig, path)


def expert_names(ev: dict[str, Any], level_width: int) -> list[str]:
    if ev["kind"] == "ple":
        k, s = ev["head"]["n_specific"], ev["head"]["n_shared"]
        return [f"own {i + 1}" for i in range(k)] + [f"shared {i + 1}" for i in range(s)]
    return [f"expert {i + 1}" for i in range(level_width)]


def gates(evals: dict[str, dict], tasks: list[str], path: Path) -> None:
    """How much each task leans on each expert: one heatmap per gated model and level."""
    panels = [(m, i, w) for m, ev in evals.items() for i, w in enumerate(ev["gates"])]
    if not panels:
        _placeholder("no gated model in this run", path)
        return
    rows = max(len(w) for _, _, w in panels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels), 0.5 + 0.45 * rows), squeeze=False
    )
    for ax, (model, level, w) in zip(axes[0], panels, strict=True):
        names_t = evals[model].get("tasks", tasks)  # a joint model also has search_click
        names = expert_names(evals[model], len(w[0]))
        ax.imshow(w, vmin=0, vmax=1, cmap="Blues", aspect="auto")
        for t, row in enumerate(w):
            for e, v in enumerate(row):
                ax.text(e, t, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names_t)), names_t, fontsize=7)
        ax.set_title(f"{model} level {level + 1}", fontsize=9)
    save_png(fig, path)


def seesaw(metrics: dict[str, dict], tasks: list[str], path: Path) -> None:
    """Each model's score (AUC, or R^2) on the first task against every other task: the seesaw."""
    first, others = tasks[0], tasks[1:] or tasks

    def name(task: str) -> str:
        return "AUC" if any("auc" in m.get(task, {}) for m in metrics.values()) else "R^2"

    fig, axes = plt.subplots(1, len(others), figsize=(3.0 * len(others), 3.0), squeeze=False)
    for ax, task in zip(axes[0], others, strict=True):
        for model, m in metrics.items():
            if first not in m or task not in m:
                continue
            ax.scatter(score(m[first]), score(m[task]), label=model)
            ax.annotate(model, (score(m[first]), score(m[task])), fontsize=7)
        ax.set(xlabel=f"{first} {name(first)}", ylabel=f"{task} {name(task)}")
    save_png(fig, path)


def interests(evals: dict[str, dict], path: Path) -> None:
    """Per disentangled model: a sample of users' search steps coloured by the model's
    similar score, the truth as the marker (circle similar, cross dissimilar); beside it each
    score's AUC against the truth (tasks.evaluation.interests)."""
    found = {m: ev["interests"] for m, ev in evals.items() if ev.get("interests")}
    if not found:
        _placeholder("no model splits search interests in this run", path)
        return
    fig, axes = plt.subplots(len(found), 2, figsize=(10, 3.6 * len(found)), squeeze=False)
    for (steps_ax, auc_ax), (model, i) in zip(axes, found.items(), strict=True):
        users = list(dict.fromkeys(r["user"] for r in i["shown"]))
        col: dict[int, int] = {}
        for r in i["shown"]:
            y, x = users.index(r["user"]), col.get(r["user"], 0)
            col[r["user"]] = x + 1
            similar = r.get("truth")
            steps_ax.scatter(
                x,
                y,
                c=[r["model"]],
                cmap="coolwarm_r",
                vmin=0,
                vmax=1,
                s=140,
                marker="x" if similar == 0 else "o",
                linewidths=2,
            )
            steps_ax.annotate(str(r["cat"]), (x, y), fontsize=6, ha="center", va="center")
        steps_ax.set_yticks(range(len(users)), [f"user {u}" for u in users], fontsize=7)
        steps_ax.set(
            xlabel="search step (older to newer); number: its category",
            title=f"{model}: blue = called similar, red = dissimilar; "
            + ("o truly similar, x truly dissimilar" if "truth" in i["shown"][0] else "no truth"),
        )
        steps_ax.title.set_fontsize(8)
        names = [k for k in ("model", "heuristic", "untrained") if "auc" in i[k]]
        if names:
            auc_ax.bar(names, [i[k]["auc"] for k in names], color=["C0", "C1", "C7"][: len(names)])
            auc_ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            auc_ax.set(ylim=(0, 1), ylabel="AUC against the planted truth", title=model)
        else:
            auc_ax.axis("off")
    save_png(fig, path)
