"""Typed view of params.yaml: unknown keys and out-of-range values fail loudly, naming the key."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tasks.kuaisar.spec import FEED_LABELS

BEIJING = timezone(timedelta(hours=8))
PARAMS_FILE = Path("params.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def beijing_ms(text: str) -> int:
    """'2023-06-04 00:00:00' (Beijing time) -> Unix milliseconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=BEIJING).timestamp() * 1000)


class Paths(_Strict):
    """Relative paths stay inside the project; an absolute path is an explicit choice."""

    raw: Path = Path("data/raw")  # where the generator writes
    source: Path = Path("data/raw")  # the KuaiSAR folder the pipeline reads: raw, or a real one
    split: Path = Path("data/split")
    features: Path = Path("data/features")
    candidates: Path = Path("data/candidates")  # the ranking evaluation's candidates
    artifacts: Path = Path("artifacts")
    reports: Path = Path("reports")
    checkpoints: Path = Path("checkpoints")  # resume checkpoints of unfinished training runs
    recommendations: Path = Path("recommendations")  # the score stage's top-K per user

    @field_validator("*")
    @classmethod
    def _inside_project(cls, v: Path, info: ValidationInfo) -> Path:
        if v.is_absolute():
            return v
        root = Path((info.context or {}).get("root", Path.cwd())).resolve()
        if v == Path(".") or not (root / v).resolve().is_relative_to(root):
            raise ValueError(
                f"{v} resolves outside the project folder {root} (or is the folder itself); "
                f"give an absolute path to use a folder elsewhere"
            )
        return v


class GenerateParams(_Strict):
    seed: int = 7
    scale: float = Field(1.0, gt=0, le=100)
    n_users: PositiveInt = 1500
    n_items: PositiveInt = 12000
    n_authors: PositiveInt = 1500
    n_categories: int = Field(20, ge=2, le=1000)
    n_subcategories: int = Field(4, ge=1, le=100)
    n_words: int = Field(4000, ge=100)
    rec_actions: PositiveInt = 240_000
    search_sessions: PositiveInt = 18_000
    start: str = "2023-05-22"
    days: int = Field(19, ge=2, le=3650)
    activity_skew: float = Field(1.0, ge=0, le=3)
    search_rec_overlap: float = Field(0.5, ge=0, le=1)
    # "overlap": each search-interest slot is the feed interest in that slot with probability
    # search_rec_overlap, else a category outside them; "independent": the three search
    # interests are drawn by category popularity without looking at the feed interests
    # (search_rec_overlap unused), so a search says nothing of the feed beyond popularity
    search_interests: Literal["overlap", "independent"] = "overlap"
    search_effect: float = Field(1.5, ge=0, le=10)
    search_effect_hours: float = Field(48.0, gt=0)
    # share of feed impressions that serve the category of the user's last search (in the
    # search_effect_hours before), as a feed that answers searches does
    search_serving: float = Field(0.3, ge=0, le=1)
    # share of search sessions on a passing intent (a category drawn by popularity) instead of
    # one of the user's three search interests
    search_novelty: float = Field(0.0, ge=0, le=1)
    label_correlation: float = Field(0.6, ge=0, le=1)


class ValidateParams(_Strict):
    min_timestamp: str = "2015-01-01 00:00:00"
    max_timestamp: str = "2030-01-01 00:00:00"
    max_duration_ms: float = Field(86_400_000, gt=0)
    max_playing_time_ms: float = Field(86_400_000, gt=0)  # one item played for a day at most
    # a row's time text (Beijing, whole seconds) and its timestamp may differ by at most this
    time_tolerance_s: float = Field(1.0, ge=0)
    max_examples: int = Field(5, ge=1, le=100)
    chunk_rows: int = Field(1_000_000, ge=1_000)  # rows per Great Expectations batch (memory bound)


