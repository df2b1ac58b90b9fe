"""Append-only, hash-chained audit log (JSON lines).

Every line is the canonical JSON encoding of one entry followed by ``\\n``.  An
entry's ``prev`` is the sha256 of the previous line's bytes *without* its
newline (64 zeros for the first entry), and ``seq`` counts from 1, so ``seq``
equals the line number in an intact log.

What the chain proves: any edit, deletion, insertion or reordering of lines
before the last one breaks a link, and :meth:`AuditLog.verify` names the first
broken line.  What it cannot prove on its own: that nobody deleted or rewrote
the *tail* (an attacker who can rewrite the file can recompute every hash after
his edit).  For that, anchor :meth:`AuditLog.head` somewhere else (an officer's
notebook, the check playbook's report) and pass it back to ``verify``.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap._internal import digest as _digest
from airgap._internal import keyid as _keyid
from airgap._internal.fsutil import fsync_dir, open_nofollow
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.text import plural
from airgap.exceptions import AnchorError, AuditError, FormatError, InputError

__all__ = [
    "GENESIS", "MAX_LINE", "Actor", "AuditEntry", "AuditLog", "entries_by_key", "format_entry", "format_head", "parse_head",
    "rfc3339",
]

GENESIS = "0" * 64
# A line longer than this is refused rather than buffered: verify() must run in
# constant memory even over a log someone has stuffed with garbage.
MAX_LINE = 1 << 20
_FIELDS = frozenset({"seq", "time", "actor", "action", "object", "result", "detail", "prev"})
_ACTOR_FIELDS = frozenset({"user", "host", "keyid"})
_WORD = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Actor:
    """Who did it: OS user, host and (when a key was used) its keyid."""

    user: str
    host: str
    keyid: str | None = None

    @classmethod
    def current(cls, keyid: str | None = None) -> Actor:
        """The user and host this process runs as."""
        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in a minimal container
            user = str(os.getuid())
        return cls(user=user, host=socket.gethostname(), keyid=keyid)

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "host": self.host, "keyid": self.keyid}


@dataclass(frozen=True)
class AuditEntry:
    """One verified line of the log."""

    seq: int
    time: str
    actor: Actor
    action: str
    object: dict[str, Any]
    result: str
    detail: dict[str, Any]
    prev: str
    digest: str = field(compare=False)  # sha256 of this line, i.e. the next entry's prev

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor.to_dict(),
            "action": self.action,
            "object": self.object,
            "result": self.result,
            "detail": self.detail,
            "prev": self.prev,
        }


def rfc3339(now: datetime | None = None) -> str:
    """Format *now* (default: the current time) as RFC 3339 UTC with a ``Z``."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        # A naive time is ambiguous; guessing the zone would put a lie in the log.
        raise InputError("audit time must be timezone-aware")
    now = now.astimezone(UTC)
    text = now.strftime("%Y-%m-%dT%H:%M:%S")
    if now.microsecond:
        text += f".{now.microsecond:06d}"
    return text + "Z"


def _escape_controls(value: Any) -> Any:
    """Copy *value* with control characters in strings written as visible ``\\uXXXX`` text.

    canonical_bytes escapes only '"' and '\\': a raw newline in an error message
    would split the entry over two lines (a forged entry, or a broken chain).
    Refusing such input instead would lose the record of a rejection, which
    is exactly what the log is for, so the text is defanged, not dropped.
    """
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, Mapping):
        return {_escape_controls(k): _escape_controls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_controls(v) for v in value]
    return value


def _as_actor(actor: Actor | Mapping[str, Any] | None) -> Actor:
    if actor is None:
        return Actor.current()
    if isinstance(actor, Actor):
        return actor
    if isinstance(actor, Mapping) and set(actor) <= _ACTOR_FIELDS and {"user", "host"} <= set(actor):
        keyid = actor.get("keyid")
        if isinstance(actor["user"], str) and isinstance(actor["host"], str) and (keyid is None or isinstance(keyid, str)):
            return Actor(actor["user"], actor["host"], keyid)
    raise InputError(f"audit actor {actor!r} must have string user and host and a string or null keyid")


