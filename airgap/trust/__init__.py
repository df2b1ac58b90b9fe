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
* **Override.**  Only expiry can be overridden, only with an :class:`Override`
  (the reason and a key of an officer of the policy in force); what it lifted
  is returned (:class:`Overridden`) for the audit log, never stamped on an
  object; its key signs it (:mod:`~airgap.trust.override`, checked again by
  ``audit verify``).  Signatures, thresholds, rollback and target are never
  overridable.
* **One envelope check.**  :func:`verify_envelope` is the acceptance check of
  every DSSE envelope: payloadType first (a signed part index can never pass
  as a signed manifest), then the payload byte for byte, then the strict
  thresholds.

The package: :mod:`~airgap.trust.policy` (the model and its file format),
:mod:`~airgap.trust.evaluate` (thresholds, statuses, reports, overrides,
successor rules), :mod:`~airgap.trust.store` (the state directory's trusted
policy) and :mod:`~airgap.trust.authoring` (init, rotate, sign for the
command line).
"""

from typing import TYPE_CHECKING, Any

from airgap.trust._roles import (
    ALL_ROLES,
    ARTIFACT,
    BUNDLE_ROLES,
    DISJOINT_ROLES,
    MAX_POLICY_SIZE,
    OPTIONAL_ROLES,
    POLICY_TYPE,
    ROLE_NAMES,
    SPEC_VERSION,
    Role,
)
from airgap.trust.evaluate import (
    ANY_ROLE,
    DUPLICATE,
    HINT_MISMATCH,
    INVALID,
    REVOKED,
    UNKNOWN_KEY,
    VALID,
    WRONG_ROLE,
    Overridden,
    Override,
    RoleResult,
    SignatureReport,
    SignatureResult,
    Status,
    check_successor,
    evaluate,
    verify_envelope,
)
from airgap.trust.policy import TrustPolicy
from airgap.trust.store import AcceptedPolicy, TrustStore

if TYPE_CHECKING:
    from airgap.trust.authoring import (
        EXPIRES_FORMS,
        describe_key,
        format_key,
        init_policy,
        parse_expires,
        rotate_policy,
        sign_policy,
    )

# Start-up: authoring (init, rotate, sign) is only needed by the policy verbs; a
# verify of a bundle loads the policy but never writes one.  PEP 562 keeps
# ``from airgap.trust import init_policy`` working.
_AUTHORING = frozenset({"EXPIRES_FORMS", "describe_key", "format_key", "init_policy", "parse_expires",
                        "rotate_policy", "sign_policy"})


def __getattr__(name: str) -> Any:
    if name in _AUTHORING:
        from airgap.trust import authoring

        return getattr(authoring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ALL_ROLES",
    "ANY_ROLE",
    "ARTIFACT",
    "BUNDLE_ROLES",
    "DISJOINT_ROLES",
    "DUPLICATE",
    "EXPIRES_FORMS",
    "HINT_MISMATCH",
    "INVALID",
    "MAX_POLICY_SIZE",
    "OPTIONAL_ROLES",
    "POLICY_TYPE",
    "REVOKED",
    "ROLE_NAMES",
    "SPEC_VERSION",
    "UNKNOWN_KEY",
    "VALID",
    "WRONG_ROLE",
    "AcceptedPolicy",
    "Overridden",
    "Override",
    "Role",
    "RoleResult",
    "SignatureReport",
    "SignatureResult",
    "Status",
    "TrustPolicy",
    "TrustStore",
    "check_successor",
    "describe_key",
    "evaluate",
    "format_key",
    "init_policy",
    "parse_expires",
    "rotate_policy",
    "sign_policy",
    "verify_envelope",
]