class SplitParams(_Strict):
    """Temporal cut-offs. By default relative to the data: the last `test_days` Beijing calendar
    days of the logs (ending with the day of the last event) are test, the `valid_days` before
    them valid, everything earlier train, so any folder's own span fits. `valid_start` and
    `test_start` (Beijing datetimes, both or neither) fix them as absolute times instead."""

    valid_days: int = Field(3, ge=1, le=3650)
    test_days: int = Field(3, ge=1, le=3650)
    valid_start: str | None = None
    test_start: str | None = None
    # fewer feed or search rows than this in a part (or a feed part without both click values)
    # stops split before any training, naming the part, its rows and the data's time range
    min_part_rows: int = Field(100, ge=1)
    max_query_words: int = Field(6, ge=1, le=64)

    @model_validator(mode="after")
    def _ordered(self) -> SplitParams:
        given = [k for k in ("valid_start", "test_start") if getattr(self, k) is not None]
        if len(given) == 1:
            raise ValueError(
                f"split.{given[0]} is set without its pair: give both split.valid_start and "
                "split.test_start (absolute cut-offs) or neither (the last valid_days/test_days)"
            )
        if given:
            for k in given:
                try:
                    beijing_ms(getattr(self, k))
                except ValueError:
                    raise ValueError(
                        f"split.{k} {getattr(self, k)!r} is not a datetime 'YYYY-MM-DD HH:MM:SS'"
                    ) from None
            if beijing_ms(self.valid_start) >= beijing_ms(self.test_start):  # type: ignore[arg-type]
                raise ValueError(
                    f"split.valid_start ({self.valid_start}) must be before "
                    f"split.test_start ({self.test_start})"
                )
        return self


class FeaturesParams(_Strict):
    min_count: int = Field(1, ge=1)
    history_len: int = Field(30, ge=1, le=1000)
    search_history_len: int = Field(10, ge=1, le=1000)


class SourceParams(_Strict):
    kind: Literal["kuaisar", "table"] = "kuaisar"  # the KuaiSAR layout, or a declared table


class TableSplit(_Strict):
    rule: Literal["given", "random", "time", "column"] = "random"
    valid: float = Field(0.1, gt=0, lt=1)  # fractions of the rows (random, time)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 0
    time_column: str | None = None
    column: str | None = None  # rule column: the table's own part column
    values: dict[Literal["train", "valid", "test"], str] = {  # its value for each part
        "train": "train",
        "valid": "valid",
        "test": "test",
    }

    @model_validator(mode="after")
    def _consistent(self) -> TableSplit:
        if self.rule == "time" and not self.time_column:
            raise ValueError("table.split.rule 'time' needs table.split.time_column")
        if self.rule == "column":
            if not self.column:
                raise ValueError("table.split.rule 'column' needs table.split.column")
            missing = [part for part in ("train", "valid", "test") if part not in self.values]
            if missing:
                raise ValueError(f"table.split.values lacks the value of {missing}")
            if len(set(self.values.values())) < 3:
                raise ValueError(
                    f"table.split.values must name three different values, got {self.values}"
                )
        if self.valid + self.test >= 1:
            raise ValueError(
                f"table.split.valid + table.split.test must leave rows to train on, "
                f"got {self.valid} + {self.test}"
            )
        return self


# labels each preset declares (tasks/table/source.py reads the files)
PRESET_LABELS: dict[str, dict[int, tuple[str, ...]]] = {
    "census_income": {
        1: ("income_50k", "never_married"),
        2: ("education_college", "never_married"),
    },
    "ali_ccp": {1: ("click", "purchase"), 2: ("click", "purchase")},
    "aliexpress": {1: ("click", "conversion"), 2: ("click", "conversion")},
}


class TableParams(_Strict):
    """A multi-task table (source.kind: table); files are names inside paths.source."""

    preset: Literal["census_income", "ali_ccp", "aliexpress"] | None = None
    group: Literal[1, 2] = 1  # census_income: the MMoE paper's task group
    files: dict[Literal["data", "train", "valid", "test"], str] = {}
    format: Literal["csv", "parquet"] = "csv"
    has_header: bool = True
    separator: str = Field(",", min_length=1, max_length=1)
    null_values: list[str] = []
    columns: list[str] = []  # names in file order, for a file without a header
    categorical: list[str] = []  # names, or globs such as "cat_*" (matched against the header)
    numeric: list[str] = []
    labels: dict[str, Literal["binary", "regression"]] = {}
    weight: str | None = None
    split: TableSplit = TableSplit()

    @model_validator(mode="after")
    def _inputs(self) -> TableParams:
        """A declared table must give the models an input, and never a label as one."""
        if self.preset is not None or not self.files:
            return self  # presets declare their own; no files: Params names what is missing
        if not self.categorical and not self.numeric:
            raise ValueError(
                "table declares no model input: table.categorical and table.numeric are both "
                "empty (give column names, or globs such as 'x_*')"
            )
        features = {*self.categorical, *self.numeric}
        targets = {*self.labels, *([self.weight] if self.weight else [])}
        if self.split.rule == "column" and self.split.column:
            targets.add(self.split.column)
        clash = sorted(features & targets)
        if clash:
            raise ValueError(
                f"table columns {clash} are declared both as model inputs and as a label, the "
                "weight or the split column: a model would read what it is scored on"
            )
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise ValueError(f"table columns {both} are declared both categorical and numeric")
        return self

    def label_names(self) -> tuple[str, ...]:
        if self.preset is not None:
            return PRESET_LABELS[self.preset][self.group]
        return tuple(self.labels)


