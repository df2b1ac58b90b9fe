"""DSSE v1 envelopes (https://github.com/secure-systems-lab/dsse).

Signatures are over ``PAE(payloadType, payload)``, never over the envelope, so
a countersignature appends to ``signatures`` without touching the payload.

Deliberate strictness beyond the DSSE spec, because an envelope is only ever
written by airgap and a verifier must never accept two spellings of one thing:

* an envelope must be exactly what :meth:`Envelope.to_bytes` writes (canonical
  JSON, standard base64 with padding).  DSSE lets verifiers accept URL-safe
  base64 too; airgap refuses it, so a changed byte anywhere in an envelope is
  either a parse error or a signature failure, never silently tolerated;
* every signature carries a ``keyid`` (64 lower-case hex).  It stays a hint:
  :func:`airgap.trust.evaluate` tries every policy key.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from airgap import caps
from airgap._internal import digest as _digest
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.text import plural
from airgap.exceptions import FormatError, InvalidTypeError, InvalidValueError, SignatureError

__all__ = [
    "Envelope",
    "MAX_ENVELOPE_SIZE",
    "MAX_SIGNATURES",
    "PAYLOAD_TYPE",
    "SIGNATURE_SIZE",
    "Signature",
    "b64decode_strict",
    "b64encode",
    "pae",
]

PAYLOAD_TYPE = "application/vnd.airgap.manifest.v1+json"

SIGNATURE_SIZE = 64
# Generous for a manifest of thousands of images, small enough to refuse
# an endless stream before it is parsed.
MAX_ENVELOPE_SIZE = 64 * 1024 * 1024
MAX_SIGNATURES = caps.MAX_SIGNATURES

_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: the exact bytes that are signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(value: Any, artifact: str, what: str) -> bytes:
    """Decode standard, padded base64 with one spelling per byte string only."""
    if not isinstance(value, str) or not _B64.match(value):
        raise FormatError(artifact, f"{what} is not standard padded base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(artifact, f"{what} is not valid base64") from None
    # Unused low bits in the last character give several encodings of the
    # same bytes; only the one we would write is accepted.
    if b64encode(raw) != value:
        raise FormatError(artifact, f"{what} is not canonical base64")
    return raw


@dataclass(frozen=True)
class Signature:
    """One DSSE signature: ``keyid`` is an unauthenticated hint, ``sig`` the raw 64 bytes."""

    keyid: str
    sig: bytes

    def to_dict(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": b64encode(self.sig)}

    @classmethod
    def from_dict(cls, d: Any, artifact: str, index: int = 0) -> Signature:
        where = f"signatures[{index}]"
        if not isinstance(d, dict) or set(d) != {"keyid", "sig"}:
            raise FormatError(artifact, f"{where} must have exactly keyid and sig")
        keyid = d["keyid"]
        if not _digest.is_hex(keyid):
            raise FormatError(artifact, f"{where}.keyid must be 64 lower-case hex characters")
        sig = b64decode_strict(d["sig"], artifact, f"{where}.sig")
        if len(sig) != SIGNATURE_SIZE:
            raise FormatError(
                artifact, f"{where}.sig is {plural(len(sig), 'byte')}, an ed25519 signature is {SIGNATURE_SIZE}"
            )
        return cls(keyid, sig)


class Envelope:
    """A DSSE envelope: ``payload`` bytes, ``payload_type`` and a list of :class:`Signature`."""

    def __init__(self, payload: bytes, payload_type: str = PAYLOAD_TYPE, signatures=None):
        if not isinstance(payload, bytes):
            raise InvalidTypeError("payload must be bytes")
        if not isinstance(payload_type, str) or not payload_type:
            raise InvalidValueError("payload_type must be a non-empty string")
        self.payload = payload
        self.payload_type = payload_type
        self.signatures: list[Signature] = list(signatures or [])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Envelope) and self.to_bytes() == other.to_bytes()

    def __repr__(self) -> str:
        return (
            f"Envelope(payload_type={self.payload_type!r}, {plural(len(self.payload), 'byte')}, "
            f"{plural(len(self.signatures), 'signature')})"
        )

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": b64encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": [s.to_dict() for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: the only form :meth:`from_bytes` accepts."""
        return canonical_bytes(self.to_dict())

    @classmethod
    def from_bytes(
        cls, data: bytes, artifact: str, *, max_size: int = MAX_ENVELOPE_SIZE
    ) -> Envelope:
        """Parse an envelope strictly; any deviation is a :class:`FormatError` naming *artifact*."""
        doc = loads_strict(data, artifact, max_size=max_size)
        if not isinstance(doc, dict) or set(doc) != {"payload", "payloadType", "signatures"}:
            raise FormatError(
                artifact, "a DSSE envelope has exactly payload, payloadType and signatures"
            )
        payload_type = doc["payloadType"]
        if not isinstance(payload_type, str) or not payload_type:
            raise FormatError(artifact, "payloadType must be a non-empty string")
        payload = b64decode_strict(doc["payload"], artifact, "payload")
        sigs = doc["signatures"]
        if not isinstance(sigs, list):
            raise FormatError(artifact, "signatures must be a list")
        if len(sigs) > MAX_SIGNATURES:
            raise FormatError(artifact, f"{len(sigs)} signatures exceed the cap of {MAX_SIGNATURES}")
        env = cls(payload, payload_type, [Signature.from_dict(s, artifact, i) for i, s in enumerate(sigs)])
        if env.to_bytes() != data:
            raise FormatError(artifact, "envelope is not in canonical form (whitespace, key order or escaping differ)")
        return env

    def add_signature(self, signing_key, *, artifact: str = "envelope") -> Signature:
        """Sign the PAE with *signing_key* and append; refuses a second signature by the same key."""
        public = signing_key.public_key
        data = self.pae()
        for existing in self.signatures:
            if existing.keyid == public.keyid:
                raise SignatureError(artifact, f"already signed by key {public.label}")
            # The keyid is only a hint: a signature filed under another keyid
            # may still be this key's, and must not be counted twice.
            try:
                public.verify(existing.sig, data)
            except SignatureError:
                continue
            raise SignatureError(artifact, f"already signed by key {public.label}")
        sig = Signature(public.keyid, signing_key.sign(data))
        self.signatures.append(sig)
        return sig
