"""The bundle's tar dialect: a deliberately small, strict subset of POSIX ustar.

Writing: regular files only, no directory entries, uid/gid 0, empty owner names,
mtime 0, the mode the manifest pins, sizes above 8 GiB in GNU base-256.  The
archive ends with exactly two zero blocks and nothing after them.

Reading: exactly the bytes the writer writes, and nothing else.  Every header is
re-rendered with :func:`header` from the (name, size, mode) it claims and must
equal the 512 bytes on disk; padding after each member must be zero; the
archive ends with two zero blocks and nothing after them.  So there is no
header byte another tar reader could interpret differently (a ``+`` or
base-64 size, a uid, a link name, bytes after a name's NUL, a prefix): if
verify accepts an archive, GNU tar, Python's ``tarfile`` and this module see
the same members with the same bytes (``tests/test_readers_agree.py``).  What
the general-purpose readers would accept but this format never writes (links,
devices, FIFOs, directories, PAX and GNU long-name records, setuid bits,
unnormalised or unprintable names, trailing data) is refused with the member's
name, before any byte of it is used.

The reader never reads member data: it walks the headers with ``pread`` so the
verifier can then hash members in parallel, each byte read exactly once.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import NoReturn, Protocol

from airgap._internal.text import check_printable
from airgap.exceptions import ArchiveError, InvalidValueError

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_MAX_OCTAL_SIZE = 0o77777777777  # 11 octal digits: 8 GiB - 1
MAX_PATH = 255  # ustar prefix (155) + "/" + name (100) minus slack
_ALLOWED_MODE_BITS = 0o777


class Source(Protocol):
    """Anything the reader can pread from: a plain file or a set of media parts."""

    size: int

    def pread(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    mode: int
    header_offset: int

    @property
    def data_offset(self) -> int:
        return self.header_offset + BLOCK

    @property
    def end_offset(self) -> int:
        return self.data_offset + padded(self.size)


def padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


# --------------------------------------------------------------------------- writing


def _octal(value: int, width: int) -> bytes:
    # width includes the terminating NUL
    return format(value, "o").rjust(width - 1, "0").encode("ascii") + b"\0"


def _size_field(size: int) -> bytes:
    if size <= _MAX_OCTAL_SIZE:
        return _octal(size, 12)
    # GNU base-256: high bit of the first byte set, big-endian value in the rest.
    return bytes([0x80]) + size.to_bytes(11, "big")


def _split_name(name: str) -> tuple[bytes, bytes]:
    raw = name.encode("utf-8")
    if len(raw) <= 100:
        return raw, b""
    # ustar stores long names as prefix "/" name, split on a slash.
    for i in range(len(raw) - 1, -1, -1):
        if raw[i : i + 1] == b"/" and i <= 155 and len(raw) - i - 1 <= 100:
            return raw[i + 1 :], raw[:i]
    raise InvalidValueError(f"{name}: path too long for a ustar header")


# The fields every header has in common, in order, and their share of the checksum.
_OWNER = _octal(0, 8) + _octal(0, 8)  # uid, gid
_MTIME = _octal(0, 12)
_TYPE_LINK = b"0" + b"\0" * 100  # typeflag, linkname
_MAGIC_NAMES = b"ustar\x0000" + b"\0" * 64  # magic, version, uname, gname
_DEVICE = _octal(0, 8) + _octal(0, 8)  # devmajor, devminor
_PAD = b"\0" * 12
_FIXED_SUM = sum(_OWNER + _MTIME + b" " * 8 + _TYPE_LINK + _MAGIC_NAMES + _DEVICE)


def header(name: str, size: int, mode: int) -> bytes:
    """A deterministic ustar header for a regular file: the only header bytes the reader accepts."""
    check_name(name)
    if mode & ~_ALLOWED_MODE_BITS:
        raise InvalidValueError(f"{name}: mode {oct(mode)} has special bits")
    base, prefix = _split_name(name)
    mode_field, size_field = _octal(mode, 8), _size_field(size)
    checksum = _checksum_field(_FIXED_SUM + sum(base) + sum(prefix) + sum(mode_field) + sum(size_field))
    return b"".join((base.ljust(100, b"\0"), mode_field, _OWNER, size_field, _MTIME, checksum,
                     _TYPE_LINK, _MAGIC_NAMES, _DEVICE, prefix.ljust(155, b"\0"), _PAD))


def _checksum_field(total: int) -> bytes:
    # Six octal digits, NUL, space: the spelling GNU tar and tarfile write, and the
    # only one the reader accepts.
    return format(total, "06o").encode("ascii") + b"\0 "


def padding(size: int) -> bytes:
    return b"\0" * (padded(size) - size)


# --------------------------------------------------------------------------- names


def check_name(name: str, artifact: str | None = None) -> None:
    """Refuse any member name that is not a plain, normalised, relative path."""
    who = artifact or name
    if not name:
        raise ArchiveError(who, "empty member name")
    if "\0" in name or "\\" in name:
        raise ArchiveError(who, "member name contains NUL or backslash")
    if name.startswith("/"):
        raise ArchiveError(who, "absolute path")
    check_printable(name, who, "member name", error=ArchiveError)
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ArchiveError(who, "member name is not a normalised relative path ('..', '.', or '//')")
    if unicodedata.normalize("NFC", name) != name:
        raise ArchiveError(who, "member name is not in Unicode NFC form")
    if len(name.encode("utf-8")) > MAX_PATH:
        raise ArchiveError(who, f"member name longer than {MAX_PATH} bytes")


def collision_key(name: str) -> str:
    """Names that would land on the same file on a case-insensitive or normalising filesystem."""
    return unicodedata.normalize("NFKC", name).casefold()


# --------------------------------------------------------------------------- reading

# Every byte range of a ustar header, named as POSIX names them, so a refusal
# says which field differs from what the writer writes.
FIELDS = (
    ("name", 0, 100),
    ("mode", 100, 108),
    ("uid", 108, 116),
    ("gid", 116, 124),
    ("size", 124, 136),
    ("mtime", 136, 148),
    ("chksum", 148, 156),
    ("typeflag", 156, 157),
    ("linkname", 157, 257),
    ("magic", 257, 263),
    ("version", 263, 265),
    ("uname", 265, 297),
    ("gname", 297, 329),
    ("devmajor", 329, 337),
    ("devminor", 337, 345),
    ("prefix", 345, 500),
    ("pad", 500, 512),
)
_MAGIC = b"ustar\x0000"
_OCTAL_8 = re.compile(rb"[0-7]{7}\0")
_OCTAL_12 = re.compile(rb"[0-7]{11}\0")
_ZERO_BLOCK = b"\0" * BLOCK
_KINDS = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory entry",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"x": "PAX extended header",
    b"g": "PAX global header",
    b"L": "GNU long name record",
    b"K": "GNU long link record",
    b"\0": "old-style regular file (typeflag NUL)",
}


def _strict_octal(field: bytes, what: str, member: str) -> int:
    """The writer's only spelling: width-1 octal digits, then one NUL.

    No sign, no ``0o``, no ``_``, no spaces, no base-256: ``int(x, 8)`` would take
    several of those, and GNU tar reads a leading ``+`` as base-64.
    """
    digits = field[:-1]
    if field[-1:] != b"\0" or not digits or digits.strip(b"01234567"):
        raise ArchiveError(member, f"tar header field {what} {field!r} is not {len(field) - 1} octal digits and a NUL "
                                   "(the only spelling the bundle writer uses)")
    return int(digits, 8)


def _strict_size(field: bytes, member: str) -> int:
    if field[0] & 0x80:
        size = int.from_bytes(field[1:], "big")
        if field[0] != 0x80 or size <= _MAX_OCTAL_SIZE:
            raise ArchiveError(member, f"tar header field size {field!r}: base-256 is written only for sizes above "
                                       f"{_MAX_OCTAL_SIZE} bytes, with first byte 0x80")
        return size
    return _strict_octal(field, "size", member)


def _show(field: bytes, want: bytes) -> str:
    if len(field) <= 12:
        return f"{field!r}; the bundle writer writes {want!r}"
    i = next(i for i in range(len(field)) if field[i] != want[i])
    return f"differs at byte {i} of the field (0x{field[i]:02x}; the bundle writer writes 0x{want[i]:02x})"


def parse_header(block: bytes, offset: int) -> Member:
    """The member a header describes, if the header is exactly the writer's bytes for it."""
    raw_name = block[0:100].split(b"\0", 1)[0]
    raw_prefix = block[345:500].split(b"\0", 1)[0]
    try:
        name = (raw_prefix + b"/" + raw_name if raw_prefix else raw_name).decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"member at byte {offset}", "member name is not valid UTF-8") from None
    mode_field, size_field = block[100:108], block[124:136]
    if _OCTAL_8.fullmatch(mode_field) and name:
        # The common case: the writer's bytes for (name, size, mode), checked in one comparison.
        mode = int(mode_field[:7], 8)
        if _OCTAL_12.fullmatch(size_field):
            size = int(size_field[:11], 8)
        else:  # base-256; header() renders it only above 8 GiB, so any other use differs
            size = int.from_bytes(size_field[1:], "big") if size_field[0] == 0x80 else -1
        if size >= 0 and not mode & ~_ALLOWED_MODE_BITS:
            try:
                if header(name, size, mode) == block:
                    return Member(name=name, size=size, mode=mode, header_offset=offset)
            except (ArchiveError, ValueError):
                pass
    _refuse(block, offset, name)


