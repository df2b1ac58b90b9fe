"""Threshold evaluation: which signatures count, for which role, and what to do about it.

Everything here takes a :class:`~airgap.trust.policy.TrustPolicy` and bytes
and returns a value (a :class:`SignatureReport`, an :class:`Overridden`);
nothing reads a file or changes the policy.  :func:`verify_envelope` is the
one check of a DSSE envelope every caller uses (bundle manifests in verify,
inspect and sign, the media part index).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, overload

from airgap._internal.timefmt import require_aware
from airgap.dsse import Signature, pae
from airgap.exceptions import (
    ExpiredError,
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    RejectedError,
    RollbackError,
    SignatureError,
    TargetError,
)
from airgap.keys import PublicKey, short_keyid
from airgap.trust import override as override_statement
from airgap.trust._roles import BUNDLE_ROLES

if TYPE_CHECKING:
    from airgap.trust.policy import TrustPolicy

__all__ = [
    "ANY_ROLE",
    "BUNDLE_ROLES",
    "DUPLICATE",
    "HINT_MISMATCH",
    "INVALID",
    "REVOKED",
    "UNKNOWN_KEY",
    "VALID",
    "WRONG_ROLE",
    "Override",
    "Overridden",
    "RoleResult",
    "SignatureReport",
    "SignatureResult",
    "Status",
    "check_expiry",
    "check_successor",
    "evaluate",
    "root_report",
    "verify_envelope",
]

# The requirement "one signature by a key that holds any role of the policy" (who cut the media).
ANY_ROLE = "any role"


class Status(StrEnum):
    """What one signature turned out to be.  Only VALID counts towards a threshold."""

    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN_KEY = "unknown-key"
    REVOKED = "revoked"
    DUPLICATE = "duplicate"
    WRONG_ROLE = "wrong-role"
    HINT_MISMATCH = "hint-mismatch"


VALID, INVALID, UNKNOWN_KEY = Status.VALID, Status.INVALID, Status.UNKNOWN_KEY
REVOKED, DUPLICATE, WRONG_ROLE, HINT_MISMATCH = Status.REVOKED, Status.DUPLICATE, Status.WRONG_ROLE, Status.HINT_MISMATCH
_EVERYTHING = frozenset(Status) - {Status.VALID}


# --- overrides ----------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    """An officer's explicit decision to accept an expired bundle or policy.

    It lifts an expiry check only: signatures, thresholds, rollback and target
    rules still apply.  It counts only if its key is an officer key of the
    policy in force; whoever applies one writes it to the audit log.
    """

    reason: str
    signing_key: Any  # a private key (file or token) of an officer; only its public half is compared

    def __post_init__(self) -> None:
        # Checked before anything is read: a blank reason is no written decision.
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise InvalidValueError("--reason must give the officer's reason for the override in words; it is "
                                    "written to the audit log (--reason \"renewal delayed, see ticket 123\")")
        if not isinstance(getattr(self.signing_key, "public_key", None), PublicKey):
            raise InvalidTypeError("an override needs the officer's key (an object with a public_key)")

    @property
    def public_key(self) -> PublicKey:
        return self.signing_key.public_key

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    def apply(self, what: str, err: RejectedError, policy: TrustPolicy, *, now: datetime, expired: str,
              subject: str) -> Overridden:
        """Lift *err* (an expiry) if this override's key is an officer key of *policy*; raise otherwise.

        *subject* is what expired (the bundle's manifest digest, or the policy's
        sha256), *expired* when.  Nothing is signed yet: :meth:`Overridden.signed`
        signs once the bundle the override is used for is known.
        """
        if not policy.has_role_key("officer", self.public_key):
            raise type(err)(err.artifact, f"{err.reason}; the override key {self.keyid[:12]} is not an officer key "
                                          "in the trust policy")
        require_aware(now)
        return Overridden(what, self, err, subject, expired, policy.target, now)


@dataclass(frozen=True)
class Overridden:
    """An expiry an :class:`Override` lifted; :meth:`signed` is the officer's signed record of it."""

    what: str  # "policy-expiry" or "bundle-expiry"
    override: Override
    error: RejectedError
    subject: str  # the bundle's manifest digest, or the policy's sha256
    expired: str  # when it expired
    target: str
    now: datetime  # the time of use

    def signed(self, manifest: str) -> dict[str, Any]:
        """The audit entry's detail: the override's key signs it, bound to the bundle *manifest* it admits."""
        stmt = override_statement.statement(what=self.what, expired=self.expired, artifact=self.error.artifact,
                                            subject=self.subject, manifest=manifest, target=self.target,
                                            reason=self.override.reason, now=self.now, keyid=self.override.keyid)
        envelope = override_statement.sign_statement(self.override.signing_key, stmt)
        out = {"what": self.what, "reason": self.override.reason, "keyid": self.override.keyid,
               "error": str(self.error), "manifest": manifest, "key": self.override.public_key.to_dict(),
               "envelope": envelope.to_dict()}
        if self.what == "policy-expiry":
            out["policy_sha256"] = self.subject
        return out

    def detail(self) -> str:
        return f"{self.error} (override by officer {self.override.keyid[:12]}: {self.override.reason})"


