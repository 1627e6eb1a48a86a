"""The data contract: the five files of the KuaiSAR layout, their columns and the kind of each."""

from __future__ import annotations

from typing import Literal

import polars as pl

Kind = Literal["int", "float", "binary", "datetime", "date", "idlist", "text"]

FEED_ITEM_TYPES = ("VIDEO", "IMAGE_ATLAS")
ITEM_TYPES = ("VIDEO", "USER", "IMAGE_ATLAS", "LIVE", "COMMODITY", "MUSIC", "ADVERT")

CATEGORY_LEVELS = ("first", "second", "third", "fourth")

RAW_FILES: dict[str, dict[str, Kind]] = {
    "rec_inter.csv": {
        "user_id": "int",
        "item_id": "int",
        "playing_time": "float",
        "duration_ms": "float",
        "time": "datetime",
        "timestamp": "float",
        "click": "binary",
        "forward": "binary",
        "like": "binary",
        "follow": "binary",
        "search": "binary",
        "search_item_related": "binary",
    },
    "src_inter.csv": {
        "user_id": "int",
        "search_session_id": "int",
        "search_session_time": "datetime",
        "search_session_timestamp": "float",
        "keyword": "idlist",
        "search_source": "text",
        "item_id": "int",
        "click_cnt": "binary",
        "item_type": "text",
    },
    "user_features.csv": {
        "user_id": "int",
        "search_active_level": "int",
        "rec_active_level": "int",
        "onehot_feat1": "int",
        "onehot_feat2": "int",
    },
    "item_features.csv": {
        "item_id": "int",
        "caption": "idlist",
        "author_id": "int",
        "item_type": "text",
        "upload_time": "date",
        "upload_type": "text",
        **{
            f"{level}_level_category_{suffix}": kind
            for level in CATEGORY_LEVELS
            for suffix, kind in (("id", "int"), ("name", "text"), ("name_en", "text"))
        },
    },
    "social_network.csv": {"user_id": "int", "user_follow_id": "int"},
}

POLARS_TYPES: dict[Kind, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "binary": pl.Int8(),
    "datetime": pl.String(),
    "date": pl.String(),
    "idlist": pl.String(),
    "text": pl.String(),
}


def polars_schema(file: str) -> dict[str, pl.DataType]:
    """The typed polars schema of one raw file (datetimes and lists stay text, as in the CSV)."""
    return {col: POLARS_TYPES[kind] for col, kind in RAW_FILES[file].items()}


def parse_idlist(col: str) -> pl.Expr:
    """'[20, 34, 3]' -> list[i64]; '[]' -> empty list."""
    inner = pl.col(col).str.strip_chars("[] ")
    return (
        pl.when(inner == "")
        .then(pl.lit([], dtype=pl.List(pl.Int64)))
        .otherwise(inner.str.split(",").list.eval(pl.element().str.strip_chars().cast(pl.Int64)))
    )


def format_idlist(col: str) -> pl.Expr:
    """list[int] -> '[20, 34, 3]', the text form of the public release."""
    return pl.concat_str(
        pl.lit("["),
        pl.col(col).list.eval(pl.element().cast(pl.String)).list.join(", "),
        pl.lit("]"),
    )