# model names become DVC stage names and command arguments: keep them plain identifiers
ModelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class TrainParams(_Strict):
    models: list[ModelName] = [
        "shared_bottom",
        "mmoe",
        "ple",
        "esmm",
        "aitm",
        "mmoe_uncertainty",
        "mmoe_gradnorm",
        "ple_search",
        "ple_joint",
        "sesrec",
        "sesrec_nosearch",
        "sesrec_nodis",
        "sesrec_rule",
    ]
    tasks: list[ModelName] = list(FEED_LABELS)  # KuaiSAR feed labels, or a table's labels
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = Field(8, ge=1, le=1000)
    patience: int = Field(2, ge=1)
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(0.005, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)  # AdamW's, on weight matrices only
    # the training protocol of every feed (and joint) model on KuaiSAR, unless its section
    # says otherwise: sampled negatives per click (redrawn each epoch) and epoch selection
    sampled_negatives: int = Field(1, ge=0, le=100)
    select: Literal["auc", "ndcg@10"] = "ndcg@10"
    embed_dim: int = Field(16, ge=1, le=1024)
    threads: int = Field(2, ge=1, le=256)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    sparse_embeddings: Literal["auto", "sparse", "dense"] = "auto"


class ServeParams(_Strict):
    cron: str = Field("0 3 * * *", min_length=9)  # five cron fields


class CandidatesParams(_Strict):
    """The ranking evaluation's candidates (KuaiSAR feed clicks), drawn once (tasks.candidates)."""

    negatives: int = Field(99, ge=1, le=10_000)  # popularity-drawn unserved items per click
    positives: int = Field(2000, ge=0)  # test clicks, a seeded sample; 0 turns ranking off
    # valid clicks: for models that select their epoch on valid ranking (select: ndcg@10)
    valid_positives: int = Field(2000, ge=0)
    # of the ranked test clicks, this many are also ranked against every unserved item
    full_positives: int = Field(100, ge=0)
    seed: int = 0  # the draw: every model sees the same candidates

    @model_validator(mode="after")
    def _full_within(self) -> CandidatesParams:
        if self.full_positives > self.positives:
            raise ValueError(
                f"candidates.full_positives ({self.full_positives}) are a subset of the ranked "
                f"test clicks: at most candidates.positives ({self.positives})"
            )
        return self


class EvaluateParams(_Strict):
    batch_size: int = Field(16384, ge=1)
    # also rank the slice of clicks whose category the user searched in these hours (0: off)
    searched_hours: float = Field(48, ge=0)


class ExportParams(_Strict):
    rows: int = Field(1000, ge=2)  # test rows the ONNX graph is checked and timed on
    tolerance: float = Field(1e-4, gt=0)  # the largest absolute logit difference allowed
    repeats: int = Field(20, ge=1)  # timed calls per runtime (the median is reported)


class ScoreParams(_Strict):
    select: str = "ndcg@10"  # the click ranking metric that picks the model to serve
    k: int = Field(10, ge=1)  # recommendations per user
    pool: int = Field(1000, ge=0)  # candidates: the items most served in train; 0: all


class RegistryParams(_Strict):
    promote: bool = True  # after each flow run: register the served model, promote if it earns it
    artifact: str = "feed-ranker"  # its name in dvc.yaml's artifacts: (the score stage's folder)
    stage: str = "prod"  # the GTO stage production is


class DriftParams(_Strict):
    bins: int = Field(10, ge=2, le=100)  # deciles of a dense field; top values of a categorical
    psi: float = Field(0.2, gt=0)  # a field's PSI above this marks a run drifted
    unseen: float = Field(0.2, gt=0, le=1)  # share of new rows with a value the model never saw
    label_rate: float = Field(0.05, gt=0, le=1)  # absolute change of a label's rate