def check_expiry(policy: TrustPolicy, now: datetime, override: Override | None = None) -> Overridden | None:
    """None if *policy* has not expired at *now*; else what *override* lifted, or :class:`ExpiredError`."""
    if not policy.is_expired(now):
        return None
    err = ExpiredError(policy.artifact, f"expired at {policy.expires_str}")
    if override is None:
        raise err
    if not isinstance(override, Override):
        raise InvalidTypeError("override must be an airgap.trust.Override")
    return override.apply("policy-expiry", err, policy, now=now, expired=policy.expires_str,
                          subject=hashlib.sha256(policy.signed_bytes()).hexdigest())


# --- results ------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureResult:
    """What one signature turned out to be."""

    index: int
    keyid_hint: str
    status: Status
    key: PublicKey | None = None  # the key that verified it, if any
    role: str | None = None  # the role it counts for (only when status is VALID)
    hint_mismatch: bool = False
    key_roles: tuple[str, ...] = ()  # every role of the signing key in the policy
    hint_key: PublicKey | None = None  # the policy key the keyid hint names, if any

    @property
    def counts(self) -> bool:
        return self.status == VALID and not self.hint_mismatch

    @property
    def label(self) -> str:
        if self.key:
            return self.key.label
        return self.hint_key.label if self.hint_key else short_keyid(self.keyid_hint)

    def problem(self) -> str:
        if self.status == VALID and self.hint_mismatch:
            named = self.hint_key.label if self.hint_key else short_keyid(self.keyid_hint)
            return f"signature {self.index} names key {named} but was made by {self.label}"
        if self.status == WRONG_ROLE:
            held = "/".join(self.key_roles) or "no role"
            return f"signature by {self.label} does not count: the key holds {held}, not a required role"
        return {
            INVALID: f"signature by key {self.label} is invalid",
            UNKNOWN_KEY: f"signature {self.index} is by a key not in the trust policy (keyid hint {self.label})",
            REVOKED: f"signature by revoked key {self.label}",
            DUPLICATE: f"key {self.label} signed more than once",
        }.get(self.status, f"signature by {self.label} is valid")


@dataclass(frozen=True)
class RoleResult:
    """A role's threshold and the distinct keys that validly signed for it."""

    role: str
    threshold: int
    keys: tuple[PublicKey, ...]

    @property
    def missing(self) -> int:
        return max(0, self.threshold - len(self.keys))

    @property
    def satisfied(self) -> bool:
        return self.missing == 0


_GROUP = {INVALID: "invalid", UNKNOWN_KEY: "unknown", REVOKED: "revoked", DUPLICATE: "duplicate",
          WRONG_ROLE: "wrong role"}