def _refuse(block: bytes, offset: int, name: str) -> NoReturn:
    """Say why *block* is not the writer's header: corruption first, then kind, then the field."""
    where = f"member at byte {offset}"
    label = name or where
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    stored = block[148:156]
    if stored != _checksum_field(computed):
        try:
            same = int(stored.strip(b"\0 "), 8) == computed
        except ValueError:
            same = False
        if same:
            raise ArchiveError(label, f"tar header field chksum {_show(stored, _checksum_field(computed))}")
        raise ArchiveError(label, f"tar header checksum mismatch at byte {offset}")
    typeflag = block[156:157]
    if typeflag != b"0":
        kind = _KINDS.get(typeflag, f"member of type {typeflag!r}")
        raise ArchiveError(label, f"{kind} not allowed in a bundle (regular files only, typeflag '0')")
    if block[257:265] != _MAGIC:
        raise ArchiveError(label, f"not a POSIX ustar header (magic and version {block[257:265]!r})")
    if block[157:257].strip(b"\0"):
        raise ArchiveError(label, "regular file carries a link target")
    if not name:
        raise ArchiveError(where, "empty member name")
    mode = _strict_octal(block[100:108], "mode", label)
    if mode & 0o7000:
        raise ArchiveError(label, f"setuid/setgid/sticky bit set (mode {oct(mode)})")
    if mode & ~_ALLOWED_MODE_BITS:
        raise ArchiveError(label, f"invalid mode {oct(mode)}")
    size = _strict_size(block[124:136], label)
    try:
        expected = header(name, size, mode)  # also refuses any name check_name refuses
    except ValueError as exc:  # a name no ustar split can hold: the writer could not have written it
        raise ArchiveError(label, str(exc)) from None
    # The checksum follows from the other fields: name the field that made it differ.
    for field, start, end in sorted(FIELDS, key=lambda f: f[0] == "chksum"):
        if block[start:end] != expected[start:end]:
            raise ArchiveError(label, f"tar header field {field} {_show(block[start:end], expected[start:end])}")
    raise ArchiveError(label, "tar header differs from the bundle writer's")  # pragma: no cover - FIELDS covers all 512 bytes


