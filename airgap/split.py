"""Media splitting: cut a bundle into parts of a chosen size with a part index.

``split`` writes ``<bundle>.part001``, ``<bundle>.part002``, ... and
``<bundle>.parts.json``, optionally signed (``<bundle>.parts.json.dsse``).
Reading the parts, the index format and join live in :mod:`airgap.media`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from airgap._internal.fsutil import atomic_write, atomic_writer, check_output_dir, fsync_dir
from airgap._internal.positional import FileSource
from airgap._internal.text import plural
from airgap.exceptions import InputError, OutputExistsError
from airgap.media import CHUNK, INDEX_SUFFIX, MAX_PARTS, SIGNATURE_SUFFIX, BackgroundHash, PartIndex, PartInfo, sign_index

__all__ = ["parse_size", "split"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Parse a part size: exact bytes, or a whole number with a binary K/M/G/T suffix.

    ``4480M`` is 4480 MiB.  Fractions (``4.7G``) are refused: media are sold in
    decimal gigabytes, and guessing which unit was meant is how a part ends up
    a few hundred megabytes too large for its disc.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.fullmatch(str(text))
        if not m:
            raise InputError(
                f"part size {text!r}: give exact bytes (4700000000) or a whole number with a "
                "binary suffix K, M, G or T (4480M = 4480 MiB); fractions are not accepted"
            )
        value = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise InputError(f"part size {text!r} must be at least 1 byte")
    return value


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def split(
    bundle_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    part_size: int | str,
    signing_key: Any = None,
    *,
    force: bool = False,
) -> PartIndex:
    """Cut *bundle_path* into parts of at most *part_size* bytes in *out_dir*; return the index.

    Parts or an index of the same bundle name already in *out_dir* are replaced
    only with *force* (refused before anything is written).

    One pass over the bundle: each part and the whole bundle are hashed while
    copying.  Parts are written atomically, the index last, so an index on disk
    always describes complete parts.
    """
    src = Path(bundle_path)
    out = Path(out_dir)
    part_size = parse_size(part_size)
    with FileSource(src) as fh:
        size = fh.size
        if size == 0:
            raise InputError(f"{src}: bundle is empty")
        count = -(-size // part_size)
        if count > MAX_PARTS:
            raise InputError(f"part size {part_size} would give {plural(count, 'part')} (at most {MAX_PARTS})")
        name = src.name
        _check_split_output(check_output_dir(out), name, force)
        width = max(3, len(str(count)))
        bundle_hash = BackgroundHash()
        parts: list[PartInfo] = []
        total = 0
        try:
            while True:
                part_name = f"{name}.part{len(parts) + 1:0{width}d}"
                info = _write_part(fh, out / part_name, part_size, bundle_hash)
                if info is None:
                    break
                parts.append(info)
                total += info.size
        finally:
            digest = bundle_hash.finish()
    if total != size or len(parts) != count:
        raise InputError(f"{src}: bundle changed size while it was being split")
    index = PartIndex(name, size, digest, tuple(parts))
    index_path = out / f"{name}{INDEX_SUFFIX}"
    index_bytes = index.to_bytes()
    atomic_write(index_path, index_bytes)
    sig_path = Path(str(index_path) + SIGNATURE_SUFFIX)
    if signing_key is not None:
        atomic_write(sig_path, sign_index(index_bytes, signing_key))
    else:
        # A signature left over from an earlier split would not match this index.
        _unlink_quietly(sig_path)
    _remove_stale_parts(out, name, {p.name for p in parts})
    fsync_dir(out)
    return index


def _check_split_output(out: Path, name: str, force: bool) -> None:
    if force:
        return
    ours = re.compile(re.escape(name) + r"(\.part\d{3,}|" + re.escape(INDEX_SUFFIX) + r")")
    for entry in sorted(os.listdir(out)):
        if ours.fullmatch(entry):
            raise OutputExistsError(str(out / entry))


def _write_part(src: FileSource, dest: Path, limit: int, bundle_hash: BackgroundHash) -> PartInfo | None:
    first = src.read(min(CHUNK, limit))
    if not first:
        return None
    digest = hashlib.sha256()
    with atomic_writer(dest) as fh:
        written = 0
        chunk = first
        while chunk:
            bundle_hash.update(chunk)
            digest.update(chunk)
            fh.write(chunk)
            written += len(chunk)
            if written >= limit:
                break
            chunk = src.read(min(CHUNK, limit - written))
    return PartInfo(dest.name, written, digest.hexdigest())


def _remove_stale_parts(out: Path, name: str, keep: set[str]) -> None:
    # Parts of an earlier split with a smaller part size would otherwise ride
    # along when the directory is copied to media.
    pattern = re.compile(re.escape(name) + r"\.part\d{3,}$")
    for entry in os.scandir(out):
        if pattern.fullmatch(entry.name) and entry.name not in keep and entry.is_file(follow_symlinks=False):
            _unlink_quietly(entry.path)
