"""Progress bars for long stages run by hand; silent in CI, in pipes and in the Prefect flow.

A bar shows when stderr is a terminal and `CI` is not set. `SARFLOW_PROGRESS=1` forces bars on,
`SARFLOW_PROGRESS=0` forces them off. Bars go to stderr so stdout stays the stage's log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def enabled() -> bool:
    forced = os.environ.get("SARFLOW_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """`items`, with a bar on stderr when `enabled()`; the plain iterator otherwise."""
    if not enabled():
        return iter(items)
    return iter(
        tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    )
