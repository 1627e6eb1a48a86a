"""ahead: a background producer that keeps order, bounds what it holds, and hands on its errors."""

from __future__ import annotations

import threading
import time

import pytest

from tasks.io.prefetch import ahead


def test_items_come_in_order_and_all_of_them():
    assert list(ahead(iter(range(1000)), depth=3)) == list(range(1000))
    assert list(ahead([])) == []


def test_the_producer_runs_at_most_depth_plus_one_ahead():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    it = ahead(items(), depth=2)
    for consumed in range(1, 6):
        next(it)
        time.sleep(0.05)  # time for the producer to run ahead as far as it may
        # one in the consumer's hand, `depth` queued, one produced and waiting for a slot
        assert consumed <= len(produced) <= consumed + 2 + 1
    it.close()


def test_an_error_while_producing_is_raised_to_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad batch 3")

    got = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for x in ahead(items()):
            got.append(x)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    finished = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            finished.set()

    it = ahead(endless(), depth=1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # as a `for` loop's break or an exception in its body does
    assert not any(t.name == "ahead" and t.is_alive() for t in threading.enumerate())
    assert finished.is_set()  # the source was closed: its `finally` (open files) ran
