"""Short keyids: what people type for a key, resolved against the keys at hand.

Messages show a keyid as its first 8 hex digits (``3f2a1b2c…``); every option
that takes a keyid accepts that form, or any longer prefix, as long as exactly
one candidate starts with it.  An unknown or ambiguous prefix is an input error
that lists the candidates, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from airgap._internal.text import plural
from airgap.exceptions import InputError

MIN_PREFIX = 8
_HEX = re.compile(r"[0-9a-f]{%d,64}\Z" % MIN_PREFIX)


def is_prefix(text: str) -> bool:
    """Whether *text* reads as a keyid or a keyid prefix (8 to 64 hex digits)."""
    return isinstance(text, str) and bool(_HEX.match(_normal(text)))


def _normal(text: str) -> str:
    # People copy the short form from our own output, ellipsis included.
    return text.strip().removesuffix("…").removesuffix("...").lower()


def parse_prefix(text: str, option: str) -> str:
    """*text* as a lower-case keyid prefix, or an :class:`InputError` saying what a keyid looks like."""
    prefix = _normal(text)
    if not _HEX.match(prefix):
        raise InputError(
            f"{option} {text!r} is not a keyid: give the full keyid (64 hex digits) or "
            f"at least its first {MIN_PREFIX} hex digits, as messages show it"
        )
    return prefix


def pick(text: str, candidates: Sequence[tuple[str, str]], *, option: str, where: str) -> int:
    """Index of the one candidate ``(keyid, label)`` whose keyid starts with *text*.

    *where* names what was searched ("the signatures of dist/x.tar"), for the message.
    """
    prefix = parse_prefix(text, option)
    hits = [i for i, (keyid, _) in enumerate(candidates) if keyid.startswith(prefix)]
    if len(hits) == 1:
        return hits[0]
    listing = "; ".join(f"{keyid[:16]}… {label}".rstrip() for keyid, label in candidates) or "none"
    if not hits:
        raise InputError(f"{option} {text}: no key in {where} has that keyid (there: {listing})")
    found = "; ".join(f"{candidates[i][0][:16]}… {candidates[i][1]}".rstrip() for i in hits)
    if len({candidates[i][0] for i in hits}) == 1:
        # Only a hand-made list repeats a keyid; more digits cannot tell these apart.
        raise InputError(f"{option} {text} is ambiguous: {plural(len(hits), 'entry')} in {where} carry the same keyid "
                         f"({found}); they cannot be told apart by keyid")
    raise InputError(
        f"{option} {text} is ambiguous: {plural(len(hits), 'key')} in {where} start with it ({found}); "
        "give more hex digits"
    )
