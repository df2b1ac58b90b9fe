"""How long a registry may take: a minimum transfer rate and a floor.

Every exchange with a registry has an overall deadline fixed before it starts:
``max(floor, bytes / min_rate)``, where *bytes* is what the exchange may carry
(a descriptor's size, or the cap of the document asked for).  A registry that
drips, stalls or sends an endless body therefore costs a bounded time, and a
slow but honest link can be allowed for with ``--min-rate``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airgap.exceptions import InvalidValueError, UsageError

__all__ = ["DEFAULT_FLOOR", "DEFAULT_MIN_RATE", "LOWEST_MIN_RATE", "Limits", "format_rate", "parse_rate"]

DEFAULT_MIN_RATE = 100 * 1024
"""Bytes per second below which a transfer is abandoned (100 KiB/s: a slow WAN link)."""
DEFAULT_FLOOR = 30.0
"""Seconds every exchange gets at least: a small document is not held to its size."""
LOWEST_MIN_RATE = 1024
"""``--min-rate`` below 1 KiB/s would turn a 1 GiB layer into a two-week wait."""

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_RATE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*(?:/\s*s)?\s*")


@dataclass(frozen=True)
class Limits:
    min_rate: int = DEFAULT_MIN_RATE
    floor: float = DEFAULT_FLOOR

    def __post_init__(self) -> None:
        if self.min_rate <= 0 or self.floor <= 0:
            raise InvalidValueError("min_rate and floor must be positive")

    def deadline(self, nbytes: int) -> float:
        """Seconds allowed for an exchange that carries up to *nbytes*."""
        return max(self.floor, nbytes / self.min_rate)


def parse_rate(text: str) -> int:
    """``100KiB/s`` -> 102400; ``1MB/s`` -> 1000000; ``4096`` -> 4096 (bytes per second)."""
    m = _RATE_RE.fullmatch(text or "")
    unit = _UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        raise UsageError(f"--min-rate {text!r}: expected a rate like 100KiB/s, 2MiB/s or 500kB/s")
    rate = int(float(m.group(1)) * unit)
    if rate < LOWEST_MIN_RATE:
        raise UsageError(f"--min-rate {text!r}: at least {format_rate(LOWEST_MIN_RATE)}")
    return rate


def format_rate(rate: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if rate >= size and rate % size == 0:
            return f"{rate // size} {unit}/s"
    return f"{rate} B/s"