def scan(source: Source, *, max_members: int, artifact: str) -> list[Member]:
    """Walk every header of *source*; return the members in archive order.

    Refuses any header that is not the writer's, non-zero padding, duplicates,
    normalisation collisions, more than *max_members* members, truncation, and
    anything but two zero blocks after the last member.  The padding after a
    member is read in the same ``pread`` as the header that follows it.
    """
    members: list[Member] = []
    seen: dict[str, str] = {}
    offset = 0
    pad = 0
    total = source.size
    if total % BLOCK:
        raise ArchiveError(artifact, f"size {total} is not a multiple of the tar block size")
    while True:
        if offset + BLOCK > total:
            raise ArchiveError(artifact, "archive truncated: no end-of-archive marker")
        chunk = source.pread(offset - pad, pad + BLOCK)
        if len(chunk) != pad + BLOCK:
            raise ArchiveError(artifact, f"short read at byte {offset}")
        if pad and chunk[:pad].count(0) != pad:
            raise ArchiveError(members[-1].name, "non-zero bytes in the padding after this member")
        block = chunk[pad:]
        if block == _ZERO_BLOCK:
            rest = total - offset
            if rest < 2 * BLOCK or source.pread(offset + BLOCK, BLOCK) != _ZERO_BLOCK:
                raise ArchiveError(artifact, f"malformed end-of-archive marker at byte {offset}")
            if rest != 2 * BLOCK:
                raise ArchiveError(artifact, f"{rest - 2 * BLOCK} bytes of trailing data after the archive")
            return members
        member = parse_header(block, offset)
        if member.end_offset > total:
            raise ArchiveError(member.name, "archive truncated inside this member")
        key = collision_key(member.name)
        if key in seen:
            if seen[key] == member.name:
                raise ArchiveError(member.name, "duplicate member")
            raise ArchiveError(member.name, f"name collides with {seen[key]!r} after case folding/normalisation")
        seen[key] = member.name
        if len(members) >= max_members:
            raise ArchiveError(artifact, f"more than {max_members} members")
        members.append(member)
        offset = member.end_offset
        pad = padded(member.size) - member.size


def check_tree(names: list[str]) -> None:
    """Refuse a member that is both a file and a parent directory of another member."""
    files = {collision_key(n): n for n in names}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = collision_key("/".join(parts[:i]))
            if parent in files:
                raise ArchiveError(name, f"path runs through the file {files[parent]!r}")
