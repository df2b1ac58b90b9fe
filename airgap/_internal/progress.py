"""tqdm progress bars that are off unless a person is watching.

Bars go to stderr and only when stderr is a terminal and ``--quiet`` was not
given, so scripts, CI logs and ``--json`` output stay clean.
"""

from __future__ import annotations

import sys
import threading


def wanted(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty()


class ByteProgress:
    """A thread-safe byte counter shown as a tqdm bar when enabled."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._lock = threading.Lock()
        self.done = 0
        if enabled and total:
            from tqdm import (
                tqdm,  # only when a person is watching: it costs startup time
            )
        self._bar = (
            tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False)
            if enabled and total
            else None
        )

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
