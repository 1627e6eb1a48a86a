"""dvc.yaml: each stage's code deps are exactly the project modules its entry imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "models", "flows")


def module_file(name: str) -> Path | None:
    """The project file of module `name` (a .py or a package's __init__.py), else None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _trivial(f: Path) -> bool:
    """A package __init__ with nothing but its docstring (importing it runs nothing)."""
    body = ast.parse(f.read_text()).body
    return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in body)


def imported(f: Path) -> set[Path]:
    """Project files `f` imports anywhere (top level or inside functions), with the packages
    the import passes through."""
    out: set[Path] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for k in range(1, len(parts) + 1):
                m = module_file(".".join(parts[:k]))
                if m is not None:
                    out.add(m)
    return out


def closure(entry: str) -> set[str]:
    """Every project file (relative path) that module `entry` imports, transitively."""
    todo, seen = [module_file(entry)], set()
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        todo.extend(imported(f))
    return {str(f.relative_to(ROOT)) for f in seen if not (f.name == "__init__.py" and _trivial(f))}


def stages() -> list[tuple[str, str, list[str]]]:
    """(stage, entry module, declared deps inside the project's packages) of dvc.yaml."""
    out = []
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        st = st.get("do", st)
        entry = st["cmd"].split()[2]  # python -m MODULE [item]
        code = [d for d in st.get("deps", []) if str(d).split("/")[0] in PACKAGES]
        out.append((name, entry, code))
    return out


def covered(file: str, deps: list[str]) -> bool:
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage,entry,deps", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_are_exactly_the_modules_its_entry_imports(stage, entry, deps):
    needed = closure(entry)
    missing = sorted(f for f in needed if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage}: deps lack {missing} (imported by {entry})"
    for d in deps:
        files = (
            [str(f.relative_to(ROOT)) for f in (ROOT / d).rglob("*.py")]
            if (ROOT / d).is_dir()
            else [d]
        )
        unused = sorted(f for f in files if f not in needed and not _trivial_path(f))
        assert not unused, (
            f"dvc.yaml stage {stage}: dep {d} holds {unused}, which {entry} never imports"
        )


def _trivial_path(f: str) -> bool:
    p = ROOT / f
    return p.name == "__init__.py" and _trivial(p)


def test_the_closure_sees_imports_inside_functions():
    # tasks.report imports its plots inside a function; a missed import would let dvc skip it
    assert "tasks/evaluation/plots.py" in closure("tasks.report")


def test_the_top_level_of_tasks_is_the_stages_and_no_stage_imports_another():
    entries = {entry for _, entry, _ in stages()}
    top = {f"tasks.{f.stem}" for f in (ROOT / "tasks").glob("*.py") if f.name != "__init__.py"}
    assert top == entries, f"tasks/ holds modules that are no DVC stage: {sorted(top - entries)}"
    for entry in entries:
        others = {f"{e.replace('.', '/')}.py" for e in entries - {entry}}
        assert not (closure(entry) & others), f"{entry} imports {sorted(closure(entry) & others)}"


def test_a_train_stage_depends_on_every_train_key_but_the_list_of_models():
    """Every train option can change a model, so each train@ stage depends on it; the list of
    models cannot, so adding one retrains no other."""
    from tasks.config.params import TrainParams

    st = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]
    keys = {k.removeprefix("train.") for k in st["params"] if k.startswith("train.")}
    assert "train" not in st["params"]
    assert keys == set(TrainParams.model_fields) - {"models"}
    assert "models.${item}" in st["params"]