class ReportParams(_Strict):
    # every model against it, on every metric they share: paired differences, bootstrap CIs
    baseline: ModelName = "shared_bottom"
    # further paired comparisons "a-b" (a minus b), skipped where a model is not trained
    pairs: list[str] = [
        "sesrec-sesrec_nosearch",
        "sesrec_rule-sesrec_nosearch",
        "sesrec-sesrec_rule",
        "sesrec-sesrec_nodis",
        "ple_joint-ple",
        "ple_joint-ple_search",
        "mmoe_uncertainty-mmoe",
        "mmoe_gradnorm-mmoe",
    ]
    bootstrap: int = Field(1000, ge=100, le=100_000)  # resamples (Poisson bootstrap)
    seed: int = 0

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: list[str]) -> list[str]:
        for p in v:
            a, _, b = p.partition("-")
            if not a or not b or a == b:
                raise ValueError(f"report.pairs entry {p!r} must be two model names 'a-b'")
        return v


class Params(_Strict):
    paths: Paths = Paths()
    source: SourceParams = SourceParams()
    table: TableParams = TableParams()
    generate: GenerateParams = GenerateParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    features: FeaturesParams = FeaturesParams()
    train: TrainParams = TrainParams()
    # each section validates into its kind's config class (models.registry) where it is used:
    # tasks.config.models, so that the data stages do not depend on the model code
    models: dict[ModelName, dict[str, Any]] = {}
    candidates: CandidatesParams = CandidatesParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    score: ScoreParams = ScoreParams()
    registry: RegistryParams = RegistryParams()
    drift: DriftParams = DriftParams()
    report: ReportParams = ReportParams()
    serve: ServeParams = ServeParams()

    @property
    def generated(self) -> bool:
        """Whether the pipeline reads the built-in generator's dataset (whose truth is known)."""
        return self.source.kind == "kuaisar" and self.paths.source == self.paths.raw

    @model_validator(mode="after")
    def _source_exists(self, info: ValidationInfo) -> Params:
        """paths.source must be a folder, unless it is the generator's own (made by generate)."""
        root = Path((info.context or {}).get("root", Path.cwd())).resolve()
        source = self.paths.source if self.paths.source.is_absolute() else root / self.paths.source
        if not self.generated and not source.is_dir():
            what = "not a folder" if source.exists() else "does not exist"
            raise ValueError(
                f"paths.source {source} {what}: give the folder that holds the "
                + ("KuaiSAR files" if self.source.kind == "kuaisar" else "table's files")
                + f" (or {self.paths.raw}, the generator's, for the built-in dataset)"
            )
        return self

    @model_validator(mode="after")
    def _models_declared(self) -> Params:
        missing = [m for m in self.train.models if m not in self.models]
        if missing:
            raise ValueError(
                f"train.models names {missing}, which have no section under models "
                f"(declared: {sorted(self.models)})"
            )
        if self.source.kind == "kuaisar":
            labels, where = FEED_LABELS, "the KuaiSAR feed labels"
        else:
            labels, where = self.table.label_names(), "the table's labels (table.labels or preset)"
            if self.table.preset is None and not (self.table.files and self.table.labels):
                raise ValueError("source.kind 'table' needs table.files and table.labels")
            if self.paths.source == self.paths.raw:
                raise ValueError(
                    f"source.kind 'table' reads paths.source, which is paths.raw ({self.paths.raw}), "
                    "the generator's folder: point paths.source at the table's own folder"
                )
        unknown = [t for t in self.train.tasks if t not in labels]
        if unknown:
            raise ValueError(f"train.tasks {unknown} are not among {where}: {list(labels)}")
        return self


def errors(e: ValidationError, prefix: str = "", skip: int = 0) -> str:
    """pydantic's errors, one line each, named by their key (under `prefix`)."""
    lines = []
    for err in e.errors():
        key = ".".join([*([prefix] if prefix else []), *(str(p) for p in err["loc"][skip:])])
        lines.append(f"  {key}: {err['msg']}")
    return "invalid params:\n" + "\n".join(lines)


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid."""


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; errors name the file and the offending key (model
    sections: tasks.config.models)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    try:
        params = Params.model_validate(raw, context={"root": path.resolve().parent})
    except ValidationError as e:
        raise ParamsError(f"{path}: {errors(e)}") from None
    return params
