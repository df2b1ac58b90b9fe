"""Signed overrides: the officer's key signs each override, and audit verify/show check every one."""

from __future__ import annotations

import hashlib
import json

import pytest

from airgap._internal.jsonutil import canonical_bytes
from airgap.audit import Actor, AuditLog
from airgap.dsse import Envelope
from airgap.trust import override as ov
from tests.fixtures.keys import TARGET, make_policy
from tests.helpers import airgap

EXPIRED = "2026-01-01T00:00:00Z"
REASON = "policy renewal delayed; ticket 4711"


def _expired_policy(tmp_path, keyring):
    policy = make_policy(keyring, expires=EXPIRED)
    path = tmp_path / "expired-trust.json"
    path.write_bytes(policy.to_bytes())
    return policy, path


def _overrides(log):
    return [e for e in AuditLog(log).entries() if e.action == "override"]


def _rechain(log, seq, edit):
    """Apply *edit* to entry *seq* and recompute every later link: only the signature can tell."""
    lines = log.read_bytes().splitlines()
    prev = None
    out = []
    for raw in lines:
        doc = json.loads(raw)
        if prev is not None:
            doc["prev"] = prev
        if doc["seq"] == seq:
            edit(doc)
        line = canonical_bytes(doc)
        prev = hashlib.sha256(line).hexdigest()
        out.append(line + b"\n")
    log.write_bytes(b"".join(out))


def test_override_import_writes_signed_entry(tmp_path, signed_bundle, registry, keyring):
    policy, trust = _expired_policy(tmp_path, keyring)
    state = tmp_path / "state"
    r = airgap("import", signed_bundle.path, "--trust", trust, "--registry", registry.host, "--plain-http",
               "--state", state, "--allow-expired", "--reason", REASON, "--override-key", keyring.key_path("officer-1"),
               "--json")
    assert r.code == 0, r.err
    (entry,) = _overrides(state / "audit.log")
    env = Envelope.from_bytes(canonical_bytes(entry.detail["envelope"]), "entry")
    assert env.payload_type == "application/vnd.airgap.override+json" and len(env.signatures) == 1
    keyring.pub("officer-1").verify(env.signatures[0].sig, env.pae())  # raises unless the officer signed it
    stmt = json.loads(env.payload)
    assert stmt["reason"] == REASON and stmt["what"] == "policy-expiry" and stmt["expired"] == EXPIRED
    assert stmt["policy_sha256"] == hashlib.sha256(policy.signed_bytes()).hexdigest()
    assert stmt["manifest"] == entry.object["manifest"] == json.loads(r.out)["manifest_digest"]
    assert stmt["target"] == TARGET and stmt["keyid"] == keyring.pub("officer-1").keyid and stmt["time"].endswith("Z")

    r = airgap("audit", "verify", "--state", state, "--trust", trust, "--json")
    assert r.code == 0, r.err
    assert r.json()["overrides_checked"] == [entry.seq]
    r = airgap("audit", "verify", "--state", state)
    assert r.code == 0 and "1 signed override checked" in r.out and f"entries {entry.seq}" in r.out
    assert "give --trust" in r.out
    r = airgap("audit", "show", "--state", state, "--trust", trust)
    assert r.code == 0 and REASON in r.out and entry.detail["envelope"]["payload"] not in r.out


@pytest.fixture
def overridden(tmp_path, signed_bundle, keyring):
    """A state directory whose log holds a policy-expiry override, written by verify --record."""
    _, trust = _expired_policy(tmp_path, keyring)
    state = tmp_path / "state"
    r = airgap("verify", signed_bundle.path, "--trust", trust, "--state", state, "--record", "--allow-expired",
               "--reason", REASON, "--override-key", keyring.key_path("officer-2"))
    assert r.code == 0, r.err
    (entry,) = _overrides(state / "audit.log")
    assert airgap("audit", "verify", "--state", state, "--trust", trust).code == 0
    return state, trust, entry.seq


def _forge_key(keyring):
    def edit(doc):
        doc["detail"]["key"] = keyring.pub("officer-1").to_dict()  # another officer's key, not the signer's
    return edit


