"""TEMPORARY local time helper of :mod:`airgap.trust` (issue 14).

The shared ``airgap._internal.timefmt`` lands on main with branch ``house``;
when it does, this module is deleted and its importers use ``timefmt``
(same names: ``FORMAT``, ``format_time``, ``parse_time``).  Kept as the single
copy inside the trust package until then.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from airgap.exceptions import FormatError, InvalidTypeError

FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")

__all__ = ["FORMAT", "format_time", "parse_time", "require_aware"]


def require_aware(dt: Any) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidTypeError("times must be timezone-aware datetimes (read the clock once, in UTC)")


def format_time(dt: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` and whole seconds, the only form a policy holds."""
    require_aware(dt)
    return dt.astimezone(UTC).replace(microsecond=0).strftime(FORMAT)


def parse_time(value: Any, artifact: str, what: str = "expires") -> datetime:
    if not isinstance(value, str) or not _SHAPE.match(value):
        raise FormatError(artifact, f"{what} must be an RFC 3339 UTC time like 2027-11-23T00:00:00Z")
    try:
        return datetime.strptime(value, FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise FormatError(artifact, f"{what} {value!r} is not a valid date and time") from None
