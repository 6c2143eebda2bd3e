"""data.base helpers: read-ahead of batches."""

from __future__ import annotations

import pytest

from saseg.errors import DataError


def test_prefetched_keeps_order_errors_and_stops_early():
    """Read-ahead changes nothing the consumer sees: the same items in order, an error where
    its item was (after the items before it), and an early stop ends the producer."""
    import threading

    from saseg.data import prefetched

    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))
    assert list(prefetched(iter([]))) == []

    def failing():
        yield from (1, 2)
        raise DataError("frame 3 is unreadable")

    got = []
    with pytest.raises(DataError, match="frame 3"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in prefetched(endless(), depth=2):
        if item == 5:
            break
    assert len(produced) <= 5 + 1 + 2 + 1  # what was asked for, the queue, and one in hand
    assert not any(t.name == "saseg-prefetch" and t.is_alive() for t in threading.enumerate())
