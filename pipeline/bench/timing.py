"""Side-by-side timing: both sides of a pair run alternately, and the best run of each counts.

On a shared machine a neighbour's burst slows whichever side runs during it;
alternating the order spreads that over both sides, and the best of a few runs
is the figure least disturbed by it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

_logger = logging.getLogger(__name__)

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), wall seconds)."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def alternate(
    rounds: int, ours: Callable[[], float], peer: Callable[[], float], label: str
) -> tuple[list[float], list[float]]:
    """Run ours/peer `rounds` times each, peer first in every other round; all results."""
    mine: list[float] = []
    theirs: list[float] = []
    for r in range(rounds):
        order = [(mine, ours), (theirs, peer)]
        for results, fn in order if r % 2 == 0 else reversed(order):
            results.append(fn())
        _logger.info(
            "%s round %d/%d: ours %.4g, peer %.4g", label, r + 1, rounds, mine[-1], theirs[-1]
        )
    return mine, theirs
