"""Which key may sign what: the checks every signing verb runs before it writes.

A signature by a key of the wrong role is at best no approval at all (a builder
key countersigning counts as a second builder, not as the officer), and at
worst, under the strict rules of :func:`airgap.trust.evaluate`, makes every
later ``verify`` reject the bundle (an unknown, revoked or root-only key).  So
the signing verbs refuse such a key up front, with the key's role in the
message, instead of leaving the officer a spoiled artifact:

* ``airgap sign`` (a bundle) needs an officer key of the trust policy;
* ``airgap toolkit release/sign`` (a toolkit release) need a toolkit key of it;
* ``airgap trust init/rotate/sign`` (a policy) need a root key of the policy
  being signed, or, for a rotation, of the previous version, whose root
  threshold the successor must meet as well;
* nobody signs the same thing twice.

Each refusal is a :class:`~airgap.exceptions.KeyRoleError` (exit 2): the caller
chose the wrong key, nothing was examined and found wanting, nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airgap._internal.text import article
from airgap.dsse import Signature
from airgap.exceptions import InputError, KeyRoleError, SignatureError
from airgap.keys import PublicKey, short_keyid

if TYPE_CHECKING:
    from airgap.trust import TrustPolicy

__all__ = [
    "RootStatus",
    "Signer",
    "find_signature",
    "held",
    "require_new_signature",
    "require_role",
    "require_root_signers",
    "signers",
]


@dataclass(frozen=True)
class Signer:
    """A private key and how the user named it (a file path or a token URI), for messages."""

    key: Any  # anything with .public_key and .sign(data)
    source: str

    @property
    def public_key(self) -> PublicKey:
        return self.key.public_key


def signers(items: Sequence[Any]) -> list[Signer]:
    """Wrap bare keys (named by their label) so every check can name its key."""
    return [i if isinstance(i, Signer) else Signer(i, i.public_key.label) for i in items]


def held(policy: TrustPolicy, keyid: str) -> str | None:
    """How *policy* knows a key: ``"a builder key"``, ``"a root and officer key"``,
    ``"a revoked key"``, or None when the policy does not list it at all."""
    if keyid in policy.revoked:
        return "a revoked key"
    roles = policy.roles_of(keyid)
    if not roles:
        return None
    return article(" and ".join(roles) + " key")


def _labels(policy: TrustPolicy, role: str) -> str:
    return ", ".join(policy.key_label(k) for k in policy.roles[role].keyids)


def _where(policy: TrustPolicy) -> str:
    return f"{policy.artifact}, version {policy.version}"


# --------------------------------------------------------------------------- bundles


def require_role(policy: TrustPolicy, signer: Signer, role_name: str) -> None:
    """Refuse *signer* unless it is a *role_name* key of *policy* (officer: countersigning a
    bundle; toolkit: signing a toolkit release)."""
    keyid = signer.public_key.keyid
    if role_name in policy.roles_of(keyid) and keyid not in policy.revoked:
        return
    article = "an" if role_name[0] in "aeiou" else "a"
    if not policy.has_role(role_name):
        raise KeyRoleError(f"the trust policy ({_where(policy)}) has no {role_name} role, so no {role_name} key "
                           f"can sign; the root officers add one with 'airgap trust rotate --{role_name} PUB'")
    role = held(policy, keyid)
    need = f"{article} {role_name} key is needed ({_labels(policy, role_name)})"
    if role == "a revoked key":
        raise KeyRoleError(f"{signer.source} is revoked in the trust policy ({_where(policy)}); {need}")
    if role is None:
        raise KeyRoleError(
            f"{signer.source} (keyid {short_keyid(keyid)}) is not in the trust policy ({_where(policy)}) at all; {need}"
        )
    raise KeyRoleError(f"{signer.source} is {role} of the policy ({_where(policy)}); {need}")


# --------------------------------------------------------------------------- policies


def require_root_signers(
    policy: TrustPolicy, items: Sequence[Signer], *, previous: TrustPolicy | None = None, hint_previous: bool = False
) -> None:
    """Refuse any signer that is a root key neither of *policy* nor of *previous*.

    A rotation (``previous`` given) must meet both root thresholds, so a root
    key of either version is useful; a key that is root of neither only spoils
    the signature list.  *hint_previous* adds how to name the previous version.
    """
    for s in items:
        keyid = s.public_key.keyid
        if "root" in policy.roles_of(keyid) or (previous is not None and "root" in previous.roles_of(keyid)):
            continue
        raise KeyRoleError(_not_root(policy, s, previous, hint_previous))


def _not_root(policy: TrustPolicy, s: Signer, previous: TrustPolicy | None, hint_previous: bool) -> str:
    keyid = s.public_key.keyid
    now = held(policy, keyid)
    if previous is None:
        what = f"{now} of this policy, not a root key" if now else f"not in the policy at all (keyid {short_keyid(keyid)})"
        text = f"{s.source} is {what}; sign with a root key of version {policy.version} ({_labels(policy, 'root')})"
        if hint_previous and policy.version > 1:
            text += "; for a rotation a root key of the previous version may sign too: name it with --successor-of PREVIOUS"
        return text
    before = held(previous, keyid)
    if now is None and before is None:
        what = f"not in version {policy.version} or version {previous.version} at all (keyid {short_keyid(keyid)})"
    else:
        what = " and ".join(f"{h} of version {p.version}" if h else f"not in version {p.version}"
                            for p, h in ((policy, now), (previous, before))) + ", a root key of neither"
    return (f"{s.source} is {what}; sign with a root key of version {policy.version} ({_labels(policy, 'root')}) "
            f"or of version {previous.version} ({_labels(previous, 'root')})")


def check_successor_pair(policy: TrustPolicy, previous: TrustPolicy) -> None:
    """*previous* must be the version right before *policy*, for the same target."""
    if previous.target != policy.target or previous.version != policy.version - 1:
        raise InputError(
            f"{previous.artifact} (version {previous.version} for {previous.target}) is not the version before "
            f"{policy.artifact} (version {policy.version} for {policy.target})"
        )


@dataclass(frozen=True)
class RootStatus:
    """How far a policy's root signatures are: its own threshold and, for a rotation, the previous one's."""

    signatures: int
    threshold: int
    previous_version: int | None = None
    previous_signatures: int = 0
    previous_threshold: int = 0

    @classmethod
    def of(cls, policy: TrustPolicy, previous: TrustPolicy | None = None) -> RootStatus:
        own = policy.root_report().roles["root"]
        if previous is None:
            return cls(len(own.keys), own.threshold)
        prev = policy.root_report(previous).roles["root"]
        return cls(len(own.keys), own.threshold, previous.version, len(prev.keys), prev.threshold)

    @property
    def complete(self) -> bool:
        own = self.signatures >= self.threshold
        return own and (self.previous_version is None or self.previous_signatures >= self.previous_threshold)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"root_signatures": self.signatures, "root_threshold": self.threshold, "complete": self.complete}
        if self.previous_version is not None:
            out.update(previous_version=self.previous_version, previous_root_signatures=self.previous_signatures,
                       previous_root_threshold=self.previous_threshold)
        return out

    def hint(self, path: str, previous_path: str | None = None) -> str:
        """Empty when complete; otherwise what is missing and the command each root officer runs."""
        if self.complete:
            return ""
        missing = [f"{max(0, self.threshold - self.signatures)} more by its own root keys ({self.signatures} of {self.threshold})"]
        cmd = f"airgap trust sign {path} --key <root key>"
        if self.previous_version is not None:
            missing.append(f"{max(0, self.previous_threshold - self.previous_signatures)} more by the root keys of "
                           f"version {self.previous_version} ({self.previous_signatures} of {self.previous_threshold})")
            cmd = f"airgap trust sign {path} --successor-of {previous_path or '<previous policy>'} --key <root key>"
        return f"INCOMPLETE: {' and '.join(missing)} needed before anyone will trust it; each root officer runs: {cmd}"


# --------------------------------------------------------------------------- either


def find_signature(public: PublicKey, signatures: Sequence[Signature], data: bytes) -> int | None:
    """Index of a signature that *public* made over *data* (or that carries its keyid), else None.

    The keyid is only a hint: a signature filed under another keyid may still
    be this key's, and a second one by the same key would never count.
    """
    for i, existing in enumerate(signatures):
        if existing.keyid == public.keyid:
            return i
        try:
            public.verify(existing.sig, data)
        except SignatureError:
            continue
        return i
    return None


def require_new_signature(signer: Signer, signatures: Sequence[Signature], data: bytes, what: str) -> None:
    """Refuse a key that already signed *what* (a key counts once, a second signature only spoils)."""
    i = find_signature(signer.public_key, signatures, data)
    if i is not None:
        raise KeyRoleError(f"{signer.source} already signed {what} (signature {i + 1} of {len(signatures)}); "
                           "nothing to do")
