"""Canonical JSON out, strict JSON in.

Canonical form follows TUF/securesystemslib (OLPC canonical JSON): keys sorted,
no insignificant whitespace, only integers, strings escape just ``"`` and ``\\``.
Signatures are made over these bytes, so the encoder must never change.

The strict parser is what every untrusted JSON document goes through: duplicate
keys, keys that collide case-insensitively, floats, NaN/Infinity, lone surrogate
escapes, invalid UTF-8 and oversize documents are refused, because two parsers
disagreeing about one document is how signed content gets smuggled past a
verifier.  The other parser that matters is Go's ``encoding/json``: the
registry, skopeo, umoci, podman and containerd decode every OCI document with
it (see :func:`fold_key`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from airgap.exceptions import FormatError, InvalidTypeError


def canonical_bytes(obj: Any) -> bytes:
    """Encode *obj* as canonical JSON bytes (UTF-8)."""
    out: list[str] = []
    _encode(obj, out)
    return "".join(out).encode("utf-8")


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
                raise InvalidTypeError(f"canonical JSON keys must be strings, got {key!r}")
            if i:
                out.append(",")
            _encode(key, out)
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    else:
        raise InvalidTypeError(f"cannot encode {type(obj).__name__} in canonical JSON")


def pretty_bytes(obj: Any) -> bytes:
    """Deterministic human-readable JSON (sorted keys, 2-space indent, final newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def fold_key(key: str) -> str:
    """The key under which Go's ``encoding/json`` may match *key* to a struct field.

    Go matches a JSON object key to a struct field exactly, else
    case-insensitively: ``foldName`` (fold.go) upper-cases ASCII and maps every
    other rune to the smallest rune of its ``unicode.SimpleFold`` orbit, so
    ``layers``, ``Layers`` and ``LAYERS`` are one field, as are ``k``/``K`` and
    U+212A KELVIN SIGN, ``s``/``S`` and U+017F LONG S; when several keys match one
    field the last one wins.  We cannot call ``SimpleFold``, so we fold with
    ``str.casefold`` (full Unicode case folding, CaseFolding.txt statuses C+F),
    which maps every member of a simple-fold orbit to the same string and also
    joins more (``ß`` and ``ss``).  One orbit needs help: Go upper-cases
    U+0131 DOTLESS I to ``I`` (and folds U+0130 to ``i``), which ``casefold``
    leaves alone, so both are mapped to ``i`` first.  Then two keys Go folds
    together always fold together here, so refusing equal folds is at least as
    strict as Go (``tests/test_readers_agree.py`` checks every case orbit of the
    Unicode database).  A code point our Unicode database does not know may have
    a case partner in a newer Go, so keys holding one are refused outright.
    """
    return key.translate(_DOTTED_I).casefold()


_DOTTED_I = {0x130: "i", 0x131: "i"}


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_key(key: str, artifact: str) -> None:
    if key.isascii():
        return
    for ch in key:
        if unicodedata.category(ch) == "Cn":
            raise FormatError(artifact, f"JSON key {key!r} holds the unassigned code point U+{ord(ch):04X}; "
                                        "a newer Unicode may give it a case partner that Go would match")


def _object_hook(artifact: str):
    def hook(pairs):
        obj = dict(pairs)
        # Fast path (every object airgap writes): ASCII keys, no duplicates, no case collisions.
        if len(obj) == len(pairs) and "".join(obj).isascii() and len({k.casefold() for k in obj}) == len(obj):
            return obj
        folded: dict[str, str] = {}
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(artifact, f"duplicate JSON key {key!r}")
            seen.add(key)
            _check_key(key, artifact)
            fold = fold_key(key)
            other = folded.get(fold)
            if other is not None:
                raise FormatError(artifact, f"JSON keys {other!r} and {key!r} collide case-insensitively: Go's "
                                            "encoding/json (registry, skopeo, podman) would read only the last one")
            folded[fold] = key
        return obj

    return hook


def _strings(obj: Any):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for item in obj:
            yield from _strings(item)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from _strings(value)


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
        doc = json.loads(
            text,
            object_pairs_hook=_object_hook(artifact),
            parse_float=no_float,
            parse_constant=no_constant,
        )
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(artifact, f"invalid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text):
        # A \ud800 escape without its partner: Python keeps the lone surrogate, Go
        # reads U+FFFD, so two distinct keys or values here could be one there.
        for value in _strings(doc):
            if _SURROGATE.search(value):
                raise FormatError(artifact, f"string {value!r} holds a lone UTF-16 surrogate escape")
    return doc
