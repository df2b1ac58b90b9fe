"""Times as airgap writes them: RFC 3339, UTC, whole seconds, a ``Z`` (``2027-11-23T00:00:00Z``).

The one place that format is written and read.  A time that is not exactly
this shape is refused, never coerced: manifests, policies and records are
signed or hashed as bytes, so a second spelling of the same instant would be a
second document.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from airgap.exceptions import FormatError, InvalidTypeError, InvalidValueError

FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")

__all__ = ["FORMAT", "format_time", "is_time", "now", "parse_time", "require_aware", "to_datetime"]


def require_aware(dt: Any) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidTypeError("times must be timezone-aware datetimes (read the clock once, in UTC)")


def format_time(dt: datetime) -> str:
    """*dt* (timezone-aware) in UTC, whole seconds, with a ``Z``."""
    require_aware(dt)
    return dt.astimezone(UTC).replace(microsecond=0).strftime(FORMAT)


def is_time(value: Any) -> bool:
    """Has *value* the exact shape (not checked: that the date exists)?"""
    return isinstance(value, str) and _SHAPE.match(value) is not None


def to_datetime(value: str) -> datetime:
    """*value* as an aware UTC datetime; InvalidValueError (a ValueError) if it is not exactly the format
    or no such time exists.

    ``strptime`` alone would also take ``2027-1-2T3:4:5Z``.
    """
    if not is_time(value):
        raise InvalidValueError(f"not an RFC 3339 UTC time like 2027-11-23T00:00:00Z: {value!r}")
    try:
        return datetime.strptime(value, FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:  # the shape is right, the date does not exist (2027-02-30)
        raise InvalidValueError(f"not a valid date and time: {value!r} ({exc})") from None


def parse_time(value: Any, artifact: str, what: str = "expires") -> datetime:
    """*value* as an aware UTC datetime; :class:`FormatError` naming *artifact* and *what* if it is not one."""
    if not is_time(value):
        raise FormatError(artifact, f"{what} must be an RFC 3339 UTC time like 2027-11-23T00:00:00Z")
    try:
        return to_datetime(value)
    except ValueError:
        raise FormatError(artifact, f"{what} {value!r} is not a valid date and time") from None


def now() -> str:
    """The current time in the format."""
    return format_time(datetime.now(UTC))
