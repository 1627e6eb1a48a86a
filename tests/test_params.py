"""params: typos and out-of-range values fail loudly, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.config.models import load_checked
from tasks.config.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_project_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert set(p.train.models) <= set(p.models)


def _sesrec_on_a_table(p: dict) -> None:
    p["source"] = {"kind": "table"}
    p["table"]["preset"] = "census_income"
    p["paths"]["source"] = "/tmp"  # a folder that exists
    p["train"] |= {"models": ["sesrec"], "tasks": ["income_50k"]}


def _esmm_on_regression(p: dict) -> None:
    p["source"] = {"kind": "table"}
    p["paths"]["source"] = "/tmp"
    p["table"] |= {"files": {"data": "t.csv"}, "numeric": ["x_*"], "labels": {"y": "regression"}}
    p["train"] |= {"models": ["esmm"], "tasks": ["y"]}


def _table_without_inputs(p: dict) -> None:
    _esmm_on_regression(p)
    p["table"]["numeric"] = []
    p["train"]["models"] = ["mmoe"]


@pytest.mark.parametrize(
    "edit,named",
    [
        (lambda p: p["train"].update(epocs=3), "train.epocs"),
        (_esmm_on_regression, "models.esmm.kind: esmm chains the probabilities of binary tasks"),
        (_table_without_inputs, "table declares no model input"),
        (
            lambda p: p["models"]["sesrec"].update(loss_weighting="gradnorm"),
            "models.sesrec.loss_weighting",
        ),
        (lambda p: p["models"]["mmoe"].update(loss_weighting="equal"), "models.mmoe"),
        (lambda p: p["generate"].update(search_rec_overlap=1.5), "generate.search_rec_overlap"),
        (lambda p: p["models"]["mmoe"].update(n_experts=0), "models.mmoe"),
        (lambda p: p["models"]["ple"].update(kind="plee"), "models.ple"),
        (lambda p: p["train"].update(models=["mmoe", "dcn"]), "dcn"),
        (lambda p: p["split"].update(valid_start="2023-06-09 00:00:00"), "split.valid_start"),
        (lambda p: p.update(trian={}), "trian"),
        (lambda p: p["models"]["sesrec"].update(search_history=False), "models.sesrec"),
        (lambda p: p["models"]["sesrec"].update(n_heads=3), "models.sesrec.n_heads"),
        (lambda p: p["models"]["sesrec"].update(temperature=0), "models.sesrec"),
        (_sesrec_on_a_table, "sesrec, which reads feed and search histories"),
        (lambda p: p["candidates"].update(full_positives=3000), "candidates.full_positives"),
        (lambda p: p["report"].update(pairs=["sesrec"]), "report.pairs"),
        (lambda p: p["models"]["ple_search"].update(select="ndcg@10"), "models.ple_search.select"),
        (
            lambda p: p["models"]["ple_search"].update(sampled_negatives=1),
            "models.ple_search.sampled_negatives",
        ),
    ],
)
def test_bad_params_are_refused_naming_the_key(tmp_path, edit, named):
    with pytest.raises(ParamsError) as e:
        load_checked(write(tmp_path, edit))
    assert named in str(e.value)


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "edit,named",
    [
        (lambda p: p["paths"].update(raw="../elsewhere/raw"), "paths.raw"),
        (lambda p: p["paths"].update(artifacts="data/../../x"), "paths.artifacts"),
        (lambda p: p["paths"].update(reports="."), "paths.reports"),
    ],
)
def test_relative_paths_that_escape_the_project_are_refused(tmp_path, edit, named):
    with pytest.raises(ParamsError) as e:
        load_checked(write(tmp_path, edit))
    assert named in str(e.value) and "outside the project" in str(e.value)


def test_an_explicit_absolute_path_is_allowed(tmp_path):
    p = load_params(
        write(tmp_path, lambda p: p["paths"].update(raw="/srv/kuaisar", source="/srv/kuaisar"))
    )
    assert str(p.paths.raw) == "/srv/kuaisar"


@pytest.mark.parametrize("kind", ["kuaisar", "table"])
def test_a_missing_source_folder_is_refused_when_params_are_read(tmp_path, kind):
    def edit(p):
        p["paths"]["source"] = str(tmp_path / "no-such-folder")
        if kind == "table":
            p["source"] = {"kind": "table"}
            p["table"]["preset"] = "census_income"
            p["train"] |= {"models": ["mmoe"], "tasks": ["income_50k"]}

    with pytest.raises(ParamsError) as e:
        load_params(write(tmp_path, edit))
    assert f"paths.source {tmp_path / 'no-such-folder'} does not exist" in str(e.value)


def test_the_generators_folder_may_not_exist_yet(tmp_path):
    assert load_params(write(tmp_path, lambda p: None)).paths.source == Path("data/raw")


@pytest.mark.parametrize("name", ["mmoe; rm -rf ~", "MMoE", "a b", "$(id)", "../x"])
def test_model_names_that_could_reach_a_shell_are_refused(tmp_path, name):
    def edit(p):
        p["models"][name] = p["models"]["mmoe"]
        p["train"]["models"] = [name]

    with pytest.raises(ParamsError, match="models"):
        load_checked(write(tmp_path, edit))


def test_no_code_default_disagrees_with_params_yaml():
    """Every section's code defaults are params.yaml's values, so code that builds a section
    without params.yaml (tests, notebooks) runs the configuration that ships."""
    from tasks.config.params import Params

    shipped = load_params(ROOT / "params.yaml")
    for name, field in Params.model_fields.items():
        if name == "models":
            continue
        got, want = field.default.model_dump(), getattr(shipped, name).model_dump()
        diff = {k: (got[k], want[k]) for k in want if got.get(k) != want[k]}
        assert not diff, f"{name}: code default != params.yaml: {diff}"


def test_each_model_kind_defaults_to_its_params_yaml_section():
    """The section named after a kind (models.mmoe, models.sesrec, ...) is that kind's
    defaults: the ablations and variants state only how they differ."""
    from models.registry import KINDS, model_config

    sections = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]
    missing = [k for k in KINDS if k not in sections]
    assert not missing, f"params.yaml has no section for the kinds {missing}"
    for kind in KINDS:
        got = model_config({"kind": kind}).model_dump()
        want = model_config(sections[kind]).model_dump()
        diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        assert not diff, f"models.{kind}: code default != params.yaml: {diff}"