def _parse_line(raw: bytes, artifact: str) -> tuple[AuditEntry, bytes]:
    """Parse one line (with its newline) into an entry; raise AuditError on anything odd."""
    if not raw.endswith(b"\n"):
        if len(raw) > MAX_LINE:
            raise AuditError(artifact, f"line longer than {MAX_LINE} bytes")
        raise AuditError(artifact, "truncated line (no terminating newline)")
    body = raw[:-1]
    try:
        obj = loads_strict(body, artifact)
    except FormatError as exc:
        raise AuditError(artifact, exc.reason) from None
    if not isinstance(obj, dict):
        raise AuditError(artifact, "entry is not a JSON object")
    if set(obj) != _FIELDS:
        missing = sorted(_FIELDS - set(obj))
        extra = sorted(set(obj) - _FIELDS)
        raise AuditError(artifact, f"wrong fields (missing {missing}, unexpected {extra})")
    seq, actor = obj["seq"], obj["actor"]
    if type(seq) is not int or seq < 1:
        raise AuditError(artifact, f"seq must be a positive integer, got {seq!r}")
    if not isinstance(obj["time"], str) or not _TIME.fullmatch(obj["time"]):
        raise AuditError(artifact, f"time {obj['time']!r} is not RFC 3339 UTC")
    if not isinstance(actor, dict) or set(actor) != _ACTOR_FIELDS:
        raise AuditError(artifact, "actor must have exactly user, host and keyid")
    if not all(isinstance(actor[k], str) for k in ("user", "host")) or not (
        actor["keyid"] is None or isinstance(actor["keyid"], str)
    ):
        raise AuditError(artifact, "actor user/host must be strings, keyid a string or null")
    for name in ("action", "result"):
        if not isinstance(obj[name], str) or not _WORD.fullmatch(obj[name]):
            raise AuditError(artifact, f"{name} {obj[name]!r} is not a lower-case word")
    for name in ("object", "detail"):
        if not isinstance(obj[name], dict):
            raise AuditError(artifact, f"{name} must be a JSON object")
    if not isinstance(obj["prev"], str) or not _digest.is_hex(obj["prev"]):
        raise AuditError(artifact, "prev is not a lower-case sha256 hex digest")
    # Only one encoding of an entry is valid, so the hash covers meaning, not
    # formatting, and nobody can re-space a line to smuggle in a second form.
    if canonical_bytes(obj) != body:
        raise AuditError(artifact, "line is not in canonical JSON form")
    entry = AuditEntry(
        seq=seq,
        time=obj["time"],
        actor=Actor(actor["user"], actor["host"], actor["keyid"]),
        action=obj["action"],
        object=obj["object"],
        result=obj["result"],
        detail=obj["detail"],
        prev=obj["prev"],
        digest=hashlib.sha256(body).hexdigest(),
    )
    return entry, body