@pytest.mark.parametrize("edit", [
    pytest.param(lambda k: lambda d: d["detail"].update(reason="routine; nothing to see"), id="reason"),
    pytest.param(lambda k: lambda d: d["detail"].update(policy_sha256="0" * 64), id="digest"),
    pytest.param(lambda k: lambda d: d["object"].update(manifest="sha256:" + "1" * 64), id="manifest"),
    pytest.param(lambda k: lambda d: d["detail"].pop("envelope"), id="no-signature"),
    pytest.param(_forge_key, id="key-swapped"),
])
def test_tampered_override_fails_naming_the_entry(overridden, keyring, edit):
    state, trust, seq = overridden
    log = state / "audit.log"
    _rechain(log, seq, edit(keyring))
    assert AuditLog(log).verify() > seq  # the chain alone finds nothing
    for verb in ("verify", "show"):
        for extra in ((), ("--trust", trust)):
            r = airgap("audit", verb, "--state", state, *extra)
            assert r.code == 1, (verb, r.out, r.err)
            assert f"audit.log:{seq}" in r.err and f"override entry {seq}" in r.err


def test_manifest_digest_is_bound_for_a_bundle_expiry(tmp_path, seeded_registry, keyring, signed_bundle):
    from tests.fixtures.bundles import build_sample

    trust = signed_bundle.trust
    _, b, _ = build_sample(tmp_path, seeded_registry, keyring, expires="2026-11-02T00:00:00Z")
    state = tmp_path / "state"
    r = airgap("verify", b, "--trust", trust, "--state", state, "--allow-expired", "--reason", "disc delayed",
               "--override-key", keyring.key_path("officer-2"))
    assert r.code == 0, r.err
    (entry,) = _overrides(state / "audit.log")
    stmt = json.loads(Envelope.from_bytes(canonical_bytes(entry.detail["envelope"]), "e").payload)
    assert stmt["what"] == "bundle-expiry" and stmt["manifest"] == entry.object["manifest"]
    assert stmt["expired"] == "2026-11-02T00:00:00Z"
    assert airgap("audit", "verify", "--state", state, "--trust", trust).code == 0
    _rechain(state / "audit.log", entry.seq, lambda d: d["detail"].update(manifest="sha256:" + "2" * 64))
    r = airgap("audit", "verify", "--state", state)
    assert r.code == 1 and f"override entry {entry.seq}: records manifest" in r.err


def _append_override(log, signer, reason="fine"):
    from datetime import UTC, datetime

    stmt = ov.statement(what="bundle-expiry", expired=EXPIRED, artifact="bundle geheim-pilot 1.0.0",
                        subject="sha256:" + "a" * 64, manifest="sha256:" + "a" * 64, target=TARGET, reason=reason, now=datetime.now(UTC),
                        keyid=signer.keyid)
    env = ov.sign_statement(signer, stmt)
    detail = {"what": "bundle-expiry", "reason": reason, "keyid": signer.keyid, "error": "expired",
              "manifest": "sha256:" + "a" * 64, "key": signer.public_key.to_dict(), "envelope": env.to_dict()}
    return AuditLog(log).append("override", {"bundle": "b.tar", "manifest": "sha256:" + "a" * 64}, "accepted",
                                actor=Actor("u", "h", signer.keyid), detail=detail)


@pytest.mark.parametrize("signer, role", [("builder-1", "builder"), ("root-1", "root")])
def test_signature_by_a_non_officer_fails_when_the_policy_is_given(tmp_path, keyring, signer, role):
    _, trust = _expired_policy(tmp_path, keyring)
    log = tmp_path / "audit.log"
    _append_override(log, keyring["officer-1"])
    entry = _append_override(log, keyring[signer], reason="anyone could write this")
    # Without a policy only self-consistency can be checked, and the output says so.
    r = airgap("audit", "verify", "--log", log)
    assert r.code == 0 and "give --trust POLICY" in r.out and "entries 1, 2" in r.out
    r = airgap("audit", "verify", "--log", log, "--trust", trust)
    assert r.code == 1 and f"override entry {entry.seq}" in r.err and f"holds {role}" in r.err, r.err
    assert "not officer" in r.err
    assert airgap("audit", "show", "--log", log, "--trust", trust).code == 1


def test_statement_type_cannot_pass_as_a_manifest_signature(keyring):
    """The override envelope has its own payloadType: a manifest envelope is refused as an override."""
    from airgap.dsse import PAYLOAD_TYPE
    from airgap.exceptions import AuditError

    signer = keyring["officer-1"]
    env = Envelope(b"{}", PAYLOAD_TYPE)
    env.add_signature(signer)
    detail = {"key": signer.public_key.to_dict(), "envelope": env.to_dict()}
    with pytest.raises(AuditError, match="payloadType"):
        ov.check_entry(3, {}, detail, signer.keyid, "log:3")
