"""The trust policy: who may build, who must approve, who may change the policy.

The policy is shaped like TUF root metadata (``signed`` + ``signatures``, key
objects, roles with keyids and a threshold, ``version``, ``expires``) and is
signed, TUF-style, over the canonical JSON of ``signed``.

Rules decided here (each one fails closed):

* **Four eyes.**  A policy whose ``builder`` and ``officer`` roles share a key
  is malformed.  One person's key can therefore never satisfy both thresholds,
  and no counting rule has to pick a role for a shared key.  ``root`` may
  share keys with ``officer`` (root keys are held by officers, offline).
* **The checked does not choose the checker.**  The optional ``toolkit`` role
  signs toolkit releases (the wheels that install airgap on isolated hosts,
  see :mod:`airgap.toolkit`).  It may not share a key with ``builder``: the
  party whose bundles the toolkit verifies must not be able to approve that
  toolkit.  A policy without a ``toolkit`` role is valid and accepts no
  toolkit release.
* **Count keys, not keyids.**  Every signature is tried against every key of
  the policy (its keyid is only a hint for the order); a threshold counts
  distinct public keys that produced a valid signature.
* **Strict bundles.**  For bundle signatures (:func:`evaluate`), every
  signature must count: an invalid signature, a revoked, unknown or
  wrong-role key, a key that signed twice, or a keyid hint that names a
  different key than the one that signed rejects the set even when the
  thresholds are met.  Nobody can "dilute" an envelope with junk, and any
  changed byte in it is noticed.
* **Policies** tolerate only signatures by keys the policy does not know (a
  rotated policy still carries its predecessor's root signatures, as in TUF);
  everything else above rejects.
* **Revocation is permanent.**  A revoked keyid may not appear in a role, and
  every successor must keep every earlier revocation.
* **Rotation.**  Version N+1 must be signed by a threshold of N's root keys and
  a threshold of its own (TUF root rotation).  Versions are applied one at a
  time; a jump needs the intermediate policies.  Intermediate policies may
  have expired, the final one may not (as in TUF).
* **Target is fixed.**  A successor may not change ``target``: a different
  enclave is a different trust anchor and is installed deliberately on a fresh
  state directory, never reached by rotation.
* **Trust on first use.**  :class:`TrustStore` accepts a self-signed,
  unexpired policy when it holds none; once one is recorded, every candidate
  has to chain to it.  A state file that exists but cannot be read is an
  error, never a reason to trust afresh.
* **Override.**  Only expiry can be overridden, only with an
  :class:`ExpiryOverride` naming the officer and the reason; the accepted
  policy carries it in ``expiry_override_used`` for the audit log.
  Signatures, thresholds, rollback and target are never overridable.
* **Payload types.**  :func:`verify_envelope` checks the envelope's
  payloadType before anything else, so a signed part index can never pass
  as a signed manifest.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from airgap import keyroles
from airgap._internal import keyid as _keyid
from airgap._internal import schema
from airgap._internal.fsutil import atomic_write
from airgap._internal.jsonutil import canonical_bytes, loads_strict, pretty_bytes
from airgap.dsse import Signature, pae
from airgap.exceptions import (
    ExpiredError,
    FormatError,
    InputError,
    KeyRoleError,
    RollbackError,
    SignatureError,
    TargetError,
)
from airgap.keys import PublicKey, short_keyid

POLICY_TYPE = "airgap-trust"
SPEC_VERSION = "1.0"
ROLE_NAMES = ("root", "builder", "officer")
# Roles a policy may leave out; without one, nothing that role signs is accepted.
OPTIONAL_ROLES = ("toolkit",)
ALL_ROLES = ROLE_NAMES + OPTIONAL_ROLES
BUNDLE_ROLES = ("builder", "officer")
# Pairs of roles that may never share a key, and why (for the message).
DISJOINT_ROLES = (
    ("builder", "officer", "four eyes needs distinct keys"),
    ("builder", "toolkit", "a builder must not approve the toolkit that verifies its bundles"),
)
ARTIFACT = "trust.json"
MAX_POLICY_SIZE = 1024 * 1024
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_KEYID = re.compile(r"[0-9a-f]{64}\Z")
_SIG_HEX = re.compile(r"[0-9a-f]{128}\Z")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")

# Signature statuses.  Only VALID counts towards a threshold.
VALID = "valid"
INVALID = "invalid"
UNKNOWN_KEY = "unknown-key"
REVOKED = "revoked"
DUPLICATE = "duplicate"
WRONG_ROLE = "wrong-role"
HINT_MISMATCH = "hint-mismatch"


# --- time -------------------------------------------------------------------


def format_time(dt: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` and whole seconds, the only form a policy holds."""
    _require_aware(dt)
    return dt.astimezone(timezone.utc).replace(microsecond=0).strftime(TIME_FORMAT)


def parse_time(value: Any, artifact: str, what: str = "expires") -> datetime:
    if not isinstance(value, str) or not _TIME.match(value):
        raise FormatError(artifact, f"{what} must be an RFC 3339 UTC time like 2027-11-23T00:00:00Z")
    try:
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise FormatError(artifact, f"{what} {value!r} is not a valid date and time") from None


