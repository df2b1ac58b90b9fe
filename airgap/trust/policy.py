"""The trust policy: the model and its file format.

Shaped like TUF root metadata (``signed`` + ``signatures``, key objects, roles
with keyids and a threshold, ``version``, ``expires``), signed over the
canonical JSON of ``signed``.  A :class:`TrustPolicy` is structurally valid
when constructed; its signatures are judged by :meth:`TrustPolicy.load` /
:meth:`TrustPolicy.verify` (through :mod:`airgap.trust.evaluate`) and by
:class:`~airgap.trust.store.TrustStore`, never by the constructor.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap import keyroles
from airgap._internal import digest as _digest
from airgap._internal import schema
from airgap._internal.fsutil import atomic_write
from airgap._internal.jsonutil import canonical_bytes, loads_strict, pretty_bytes
from airgap._internal.text import plural
from airgap._internal.timefmt import parse_time, require_aware
from airgap.dsse import Signature
from airgap.exceptions import FormatError, InputError, InvalidTypeError, SignatureError
from airgap.keys import PublicKey, short_keyid
from airgap.trust._roles import (
    ALL_ROLES,
    ARTIFACT,
    DISJOINT_ROLES,
    MAX_POLICY_SIZE,
    NAME,
    POLICY_TYPE,
    SIG_HEX,
    Role,
)

if TYPE_CHECKING:
    from airgap.trust.evaluate import Overridden, Override, SignatureReport

__all__ = ["TrustPolicy", "parse_policy", "read_policy_bytes"]


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


class TrustPolicy:
    """A parsed, structurally valid trust policy (signatures not judged here)."""

    def __init__(self, signed: dict[str, Any], signatures: Sequence[Signature] = (), *, artifact: str = ARTIFACT):
        self.artifact = artifact
        _schema_check({"signed": signed, "signatures": []}, artifact)
        # A private copy: a caller mutating its dict afterwards must not change
        # what this object's signatures are checked against.
        self.signed: dict[str, Any] = copy.deepcopy(signed)
        self.signatures: list[Signature] = list(signatures)
        s = self.signed
        self.version: int = s["version"]
        self.expires: datetime = parse_time(s["expires"], artifact)
        self.target: str = s["target"]
        if not NAME.match(self.target):
            raise FormatError(artifact, f"target {self.target!r} is not a valid name")
        # Which bundle names the target accepts; None (absent): any name.
        self.bundles: list[str] | None = list(s["bundles"]) if "bundles" in s else None
        self.keys: dict[str, PublicKey] = _parse_keys(s, artifact)
        self.revoked: tuple[str, ...] = tuple(s["revoked"])
        for keyid in self.revoked:
            if not _digest.is_hex(keyid):
                raise FormatError(artifact, "revoked keyids must be 64 lower-case hex characters")
        self.roles: dict[str, Role] = {}
        for name in ALL_ROLES:
            if name in s["roles"]:
                self.roles[name] = self._parse_role(name, s["roles"][name])
        self._check_disjoint()

    def _parse_role(self, name: str, doc: dict[str, Any]) -> Role:
        role = Role(tuple(doc["keyids"]), doc["threshold"])
        for keyid in role.keyids:
            if keyid not in self.keys:
                raise FormatError(self.artifact, f"{name}: keyid {short_keyid(keyid)} is not in keys")
            if keyid in self.revoked:
                raise FormatError(self.artifact, f"{name}: key {self.key_label(keyid)} is revoked and may not hold a role")
        if not 1 <= role.threshold <= len(role.keyids):
            raise FormatError(self.artifact, f"{name}: threshold {role.threshold} is not between 1 and its "
                                             f"{plural(len(role.keyids), 'key')}")
        return role

    def _check_disjoint(self) -> None:
        for a, b, why in DISJOINT_ROLES:
            if a not in self.roles or b not in self.roles:
                continue
            shared = set(self.roles[a].keyids) & set(self.roles[b].keyids)
            if shared:
                labels = ", ".join(self.key_label(k) for k in sorted(shared))
                one = len(shared) == 1
                raise FormatError(self.artifact, f"{'key' if one else 'keys'} {labels} {'holds' if one else 'hold'} "
                                                 f"both {a} and {b} roles; {why}")

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
        return str(self.signed["expires"])

    def has_role_key(self, role: str, key: PublicKey) -> bool:
        """Whether *key* (compared by its bytes, not a keyid) holds *role*."""
        return role in self.roles and any(k.public == key.public for k in self.role_keys(role))

    def describe(self) -> str:
        """A human summary: target, version, expiry, roles with key labels, root signature status."""
        lines = [f"trust policy for {self.target}, version {self.version}, expires {self.expires_str}",
                 f"  bundles: {', '.join(self.bundles)}" if self.bundles is not None else "  bundles: any name"]
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
        lines.append(f"  signed by {len(root.keys)} of {plural(root.threshold, 'required root key')}"
                     + (f" ({', '.join(k.label for k in root.keys)})" if root.keys else ""))
        return "\n".join(lines)

    def is_expired(self, now: datetime) -> bool:
        require_aware(now)
        return now >= self.expires

    def check_expiry(self, now: datetime, override: Override | None = None) -> Overridden | None:
        """None if unexpired at *now*; what *override* lifted; else :class:`~airgap.exceptions.ExpiredError`."""
        from airgap.trust.evaluate import check_expiry

        return check_expiry(self, now, override)

    # --- wire format -------------------------------------------------------

    def signed_bytes(self) -> bytes:
        """The bytes root signatures cover: canonical JSON of ``signed``."""
        return canonical_bytes(self.signed)

    def to_dict(self) -> dict[str, Any]:
        return {"signed": self.signed, "signatures": [{"keyid": s.keyid, "sig": s.sig.hex()} for s in self.signatures]}

    def to_bytes(self) -> bytes:
        """Deterministic, readable JSON for the file (signatures are over the canonical form)."""
        return pretty_bytes(self.to_dict())

    def write(self, path: str | os.PathLike, *, overwrite: bool = True) -> None:
        """Write :meth:`to_bytes` atomically (without *overwrite*, only to a new file)."""
        atomic_write(Path(path), self.to_bytes(), overwrite=overwrite)

    @classmethod
    def from_bytes(cls, data: bytes, artifact: str = ARTIFACT) -> TrustPolicy:
        """Parse and validate structure; does **not** check signatures or expiry."""
        doc = loads_strict(data, artifact, max_size=MAX_POLICY_SIZE)
        _schema_check(doc, artifact)
        sigs = []
        for i, s in enumerate(doc["signatures"]):
            if not _digest.is_hex(s["keyid"]) or not SIG_HEX.match(s["sig"]):
                raise FormatError(artifact, f"signatures[{i}] is not lower-case hex")
            sigs.append(Signature(s["keyid"], bytes.fromhex(s["sig"])))
        return cls(doc["signed"], sigs, artifact=artifact)

    @classmethod
    def from_file(cls, path: str | os.PathLike, artifact: str | None = None) -> TrustPolicy:
        """A policy file someone named: one that is no trust policy at all (a bundle,
        a key file) is an input error (exit 2); a damaged policy is refused (exit 1)."""
        artifact = artifact or str(path)
        data = read_policy_bytes(path, artifact)
        _require_policy_shape(data, artifact)
        return cls.from_bytes(data, artifact)

    # --- creation and signing ---------------------------------------------

    @classmethod
    def create(cls, target: str, expires: datetime | str, roots: Iterable[PublicKey], root_threshold: int,
               builders: Iterable[PublicKey], builder_threshold: int, officers: Iterable[PublicKey],
               officer_threshold: int, version: int = 1, **options: Any) -> TrustPolicy:
        """A new, unsigned policy (see :func:`airgap.trust.authoring.create_signed` for *options*)."""
        from airgap.trust.authoring import create_signed

        artifact = options.pop("artifact", ARTIFACT)
        signed = create_signed(target, expires, {"root": (roots, root_threshold), "builder": (builders, builder_threshold),
                                                 "officer": (officers, officer_threshold)}, version, **options)
        return cls(signed, artifact=artifact)

    def rotate(self, **changes: Any) -> TrustPolicy:
        """The unsigned successor (see :func:`airgap.trust.authoring.successor`)."""
        from airgap.trust.authoring import successor

        return successor(self, **changes)

    def sign(self, signing_key: Any) -> Signature:
        """Add a root signature over :meth:`signed_bytes`; refuses a second one by the same key."""
        public = signing_key.public_key
        data = self.signed_bytes()
        if keyroles.find_signature(public, self.signatures, data) is not None:
            raise SignatureError(self.artifact, f"already signed by key {public.label}")
        sig = Signature(public.keyid, signing_key.sign(data))
        self.signatures.append(sig)
        return sig

    # --- verification ------------------------------------------------------

    def root_report(self, signer_policy: TrustPolicy | None = None) -> SignatureReport:
        """How this policy's signatures meet the root role of *signer_policy* (default: itself)."""
        from airgap.trust.evaluate import root_report

        return root_report(self, signer_policy)

    def verify(self, now: datetime, *, override: Override | None = None) -> Overridden | None:
        """Self-signed by a threshold of its own root keys, and unexpired (or what *override* lifted)."""
        self.root_report().raise_for_status()
        return self.check_expiry(now, override)

    @classmethod
    def load(cls, path_or_bytes: str | os.PathLike | bytes, *, now: datetime | None,
             artifact: str | None = None) -> TrustPolicy:
        """Parse and :meth:`verify` a policy (no rollback protection: see :class:`~airgap.trust.store.TrustStore`).

        ``now=None`` must be passed explicitly and skips only the expiry check,
        for display (``trust show --ignore-expiry``, ``inspect``), rotation of an
        expired policy, or a caller that judges expiry itself with an override
        (:meth:`check_expiry`); root signatures are always verified.
        """
        policy = parse_policy(path_or_bytes, artifact)
        if now is None:
            policy.root_report().raise_for_status()
        else:
            policy.verify(now)
        return policy

    @staticmethod
    def verify_successor(old: TrustPolicy, new: TrustPolicy, now: datetime, *, final: bool = True,
                         override: Override | None = None) -> Overridden | None:
        """Raise unless *new* may replace *old* (:func:`airgap.trust.evaluate.check_successor`)."""
        from airgap.trust.evaluate import check_successor

        return check_successor(old, new, now, final=final, override=override)


