"""Writing members of a verified bundle to a directory: the only tar reader that unpacks bundle data.

``airgap extract`` replaces GNU tar wherever bundle content is needed as files
(the rollout's wheels, an OCI layout for skopeo or umoci): a second tar reader
could see other bytes than verify checked.  Every byte comes from the
:class:`~airgap.verified.VerifiedBundle` and is hashed as it is written; each
file appears under its name only complete and checked (a temporary file in the
same directory, fsynced, renamed); no component below the output directory is
ever a followed link.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from airgap._internal import fsutil
from airgap._internal.fsutil import Dir, display
from airgap._internal.text import plural
from airgap.exceptions import InputError, OperationError
from airgap.verified import VerifiedBundle

__all__ = ["ExtractResult", "check_output", "extract", "select", "write_member"]


@dataclass
class ExtractResult:
    output: Path
    written: list[str] = field(default_factory=list)


def check_output(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse an existing output unless *force* (then it must be a directory); before anything is verified."""
    return fsutil.check_output(path, force=force, directory=True)


def select(verified: VerifiedBundle, prefixes: list[str] | tuple[str, ...]) -> list[str]:
    """The member names to extract: every content member, or those starting with one of *prefixes*."""
    names = [m.name for m in verified.content_members]
    if not prefixes:
        return names
    chosen: list[str] = []
    for prefix in prefixes:
        hits = [n for n in names if n.startswith(prefix)]
        if not hits:
            raise InputError(f"--member {prefix!r}: no member of {verified.manifest.name} {verified.manifest.version} "
                             "starts with it (see 'airgap inspect')")
        chosen.extend(hits)
    return sorted(set(chosen), key=names.index)


def extract(verified: VerifiedBundle, out: str | os.PathLike, *, prefixes=(), force: bool = False) -> ExtractResult:
    """Write the selected members under *out*; each file complete and checked, or not at all."""
    out = check_output(out, force=force)
    names = select(verified, prefixes)
    result = ExtractResult(out)
    try:
        with Dir.open_root(out, create=True) as root:
            for name in names:
                write_member(verified, root, name)
                result.written.append(name)
            root.fsync()
    except OSError as exc:
        where = f" ({display(exc.filename)})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            raise OperationError(f"{display(out)}: no space left on device{where}") from None
        raise OperationError(f"{display(out)}: cannot write{where}: {exc.strerror or exc}") from None
    skipped = len(verified.content_members) - len(names)
    verified.content_used(f"{plural(len(names), 'member')} written, each hashed as it was written"
                          + (f"; {skipped} not used" if skipped else ""))
    return result


def write_member(verified: VerifiedBundle, into: Dir, name: str, rel: str | None = None) -> None:
    """Write member *name* at *rel* (default: its own path) below *into*, never through a link.

    A temporary file in the final directory, hashed as it is written (the
    last chunk only arrives if the member's sha256 matched), given the
    manifest's mode, fsynced, then renamed: the file appears complete and
    checked, or not at all.
    """
    parent, _, leaf = (rel or name).rpartition("/")
    mode = verified.record(name).mode
    with into.walk(parent, create=True) as d, d.atomic_writer(leaf, mode) as f:
        for chunk in verified.stream(name):
            f.write(chunk)
