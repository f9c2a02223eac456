"""What every figure of ``python -m bench`` is made of: repeated timings and checks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Samples", "WrongResult", "check", "timed"]


class WrongResult(SystemExit):
    """A peer or Vault returned something other than what was stored."""


@dataclass
class Samples:
    """Seconds of each repetition of one measured thing."""

    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def summary(self, scale: float = 1.0) -> dict[str, float]:
        return {"median": self.median * scale, "min": min(self.values) * scale,
                "max": max(self.values) * scale, "n": len(self.values)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def check(condition: bool, what: str) -> None:
    """Fail the run (exit status 1, ``WRONG RESULT``) unless ``condition``."""
    if not condition:
        raise WrongResult(f"WRONG RESULT: {what}")
