"""Progress on long work: a tqdm bar on a terminal, plain lines in a log.

A bar redrawn with carriage returns is unreadable in a CI log or a file, so when stderr is
not a terminal `progress_bar` prints a line such as ``score: 120/233 frames (52%, 5.4
frames/s)`` at most every `every` seconds, and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

from tqdm.auto import tqdm

__all__ = ["progress_bar", "PlainProgress", "plural"]


class PlainProgress:
    """tqdm's ``update``/``close``/iteration, as occasional plain lines on stderr."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, every: float = 10.0, stream=None):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n, self.every = desc, unit, initial, every
        self.stream = stream
        self._start = self._last = time.perf_counter()
        self._initial = initial
        self._closed = False
        self.postfix = ""

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._print()

    def set_postfix(self, values: dict | None = None, **kwargs) -> None:
        """Shown at the end of the next line, as tqdm shows it beside the bar."""
        items = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print()

    def _print(self) -> None:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = (self.n - self._initial) / elapsed
        share = f"{self.n / self.total:.0%}, " if self.total else ""
        of = f"/{self.total}" if self.total is not None else ""
        extra = f" {self.postfix}" if self.postfix else ""
        units = plural(self.unit)
        print(f"{self.desc}: {self.n}{of} {units} ({share}{rate:.1f} {units}/s){extra}",
              file=self.stream or sys.stderr, flush=True)


def plural(unit: str) -> str:
    """English plural of a progress unit: frames, batches, epochs (a hard "ch"), boxes."""
    hissing = unit.endswith(("s", "sh", "x")) or (unit.endswith("ch") and not unit.endswith("och"))
    return unit + ("es" if hissing else "s")


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, leave: bool = False, initial: int = 0):
    """A tqdm bar on a terminal, `PlainProgress` lines otherwise, nothing when not `enabled`."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, initial=initial)
