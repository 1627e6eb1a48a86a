"""params.yaml's model sections, validated into their kind's config class (models.registry).

Apart from tasks.config.params so that only the stages that build models import the model code
(and depend on it in dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from models.config import ConfigError, ModelConfig
from models.registry import model_config as validated
from tasks.config.params import PARAMS_FILE, Params, ParamsError, errors, load_params


def model_config(params: Params, name: str, check: bool = True) -> ModelConfig:
    """The config of models.NAME and (`check`) whether it fits the rest of params (the source's
    histories, train.embed_dim); errors name the key, e.g. models.sesrec.n_heads."""
    if name not in params.models:
        raise ParamsError(f"unknown model {name!r}: params.yaml models has {sorted(params.models)}")
    try:
        cfg = validated(params.models[name])
        if check:
            cfg.check(embed_dim=params.train.embed_dim, histories=params.source.kind == "kuaisar")
            regression = [
                t for t in params.train.tasks if params.table.labels.get(t) == "regression"
            ]
            if cfg.FUNNEL and params.source.kind == "table" and regression:
                raise ConfigError(
                    "kind",
                    f"{cfg.kind} chains the probabilities of binary tasks (a funnel); "
                    f"train.tasks {regression} are regression tasks",
                )
    except ValidationError as e:
        # an error's location starts with the kind's tag: name the section instead
        raise ParamsError(errors(e, f"models.{name}", skip=1)) from None
    except ConfigError as e:
        raise ParamsError(
            f"models.{name}" + (f".{e.key}" if e.key else "") + f": {e.message}"
        ) from None
    return cfg


def load_checked(path: Path | str = PARAMS_FILE) -> Params:
    """load_params, and every model section validated (those in train.models also checked
    against the rest of params): what the flow does before it runs anything."""
    params = load_params(path)
    for name in params.models:
        try:
            model_config(params, name, check=name in params.train.models)
        except ParamsError as e:
            raise ParamsError(f"{path}: {e}") from None
    return params
