"""The audit log's hash chain: every kind of tampering is named at the right line."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from airgap._internal.jsonutil import canonical_bytes
from airgap.audit import GENESIS, Actor, AuditLog, format_entry, rfc3339
from airgap.exceptions import AuditError, InputError

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
ALICE = Actor("alice", "staging-1", "ab" * 32)


def _fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append(
            "import" if i % 2 else "verify",
            {"bundle": "geheim-pilot", "version": f"1.0.{i}"},
            "accepted",
            actor=ALICE,
            detail={"images": i},
            now=T0 + timedelta(minutes=i),
        )


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log")
    _fill(log)
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _write(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(lines))


def _broken_at(log: AuditLog) -> tuple[int, str]:
    with pytest.raises(AuditError) as err:
        log.verify()
    path, line = err.value.artifact.rsplit(":", 1)
    assert path == str(log.path)
    return int(line), err.value.reason


def test_intact_log_verifies_and_lines_are_canonical(log: AuditLog) -> None:
    assert log.verify() == 5
    lines = _lines(log)
    first = json.loads(lines[0])
    assert first["seq"] == 1 and first["prev"] == GENESIS
    assert first["time"] == "2025-03-01T12:00:00Z"
    assert first["actor"] == {"user": "alice", "host": "staging-1", "keyid": "ab" * 32}
    for before, line in zip(lines, lines[1:]):
        assert json.loads(line)["prev"] == hashlib.sha256(before.rstrip(b"\n")).hexdigest()
    assert all(canonical_bytes(json.loads(l)) + b"\n" == l for l in lines)
    assert [e.seq for e in log.entries()] == [1, 2, 3, 4, 5]


def test_empty_or_missing_log_has_no_entries(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "none.log").verify() == 0
    assert AuditLog(tmp_path / "none.log").head() == (0, GENESIS)


def test_edited_line_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"accepted"', b'"rejected"')
    _write(log, lines)
    assert _broken_at(log) == (3, "line was altered: its sha256 does not match prev recorded by line 4")


def test_edited_seq_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    lines[1] = lines[1].replace(b'"seq":2', b'"seq":7')
    _write(log, lines)
    assert _broken_at(log)[0] == 2


def test_non_canonical_respacing_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    lines[3] = json.dumps(json.loads(lines[3]), sort_keys=True).encode() + b"\n"
    _write(log, lines)
    assert _broken_at(log) == (4, "line is not in canonical JSON form")


def test_deleted_line_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    del lines[1]
    _write(log, lines)
    line, reason = _broken_at(log)
    assert line == 2 and "seq 3 where 2 was expected" in reason


def test_deleted_first_line_is_named(log: AuditLog) -> None:
    _write(log, _lines(log)[1:])
    assert _broken_at(log)[0] == 1


def test_reordered_lines_are_named(log: AuditLog) -> None:
    lines = _lines(log)
    lines[2], lines[3] = lines[3], lines[2]
    _write(log, lines)
    line, reason = _broken_at(log)
    assert line == 3 and "reordered" in reason


def test_reordered_with_rewritten_seq_is_still_caught(log: AuditLog) -> None:
    # An attacker who renumbers swapped lines still breaks the prev links.
    entries = [json.loads(l) for l in _lines(log)]
    entries[2], entries[3] = entries[3], entries[2]
    entries[2]["seq"], entries[3]["seq"] = 3, 4
    _write(log, [canonical_bytes(e) + b"\n" for e in entries])
    assert _broken_at(log)[0] == 2


def test_truncated_last_line_is_named(log: AuditLog) -> None:
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-20])
    line, reason = _broken_at(log)
    assert line == 5 and "truncated" in reason


def test_invalid_json_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    lines[1] = b"{not json\n"
    _write(log, lines)
    line, reason = _broken_at(log)
    assert line == 2 and "invalid JSON" in reason


def test_duplicate_key_and_float_are_refused(log: AuditLog) -> None:
    lines = _lines(log)
    lines[0] = lines[0].replace(b'{"action"', b'{"action":"x","action"')
    _write(log, lines)
    assert "duplicate" in _broken_at(log)[1]


def test_blank_line_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    lines.insert(2, b"\n")
    _write(log, lines)
    assert _broken_at(log)[0] == 3


def test_seq_gap_is_named(log: AuditLog) -> None:
    # Rewrite the tail consistently but skip a number: seq must be contiguous.
    entries = [json.loads(l) for l in _lines(log)]
    entries[4]["seq"] = 6
    _write(log, [canonical_bytes(e) + b"\n" for e in entries])
    assert _broken_at(log)[0] == 5


def test_anchored_head_catches_a_dropped_tail(log: AuditLog) -> None:
    head = log.head()
    assert head[0] == 5
    assert log.verify(expect_head=head) == 5
    _write(log, _lines(log)[:-1])
    assert log.verify() == 4  # a chain alone cannot see a removed tail ...
    with pytest.raises(AuditError) as err:
        log.verify(expect_head=head)  # ... an anchor kept elsewhere can
    assert err.value.artifact.endswith(":5")


def test_append_refuses_a_broken_tail(log: AuditLog) -> None:
    log.path.write_bytes(log.path.read_bytes()[:-3])
    with pytest.raises(AuditError, match="refusing to append"):
        log.append("verify", {}, "accepted", actor=ALICE)


def test_append_refuses_a_tail_that_does_not_chain(log: AuditLog) -> None:
    lines = _lines(log)
    lines[3] = lines[3].replace(b'"images":3', b'"images":9')
    _write(log, lines)
    with pytest.raises(AuditError, match="refusing to append"):
        log.append("verify", {}, "accepted", actor=ALICE)


def test_append_returns_entry_and_chains(log: AuditLog) -> None:
    entry = log.append("override", {"bundle": "geheim-pilot"}, "accepted", actor=ALICE, detail={"why": "expired"})
    assert entry.seq == 6
    assert entry.digest == hashlib.sha256(_lines(log)[-1].rstrip(b"\n")).hexdigest()
    assert log.verify() == 6


def test_append_validates_input(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log")
    with pytest.raises(InputError):
        log.append("Verify!", {}, "accepted", actor=ALICE)
    with pytest.raises(InputError):
        log.append("verify\n", {}, "accepted", actor=ALICE)
    with pytest.raises(InputError):
        log.append("verify", {"size": 1.5}, "accepted", actor=ALICE)
    with pytest.raises(InputError):
        log.append("verify", {}, "accepted", actor=ALICE, now=datetime(2025, 1, 1))
    assert not log.path.exists() or log.verify() == 0


def test_control_characters_cannot_forge_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log")
    forged = '"}\n{"seq":2,"action":"import"'
    entry = log.append("reject", {"bundle": "x\ty"}, "rejected", actor={"user": "bob", "host": "h", "keyid": None}, detail={"error": forged})
    assert log.path.read_bytes().count(b"\n") == 1
    assert entry.object == {"bundle": "x\\u0009y"}
    assert entry.detail["error"] == forged.replace("\n", "\\u000a")
    assert log.verify() == 1
    assert next(iter(log.entries())) == entry


def test_default_actor_and_time(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log")
    entry = log.append("verify", {"bundle": "x"}, "rejected", detail={"reason": "expired"})
    assert entry.actor == Actor.current()
    assert entry.actor.keyid is None
    assert entry.time.endswith("Z")
    assert log.verify() == 1


def test_rfc3339_converts_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2025, 3, 1, 13, 0, 0, 500, tzinfo=cet)) == "2025-03-01T12:00:00.000500Z"


def test_format_entry(log: AuditLog) -> None:
    text = format_entry(next(iter(log.entries())))
    assert text.startswith("#1 ")
    assert "verify" in text and "accepted" in text and "bundle=geheim-pilot" in text
    assert "alice@staging-1" in text and "images=0" in text


def _append_many(path: str, who: str, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append("verify", {"n": i}, "accepted", actor=Actor(who, "h"))


def test_concurrent_appenders_do_not_break_the_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "a.log")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, f"p{i}", 25)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert AuditLog(path).verify() == 100


# --------------------------------------------------------------------------- the anchor outside the box (CLI)


def _cli(*args):
    from tests.helpers import airgap

    return airgap("audit", *args)


def _head_of(line: bytes, seq: int) -> str:
    digest = hashlib.sha256(line.rstrip(b"\n")).hexdigest()
    return f"{seq}:{digest}"


def test_audit_head_prints_seq_and_hash(log: AuditLog) -> None:
    expected = _head_of(_lines(log)[-1], 5)
    r = _cli("head", "--state", log.path.parent)
    assert r.code == 0 and r.out == expected + "\n"
    assert f"{log.head()[0]}:{log.head()[1]}" == expected
    r = _cli("head", "--log", log.path, "--json")
    assert r.code == 0 and r.json() == {"log": str(log.path), "seq": 5, "head": expected.split(":")[1]}
    assert _cli("head", "--state", log.path.parent / "nowhere").code == 2


def test_audit_head_refuses_a_broken_chain(log: AuditLog) -> None:
    lines = _lines(log)
    lines[1] = lines[1].replace(b'"accepted"', b'"rejected"')
    _write(log, lines)
    r = _cli("head", "--state", log.path.parent)
    assert r.code == 1 and f"{log.path}:2" in r.err and r.out == ""


@pytest.mark.parametrize("k", [1, 2, 3])
def test_expect_head_catches_the_last_k_entries_cut(log: AuditLog, k: int) -> None:
    anchor = _cli("head", "--state", log.path.parent).out.strip()
    lines = _lines(log)
    _write(log, lines[:-k])
    assert _cli("verify", "--state", log.path.parent).code == 0  # the chain alone cannot tell
    r = _cli("verify", "--state", log.path.parent, "--expect-head", anchor)
    assert r.code == 1
    found = _head_of(lines[-k - 1], 5 - k)
    assert str(log.path) in r.err and anchor in r.err and found in r.err
    assert f"{k} entr{'y was' if k == 1 else 'ies were'} cut from its end" in r.err
    doc = _cli("verify", "--state", log.path.parent, "--expect-head", anchor, "--json").json()
    assert doc["expected_head"] == anchor and doc["found_head"] == found and doc["error"] == "AnchorError"


def test_expect_head_catches_a_deleted_or_emptied_log(log: AuditLog) -> None:
    anchor = _cli("head", "--log", log.path).out.strip()
    log.path.write_bytes(b"")
    r = _cli("verify", "--log", log.path, "--expect-head", anchor)
    assert r.code == 1 and "the log is empty but it held 5 entries at the anchor" in r.err
    log.path.unlink()
    assert _cli("verify", "--log", log.path).code == 2  # no anchor: just a missing file
    r = _cli("verify", "--log", log.path, "--expect-head", anchor)
    assert r.code == 1 and str(log.path) in r.err
    assert f"the log is missing: it held 5 entries at the anchor {anchor}" in r.err
    # A state directory that is gone altogether is the same finding.
    r = _cli("verify", "--state", log.path.parent / "wiped", "--expect-head", anchor)
    assert r.code == 1 and "the log is missing" in r.err


@pytest.mark.parametrize("fork_at", [5, 2])
def test_expect_head_catches_a_forked_log_of_the_same_length(log: AuditLog, fork_at: int) -> None:
    """Someone rewrites history from entry *fork_at* on and re-chains it: same length, valid chain."""
    anchor = _cli("head", "--state", log.path.parent).out.strip()
    lines = _lines(log)
    _write(log, lines[:fork_at - 1])
    for i in range(fork_at, 6):
        log.append("verify", {"bundle": "geheim-pilot", "version": f"0.9.{i}"}, "accepted", actor=ALICE, now=T0)
    assert log.verify() == 5 and _cli("verify", "--state", log.path.parent).code == 0
    r = _cli("verify", "--state", log.path.parent, "--expect-head", anchor)
    assert r.code == 1
    found = _head_of(_lines(log)[4], 5)
    assert f"{log.path}:5" in r.err and anchor in r.err and found in r.err and "forked" in r.err


def test_expect_head_passes_an_intact_longer_log(log: AuditLog) -> None:
    anchor = _cli("head", "--state", log.path.parent).out.strip()
    early = _head_of(_lines(log)[2], 3)
    _fill(log, 2)
    r = _cli("verify", "--state", log.path.parent, "--expect-head", anchor)
    assert r.code == 0 and "INTACT" in r.out and "entry 5 is the anchored head" in r.out
    r = _cli("verify", "--state", log.path.parent, "--expect-head", early.upper(), "--json")
    assert r.code == 0 and r.json()["entries"] == 7 and r.json()["expected_head"] == early


@pytest.mark.parametrize("bad", ["5", "5:abc", "x:" + "0" * 64, "-1:" + "0" * 64, "0:" + "1" * 64, "5:" + "g" * 64])
def test_expect_head_syntax_is_an_input_error(log: AuditLog, bad: str) -> None:
    r = _cli("verify", "--state", log.path.parent, "--expect-head", bad)
    assert r.code == 2 and ("--expect-head" in r.err or "audit head 0 is the empty log" in r.err), r.err


def test_expect_head_zero_is_the_empty_log(tmp_path: Path) -> None:
    empty = tmp_path / "audit.log"
    empty.write_bytes(b"")
    head = _cli("head", "--log", empty).out.strip()
    assert head == f"0:{GENESIS}"
    assert _cli("verify", "--log", empty, "--expect-head", head).code == 0