def _require_aware(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise TypeError("times must be timezone-aware datetimes (read the clock once, in UTC)")


# --- schema -----------------------------------------------------------------


@lru_cache(maxsize=1)
def _validator() -> schema.Validator:
    # airgap's own small validator: jsonschema's import alone would cost verify more
    # start-up time than everything else (tests/test_schema.py compares the two).
    return schema.Validator(json.loads(
        resources.files("airgap").joinpath("schemas/trust.schema.json").read_text("utf-8")
    ))


def _schema_check(doc: Any, artifact: str) -> None:
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise FormatError(artifact, f"schema violation at {where}: {err.message}")


# --- the policy -------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryOverride:
    """An officer's explicit decision to accept an expired policy.

    It lifts the expiry check only: signatures, thresholds, rollback and target
    rules still apply.  Whoever passes one must write it to the audit log.
    """

    officer: str
    reason: str

    def __post_init__(self) -> None:
        if not (isinstance(self.officer, str) and self.officer.strip()):
            raise ValueError("an override must name the officer who decided it")
        if not (isinstance(self.reason, str) and self.reason.strip()):
            raise ValueError("an override must give a reason")

    def to_dict(self) -> dict[str, str]:
        return {"officer": self.officer, "reason": self.reason}


@dataclass(frozen=True)
class Role:
    """A role: the keyids allowed to sign for it and how many distinct keys must."""

    keyids: tuple[str, ...]
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold}


def _keys_arg(keys: Iterable[PublicKey], what: str) -> list[PublicKey]:
    keys = list(keys)
    for k in keys:
        if not isinstance(k, PublicKey):
            raise TypeError(f"{what} must be PublicKey objects, got {type(k).__name__}")
    return keys