@dataclass
class SignatureReport:
    """Per-signature and per-role outcome of :func:`evaluate`; act on it with :meth:`raise_for_status`."""

    artifact: str
    roles: dict[str, RoleResult]
    signatures: list[SignatureResult]
    tolerate: frozenset[Status] = field(default_factory=frozenset)

    def _anomalies(self) -> list[SignatureResult]:
        return [s for s in self.signatures
                if (s.status != VALID and s.status not in self.tolerate)
                or (s.status == VALID and s.hint_mismatch and HINT_MISMATCH not in self.tolerate)]

    @property
    def ok(self) -> bool:
        return all(r.satisfied for r in self.roles.values()) and not self._anomalies()

    def signers(self) -> list[PublicKey]:
        """The distinct keys that counted, in role order."""
        return [k for r in self.roles.values() for k in r.keys]

    def details(self) -> str:
        groups: dict[str, list[str]] = {}
        for s in self.signatures:
            label = s.label + (f" as {s.role}" if s.role else "")
            groups.setdefault(_GROUP.get(s.status, "present"), []).append(label)
        if not groups:
            return "(no signatures)"
        return "(" + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) + ")"

    def problems(self) -> list[str]:
        """Every reason for rejection, thresholds first, in role order."""
        out = [f"{r.role}: {len(r.keys)} of {r.threshold} required signatures {self.details()}"
               for r in self.roles.values() if not r.satisfied]
        out.extend(s.problem() for s in self._anomalies())
        return out

    def summary(self) -> str:
        """One line: ``builder 1 of 1, officer 1 of 1`` plus any problem."""
        parts = [f"{r.role} {len(r.keys)} of {r.threshold}" for r in self.roles.values()]
        problems = self.problems()
        return ", ".join(parts) + (f"; {problems[0]}" if problems else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "ok": self.ok,
            "roles": {r.role: {"threshold": r.threshold, "keys": [{"keyid": k.keyid, "name": k.name} for k in r.keys],
                               "missing": r.missing} for r in self.roles.values()},
            "signatures": [{"index": s.index, "keyid_hint": s.keyid_hint, "status": str(s.status),
                            "keyid": s.key.keyid if s.key else None, "name": s.key.name if s.key else None,
                            "role": s.role, "hint_mismatch": s.hint_mismatch} for s in self.signatures],
            "problems": self.problems(),
        }

    def raise_for_status(self) -> None:
        """Raise :class:`SignatureError` with the first problem; return only if all is well."""
        problems = self.problems()
        if problems:
            raise SignatureError(self.artifact, problems[0])


# --- evaluation -----------------------------------------------------------------


def evaluate(
    policy: TrustPolicy,
    payload_type: str,
    payload: bytes,
    signatures: Sequence[Signature],
    *,
    roles: Sequence[str] = BUNDLE_ROLES,
    artifact: str = "signatures",
    strict: bool = True,
) -> SignatureReport:
    """Verify DSSE *signatures* over ``PAE(payload_type, payload)`` against *policy*'s *roles*.

    ``strict=False`` judges thresholds only and ignores stray signatures (the
    review history uses it); acceptance always goes through
    :func:`verify_envelope`, which is strict.  ``roles=(ANY_ROLE,)`` asks for one
    signature by a key holding any role of the policy.
    """
    tolerate = frozenset() if strict else _EVERYTHING
    return _evaluate(policy, pae(payload_type, payload), signatures, roles=roles, artifact=artifact, tolerate=tolerate)


@overload
def verify_envelope(policy: TrustPolicy, envelope: Any, payload_type: str, expected_payload: bytes, *, artifact: str,
                    payload_name: str = ..., roles: Sequence[str] = ..., enforce: bool = ...) -> SignatureReport: ...