def _tail_lines(fd: int, size: int, count: int) -> list[bytes]:
    """The last *count* lines (each with its newline) of a file, reading backwards."""
    if size == 0:
        return []
    chunk = 64 * 1024
    buf = b""
    pos = size
    # One more newline than lines wanted marks the start of the first of them.
    while pos > 0 and buf.count(b"\n") <= count:
        step = min(chunk, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        if len(buf) > (count + 1) * MAX_LINE:
            break
    lines = buf.splitlines(keepends=True)
    if pos > 0:
        lines = lines[1:]  # the first piece is the end of an earlier line
    return lines[-count:]


class AuditLog:
    """An append-only audit log at *path* (created on first append)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    # -- writing ------------------------------------------------------------

    def append(
        self,
        action: str,
        object: Mapping[str, Any],
        result: str,
        *,
        actor: Actor | Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> AuditEntry:
        """Append one entry after checking the tail's chain link; return the entry written.

        *actor* defaults to the current user and host.  Control characters in
        strings are stored as visible ``\\uXXXX`` text (see _escape_controls).
        """
        for name, value in (("action", action), ("result", result)):
            if not isinstance(value, str) or not _WORD.fullmatch(value):
                raise InputError(f"audit {name} {value!r} must be a lower-case word")
        who = _as_actor(actor)
        who = Actor(**_escape_controls(who.to_dict()))
        if not isinstance(object, Mapping) or not isinstance(detail or {}, Mapping):
            raise InputError("audit object and detail must be mappings")
        obj_clean = _escape_controls(object)
        detail_clean = _escape_controls(detail or {})
        time = rfc3339(now)

        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        created = not self.path.exists()
        try:
            fd = open_nofollow(self.path, flags, 0o640)  # a link (even dangling) is refused, never followed
        except OSError as exc:
            raise InputError(f"{self.path}: cannot open audit log for appending: {exc.strerror}") from None
        try:
            # Two airgap processes must not interleave lines or both chain onto
            # the same tail; the lock is held until the line is on disk.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            seq, prev = self._tail_link(fd, size)
            obj = {
                "seq": seq,
                "time": time,
                "actor": who.to_dict(),
                "action": action,
                "object": obj_clean,
                "result": result,
                "detail": detail_clean,
                "prev": prev,
            }
            try:
                body = canonical_bytes(obj)
            except TypeError as exc:
                raise InputError(f"audit entry cannot be encoded: {exc}") from None
            if len(body) + 1 > MAX_LINE:
                raise InputError(f"audit entry of {len(body)} bytes exceeds {MAX_LINE}")
            line = body + b"\n"
            written = os.write(fd, line)
            if written != len(line):
                # A short append leaves a truncated line that verify() will name;
                # say so now rather than pretend the entry exists.
                raise AuditError(f"{self.path}:{seq}", f"short write ({written} of {plural(len(line), 'byte')})")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        return AuditEntry(
            seq=seq,
            time=time,
            actor=who,
            action=action,
            object=obj_clean,
            result=result,
            detail=detail_clean,
            prev=prev,
            digest=hashlib.sha256(body).hexdigest(),
        )

    def _tail_link(self, fd: int, size: int) -> tuple[int, str]:
        """(seq, prev) for the next entry; the last entry's own link is checked too."""
        lines = _tail_lines(fd, size, 2)
        if not lines:
            return 1, GENESIS
        raw = lines[-1]
        try:
            entry, _ = _parse_line(raw, f"{self.path}:tail")
        except AuditError as exc:
            raise AuditError(exc.artifact, f"{exc.reason}; refusing to append") from None
        # Line numbers are unknown without a full scan; in an intact log seq is one.
        last_no = entry.seq
        if len(lines) == 2:
            before, _ = _parse_line(lines[0], f"{self.path}:{last_no - 1}")
            if entry.prev != before.digest or entry.seq != before.seq + 1:
                raise AuditError(
                    f"{self.path}:{last_no}",
                    "last entry does not chain onto the one before it; refusing to append",
                )
        elif entry.seq != 1 or entry.prev != GENESIS:
            raise AuditError(f"{self.path}:1", "only entry is not a valid first entry; refusing to append")
        return entry.seq + 1, entry.digest

    # -- reading ------------------------------------------------------------

    def entries(self) -> Iterator[AuditEntry]:
        """Yield every entry in order, verifying the chain as it goes (fails at the first bad line)."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read audit log: {exc.strerror}") from None
        with fh:
            prev = GENESIS
            line_no = 0
            while True:
                raw = fh.readline(MAX_LINE + 1)
                if not raw:
                    return
                line_no += 1
                artifact = f"{self.path}:{line_no}"
                entry, _ = _parse_line(raw, artifact)
                if entry.seq != line_no:
                    what = "deleted or reordered entry" if entry.seq > line_no else "reordered or duplicated entry"
                    raise AuditError(artifact, f"seq {entry.seq} where {line_no} was expected ({what})")
                if entry.prev != prev:
                    if line_no == 1:
                        raise AuditError(artifact, "first entry's prev is not the genesis value")
                    # The previous line parsed and was in sequence, but its bytes
                    # are not what this line recorded: it was edited after the fact.
                    raise AuditError(
                        f"{self.path}:{line_no - 1}",
                        f"line was altered: its sha256 does not match prev recorded by line {line_no}",
                    )
                prev = entry.digest
                yield entry

    def verify(self, *, expect_head: tuple[int, str] | None = None) -> int:
        """Check the whole chain in one streaming pass; return the number of entries.

        *expect_head* is a ``(seq, digest)`` pair from an earlier :meth:`head`,
        kept outside the log (see :func:`parse_head`).  The log must still hold
        exactly that entry at that place: a log cut below it, deleted, or
        rewritten from any entry up to it (forked) raises :class:`AnchorError`
        naming the expected and the found head.  Entries after it are fine.
        """
        if expect_head is not None:
            seq, digest = _check_head(expect_head)
            anchor = format_head((seq, digest))
            if not self.path.exists():
                raise AnchorError(str(self.path), f"the log is missing: it held {plural(seq, 'entry')} at the anchor "
                                  f"{anchor}; {_TAMPERED}", expected=anchor, found=None)
        count, last = 0, (0, GENESIS)
        for entry in self.entries():
            count, last = count + 1, (entry.seq, entry.digest)
            if expect_head is not None and entry.seq == seq and entry.digest != digest:
                found = format_head(last)
                raise AnchorError(
                    f"{self.path}:{seq}",
                    f"entry {seq} is {found} but the anchor is {anchor}: the log was rewritten "
                    f"(forked) at or before entry {seq}; {_TAMPERED}",
                    expected=anchor, found=found,
                )
        if expect_head is not None and count < seq:
            found = format_head(last)
            what = "the log is empty" if count == 0 else f"the log ends at entry {count} (head {found})"
            raise AnchorError(
                f"{self.path}:{count + 1}",
                f"{what} but it held {plural(seq, 'entry')} at the anchor {anchor}: "
                f"{seq - count} entr{'y was' if seq - count == 1 else 'ies were'} cut from its end; {_TAMPERED}",
                expected=anchor, found=found,
            )
        return count

    def head(self) -> tuple[int, str]:
        """``(seq, sha256)`` of the last entry after a full verify, for anchoring elsewhere.

        ``(0, GENESIS)`` for an empty or missing log.
        """
        seq, digest = 0, GENESIS
        for entry in self.entries():
            seq, digest = entry.seq, entry.digest
        return seq, digest


_TAMPERED = "treat this host's history (audit log and state) as tampered with until an officer has investigated"
_HEAD = re.compile(r"(\d{1,18}):([0-9a-fA-F]{64})")


def format_head(head: tuple[int, str]) -> str:
    """``SEQ:HASH``, the form an officer writes down and ``--expect-head`` takes."""
    return f"{head[0]}:{head[1]}"


def _check_head(head: tuple[int, str]) -> tuple[int, str]:
    seq, digest = head
    if type(seq) is not int or seq < 0 or not isinstance(digest, str) or not _digest.is_hex(digest):
        raise InputError(f"audit head {head!r} must be (sequence >= 0, 64 lower-case hex digits)")
    if seq == 0 and digest != GENESIS:
        raise InputError(f"audit head 0 is the empty log; its hash is {GENESIS}")
    return seq, digest


def parse_head(text: str) -> tuple[int, str]:
    """Parse ``SEQ:HASH`` as printed by ``airgap audit head`` (hex in either case)."""
    m = _HEAD.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m:
        raise InputError(
            f"--expect-head {text!r} is not SEQ:HASH: the sequence number, a colon and the 64 hex digits "
            "that 'airgap audit head' printed"
        )
    return _check_head((int(m.group(1)), m.group(2).lower()))


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_short(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def entries_by_key(entries: list[AuditEntry], keyid: str, where: str) -> list[AuditEntry]:
    """The entries made with the key whose keyid starts with *keyid* (8+ hex digits, as shown)."""
    ids = sorted({e.actor.keyid for e in entries if e.actor.keyid})
    full = ids[_keyid.pick(keyid, [(k, "") for k in ids], option="--keyid", where=f"the entries of {where}")]
    return [e for e in entries if e.actor.keyid == full]


def format_entry(entry: AuditEntry) -> str:
    """One human-readable line: ``#seq time action result object by user@host [key] detail``."""
    who = f"{entry.actor.user}@{entry.actor.host}"
    if entry.actor.keyid:
        who += f" key {entry.actor.keyid[:16]}"
    text = f"#{entry.seq:<5} {entry.time}  {entry.action:<8} {entry.result:<9} {_short(entry.object)}  by {who}"
    # An override's envelope and key are checked by audit verify/show, not read by people.
    detail = {k: v for k, v in entry.detail.items() if not (entry.action == "override" and k in ("envelope", "key"))}
    if detail:
        text += f"  ({_short(detail)})"
    return text