def _parse_keys(signed: dict[str, Any], artifact: str) -> dict[str, PublicKey]:
    names = signed.get("names", {})
    keys: dict[str, PublicKey] = {}
    for keyid, obj in signed["keys"].items():
        key = PublicKey.from_dict(obj, artifact)
        if key.keyid != keyid:
            raise FormatError(artifact, f"keys: keyid {short_keyid(keyid)} does not match its key "
                                        f"(computed {short_keyid(key.keyid)})")
        keys[keyid] = key.with_name(names.get(keyid))
    for keyid, name in names.items():
        if keyid not in keys:
            raise FormatError(artifact, f"names: {short_keyid(keyid)} is not in keys")
        if not NAME.match(name):
            raise FormatError(artifact, f"names: {name!r} is not a valid name")
    return keys


def parse_policy(source: str | os.PathLike | bytes, artifact: str | None = None) -> TrustPolicy:
    """A policy from bytes or a file, structure checked only."""
    if isinstance(source, (bytes, bytearray)):
        return TrustPolicy.from_bytes(bytes(source), artifact or ARTIFACT)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidTypeError(f"a trust policy is given as bytes or a path, not {type(source).__name__}")
    return TrustPolicy.from_file(source, artifact)


def _require_policy_shape(data: bytes, artifact: str) -> None:
    hint = "give the trust policy 'airgap trust init' or 'airgap trust rotate' wrote (trust.json)"
    if not data.lstrip()[:1] == b"{":
        raise InputError(f"{artifact}: not a trust policy (not a JSON document); {hint}")
    try:
        doc = json.loads(data)
    except ValueError:
        return  # JSON damaged inside the object: from_bytes says where
    signed = doc.get("signed") if isinstance(doc, dict) else None
    if not isinstance(signed, dict) or signed.get("_type") != POLICY_TYPE:
        kind = "a public key file" if isinstance(doc, dict) and {"keyid", "key"} <= set(doc) else "another JSON document"
        raise InputError(f"{artifact}: not a trust policy ({kind}, no signed._type {POLICY_TYPE!r}); {hint}")


def read_policy_bytes(path: str | os.PathLike, artifact: str) -> bytes:
    """The bytes of a policy file, refused above :data:`MAX_POLICY_SIZE`."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY_SIZE + 1)
    except OSError as exc:
        raise InputError(f"{artifact}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_POLICY_SIZE:
        raise FormatError(artifact, f"larger than the cap of {MAX_POLICY_SIZE} bytes")
    return data
