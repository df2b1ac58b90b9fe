"""The library audits as the command does (issue 14): verify, extract, join and import called
from Python leave the same audit entries as ``airgap verify/extract/join/import``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airgap import importer, receive
from airgap.auditing import AuditTrail
from airgap.exceptions import InputError, SignatureError, UsageError
from airgap.split import split
from tests.helpers import airgap


def _entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _shape(log: Path) -> list[tuple[str, str]]:
    return [(e["action"], e["result"]) for e in _entries(log)]


def test_verify_bundle_audits_its_acceptance_without_the_command(tmp_path, signed_bundle):
    state = tmp_path / "state"
    with receive.verify_bundle(signed_bundle.path, trust_path=signed_bundle.trust, state_dir=state) as verified:
        assert verified.report.accepted
    [entry] = _entries(state / "audit.log")
    assert (entry["action"], entry["result"], entry["detail"]) == ("verify", "accepted", {"recorded": False})
    assert entry["object"]["manifest"] == verified.manifest.digest
    assert not (state / "state.json").exists()  # without record nothing but the log is written


def test_verify_bundle_and_the_command_write_the_same_entries(tmp_path, signed_bundle):
    lib, cli = tmp_path / "lib", tmp_path / "cli"
    for record in (False, True):
        receive.verify_bundle(signed_bundle.path, trust_path=signed_bundle.trust, state_dir=lib, record=record).close()
        args = ["verify", signed_bundle.path, "--trust", signed_bundle.trust, "--state", cli] + (["--record"] if record else [])
        assert airgap(*args).code == 0
    strip = lambda e: {k: v for k, v in e.items() if k not in ("time", "prev")}  # noqa: E731
    assert [strip(e) for e in _entries(lib / "audit.log")] == [strip(e) for e in _entries(cli / "audit.log")]
    assert _shape(lib / "audit.log") == [("verify", "accepted"), ("first-use", "accepted"), ("verify", "accepted")]
    assert (lib / "state.json").exists()


def test_verify_bundle_audits_a_refusal_and_raises_it_with_the_report(tmp_path, signed_bundle):
    log = tmp_path / "audit.log"
    with pytest.raises(SignatureError) as exc:
        receive.verify_bundle(signed_bundle.builder_only, trust_path=signed_bundle.trust, audit_log=log)
    assert exc.value.report is not None and exc.value.report.error is exc.value
    [entry] = _entries(log)
    assert (entry["action"], entry["result"]) == ("verify", "rejected")
    assert entry["detail"]["error"] == str(exc.value) and "officer" in entry["detail"]["error"]


def test_a_missing_bundle_is_an_error_entry(tmp_path, signed_bundle):
    log = tmp_path / "audit.log"
    with pytest.raises(InputError):
        receive.verify_bundle(tmp_path / "missing.tar", trust_path=signed_bundle.trust, audit_log=log)
    assert _shape(log) == [("verify", "error")]


def test_another_audit_log_beside_a_state_is_refused_before_anything(tmp_path, signed_bundle):
    with pytest.raises(UsageError, match="leave --audit-log out"):
        receive.verify_bundle(signed_bundle.path, trust_path=signed_bundle.trust, state_dir=tmp_path / "s",
                              audit_log=tmp_path / "other.log")
    with pytest.raises(UsageError, match="--record needs --state"):
        receive.verify_bundle(signed_bundle.path, trust_path=signed_bundle.trust, record=True)
    assert not list(tmp_path.iterdir())


def test_extract_and_join_audit_in_the_library(tmp_path, signed_bundle):
    state = tmp_path / "state"
    result = receive.extract_bundle(signed_bundle.path, tmp_path / "out", trust_path=signed_bundle.trust,
                                    state_dir=state, prefixes=["files/"])
    assert result.written and all(n.startswith("files/") for n in result.written)
    split(signed_bundle.path, tmp_path / "media", "64K")
    joined = receive.join_parts(tmp_path / "media", tmp_path / "joined.tar", trust_path=signed_bundle.trust,
                                state_dir=state)
    assert (tmp_path / "joined.tar").read_bytes() == signed_bundle.path.read_bytes()
    extract, join = _entries(state / "audit.log")
    assert (extract["action"], extract["result"], extract["detail"]) == ("extract", "accepted",
                                                                         {"members": len(result.written)})
    assert (join["action"], join["result"], join["detail"]) == ("join", "accepted", {"sha256": joined.sha256})


def test_extract_refusal_is_audited_but_an_existing_output_is_not(tmp_path, signed_bundle):
    log = tmp_path / "audit.log"
    with pytest.raises(InputError, match="--member 'nothing/'"):
        receive.extract_bundle(signed_bundle.path, tmp_path / "out", trust_path=signed_bundle.trust, audit_log=log,
                               prefixes=["nothing/"])
    assert _shape(log) == [("extract", "error")]
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="add --force"):
        receive.extract_bundle(signed_bundle.path, tmp_path / "taken", trust_path=signed_bundle.trust, audit_log=log)
    assert _shape(log) == [("extract", "error")]  # nothing was examined


def test_import_bundle_audits_its_refusal_in_the_library(tmp_path, signed_bundle, registry):
    state = tmp_path / "state"
    with pytest.raises(SignatureError):
        importer.import_bundle(signed_bundle.builder_only, trust_path=signed_bundle.trust, registry=registry.host,
                               state_dir=state, plain_http=True)
    [entry] = _entries(state / "audit.log")
    assert (entry["action"], entry["result"]) == ("import", "rejected")
    assert entry["object"] == {"bundle": str(signed_bundle.builder_only), "registry": registry.host}


def test_a_log_that_cannot_be_written_does_not_hide_the_refusal(tmp_path, signed_bundle):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "audit.log").mkdir()  # not a file: appending fails
    trail = AuditTrail.of(tmp_path / "state")
    exc = SignatureError("b.tar", "officer: 0 of 1")
    assert trail.refused("verify", {"bundle": "b.tar"}, exc) is None
    assert any("could not be written" in n for n in exc.__notes__)
    r = airgap("verify", signed_bundle.builder_only, "--trust", signed_bundle.trust, "--audit-log",
               tmp_path / "state" / "audit.log")
    assert r.code == 1 and "REJECTED" in r.err and "audit entry for this refusal could not be written" in r.err