@overload
def verify_envelope(policy: None, envelope: Any, payload_type: str, expected_payload: bytes, *, artifact: str,
                    payload_name: str = ..., roles: Sequence[str] = ..., enforce: bool = ...) -> None: ...


def verify_envelope(
    policy: TrustPolicy | None,
    envelope: Any,
    payload_type: str,
    expected_payload: bytes,
    *,
    artifact: str,
    payload_name: str = "the document it should sign",
    roles: Sequence[str] = BUNDLE_ROLES,
    enforce: bool = True,
) -> SignatureReport | None:
    """The one check of a DSSE envelope: what it signs, then who signed it.

    In this order: the payloadType is *payload_type* (a signed part index can
    never pass as a manifest) and the payload is byte for byte
    *expected_payload* (what is used is what was signed), each a
    :class:`SignatureError`; then the signatures are judged strictly against
    *roles* of *policy* (every signature must count, see :func:`evaluate`) and
    the report is returned.  With ``enforce`` (acceptance) a report with any
    problem raises; without it (inspect, the signing plan) the caller shows it.
    Without a *policy* only what it signs is checked (None is returned).
    """
    if envelope.payload_type != payload_type:
        raise SignatureError(artifact, f"payloadType {envelope.payload_type!r} is not the expected {payload_type!r}")
    if envelope.payload != expected_payload:
        raise SignatureError(artifact, f"the signed payload is not {payload_name}")
    if policy is None:
        return None
    report = evaluate(policy, payload_type, envelope.payload, envelope.signatures, roles=roles, artifact=artifact)
    if enforce:
        report.raise_for_status()
    return report


def root_report(policy: TrustPolicy, signer_policy: TrustPolicy | None = None) -> SignatureReport:
    """How *policy*'s signatures meet the root role of *signer_policy* (default: itself).

    Only signatures by keys the signer policy does not know are tolerated (a
    rotated policy still carries its predecessor's root signatures, as in TUF).
    """
    return _evaluate(signer_policy or policy, policy.signed_bytes(), policy.signatures, roles=("root",),
                     artifact=policy.artifact, tolerate=frozenset({UNKNOWN_KEY}))


def _role_map(policy: TrustPolicy, roles: Sequence[str]) -> tuple[dict[bytes, str], dict[str, int]]:
    """Which required role each key (by its bytes) counts for, and each role's threshold."""
    if not roles:
        # An empty role list would make any set of signatures "sufficient".
        raise InvalidValueError("at least one role must be required")
    if tuple(roles) == (ANY_ROLE,):
        return {k.public: ANY_ROLE for r in policy.roles for k in policy.role_keys(r)}, {ANY_ROLE: 1}
    for r in roles:
        if r not in policy.roles:
            raise InvalidValueError(f"unknown role {r!r}")
    # Identity is the public key bytes; the policy guarantees one keyid per
    # key, but counting bytes keeps that guarantee out of the security path.
    role_of: dict[bytes, str] = {}
    for r in roles:
        for key in policy.role_keys(r):
            if key.public in role_of and role_of[key.public] != r:
                raise FormatError(policy.artifact, f"key {key.label} holds both {role_of[key.public]} and {r}")
            role_of[key.public] = r
    return role_of, {r: policy.roles[r].threshold for r in roles}


def _signer(policy: TrustPolicy, sig: Signature, data: bytes, artifact: str) -> PublicKey | None:
    """The policy key that made *sig*; every key is tried, the keyid hint only decides the order."""
    for key in sorted(policy.keys.values(), key=lambda k: k.keyid != sig.keyid):
        try:
            key.verify(sig.sig, data, artifact=artifact)
        except SignatureError:
            continue
        return key
    return None


