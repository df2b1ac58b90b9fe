"""Signed override statements: the officer's key approves one override of one thing.

An override lifts an expiry.  So that a later reader of the audit log can tell
that the officer's key (not whoever could write the log) approved *this*
override of *this* bundle or policy for *this* reason, the key signs a small
canonical statement, a DSSE envelope of its own ``payloadType`` (it can never
pass as a signed manifest, and a manifest signature never as an override).
The envelope and the public key go into the override's audit entry;
:func:`check_entry` checks both against the entry, without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.timefmt import format_time
from airgap.dsse import Envelope
from airgap.exceptions import AuditError, FormatError, InvalidValueError, SignatureError
from airgap.keys import PublicKey

__all__ = ["PAYLOAD_TYPE", "STATEMENT_TYPE", "check_entry", "check_overrides", "sign_statement", "statement"]

PAYLOAD_TYPE = "application/vnd.airgap.override+json"
STATEMENT_TYPE = "airgap-override/v1"
_WHAT = frozenset({"bundle-expiry", "policy-expiry"})
_FIELDS = frozenset({"_type", "what", "expired", "artifact", "manifest", "target", "reason", "time", "keyid"})
_MAX_STATEMENT = 1 << 16


def statement(*, what: str, expired: str, artifact: str, subject: str, manifest: str, target: str, reason: str,
              now: datetime, keyid: str) -> dict[str, str]:
    """The statement an officer's key signs for one override.

    *manifest* is the digest of the bundle the override admits; for a policy
    expiry *subject* is the policy's sha256 (``policy_sha256``), for a bundle
    expiry it is that same manifest digest.
    """
    if what not in _WHAT:
        raise InvalidValueError(f"an override lifts a bundle-expiry or a policy-expiry, not {what!r}")
    if what == "bundle-expiry" and subject != manifest:
        raise InvalidValueError("a bundle-expiry override is of the bundle it admits")
    out = {"_type": STATEMENT_TYPE, "what": what, "expired": expired, "artifact": artifact, "manifest": manifest,
           "target": target, "reason": reason, "time": format_time(now), "keyid": keyid}
    if what == "policy-expiry":
        out["policy_sha256"] = subject
    return out


def sign_statement(signing_key: Any, stmt: dict[str, str]) -> Envelope:
    """A DSSE envelope of *stmt* signed by *signing_key* (a key file or PKCS#11 key)."""
    envelope = Envelope(canonical_bytes(stmt), PAYLOAD_TYPE)
    envelope.add_signature(signing_key, artifact="override statement")
    return envelope


def check_entry(seq: int, obj: dict[str, Any], detail: dict[str, Any], actor_keyid: str | None, where: str,
                policy: Any = None) -> dict[str, Any]:
    """Check the override audit entry *seq*: signed by the key it records, binding what it records.

    Returns the verified statement.  Raises :class:`AuditError` (exit 1) naming
    the entry when the envelope is missing or malformed, the signature is not
    the recorded key's, or the reason, what, digest or keyid recorded in the
    entry differ from the statement.  With *policy*, the key must also be an
    officer key of that policy.
    """
    def bad(reason: str) -> AuditError:
        return AuditError(where, f"override entry {seq}: {reason}")

    if "envelope" not in detail or "key" not in detail:
        raise bad("carries no signed override statement (written by an airgap before signed overrides, or the "
                  "signature was removed); nothing shows that an officer's key approved it")
    try:
        key = PublicKey.from_dict(detail["key"], where)
        envelope = Envelope.from_bytes(canonical_bytes(detail["envelope"]), where, max_size=_MAX_STATEMENT)
    except (FormatError, TypeError, ValueError) as exc:
        raise bad(f"the signed statement is malformed ({getattr(exc, 'reason', exc)})") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise bad(f"the envelope's payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE}")
    if len(envelope.signatures) != 1:
        raise bad(f"the envelope must hold exactly one signature, it holds {len(envelope.signatures)}")
    try:
        key.verify(envelope.signatures[0].sig, envelope.pae(), artifact=where)
    except SignatureError:
        raise bad(f"the signature is not by the recorded key {key.keyid[:12]}: the statement or the key was "
                  "changed after the officer signed it") from None
    try:
        stmt = loads_strict(envelope.payload, where)
    except FormatError as exc:
        raise bad(f"the signed statement is not JSON ({exc.reason})") from None
    what = stmt.get("what") if isinstance(stmt, dict) else None
    fields = _FIELDS | ({"policy_sha256"} if what == "policy-expiry" else set())
    if what not in _WHAT or set(stmt) != fields or stmt["_type"] != STATEMENT_TYPE:
        raise bad("the signed statement is not an airgap override statement")
    recorded = {"keyid": (detail.get("keyid"), actor_keyid, key.keyid), "reason": (detail.get("reason"),),
                "what": (detail.get("what"),), "manifest": (detail.get("manifest"), obj.get("manifest"))}
    if what == "policy-expiry":
        recorded["policy_sha256"] = (detail.get("policy_sha256"),)
    for name, values in recorded.items():
        for value in values:
            if value != stmt[name]:
                raise bad(f"records {name} {value!r} but the officer signed {stmt[name]!r}: the entry was "
                          "changed after the override was signed")
    if policy is not None and not policy.has_role_key("officer", key):
        roles = ", ".join(policy.roles_of(key.keyid)) or "no role"
        raise bad(f"was signed by key {key.keyid[:12]}, which holds {roles} in the trust policy "
                  f"{policy.artifact} (version {policy.version}), not officer")
    return stmt


def check_overrides(entries: Iterable[Any], log: str, policy: Any = None) -> list[int]:
    """Check every ``override`` entry of *entries* (audit entries, in order) with :func:`check_entry`.

    Returns the seqs checked; the first entry that fails raises, named ``LOG:SEQ``.
    """
    checked = []
    for e in entries:
        if e.action == "override":
            check_entry(e.seq, e.object, e.detail, e.actor.keyid, f"{log}:{e.seq}", policy)
            checked.append(e.seq)
    return checked
