"""The ``airgap`` command.  Parses arguments and calls the library; nothing else."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("airgap: not yet wired", file=sys.stderr)
    return 2
