"""SHA-256 digests, the one place their spelling is checked.

Two spellings: the OCI digest ``sha256:<64 lower-case hex>`` (blobs, manifests,
the spec's pins) and bare hex (key ids, part and member hashes).  Patterns are
anchored with ``\\Z``: ``$`` would also accept a trailing newline.
"""

from __future__ import annotations

import re
from typing import Any

from airgap.exceptions import InvalidValueError

ALGORITHM = "sha256"
PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")

__all__ = ["ALGORITHM", "PREFIX", "is_hex", "is_digest", "hex_of", "from_hex"]


def is_hex(value: Any) -> bool:
    """Is *value* exactly 64 lower-case hex digits (a SHA-256 as hex)?"""
    return isinstance(value, str) and _HEX.match(value) is not None


def is_digest(value: Any) -> bool:
    """Is *value* exactly ``sha256:`` and 64 lower-case hex digits?"""
    return isinstance(value, str) and _DIGEST.match(value) is not None


def hex_of(digest: str) -> str:
    """The hex of a ``sha256:<hex>`` digest; InvalidValueError (a ValueError) if it is not one."""
    if not is_digest(digest):
        raise InvalidValueError(f"not a sha256 digest: {digest!r}")
    return digest[len(PREFIX):]


def from_hex(hexdigest: str) -> str:
    """``sha256:<hex>`` for 64 hex digits; InvalidValueError (a ValueError) if they are not."""
    if not is_hex(hexdigest):
        raise InvalidValueError(f"not 64 lower-case hex digits: {hexdigest!r}")
    return PREFIX + hexdigest
