"""One worker-count policy for thread and process pools."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def workers(kind: str = "threads") -> int:
    """Threads: decoding releases the GIL, so a few more than the cores keeps them busy
    (at least 2, at most 8). Processes: one per core, at most 2, since each holds its own
    copy of OpenCV and the data it works on. LEUKO_WORKERS overrides both."""
    override = os.environ.get("LEUKO_WORKERS")
    if override and override.isdigit() and int(override) > 0:
        return int(override)
    cores = os.cpu_count() or 1
    if kind == "processes":
        return max(1, min(2, cores))
    return max(2, min(8, cores + 2))


def bounded_map(
    pool: Executor, fn: Callable[[T], R], items: Sequence[T], window: int = 256
) -> Iterator[R]:
    """pool.map in windows: Executor.map submits everything at once, and finished results
    would pile up whenever the consumer falls behind."""
    for a in range(0, len(items), window):
        yield from pool.map(fn, items[a : a + window])
