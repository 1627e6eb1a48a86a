"""Every model kind, by its config class: adding a kind is its model file (with its config
class), one line here, and its section in params.yaml."""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter

from models.aitm import AITMConfig
from models.config import ModelConfig
from models.embedding import EmbeddingSpec
from models.esmm import ESMMConfig
from models.mmoe import MMoEConfig
from models.multitask import MultiTaskModel
from models.ple import PLEConfig
from models.sesrec import SESRecConfig
from models.shared_bottom import SharedBottomConfig, SingleTaskConfig

CONFIGS = (
    SharedBottomConfig,
    SingleTaskConfig,
    MMoEConfig,
    PLEConfig,
    ESMMConfig,
    AITMConfig,
    SESRecConfig,
)

AnyModelConfig = Annotated[Union[CONFIGS], Field(discriminator="kind")]  # noqa: UP007
KINDS = tuple(k for c in CONFIGS for k in get_args(c.model_fields["kind"].annotation))
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyModelConfig)


def model_config(section: dict[str, Any]) -> Any:
    """A params.yaml `models.NAME` section (or a checkpoint's copy) -> its kind's config."""
    return _ADAPTER.validate_python(section)


def build_model(
    spec: EmbeddingSpec, section: dict[str, Any] | ModelConfig, n_tasks: int, sparse: bool = False
) -> MultiTaskModel:
    """The model of a `models.NAME` section (a dict, validated, or its config)."""
    cfg = section if isinstance(section, ModelConfig) else model_config(section)
    return MultiTaskModel(spec, cfg, n_tasks, sparse)
