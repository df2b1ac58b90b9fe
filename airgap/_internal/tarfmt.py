"""The bundle's tar dialect: a deliberately small, strict subset of POSIX ustar.

Writing: regular files only, no directory entries, uid/gid 0, empty owner names,
mtime 0, the mode the manifest pins, sizes above 8 GiB in GNU base-256.  The
archive ends with exactly two zero blocks and nothing after them.

Reading: the same subset and nothing else.  Everything the general-purpose
``tarfile`` module would accept but this format never writes (links, devices,
FIFOs, directories, PAX and GNU long-name records, setuid bits, unnormalised
names, trailing data) is refused with the member's name, so that a crafted
archive is rejected before any byte of it is used.

The reader never reads member data: it walks the headers with ``pread`` so the
verifier can then hash members in parallel, each byte read exactly once.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from airgap.exceptions import ArchiveError

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_MAX_OCTAL_SIZE = 0o77777777777  # 11 octal digits: 8 GiB - 1
MAX_PATH = 255  # ustar prefix (155) + "/" + name (100) minus slack
_ALLOWED_MODE_BITS = 0o777


class Source(Protocol):
    """Anything the reader can pread from: a plain file or a set of media parts."""

    size: int

    def pread(self, offset: int, length: int) -> bytes: ...


class FileSource:
    """A bundle in one file, read with ``os.pread`` (thread-safe, no shared offset)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            from airgap.exceptions import InputError

            raise InputError(f"{self.path}: cannot open: {exc.strerror}") from None
        self.size = os.fstat(self.fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
    raise ValueError(f"{name}: path too long for a ustar header")


def header(name: str, size: int, mode: int) -> bytes:
    """A deterministic ustar header for a regular file."""
    check_name(name)
    if mode & ~_ALLOWED_MODE_BITS:
        raise ValueError(f"{name}: mode {oct(mode)} has special bits")
    base, prefix = _split_name(name)
    buf = bytearray(BLOCK)
    buf[0:100] = base.ljust(100, b"\0")
    buf[100:108] = _octal(mode, 8)
    buf[108:116] = _octal(0, 8)  # uid
    buf[116:124] = _octal(0, 8)  # gid
    buf[124:136] = _size_field(size)
    buf[136:148] = _octal(0, 12)  # mtime
    buf[148:156] = b" " * 8  # checksum placeholder
    buf[156:157] = b"0"
    buf[257:265] = b"ustar\x0000"
    buf[329:337] = _octal(0, 8)  # devmajor
    buf[337:345] = _octal(0, 8)  # devminor
    buf[345:500] = prefix.ljust(155, b"\0")
    buf[148:156] = format(sum(buf), "06o").encode("ascii") + b"\0 "
    return bytes(buf)


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
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ArchiveError(who, "member name contains control characters")
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


def _parse_octal(field: bytes, what: str, member: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    try:
        return int(text.decode("ascii"), 8)
    except (UnicodeDecodeError, ValueError):
        raise ArchiveError(member, f"malformed {what} field in tar header") from None


def _parse_size(field: bytes, member: str) -> int:
    if field[0] & 0x80:
        if field[0] != 0x80:
            raise ArchiveError(member, "negative or oversized base-256 size")
        return int.from_bytes(field[1:], "big")
    return _parse_octal(field, "size", member)


def parse_header(block: bytes, offset: int) -> Member:
    raw_name = block[0:100].split(b"\0", 1)[0]
    raw_prefix = block[345:500].split(b"\0", 1)[0]
    try:
        name = (raw_prefix + b"/" + raw_name if raw_prefix else raw_name).decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"member at byte {offset}", "member name is not valid UTF-8") from None
    label = name or f"member at byte {offset}"
    stored = _parse_octal(block[148:156], "checksum", label)
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise ArchiveError(label, f"tar header checksum mismatch at byte {offset}")
    if block[257:265] != b"ustar\x0000":
        raise ArchiveError(label, "not a POSIX ustar header")
    typeflag = block[156:157]
    kinds = {
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
    }
    if typeflag not in (b"0", b"\0"):
        kind = kinds.get(typeflag, f"member of type {typeflag!r}")
        raise ArchiveError(label, f"{kind} not allowed in a bundle (regular files only)")
    if block[157:257].strip(b"\0"):
        raise ArchiveError(label, "regular file carries a link target")
    check_name(name, label)
    mode = _parse_octal(block[100:108], "mode", label)
    if mode & 0o7000:
        raise ArchiveError(label, f"setuid/setgid/sticky bit set (mode {oct(mode)})")
    if mode & ~_ALLOWED_MODE_BITS:
        raise ArchiveError(label, f"invalid mode {oct(mode)}")
    size = _parse_size(block[124:136], label)
    return Member(name=name, size=size, mode=mode, header_offset=offset)


def scan(source: Source, *, max_members: int, artifact: str) -> list[Member]:
    """Walk every header of *source*; return the members in archive order.

    Refuses duplicates, normalisation collisions, more than *max_members*
    members, truncation, and anything but two zero blocks after the last member.
    """
    members: list[Member] = []
    seen: dict[str, str] = {}
    offset = 0
    total = source.size
    if total % BLOCK:
        raise ArchiveError(artifact, f"size {total} is not a multiple of the tar block size")
    while True:
        if offset + BLOCK > total:
            raise ArchiveError(artifact, "archive truncated: no end-of-archive marker")
        block = source.pread(offset, BLOCK)
        if len(block) != BLOCK:
            raise ArchiveError(artifact, f"short read at byte {offset}")
        if block == b"\0" * BLOCK:
            rest = total - offset
            if rest < 2 * BLOCK or source.pread(offset + BLOCK, BLOCK) != b"\0" * BLOCK:
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
        # A file may not also be used as a directory by another member.
        seen[key] = member.name
        if len(members) >= max_members:
            raise ArchiveError(artifact, f"more than {max_members} members")
        members.append(member)
        offset = member.end_offset


def check_tree(names: list[str]) -> None:
    """Refuse a member that is both a file and a parent directory of another member."""
    files = {collision_key(n): n for n in names}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = collision_key("/".join(parts[:i]))
            if parent in files:
                raise ArchiveError(name, f"path runs through the file {files[parent]!r}")
