"""Models from params and from checkpoints: the one place a model name becomes a module."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from models.config import ModelConfig
from models.embedding import EmbeddingSpec
from models.multitask import MultiTaskModel
from models.registry import build_model as model_of
from tasks.config.models import model_config
from tasks.config.params import Params, TrainParams
from tasks.kuaisar.spec import SEARCH_TASK
from tasks.training.engine import EngineOptions, bf16_supported, use_sparse_embeddings
from tasks.training.tensors import embedding_spec


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


# kinds whose CPU training is slower under bf16 autocast (SESRec's attention: 4,430 vs 7,063
# samples/s fp32 on a 2-core AMX machine; PLE: 24,141 vs 13,456, so it keeps bf16)
FP32_ON_CPU = ("sesrec",)


# a model section's keys that say how it is trained, not what it is (config["fit"])
FIT_OPTIONS = tuple(k for k in ModelConfig.TRAINING if k != "scenario")


def task_names(section: ModelConfig, feed_tasks: list[str]) -> list[str]:
    """A model's tasks, by its scenario: the feed tasks, search_click, or both (joint)."""
    return {
        "feed": list(feed_tasks),
        "search": [SEARCH_TASK],
        "joint": [*feed_tasks, SEARCH_TASK],
    }[section.scenario]


def engine_options(
    p: TrainParams, device: torch.device, distributed: bool, table_rows: int, kind: str = ""
) -> EngineOptions:
    auto_bf16 = bf16_supported(device) and not (device.type == "cpu" and kind in FP32_ON_CPU)
    bf16 = p.precision == "bf16" or (p.precision == "auto" and auto_bf16)
    return EngineOptions(
        epochs=p.epochs,
        patience=p.patience,
        batch_size=p.batch_size,
        lr=p.lr,
        weight_decay=p.weight_decay,
        seed=p.seed,
        bf16=bf16,
        sparse=use_sparse_embeddings(p.sparse_embeddings, table_rows, distributed),
    )


def fit_options(section: ModelConfig, params: Params) -> dict[str, Any]:
    """How a model is trained: its section's training options, each unset one (None) from the
    train section; the ranking protocol (sampled negatives, selection on valid ranking) where
    there is a feed click to rank (a feed or joint model of KuaiSAR), else none."""
    p = params.train
    ranks = (
        section.scenario != "search"
        and params.source.kind == "kuaisar"
        and "click" in params.train.tasks
    )
    default = {
        "weight_decay": p.weight_decay,
        "sampled_negatives": p.sampled_negatives if ranks else 0,
        "select": p.select if ranks else "auc",
    }
    return {
        k: default[k] if getattr(section, k) is None else getattr(section, k) for k in FIT_OPTIONS
    }


def build_model(
    params: Params, name: str, spec: dict, sparse: bool = False
) -> tuple[MultiTaskModel, dict[str, Any]]:
    """The model named `name` in params, and the config its checkpoint carries."""
    section = model_config(params, name)
    emb = embedding_spec(spec, params.train.embed_dim)
    config = {
        "name": name,
        "kind": section.kind,
        "scenario": section.scenario,
        "head": section.architecture(),
        "fit": fit_options(section, params),
        "model": section.model_dump(),  # the whole params section: what rebuilds the model
        "tasks": task_names(section, list(params.train.tasks)),
        "embedding": json.loads(json.dumps(dataclasses.asdict(emb))),
    }
    return model_from_config(config, sparse), config


def model_from_config(config: dict[str, Any], sparse: bool = False) -> MultiTaskModel:
    emb = EmbeddingSpec.from_dict(config["embedding"])
    return model_of(emb, config["model"], len(config["tasks"]), sparse=sparse)


def load_checkpoint(path: Path) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild a trained model from its checkpoint (weights only: no code is unpickled)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # what weights_only raises for anything but tensors
        raise ValueError(
            f"{path}: refused to load checkpoint: it holds objects that are not plain weights "
            f"(loading them could run code): {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read checkpoint, truncated or corrupt: {e}") from e
    model = model_from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt["config"]