def _evaluate(
    policy: TrustPolicy,
    data: bytes,
    signatures: Sequence[Signature],
    *,
    roles: Sequence[str],
    artifact: str,
    tolerate: frozenset[Status],
) -> SignatureReport:
    role_of, thresholds = _role_map(policy, roles)
    revoked = set(policy.revoked)
    counted: dict[str, list[PublicKey]] = {r: [] for r in thresholds}
    seen: set[bytes] = set()
    results: list[SignatureResult] = []
    for i, sig in enumerate(signatures):
        signer = _signer(policy, sig, data, artifact)
        hint_key = policy.keys.get(sig.keyid)
        if signer is None:
            status = REVOKED if sig.keyid in revoked else INVALID if hint_key is not None else UNKNOWN_KEY
            results.append(SignatureResult(i, sig.keyid, status, hint_key=hint_key))
            continue
        role = None
        if signer.keyid in revoked:
            status = REVOKED
        elif signer.public in seen:
            status = DUPLICATE
        elif signer.public not in role_of:
            status = WRONG_ROLE
        else:
            status, role = VALID, role_of[signer.public]
            counted[role].append(signer)
        seen.add(signer.public)
        results.append(SignatureResult(i, sig.keyid, status, signer, role, hint_mismatch=sig.keyid != signer.keyid,
                                       key_roles=tuple(policy.roles_of(signer.keyid)), hint_key=hint_key))
    role_results = {r: RoleResult(r, t, tuple(counted[r])) for r, t in thresholds.items()}
    return SignatureReport(artifact, role_results, results, tolerate)


# --- successor rules --------------------------------------------------------------


def check_successor(
    old: TrustPolicy,
    new: TrustPolicy,
    now: datetime,
    *,
    final: bool = True,
    override: Override | None = None,
) -> Overridden | None:
    """Raise unless *new* may replace the trusted *old*; return the expiry override it needed, if any.

    Same target, exactly the next version, every revocation kept, a root
    threshold of both versions, no signature that counts for neither (only
    keys neither version knows are ignored).  ``final=False`` is for
    intermediate steps of a chain, which may have expired.
    """
    require_aware(now)
    _check_successor_fields(old, new)
    data = new.signed_bytes()
    by_old = _evaluate(old, data, new.signatures, roles=("root",), artifact=new.artifact, tolerate=_EVERYTHING)
    by_new = _evaluate(new, data, new.signatures, roles=("root",), artifact=new.artifact, tolerate=_EVERYTHING)
    for report, which in ((by_old, f"trusted version {old.version}"), (by_new, f"version {new.version}")):
        role = report.roles["root"]
        if not role.satisfied:
            raise SignatureError(new.artifact, f"root: {len(role.keys)} of {role.threshold} required signatures by "
                                               f"the root keys of {which} {report.details()}")
    # A signature must count for the old or the new root; only a key that
    # neither policy knows is ignored (TUF's "unused signatures").
    for a, b in zip(by_old.signatures, by_new.signatures):
        if a.counts or b.counts or (a.status == UNKNOWN_KEY and b.status == UNKNOWN_KEY):
            continue
        raise SignatureError(new.artifact, (b if b.status != UNKNOWN_KEY else a).problem())
    return check_expiry(new, now, override) if final else None


def _check_successor_fields(old: TrustPolicy, new: TrustPolicy) -> None:
    art = new.artifact
    if new.target != old.target:
        raise TargetError(art, f"target {new.target!r} differs from the trusted target {old.target!r}; "
                               "another enclave needs its own trust anchor")
    if new.version < old.version:
        raise RollbackError(art, f"trust policy version {new.version} is older than trusted version {old.version}")
    if new.version == old.version:
        raise RollbackError(art, f"trust policy version {new.version} is already trusted")
    if new.version != old.version + 1:
        raise SignatureError(art, f"trust policy version {new.version} does not follow trusted version "
                                  f"{old.version}; the intermediate versions are needed")
    dropped = set(old.revoked) - set(new.revoked)
    if dropped:
        raise RollbackError(art, f"revocation of key {', '.join(old.key_label(k) for k in sorted(dropped))} "
                                 "was dropped; revocations are permanent")
