"""Countersigning a bundle, and taking a signature off again, in place.

The signed payload is the manifest, which never changes; only the signature
envelope at the end of the archive is rewritten (see :mod:`airgap.bundle`), so
both ``sign`` and ``unsign`` cost milliseconds for any bundle size, and the
journal of :func:`airgap.bundle.replace_signatures` leaves the old or the new
envelope whenever either is killed.

Signing can no longer spoil a bundle: given the trust policy, :func:`prepare`
refuses a key that is not an officer key of it (see :mod:`airgap.keyroles`)
before anything is written; and a signature that should not be there is
removed by :func:`prepare_unsign`.

What the officer signs is shown as a review plan (:mod:`airgap.review`):
what changed since the last bundle of the same name they signed, code
first.  A signed bundle's envelope is kept in the history
(:mod:`airgap.history`) for the next review.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from airgap import keyroles, review
from airgap._internal import keyid as _keyid
from airgap._internal.text import plural
from airgap.bundle import Bundle, recover_interrupted_sign, replace_signatures
from airgap.dsse import PAYLOAD_TYPE, Envelope
from airgap.exceptions import InputError, InvalidTypeError, OperationError, SignatureError, TargetError
from airgap.history import History
from airgap.inspect import human_size
from airgap.keys import short_keyid
from airgap.manifest import SIGNATURES_MEMBER, BundleManifest
from airgap.review import Item, Review
from airgap.trust import DUPLICATE, INVALID, REVOKED, UNKNOWN_KEY, VALID, WRONG_ROLE, TrustPolicy, verify_envelope

__all__ = ["SignPlan", "UnsignPlan", "check_bundle_file", "prepare", "prepare_unsign"]

RECOVERED_NOTE = ("An interrupted signing of this bundle was undone first: "
                  "it holds the signatures it had before that run.")


@dataclass
class _Plan:
    path: Path
    manifest: BundleManifest
    envelope: Envelope
    policy: TrustPolicy | None
    recovered: bool
    read_bytes: bytes  # the envelope as shown; compared again just before writing

    def _bundle_lines(self, verb: str, *, images: bool = True) -> list[str]:
        m = self.manifest
        blob_bytes = sum(x.size for x in m.members if x.path.startswith("blobs/"))
        files = [x for x in m.members if x.path.startswith("files/")]
        lines = [RECOVERED_NOTE] if self.recovered else []
        lines += [
            f"You are {verb} the manifest of {m.name} {m.version} for target {m.target}",
            f"  manifest {m.digest}",
            f"  created {m.created}, expires {m.expires}, spec sha256:{m.spec_sha256[:16]}…",
            f"  {plural(len(m.images), 'image')} ({human_size(blob_bytes)} of blobs), {plural(len(files), 'file')}",
        ]
        if images:
            lines += [f"    {i.ref} -> {i.digest}" for i in m.images]
        return lines

    def report(self, envelope: Envelope | None = None):
        """The strict evaluation of *envelope* (default: as read) under the policy, or None without one."""
        if self.policy is None:
            return None
        return verify_envelope(self.policy, envelope or self.envelope, PAYLOAD_TYPE, self.envelope.payload,
                               artifact=str(self.path), payload_name="the bundle's manifest.json", enforce=False)

    def signature_lines(self, envelope: Envelope | None = None, *, mark: int | None = None) -> list[str]:
        """One line per signature: who made it and whether it counts (with a policy)."""
        env = envelope or self.envelope
        report = self.report(env)
        lines = []
        for i, sig in enumerate(env.signatures):
            arrow = "->" if i == mark else "  "
            if report is None:
                lines.append(f"  {arrow} {i + 1}. keyid {short_keyid(sig.keyid)}  (role not checked: no --trust)")
                continue
            r = report.signatures[i]
            if r.counts:
                lines.append(f"  {arrow} {i + 1}. {r.label}  counts as {r.role}")
            else:
                lines.append(f"  {arrow} {i + 1}. {r.label}  DOES NOT COUNT ({_why(r)}); every verify rejects the "
                             f"bundle while it is there (remove it: airgap unsign {self.path} --keyid {sig.keyid[:8]})")
        return lines or ["     (none)"]

    def thresholds(self, envelope: Envelope | None = None) -> str | None:
        """``builder 1 of 1, officer 0 of 1; ...`` for *envelope* under the policy, or None."""
        report = self.report(envelope)
        return report.summary() if report else None

    def _write(self, envelope: Envelope) -> None:
        with Bundle.open(self.path) as bundle:
            current = bundle.signatures_bytes
        if current != self.read_bytes:
            raise OperationError(f"{self.path}: its signatures changed since they were shown (another sign or unsign "
                                 "at the same time?); nothing written, run the command again")
        replace_signatures(self.path, envelope.to_bytes())
        self.read_bytes = envelope.to_bytes()


@dataclass(kw_only=True)
class SignPlan(_Plan):
    # Keyword-only so the fields prepare() always fills need no None default.
    signer: keyroles.Signer
    review: Review
    signed: Envelope | None = None  # the envelope after commit()
    history: History | None = None  # where commit() keeps the signed envelope

    @property
    def signature_count(self) -> int:
        return len((self.signed or self.envelope).signatures)

    def describe(self) -> str:
        lines = self._bundle_lines("signing", images=False)
        lines += [f"  {x}" for x in self.review.render()]
        lines.append(f"  existing signatures: {len(self.envelope.signatures)}")
        lines += self.signature_lines()
        label = self.signer.public_key.label
        if self.policy is None:
            lines.append(f"  signing key {label} ({self.signer.source}): its role was NOT checked (no --trust)")
        else:
            lines.append(f"  signing key {label} ({self.signer.source}): an officer key of {self.policy.artifact}, "
                         f"version {self.policy.version}")
        lines.append("  Signing vouches for these digests; it does not check the content (run 'airgap verify').")
        return "\n".join(lines)

    @property
    def code_to_approve(self) -> list[Item]:
        return self.review.code_to_approve

    def commit(self) -> Envelope:
        env = Envelope(self.envelope.payload, self.envelope.payload_type, self.envelope.signatures)
        env.add_signature(self.signer.key, artifact=SIGNATURES_MEMBER)
        self._write(env)
        self.signed = env
        return env

    def record(self) -> Path | None:
        """Keep the signed envelope in the history (after :meth:`commit`); None without a history."""
        if self.history is None or self.signed is None:
            return None
        return self.history.record(self.signed, self.review.sbom_members)


@dataclass
class UnsignPlan(_Plan):
    index: int = 0  # of the signature to remove

    @property
    def removed(self):
        return self.envelope.signatures[self.index]

    @property
    def remaining(self) -> Envelope:
        """The envelope without the signature."""
        e = self.envelope
        return Envelope(e.payload, e.payload_type, [s for i, s in enumerate(e.signatures) if i != self.index])

    def describe(self) -> str:
        n = len(self.envelope.signatures)
        lines = self._bundle_lines("removing a signature from")
        lines.append(f"  signatures ({n}); the one marked -> is removed:")
        lines += self.signature_lines(mark=self.index)
        after = self.thresholds(self.remaining)
        if after is not None:
            lines.append(f"  after removal: {after}")
        return "\n".join(lines)

    def commit(self) -> Envelope:
        remaining = self.remaining
        self._write(remaining)
        return remaining


def _why(result) -> str:
    """Why a signature does not count, in a few words (its position is on the line already)."""
    if result.status == VALID and result.hint_mismatch:
        return f"its keyid names another key than the one that made it ({result.key.label})"
    if result.status == WRONG_ROLE:
        return f"the key holds {'/'.join(result.key_roles) or 'no role'}, not builder or officer"
    return {INVALID: "invalid signature", UNKNOWN_KEY: "key not in the trust policy", REVOKED: "revoked key",
            DUPLICATE: "the same key signed twice"}.get(result.status, result.status)


def check_bundle_file(path: str | os.PathLike, verb: str) -> Path:
    """*path* as the bundle file *verb* rewrites; media parts or a missing file are input errors."""
    p = Path(path)
    if p.is_dir() or p.name.endswith(".parts.json"):
        raise InputError(f"{p} is a set of media parts: {verb} the bundle file before splitting it "
                         f"('airgap {verb} BUNDLE.tar', then 'airgap split' again), or 'airgap join' these parts "
                         "into a bundle file first")
    if not p.is_file():
        raise InputError(f"{p}: no such bundle file")
    return p


def _open(path: str | os.PathLike, verb: str, policy: TrustPolicy | None,
          plan=None) -> tuple[Path, BundleManifest, Envelope, bytes, bool, Any]:
    """Open the bundle, whose envelope must sign its manifest; *plan* (``plan(bundle, manifest)``) runs while it is open."""
    p = check_bundle_file(path, verb)
    recovered = recover_interrupted_sign(p)
    with Bundle.open(p) as bundle:
        manifest = bundle.manifest()
        envelope = bundle.envelope()
        raw = bundle.signatures_bytes
        # Payload and type refused here; stray signatures are shown in the plan (unsign removes them).
        try:
            verify_envelope(policy, envelope, PAYLOAD_TYPE, bundle.manifest_bytes, artifact=SIGNATURES_MEMBER,
                            payload_name="the bundle's manifest.json", enforce=False)
        except SignatureError as exc:
            raise SignatureError(exc.artifact, f"{exc.reason}; refusing to {verb}") from None
        extra = plan(bundle, manifest) if plan else None
    return p, manifest, envelope, raw, recovered, extra


def prepare(path: str | os.PathLike, key, *, key_source: str | None = None,
            trust_path: str | os.PathLike | None = None, now: datetime | None = None,
            against: str | os.PathLike | None = None, history_dir: str | os.PathLike | None = None) -> SignPlan:
    """What signing *path* with *key* would do; nothing is written until :meth:`SignPlan.commit`.

    With *trust_path* (and *now*) the policy is verified (root signatures,
    expiry) and *key* must be one of its officer keys; in every case a key that
    already signed the bundle is refused.  Refusals raise KeyRoleError (exit 2).
    The review compares with *against*, else with the history in *history_dir*.
    """
    signer = keyroles.Signer(key, key_source or key.public_key.label)
    policy = None
    if trust_path is not None:
        if now is None:
            raise InvalidTypeError("prepare(trust_path=...) needs now= to check the policy's expiry")
        policy = TrustPolicy.load(trust_path, now=now)  # root signatures and expiry
        keyroles.require_role(policy, signer, "officer")
    p, manifest, envelope, raw, recovered, (plan, history) = _open(
        path, "sign", policy, lambda b, m: review.for_bundle(b, m, policy, against=against, history_dir=history_dir))
    if policy is not None and manifest.target != policy.target:
        raise TargetError(str(p), f"the bundle is for target {manifest.target!r}, the trust policy "
                                  f"{policy.artifact} for {policy.target!r}; sign it under its own enclave's policy")
    keyroles.require_new_signature(signer, envelope.signatures, envelope.pae(), str(p))
    return SignPlan(p, manifest, envelope, policy, recovered, raw, signer=signer, review=plan, history=history)


def prepare_unsign(path: str | os.PathLike, keyid: str, *, trust_path: str | os.PathLike | None = None) -> UnsignPlan:
    """What removing the signature whose keyid starts with *keyid* would do.

    *keyid* is a full keyid or a unique prefix of 8+ hex digits; with
    *trust_path* (expiry not checked: it only names the keys) every signature
    is shown with its signer and role.
    """
    policy = TrustPolicy.load(trust_path, now=None) if trust_path is not None else None
    p, manifest, envelope, raw, recovered, _ = _open(path, "unsign", policy)
    if not envelope.signatures:
        raise InputError(f"{p} carries no signatures; nothing to remove")
    plan = UnsignPlan(p, manifest, envelope, policy, recovered, raw)
    report = plan.report()
    names = [f"signature {i + 1}" + (f", {report.signatures[i].label}" if report else "")
             for i in range(len(envelope.signatures))]
    candidates = [(s.keyid, names[i]) for i, s in enumerate(envelope.signatures)]
    plan.index = _keyid.pick(keyid, candidates, option="--keyid", where=f"the signatures of {p}")
    return plan
