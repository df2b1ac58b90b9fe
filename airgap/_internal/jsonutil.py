"""Canonical JSON out, strict JSON in.

Canonical form follows TUF/securesystemslib (OLPC canonical JSON): keys sorted,
no insignificant whitespace, only integers, strings escape just ``"`` and ``\\``.
Signatures are made over these bytes, so the encoder must never change.

The strict parser is what every untrusted JSON document goes through: duplicate
keys, floats, NaN/Infinity, invalid UTF-8 and oversize documents are refused,
because two parsers disagreeing about one document is how signed content gets
smuggled past a verifier.
"""

from __future__ import annotations

import json
import re
from typing import Any

from airgap.exceptions import FormatError


def canonical_bytes(obj: Any) -> bytes:
    """Encode *obj* as canonical JSON bytes (UTF-8)."""
    out: list[str] = []
    _encode(obj, out)
    return _utf8("".join(out))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8 arrives as lone surrogates (PEP 383);
        # JSON's \uXXXX escape records it losslessly (os.fsencode gives the bytes back).
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def _encode(obj: Any, out: list[str]) -> None:
    if obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif obj is None:
        out.append("null")
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, str):
        out.append('"' + obj.replace("\\", "\\\\").replace('"', '\\"') + '"')
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(obj, dict):
        out.append("{")
        for i, key in enumerate(sorted(obj)):
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON keys must be strings, got {key!r}")
            if i:
                out.append(",")
            _encode(key, out)
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} in canonical JSON")


def pretty_bytes(obj: Any) -> bytes:
    """Deterministic human-readable JSON (sorted keys, 2-space indent, final newline)."""
    return _utf8(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _no_duplicates(artifact: str):
    def hook(pairs):
        obj = {}
        for key, value in pairs:
            if key in obj:
                raise FormatError(artifact, f"duplicate JSON key {key!r}")
            obj[key] = value
        return obj

    return hook


def loads_strict(data: bytes, artifact: str, *, max_size: int | None = None) -> Any:
    """Parse untrusted JSON; raise :class:`FormatError` naming *artifact* on anything odd."""
    if max_size is not None and len(data) > max_size:
        raise FormatError(artifact, f"{len(data)} bytes exceeds the cap of {max_size}")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise FormatError(artifact, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None

    def no_float(s: str):
        raise FormatError(artifact, f"non-integer number {s!r} where only integers are allowed")

    def no_constant(s: str):
        raise FormatError(artifact, f"{s} is not allowed in JSON")

    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates(artifact),
            parse_float=no_float,
            parse_constant=no_constant,
        )
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(artifact, f"invalid JSON: {exc}") from None
