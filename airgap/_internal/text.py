"""Text that reaches a person: refuse what can lie, escape what is odd.

A name is shown to a security officer (``sign``'s plan, ``inspect``, ``diff``,
``verify``, ``audit show``) and then used by a machine.  Control characters can
move the cursor, clear lines or retitle the terminal; bidirectional overrides
and isolates reorder what is shown (``pilot/\\u202egnp.exe`` reads as
``pilot/exe.png``).  So every name and piece of metadata a bundle carries is
refused at build and at verify if it holds one of them (:func:`check_printable`),
and whatever else is unusual (other format characters, unassigned code points,
separators) is escaped when printed (:func:`escape`), so what the officer reads
is what the machine uses.
"""

from __future__ import annotations

import re

from airgap.exceptions import FormatError

# C0 and C1 controls and DEL; the line and paragraph separators (some terminals
# break lines on them); the bidirectional marks, embeddings, overrides and
# isolates (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069).
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def refusal(value: str) -> str | None:
    """Why *value* may not be shown to a person as it is, or None.

    Line feeds too, even in a description: a value printed on several lines can
    forge the lines of a report that follow it (and the manifest's canonical JSON,
    which does not escape control characters, could not carry one anyway).
    """
    bad = _REFUSED.search(value)
    if bad is None:
        return None
    char = bad.group()
    kind = "control character" if ord(char) < 0xA0 else (
        "line or paragraph separator" if char in "\u2028\u2029" else "bidirectional control character")
    return f"contains the {kind} U+{ord(char):04X} at position {bad.start()}"


def check_printable(value: str, artifact: str, what: str, *, error: type[Exception] = FormatError) -> None:
    """Raise ``error(artifact, reason)`` if *value* holds a control or bidi character."""
    reason = refusal(value)
    if reason is not None:
        raise error(artifact, f"{what} {escape(value)!s} {reason}; such names can show one thing and mean another")


def escape(value: str) -> str:
    """*value* with every character ``str.isprintable`` rejects written as an escape.

    Printable text is returned unchanged (the common case costs one C call).
    """
    if value.isprintable():
        return value
    out = []
    for ch in value:
        if ch.isprintable():
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def escape_lines(text: str) -> str:
    """Escape each line of a human report, keeping the report's own line breaks."""
    return "\n".join(escape(line) for line in text.split("\n"))


# --- counts and articles ----------------------------------------------------

_IRREGULAR = {"entry": "entries", "repository": "repositories", "index": "indexes"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 part``, ``2 parts``, ``0 entries``: a count with its noun in the right number.

    *many* is the plural form when adding ``s`` is wrong and the noun is not
    one of the few irregular ones airgap prints.
    """
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {many or _IRREGULAR.get(noun) or noun + 's'}"


def article(phrase: str) -> str:
    """*phrase* with ``a`` or ``an`` before it: ``an officer key``, ``a builder key``."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase
