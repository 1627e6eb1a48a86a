"""An iterator produced ahead by a background thread, so producing overlaps with consuming.

Worth it where producing releases the GIL (polars, pyarrow, numpy) while consuming is Python
(Great Expectations): validate reads, types and converts batch k + 1 while GX checks batch k.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """`items` in order, at most `depth` produced ahead of the one being consumed (bounded
    memory). An exception raised while producing is raised here, at the item it stopped at;
    a consumer that stops early stops the producer at its next item and closes `items`."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(("item", item)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", e))
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # a generator's `finally` (open files) runs now, here
                close()
        put(("done", _DONE))

    worker = threading.Thread(target=produce, name="ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()
