"""The trusted policy of a state directory (``<state_dir>/trust.json``).

Trust on first use: :class:`TrustStore` accepts a self-signed, unexpired policy
when it holds none; once one is recorded, every candidate has to chain to it
(TUF root rotation, one version at a time).  A state file that exists but
cannot be read is an error, never a reason to trust afresh.
:meth:`TrustStore.load_policy` returns an :class:`AcceptedPolicy`, the only
thing :meth:`TrustStore.record` writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from airgap._internal.fsutil import atomic_write
from airgap._internal.timefmt import require_aware
from airgap.exceptions import InvalidTypeError, InvalidValueError, RollbackError, SignatureError
from airgap.trust.evaluate import Overridden, Override, check_successor
from airgap.trust.policy import TrustPolicy, parse_policy, read_policy_bytes

__all__ = ["AcceptedPolicy", "TrustStore"]

Intermediates = str | os.PathLike | Iterable[str | os.PathLike | bytes] | None


@dataclass(frozen=True)
class AcceptedPolicy:
    """A policy :meth:`TrustStore.load_policy` accepted for one state directory.

    ``overridden`` is the expiry an officer's override lifted (None if none
    was needed): the caller writes it to the audit log.
    """

    policy: TrustPolicy
    state_dir: str  # resolved: record() refuses it for any other directory
    overridden: Overridden | None = None


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
        artifact = f"trusted policy {self.path}"  # state, not a file someone named: damage is a refusal
        policy = TrustPolicy.from_bytes(read_policy_bytes(self.path, artifact), artifact)
        policy.root_report().raise_for_status()
        return policy

    def load_policy(
        self,
        candidate: str | os.PathLike | bytes,
        now: datetime,
        *,
        intermediates: Intermediates = None,
        artifact: str | None = None,
        override: Override | None = None,
    ) -> AcceptedPolicy:
        """*candidate* if it may be trusted now; :meth:`record` makes that permanent.

        *intermediates* (a directory of ``*.json`` or a list of files/bytes)
        supplies the versions between the trusted one and the candidate.  An
        *override* lifts only the candidate's expiry, never a signature,
        chain or rollback rule.
        """
        require_aware(now)
        new = parse_policy(candidate, artifact)
        old = self.trusted()
        if old is None:
            overridden = new.verify(now, override=override)
        elif new.version == old.version:
            _same_version(old, new)
            overridden = new.verify(now, override=override)
        elif new.version < old.version:
            raise RollbackError(new.artifact, f"trust policy version {new.version} is older than trusted version "
                                              f"{old.version}")
        else:
            prev = old
            for step in _chain(old, new, intermediates):
                check_successor(prev, step, now, final=False)
                prev = step
            overridden = check_successor(prev, new, now, final=True, override=override)
        return AcceptedPolicy(new, self._key(), overridden)

    def record(
        self,
        accepted: AcceptedPolicy | str | os.PathLike | bytes | None,
        *,
        now: datetime | None = None,
        intermediates: Intermediates = None,
        override: Override | None = None,
    ) -> None:
        """Make a policy the trusted one (atomic write).

        Either what :meth:`load_policy` returned for this state directory, or a
        path/bytes, which is put through :meth:`load_policy` first (so *now* is
        required).  A bare :class:`TrustPolicy` is refused: nothing vetted it here.
        """
        if accepted is None or isinstance(accepted, TrustPolicy):
            raise InvalidValueError("record() only records what load_policy() returned for this state directory")
        if not isinstance(accepted, AcceptedPolicy):
            if now is None:
                raise InvalidTypeError("record(path) needs now= to verify the policy first")
            accepted = self.load_policy(accepted, now, intermediates=intermediates, override=override)
        if accepted.state_dir != self._key():
            raise InvalidValueError("record() only records a policy returned by load_policy() for this state directory")
        policy, old = accepted.policy, self.trusted()
        # The state may have moved on since load_policy(); never step back.
        if old is not None and old.version > policy.version:
            raise RollbackError(policy.artifact, f"trust policy version {policy.version} is older than trusted "
                                                 f"version {old.version}")
        if old is not None and old.version == policy.version:
            _same_version(old, policy)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, policy.to_bytes(), root=self.state_dir)  # never through a link in the state


def _same_version(old: TrustPolicy, new: TrustPolicy) -> None:
    if new.signed_bytes() != old.signed_bytes():
        raise RollbackError(new.artifact, f"trust policy version {new.version} differs from the trusted policy of "
                                          "the same version")


def _sources(intermediates: Intermediates) -> list[Any]:
    if intermediates is None:
        return []
    if isinstance(intermediates, (str, os.PathLike)) and Path(intermediates).is_dir():
        return sorted(Path(intermediates).glob("*.json"))
    if isinstance(intermediates, (str, os.PathLike, bytes)):
        return [intermediates]
    return list(intermediates)


def _chain(old: TrustPolicy, new: TrustPolicy, intermediates: Intermediates) -> list[TrustPolicy]:
    """The versions strictly between *old* and *new*, one each, from *intermediates*."""
    by_version: dict[int, TrustPolicy] = {}
    for i, src in enumerate(_sources(intermediates)):
        p = parse_policy(src, None if not isinstance(src, bytes) else f"intermediate trust policy {i}")
        if not old.version < p.version < new.version:
            continue
        if p.version in by_version and by_version[p.version].signed_bytes() != p.signed_bytes():
            raise RollbackError(p.artifact, f"two different intermediate policies claim version {p.version}")
        by_version[p.version] = p
    for v in range(old.version + 1, new.version):
        if v not in by_version:
            raise SignatureError(new.artifact, f"trust policy version {new.version} does not follow trusted version "
                                               f"{old.version}; intermediate version {v} is needed")
    return [by_version[v] for v in range(old.version + 1, new.version)]