class TrustPolicy:
    """A parsed, structurally valid trust policy.  Signatures are checked by
    :meth:`verify`, :meth:`load`, :meth:`verify_successor` and :class:`TrustStore`,
    never by the constructor."""

    def __init__(
        self,
        signed: dict[str, Any],
        signatures: Sequence[Signature] = (),
        *,
        artifact: str = ARTIFACT,
    ):
        self.artifact = artifact
        _schema_check({"signed": signed, "signatures": []}, artifact)
        # A private copy: a caller mutating its dict afterwards must not change
        # what this object's signatures are checked against.
        self.signed: dict[str, Any] = copy.deepcopy(signed)
        self.signatures: list[Signature] = list(signatures)
        self.expiry_override_used: ExpiryOverride | None = None
        s = self.signed
        self.version: int = s["version"]
        self.expires: datetime = parse_time(s["expires"], artifact)
        self.target: str = s["target"]
        if not _NAME.match(self.target):
            raise FormatError(artifact, f"target {self.target!r} is not a valid name")
        names = s.get("names", {})
        self.keys: dict[str, PublicKey] = {}
        for keyid, obj in s["keys"].items():
            key = PublicKey.from_dict(obj, artifact)
            if key.keyid != keyid:
                raise FormatError(
                    artifact,
                    f"keys: keyid {short_keyid(keyid)} does not match its key "
                    f"(computed {short_keyid(key.keyid)})",
                )
            self.keys[keyid] = key.with_name(names.get(keyid))
        for keyid, name in names.items():
            if keyid not in self.keys:
                raise FormatError(artifact, f"names: {short_keyid(keyid)} is not in keys")
            if not _NAME.match(name):
                raise FormatError(artifact, f"names: {name!r} is not a valid name")
        self.revoked: tuple[str, ...] = tuple(s["revoked"])
        for keyid in self.revoked:
            if not _KEYID.match(keyid):
                raise FormatError(artifact, "revoked keyids must be 64 lower-case hex characters")
        self.roles: dict[str, Role] = {}
        for name in ALL_ROLES:
            r = s["roles"].get(name)
            if r is None:
                continue
            role = Role(tuple(r["keyids"]), r["threshold"])
            for keyid in role.keyids:
                if keyid not in self.keys:
                    raise FormatError(artifact, f"{name}: keyid {short_keyid(keyid)} is not in keys")
                if keyid in self.revoked:
                    raise FormatError(
                        artifact, f"{name}: key {self.key_label(keyid)} is revoked and may not hold a role"
                    )
            if not 1 <= role.threshold <= len(role.keyids):
                raise FormatError(
                    artifact,
                    f"{name}: threshold {role.threshold} is not between 1 and its "
                    f"{len(role.keyids)} key(s)",
                )
            self.roles[name] = role
        for a, b, why in DISJOINT_ROLES:
            if a not in self.roles or b not in self.roles:
                continue
            shared = set(self.roles[a].keyids) & set(self.roles[b].keyids)
            if shared:
                labels = ", ".join(self.key_label(k) for k in sorted(shared))
                raise FormatError(artifact, f"key(s) {labels} hold both {a} and {b} roles; {why}")

    # --- accessors ---------------------------------------------------------

    def __repr__(self) -> str:
        return f"TrustPolicy(target={self.target!r}, version={self.version}, expires={self.signed['expires']!r})"

    def key_label(self, keyid: str) -> str:
        key = self.keys.get(keyid)
        return key.label if key else short_keyid(keyid)

    def role_keys(self, role: str) -> list[PublicKey]:
        return [self.keys[k] for k in self.roles[role].keyids]

    def roles_of(self, keyid: str) -> list[str]:
        return [name for name, role in self.roles.items() if keyid in role.keyids]

    def has_role(self, role: str) -> bool:
        """Whether the policy defines *role* (the optional ``toolkit`` role may be absent)."""
        return role in self.roles

    @property
    def expires_str(self) -> str:
        return self.signed["expires"]

    def has_role_key(self, role: str, key: PublicKey) -> bool:
        """Whether *key* (compared by its bytes, not a keyid) holds *role*."""
        return any(k.public == key.public for k in self.role_keys(role))

    def describe(self) -> str:
        """A human summary: target, version, expiry, roles with key labels, root signature status."""
        lines = [f"trust policy for {self.target}, version {self.version}, expires {self.expires_str}"]
        for name in ALL_ROLES:
            role = self.roles.get(name)
            if role is None:
                lines.append(f"  {name}: none (no {name} release is accepted)")
                continue
            labels = ", ".join(self.key_label(k) for k in role.keyids)
            lines.append(f"  {name}: {role.threshold} of {len(role.keyids)} ({labels})")
        if self.revoked:
            lines.append(f"  revoked: {', '.join(self.key_label(k) for k in self.revoked)}")
        root = self.root_report().roles["root"]
        lines.append(f"  signed by {len(root.keys)} of {root.threshold} required root keys"
                     + (f" ({', '.join(k.label for k in root.keys)})" if root.keys else ""))
        return "\n".join(lines)

    def write(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_bytes` atomically."""
        atomic_write(Path(path), self.to_bytes())

    def is_expired(self, now: datetime) -> bool:
        _require_aware(now)
        return now >= self.expires

    def check_expiry(self, now: datetime, override: ExpiryOverride | None = None) -> None:
        """Raise :class:`ExpiredError` if the policy has expired at *now*.

        With an *override*, an expired policy is accepted and the override is
        kept in :attr:`expiry_override_used`, which the caller must write to
        the audit log.
        """
        if not self.is_expired(now):
            return
        if override is None:
            raise ExpiredError(self.artifact, f"expired at {self.signed['expires']}")
        if not isinstance(override, ExpiryOverride):
            raise TypeError("override must be an ExpiryOverride")
        self.expiry_override_used = override

    # --- wire format -------------------------------------------------------

    def signed_bytes(self) -> bytes:
        """The bytes root signatures cover: canonical JSON of ``signed``."""
        return canonical_bytes(self.signed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed": self.signed,
            "signatures": [{"keyid": s.keyid, "sig": s.sig.hex()} for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        """Deterministic, readable JSON for the file (signatures are over the canonical form)."""
        return pretty_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes, artifact: str = ARTIFACT) -> TrustPolicy:
        """Parse and validate structure; does **not** check signatures or expiry."""
        doc = loads_strict(data, artifact, max_size=MAX_POLICY_SIZE)
        _schema_check(doc, artifact)
        sigs = []
        for i, s in enumerate(doc["signatures"]):
            if not _KEYID.match(s["keyid"]) or not _SIG_HEX.match(s["sig"]):
                raise FormatError(artifact, f"signatures[{i}] is not lower-case hex")
            sigs.append(Signature(s["keyid"], bytes.fromhex(s["sig"])))
        return cls(doc["signed"], sigs, artifact=artifact)

    @classmethod
    def from_file(cls, path: str | os.PathLike, artifact: str | None = None) -> TrustPolicy:
        artifact = artifact or str(path)
        return cls.from_bytes(_read_capped(path, artifact), artifact)

    # --- creation and signing ---------------------------------------------

    @classmethod
    def create(
        cls,
        target: str,
        expires: datetime | str,
        roots: Iterable[PublicKey],
        root_threshold: int,
        builders: Iterable[PublicKey],
        builder_threshold: int,
        officers: Iterable[PublicKey],
        officer_threshold: int,
        version: int = 1,
        *,
        toolkit: Iterable[PublicKey] = (),
        toolkit_threshold: int | None = None,
        revoked: Iterable[str] = (),
        extra_keys: Iterable[PublicKey] = (),
        artifact: str = ARTIFACT,
    ) -> TrustPolicy:
        """A new, unsigned policy.  Key names (``PublicKey.name``) are kept as labels.

        The ``toolkit`` role is written only when *toolkit* keys are given
        (threshold 1 unless *toolkit_threshold* says otherwise).
        """
        role_keys = {
            "root": _keys_arg(roots, "roots"),
            "builder": _keys_arg(builders, "builders"),
            "officer": _keys_arg(officers, "officers"),
        }
        thresholds = {"root": root_threshold, "builder": builder_threshold, "officer": officer_threshold}
        toolkit = _keys_arg(toolkit, "toolkit")
        if toolkit:
            role_keys["toolkit"] = toolkit
            thresholds["toolkit"] = 1 if toolkit_threshold is None else toolkit_threshold
        elif toolkit_threshold is not None:
            raise InputError("a toolkit threshold needs toolkit keys (--toolkit PUB)")
        keys: dict[str, PublicKey] = {}
        for k in [*_keys_arg(extra_keys, "extra_keys"), *(k for ks in role_keys.values() for k in ks)]:
            if keys.get(k.keyid) is None or (k.name and not keys[k.keyid].name):
                keys[k.keyid] = k
        if isinstance(expires, datetime):
            expires = format_time(expires)
        signed: dict[str, Any] = {
            "_type": POLICY_TYPE,
            "spec_version": SPEC_VERSION,
            "version": version,
            "expires": expires,
            "target": target,
            "keys": {kid: k.to_dict() for kid, k in keys.items()},
            "roles": {
                name: {"keyids": [k.keyid for k in keys], "threshold": thresholds[name]}
                for name, keys in role_keys.items()
            },
            "revoked": sorted(set(revoked)),
        }
        names = {kid: k.name for kid, k in keys.items() if k.name}
        if names:
            signed["names"] = names
        return cls(signed, artifact=artifact)

    def sign(self, signing_key) -> Signature:
        """Add a root signature over :meth:`signed_bytes`; refuses a second one by the same key."""
        public = signing_key.public_key
        data = self.signed_bytes()
        if keyroles.find_signature(public, self.signatures, data) is not None:
            raise SignatureError(self.artifact, f"already signed by key {public.label}")
        sig = Signature(public.keyid, signing_key.sign(data))
        self.signatures.append(sig)
        return sig

    def rotate(self, **changes: Any) -> TrustPolicy:
        """The unsigned successor: version + 1, unchanged roles kept, revocations carried over.

        Accepted changes: ``expires``, ``roots``/``builders``/``officers``/``toolkit``
        (replace that role's keys; ``toolkit`` adds the role to a policy without
        one), ``root_threshold``/``builder_threshold``/``officer_threshold``/
        ``toolkit_threshold``, and ``revoke=[keyids]`` (removed from every role,
        added to ``revoked``).  ``target`` cannot change (see module docstring).
        """
        allowed = {
            "expires", "roots", "builders", "officers", "toolkit",
            "root_threshold", "builder_threshold", "officer_threshold", "toolkit_threshold", "revoke",
        }
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"rotate() cannot change {', '.join(sorted(unknown))}")
        revoke = set(changes.pop("revoke", ()))
        for keyid in revoke:
            if not isinstance(keyid, str) or not _KEYID.match(keyid):
                raise ValueError(f"revoke: {keyid!r} is not a keyid")
        plural = {"root": "roots", "builder": "builders", "officer": "officers", "toolkit": "toolkit"}
        role_keys = {}
        thresholds: dict[str, int | None] = {}
        for role in ALL_ROLES:
            if plural[role] in changes:
                keys = _keys_arg(changes[plural[role]], plural[role])
            else:
                keys = self.role_keys(role) if role in self.roles else []
            role_keys[role] = [k for k in keys if k.keyid not in revoke]
            if keys and not role_keys[role]:
                raise InputError(f"revoking {', '.join(self.key_label(k) for k in sorted(revoke))} leaves the {role} "
                                 f"role without keys; give its new keys too (--{role} PUB)")
            current = self.roles[role].threshold if role in self.roles else None
            thresholds[role] = changes.get(f"{role}_threshold", current)
        all_revoked = set(self.revoked) | revoke
        # Revoked keys stay listed so that a signature by one is reported as
        # "revoked" rather than "unknown".
        kept = [self.keys[k] for k in sorted(all_revoked) if k in self.keys]
        return TrustPolicy.create(
            self.target,
            changes.get("expires", self.signed["expires"]),
            role_keys["root"], thresholds["root"],
            role_keys["builder"], thresholds["builder"],
            role_keys["officer"], thresholds["officer"],
            version=self.version + 1,
            toolkit=role_keys["toolkit"],
            toolkit_threshold=thresholds["toolkit"] if role_keys["toolkit"] else changes.get("toolkit_threshold"),
            revoked=all_revoked,
            extra_keys=kept,
            artifact=self.artifact,
        )

    # --- verification ------------------------------------------------------

    def root_report(self, signer_policy: TrustPolicy | None = None) -> SignatureReport:
        """How this policy's signatures meet the root role of *signer_policy* (default: itself)."""
        return _evaluate(
            signer_policy or self,
            self.signed_bytes(),
            self.signatures,
            roles=("root",),
            artifact=self.artifact,
            tolerate=frozenset({UNKNOWN_KEY}),
        )

    def verify(self, now: datetime, *, expiry_override: ExpiryOverride | None = None) -> None:
        """Self-signed by a threshold of its own root keys, and not expired."""
        self.root_report().raise_for_status()
        self.check_expiry(now, expiry_override)

    @classmethod
    def load(
        cls,
        path_or_bytes: str | os.PathLike | bytes,
        *,
        now: datetime | None,
        artifact: str | None = None,
        expiry_override: ExpiryOverride | None = None,
    ) -> TrustPolicy:
        """Parse and :meth:`verify` a policy (no rollback protection: see :class:`TrustStore`).

        ``now=None`` must be passed explicitly and skips only the expiry check,
        for display (``trust show --ignore-expiry``, ``inspect``) and rotation
        of an expired policy; root signatures are always verified.
        """
        policy = _parse_any(path_or_bytes, artifact)
        if now is None:
            policy.root_report().raise_for_status()
        else:
            policy.verify(now, expiry_override=expiry_override)
        return policy

    @staticmethod
    def verify_successor(
        old: TrustPolicy,
        new: TrustPolicy,
        now: datetime,
        *,
        final: bool = True,
        expiry_override: ExpiryOverride | None = None,
    ) -> None:
        """Raise unless *new* may replace the trusted *old* (rules in the module docstring).

        ``final=False`` is for intermediate steps of a chain, which may have expired.
        """
        _require_aware(now)
        art = new.artifact
        if new.target != old.target:
            raise TargetError(
                art,
                f"target {new.target!r} differs from the trusted target {old.target!r}; "
                "another enclave needs its own trust anchor",
            )
        if new.version <= old.version:
            raise RollbackError(
                art, f"trust policy version {new.version} is older than trusted version {old.version}"
                if new.version < old.version else f"trust policy version {new.version} is already trusted",
            )
        if new.version != old.version + 1:
            raise SignatureError(
                art,
                f"trust policy version {new.version} does not follow trusted version "
                f"{old.version}; the intermediate versions are needed",
            )
        dropped = set(old.revoked) - set(new.revoked)
        if dropped:
            raise RollbackError(
                art,
                f"revocation of key {', '.join(old.key_label(k) for k in sorted(dropped))} "
                "was dropped; revocations are permanent",
            )
        everything = frozenset({INVALID, UNKNOWN_KEY, REVOKED, DUPLICATE, WRONG_ROLE, HINT_MISMATCH})
        data = new.signed_bytes()
        by_old = _evaluate(old, data, new.signatures, roles=("root",), artifact=art, tolerate=everything)
        by_new = _evaluate(new, data, new.signatures, roles=("root",), artifact=art, tolerate=everything)
        for report, which in ((by_old, f"trusted version {old.version}"), (by_new, f"version {new.version}")):
            role = report.roles["root"]
            if not role.satisfied:
                raise SignatureError(
                    art,
                    f"root: {len(role.keys)} of {role.threshold} required signatures by the root keys "
                    f"of {which} {report.details()}",
                )
        # A signature must count for the old or the new root; only a key that
        # neither policy knows is ignored (TUF's "unused signatures").
        for a, b in zip(by_old.signatures, by_new.signatures):
            if a.counts or b.counts:
                continue
            if a.status == UNKNOWN_KEY and b.status == UNKNOWN_KEY:
                continue
            bad = b if b.status != UNKNOWN_KEY else a
            raise SignatureError(art, bad.problem())
        if final:
            new.check_expiry(now, expiry_override)


def _parse_any(source: str | os.PathLike | bytes, artifact: str | None) -> TrustPolicy:
    if isinstance(source, (bytes, bytearray)):
        return TrustPolicy.from_bytes(bytes(source), artifact or ARTIFACT)
    return TrustPolicy.from_file(source, artifact)


def _read_capped(path: str | os.PathLike, artifact: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY_SIZE + 1)
    except OSError as exc:
        raise InputError(f"{artifact}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_POLICY_SIZE:
        raise FormatError(artifact, f"larger than the cap of {MAX_POLICY_SIZE} bytes")
    return data


# --- threshold evaluation ---------------------------------------------------


@dataclass(frozen=True)
class SignatureResult:
    """What one signature turned out to be."""

    index: int
    keyid_hint: str
    status: str
    key: PublicKey | None = None  # the key that verified it, if any
    role: str | None = None  # the role it counts for (only when status is "valid")
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
        if self.status == INVALID:
            return f"signature by key {self.label} is invalid"
        if self.status == UNKNOWN_KEY:
            return f"signature {self.index} is by a key not in the trust policy (keyid hint {self.label})"
        if self.status == REVOKED:
            return f"signature by revoked key {self.label}"
        if self.status == DUPLICATE:
            return f"key {self.label} signed more than once"
        if self.status == WRONG_ROLE:
            held = "/".join(self.key_roles) or "no role"
            return f"signature by {self.label} does not count: the key holds {held}, not a required role"
        if self.hint_mismatch:
            named = self.hint_key.label if self.hint_key else short_keyid(self.keyid_hint)
            return f"signature {self.index} names key {named} but was made by {self.label}"
        return f"signature by {self.label} is valid"


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


@dataclass
class SignatureReport:
    """Per-signature and per-role outcome of :func:`evaluate`; act on it with :meth:`raise_for_status`."""

    artifact: str
    roles: dict[str, RoleResult]
    signatures: list[SignatureResult]
    tolerate: frozenset[str] = field(default_factory=frozenset)

    def _anomalies(self) -> list[SignatureResult]:
        out = []
        for s in self.signatures:
            if s.status != VALID and s.status not in self.tolerate:
                out.append(s)
            elif s.status == VALID and s.hint_mismatch and HINT_MISMATCH not in self.tolerate:
                out.append(s)
        return out

    @property
    def ok(self) -> bool:
        return all(r.satisfied for r in self.roles.values()) and not self._anomalies()

    def details(self) -> str:
        groups: dict[str, list[str]] = {}
        for s in self.signatures:
            key = "present" if s.status == VALID else {
                INVALID: "invalid", UNKNOWN_KEY: "unknown", REVOKED: "revoked",
                DUPLICATE: "duplicate", WRONG_ROLE: "wrong role",
            }[s.status]
            label = s.label + (f" as {s.role}" if s.role else "")
            groups.setdefault(key, []).append(label)
        if not groups:
            return "(no signatures)"
        return "(" + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) + ")"

    def problems(self) -> list[str]:
        """Every reason for rejection, thresholds first, in role order."""
        out = [
            f"{r.role}: {len(r.keys)} of {r.threshold} required signatures {self.details()}"
            for r in self.roles.values()
            if not r.satisfied
        ]
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
            "roles": {
                r.role: {
                    "threshold": r.threshold,
                    "keys": [{"keyid": k.keyid, "name": k.name} for k in r.keys],
                    "missing": r.missing,
                }
                for r in self.roles.values()
            },
            "signatures": [
                {
                    "index": s.index,
                    "keyid_hint": s.keyid_hint,
                    "status": s.status,
                    "keyid": s.key.keyid if s.key else None,
                    "name": s.key.name if s.key else None,
                    "role": s.role,
                    "hint_mismatch": s.hint_mismatch,
                }
                for s in self.signatures
            ],
            "problems": self.problems(),
        }

    def raise_for_status(self) -> None:
        """Raise :class:`SignatureError` with the first problem; return only if all is well."""
        problems = self.problems()
        if problems:
            raise SignatureError(self.artifact, problems[0])


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

    ``strict=False`` judges thresholds only and ignores stray signatures; airgap
    itself always uses ``strict=True`` for bundles.
    """
    tolerate = (
        frozenset()
        if strict
        else frozenset({INVALID, UNKNOWN_KEY, REVOKED, DUPLICATE, WRONG_ROLE, HINT_MISMATCH})
    )
    return _evaluate(policy, pae(payload_type, payload), signatures, roles=roles, artifact=artifact, tolerate=tolerate)


def _evaluate(
    policy: TrustPolicy,
    data: bytes,
    signatures: Sequence[Signature],
    *,
    roles: Sequence[str],
    artifact: str,
    tolerate: frozenset[str],
) -> SignatureReport:
    if not roles:
        # An empty role list would make any set of signatures "sufficient".
        raise ValueError("at least one role must be required")
    for r in roles:
        if r not in policy.roles:
            raise ValueError(f"unknown role {r!r}")
    # Identity is the public key bytes; the policy guarantees one keyid per
    # key, but counting bytes keeps that guarantee out of the security path.
    role_of: dict[bytes, str] = {}
    for r in roles:
        for key in policy.role_keys(r):
            if key.public in role_of and role_of[key.public] != r:
                raise FormatError(
                    policy.artifact, f"key {key.label} holds both {role_of[key.public]} and {r}"
                )
            role_of[key.public] = r
    revoked = set(policy.revoked)
    counted: dict[str, list[PublicKey]] = {r: [] for r in roles}
    seen: set[bytes] = set()
    results: list[SignatureResult] = []
    all_keys = list(policy.keys.values())
    for i, sig in enumerate(signatures):
        # The hint only decides which key is tried first.
        ordered = sorted(all_keys, key=lambda k: k.keyid != sig.keyid)
        signer = None
        for key in ordered:
            try:
                key.verify(sig.sig, data, artifact=artifact)
            except SignatureError:
                continue
            signer = key
            break
        if signer is None:
            if sig.keyid in revoked:
                status = REVOKED
            elif sig.keyid in policy.keys:
                status = INVALID
            else:
                status = UNKNOWN_KEY
            results.append(SignatureResult(i, sig.keyid, status, hint_key=policy.keys.get(sig.keyid)))
            continue
        key_roles = tuple(policy.roles_of(signer.keyid))
        role = None
        if signer.keyid in revoked:
            status = REVOKED
        elif signer.public in seen:
            status = DUPLICATE
        elif signer.public not in role_of:
            status = WRONG_ROLE
        else:
            status = VALID
            role = role_of[signer.public]
            counted[role].append(signer)
        seen.add(signer.public)
        results.append(
            SignatureResult(
                i, sig.keyid, status, signer, role,
                hint_mismatch=sig.keyid != signer.keyid, key_roles=key_roles,
                hint_key=policy.keys.get(sig.keyid),
            )
        )
    role_results = {
        r: RoleResult(r, policy.roles[r].threshold, tuple(counted[r])) for r in roles
    }
    return SignatureReport(artifact, role_results, results, tolerate)


# --- trust state on the isolated side ---------------------------------------


class TrustStore:
    """The last trusted policy, kept at ``<state_dir>/trust.json``."""

    FILENAME = "trust.json"

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir)

    def _key(self) -> str:
        return str(self.state_dir.resolve())

    @property
    def path(self) -> Path:
        return self.state_dir / self.FILENAME

    def has_trusted(self) -> bool:
        return self.path.exists() or self.path.is_symlink()

    def trusted(self) -> TrustPolicy | None:
        """The recorded policy (signatures re-checked, expiry not), or None before first use."""
        if not self.has_trusted():
            return None
        policy = TrustPolicy.from_file(self.path, f"trusted policy {self.path}")
        policy.root_report().raise_for_status()
        return policy

    def load_policy(
        self,
        candidate: str | os.PathLike | bytes,
        now: datetime,
        *,
        intermediates: str | os.PathLike | Iterable[str | os.PathLike | bytes] | None = None,
        artifact: str | None = None,
        expiry_override: ExpiryOverride | None = None,
    ) -> TrustPolicy:
        """Return *candidate* if it may be trusted now; :meth:`record` makes that permanent.

        *intermediates* (a directory of ``*.json`` or a list of files/bytes)
        supplies the versions between the trusted one and the candidate.
        """
        _require_aware(now)
        new = _parse_any(candidate, artifact)
        old = self.trusted()
        if old is None:
            new.verify(now, expiry_override=expiry_override)
        elif new.version == old.version:
            if new.signed_bytes() != old.signed_bytes():
                raise RollbackError(
                    new.artifact,
                    f"trust policy version {new.version} differs from the trusted policy of the same version",
                )
            new.verify(now, expiry_override=expiry_override)
        elif new.version < old.version:
            raise RollbackError(
                new.artifact,
                f"trust policy version {new.version} is older than trusted version {old.version}",
            )
        else:
            chain = self._chain(old, new, intermediates)
            prev = old
            for step in chain[:-1]:
                TrustPolicy.verify_successor(prev, step, now, final=False)
                prev = step
            TrustPolicy.verify_successor(prev, new, now, final=True, expiry_override=expiry_override)
        # Marks the object as vetted for this state directory, so record()
        # (possibly on another TrustStore instance) can refuse anything else.
        new._accepted_for = self._key()
        return new

    @staticmethod
    def _chain(old: TrustPolicy, new: TrustPolicy, intermediates) -> list[TrustPolicy]:
        sources: list[Any] = []
        if intermediates is not None:
            if isinstance(intermediates, (str, os.PathLike)) and Path(intermediates).is_dir():
                sources = sorted(Path(intermediates).glob("*.json"))
            elif isinstance(intermediates, (str, os.PathLike, bytes)):
                sources = [intermediates]
            else:
                sources = list(intermediates)
        by_version: dict[int, TrustPolicy] = {}
        for i, src in enumerate(sources):
            p = _parse_any(src, None if not isinstance(src, bytes) else f"intermediate trust policy {i}")
            if not old.version < p.version < new.version:
                continue
            if p.version in by_version and by_version[p.version].signed_bytes() != p.signed_bytes():
                raise RollbackError(p.artifact, f"two different intermediate policies claim version {p.version}")
            by_version[p.version] = p
        chain = []
        for v in range(old.version + 1, new.version):
            if v not in by_version:
                raise SignatureError(
                    new.artifact,
                    f"trust policy version {new.version} does not follow trusted version "
                    f"{old.version}; intermediate version {v} is needed",
                )
            chain.append(by_version[v])
        return [*chain, new]

    def record(
        self,
        policy: TrustPolicy | str | os.PathLike | bytes,
        *,
        now: datetime | None = None,
        intermediates=None,
        expiry_override: ExpiryOverride | None = None,
    ) -> None:
        """Make a policy the trusted one (atomic write).

        Either the object :meth:`load_policy` just returned, or a path/bytes,
        which is put through :meth:`load_policy` first (so *now* is required).
        A policy object that did not come from :meth:`load_policy` is refused.
        """
        if not isinstance(policy, TrustPolicy):
            if now is None:
                raise TypeError("record(path) needs now= to verify the policy first")
            policy = self.load_policy(
                policy, now, intermediates=intermediates, expiry_override=expiry_override
            )
        if getattr(policy, "_accepted_for", None) != self._key():
            raise ValueError("record() only records a policy returned by load_policy() for this state directory")
        old = self.trusted()
        # The state may have moved on since load_policy(); never step back.
        if old is not None and old.version > policy.version:
            raise RollbackError(
                policy.artifact,
                f"trust policy version {policy.version} is older than trusted version {old.version}",
            )
        if old is not None and old.version == policy.version and old.signed_bytes() != policy.signed_bytes():
            raise RollbackError(
                policy.artifact,
                f"trust policy version {policy.version} differs from the trusted policy of the same version",
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, policy.to_bytes(), root=self.state_dir)  # never through a link in the state



def verify_envelope(
    policy: TrustPolicy,
    envelope,
    *,
    payload_type: str,
    artifact: str,
    roles: Sequence[str] = BUNDLE_ROLES,
) -> bytes:
    """Check *envelope* is of *payload_type* and strictly meets *roles*; return its payload.

    The type is compared before anything else: a signature over another kind
    of document (a part index, say) must never pass as a manifest.
    """
    if envelope.payload_type != payload_type:
        raise SignatureError(
            artifact, f"payloadType {envelope.payload_type!r} is not the expected {payload_type!r}"
        )
    evaluate(
        policy, envelope.payload_type, envelope.payload, envelope.signatures,
        roles=roles, artifact=artifact,
    ).raise_for_status()
    return envelope.payload


# --- helpers for the command line -------------------------------------------


_DURATION = re.compile(r"([1-9][0-9]{0,5})([dwh])\Z")


def parse_expires(value: str | datetime, now: datetime) -> str:
    """``365d``/``8w``/``12h`` from *now*, or an RFC 3339 UTC time; must lie in the future."""
    _require_aware(now)
    if isinstance(value, datetime):
        when = value
    elif m := _DURATION.match(value or ""):
        n, unit = int(m.group(1)), m.group(2)
        when = now + {"d": timedelta(days=n), "w": timedelta(weeks=n), "h": timedelta(hours=n)}[unit]
    else:
        when = parse_time(value, "--expires", "--expires")
    if when <= now:
        raise InputError(f"--expires {format_time(when)} is not in the future")
    return format_time(when)


def _as_public(item: PublicKey | str | os.PathLike) -> PublicKey:
    from airgap.keys import load_public

    return item if isinstance(item, PublicKey) else load_public(item)


def _as_keyid(item: str | os.PathLike | PublicKey, policy: TrustPolicy) -> str:
    """A key to revoke: a PublicKey, a keyid, a unique keyid prefix (8+ hex) of a key
    *policy* lists, or a public key file."""
    if isinstance(item, PublicKey):
        return item.keyid
    if isinstance(item, str) and _KEYID.match(item):
        return item
    if Path(item).is_file():
        return _as_public(item).keyid
    if isinstance(item, str) and _keyid.is_prefix(item):
        ids = sorted(policy.keys)
        where = f"{policy.artifact} (version {policy.version})"
        return ids[_keyid.pick(item, [(k, policy.keys[k].name or "") for k in ids], option="--revoke", where=where)]
    raise InputError(f"--revoke {os.fspath(item)!r}: neither a keyid (64 hex digits, or its first 8 or more) "
                     "nor a public key file")


def _sign_all(policy: TrustPolicy, signing_keys, previous: TrustPolicy | None = None) -> None:
    """Check every signer first (a refusal writes nothing), then sign."""
    items = keyroles.signers(signing_keys)
    keyroles.require_root_signers(policy, items, previous=previous)
    seen: dict[str, str] = {}
    for s in items:
        keyid = s.public_key.keyid
        if keyid in seen:
            raise KeyRoleError(f"{s.source} and {seen[keyid]} are the same key; each root key signs once")
        seen[keyid] = s.source
    for s in items:
        policy.sign(s.key)


def init_policy(
    *,
    target: str,
    expires: str | datetime,
    roots, root_threshold: int,
    builders, builder_threshold: int,
    officers, officer_threshold: int,
    toolkit=(), toolkit_threshold: int | None = None,
    signing_keys=(),
    now: datetime,
) -> TrustPolicy:
    """Version 1 from public keys (``PublicKey`` or ``.pub`` paths), signed by *signing_keys*
    (keys or :class:`~airgap.keyroles.Signer`), each of which must be one of its root keys.
    Without *toolkit* keys the policy has no toolkit role (it accepts no toolkit release)."""
    policy = TrustPolicy.create(
        target, parse_expires(expires, now),
        [_as_public(k) for k in roots], root_threshold,
        [_as_public(k) for k in builders], builder_threshold,
        [_as_public(k) for k in officers], officer_threshold,
        toolkit=[_as_public(k) for k in toolkit or ()], toolkit_threshold=toolkit_threshold,
    )
    _sign_all(policy, signing_keys)
    return policy


def rotate_policy(
    policy: TrustPolicy | str | os.PathLike,
    *,
    expires: str | datetime | None = None,
    roots=None, root_threshold: int | None = None,
    builders=None, builder_threshold: int | None = None,
    officers=None, officer_threshold: int | None = None,
    toolkit=None, toolkit_threshold: int | None = None,
    revoke=(),
    signing_keys=(),
    now: datetime,
) -> TrustPolicy:
    """The next version (``None``/empty = unchanged), signed by *signing_keys*, each a
    root key of the new version or of the current one (whose threshold it must meet too).

    The current policy's root signatures are verified but its expiry is not:
    renewing an expired policy is what rotation is for.
    """
    old = policy if isinstance(policy, TrustPolicy) else TrustPolicy.load(policy, now=None)
    changes: dict[str, Any] = {}
    if expires:
        changes["expires"] = parse_expires(expires, now)
    for name, keys, threshold in (
        ("root", roots, root_threshold),
        ("builder", builders, builder_threshold),
        ("officer", officers, officer_threshold),
        ("toolkit", toolkit, toolkit_threshold),
    ):
        if keys:
            changes["toolkit" if name == "toolkit" else f"{name}s"] = [_as_public(k) for k in keys]
        if threshold is not None:
            changes[f"{name}_threshold"] = threshold
    if revoke:
        changes["revoke"] = [_as_keyid(k, old) for k in revoke]
    new = old.rotate(**changes)
    _sign_all(new, signing_keys, previous=old)
    return new


def sign_policy(policy: TrustPolicy, signing_key, *, previous: TrustPolicy | None = None) -> None:
    """One root officer's signature on *policy* (offline keys sign one at a time).

    The key must be a root key of *policy*, or of *previous* (the version before
    it, for a rotation), and must not have signed already.
    """
    signer = keyroles.signers([signing_key])[0]
    if previous is not None:
        keyroles.check_successor_pair(policy, previous)
    keyroles.require_root_signers(policy, [signer], previous=previous, hint_previous=previous is None)
    keyroles.require_new_signature(signer, policy.signatures, policy.signed_bytes(), policy.artifact)
    policy.sign(signer.key)
