"""Writing policies: version 1 (``trust init``), the next version (``trust rotate``),
one more root signature (``trust sign``), and the key look-ups ``trust show`` uses.

What the command line asks for is checked here, before anything is signed: a
refusal leaves no file and no signature behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airgap import keyroles
from airgap._internal import digest as _digest
from airgap._internal import keyid as _keyid
from airgap._internal.text import article
from airgap._internal.timefmt import format_time, parse_time, require_aware
from airgap.exceptions import FormatError, InputError, InvalidTypeError, InvalidValueError, KeyRoleError, UsageError
from airgap.keys import PublicKey, short_keyid
from airgap.trust._roles import ALL_ROLES, POLICY_TYPE, SPEC_VERSION
from airgap.trust.policy import TrustPolicy

__all__ = [
    "EXPIRES_FORMS",
    "create_signed",
    "describe_key",
    "format_key",
    "init_policy",
    "parse_expires",
    "rotate_policy",
    "sign_policy",
    "successor",
]

_DURATION = re.compile(r"([1-9][0-9]{0,5})([dwh])\Z")
EXPIRES_FORMS = ("a duration such as 365d, 8w or 12h (days, weeks, hours) or an RFC 3339 UTC time such as "
                 "2027-11-23T00:00:00Z")
_PLURAL = {"root": "roots", "builder": "builders", "officer": "officers", "toolkit": "toolkit"}
_ROTATE_CHANGES = frozenset({"expires", "bundles", "revoke", *_PLURAL.values(), *(f"{r}_threshold" for r in _PLURAL)})


def _keys_arg(keys: Iterable[Any], what: str) -> list[PublicKey]:
    keys = list(keys)
    for k in keys:
        if not isinstance(k, PublicKey):
            raise InvalidTypeError(f"{what} must be PublicKey objects, got {type(k).__name__}")
    return keys


def create_signed(
    target: str,
    expires: datetime | str,
    required: dict[str, tuple[Iterable[PublicKey], int]],
    version: int = 1,
    *,
    toolkit: Iterable[PublicKey] = (),
    toolkit_threshold: int | None = None,
    bundles: Iterable[str] | None = None,
    revoked: Iterable[str] = (),
    extra_keys: Iterable[PublicKey] = (),
) -> dict[str, Any]:
    """The ``signed`` document of a new policy (*required*: root, builder and officer keys and thresholds).

    Key names (``PublicKey.name``) are kept as labels.  The ``toolkit`` role is
    written only when *toolkit* keys are given (threshold 1 unless
    *toolkit_threshold* says otherwise).
    """
    role_keys = {role: _keys_arg(keys, _PLURAL[role]) for role, (keys, _) in required.items()}
    thresholds = {role: threshold for role, (_, threshold) in required.items()}
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
    signed: dict[str, Any] = {
        "_type": POLICY_TYPE,
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": format_time(expires) if isinstance(expires, datetime) else expires,
        "target": target,
        "keys": {kid: k.to_dict() for kid, k in keys.items()},
        "roles": {name: {"keyids": [k.keyid for k in ks], "threshold": thresholds[name]} for name, ks in role_keys.items()},
        "revoked": sorted(set(revoked)),
    }
    names = {kid: k.name for kid, k in keys.items() if k.name}
    if names:
        signed["names"] = names
    if bundles is not None:
        signed["bundles"] = sorted(set(bundles))
    return signed


def successor(policy: TrustPolicy, **changes: Any) -> TrustPolicy:
    """The unsigned successor: version + 1, unchanged roles kept, revocations carried over.

    Accepted changes: ``expires``, ``roots``/``builders``/``officers``/``toolkit``
    (replace that role's keys; ``toolkit`` adds the role to a policy without
    one), ``root_threshold``/``builder_threshold``/``officer_threshold``/
    ``toolkit_threshold``, ``bundles``, and ``revoke=[keyids]`` (removed from
    every role, added to ``revoked``).  ``target`` cannot change: another
    enclave is another trust anchor.
    """
    unknown = set(changes) - _ROTATE_CHANGES
    if unknown:
        raise InvalidTypeError(f"rotate() cannot change {', '.join(sorted(unknown))}")
    revoke = set(changes.pop("revoke", ()))
    for keyid in revoke:
        if not isinstance(keyid, str) or not _digest.is_hex(keyid):
            raise InvalidValueError(f"revoke: {keyid!r} is not a keyid")
    role_keys: dict[str, list[PublicKey]] = {}
    thresholds: dict[str, int | None] = {}
    for role in ALL_ROLES:
        keys = (_keys_arg(changes[_PLURAL[role]], _PLURAL[role]) if _PLURAL[role] in changes
                else policy.role_keys(role) if role in policy.roles else [])
        role_keys[role] = [k for k in keys if k.keyid not in revoke]
        if keys and not role_keys[role]:
            raise InputError(f"revoking {', '.join(policy.key_label(k) for k in sorted(revoke))} leaves the {role} "
                             f"role without keys; give its new keys too (--{role} PUB)")
        current = policy.roles[role].threshold if role in policy.roles else None
        thresholds[role] = changes.get(f"{role}_threshold", current)
    all_revoked = set(policy.revoked) | revoke
    # Revoked keys stay listed so that a signature by one is reported as
    # "revoked" rather than "unknown".
    kept = [policy.keys[k] for k in sorted(all_revoked) if k in policy.keys]
    required = {role: _threshold(thresholds[role], role) for role in ("root", "builder", "officer")}
    return TrustPolicy.create(
        policy.target, changes.get("expires", policy.signed["expires"]),
        role_keys["root"], required["root"], role_keys["builder"], required["builder"],
        role_keys["officer"], required["officer"],
        version=policy.version + 1,
        toolkit=role_keys["toolkit"],
        toolkit_threshold=thresholds["toolkit"] if role_keys["toolkit"] else changes.get("toolkit_threshold"),
        bundles=changes.get("bundles", policy.bundles),
        revoked=all_revoked,
        extra_keys=kept,
        artifact=policy.artifact,
    )


def _threshold(value: int | None, role: str) -> int:
    if value is None:  # root, builder and officer are required roles: every valid policy has them
        raise InvalidValueError(f"the {role} role needs a threshold")
    return value


# --- the command line's helpers -------------------------------------------------


def parse_expires(value: str | datetime, now: datetime) -> str:
    """``365d``/``8w``/``12h`` from *now*, or an RFC 3339 UTC time; must lie in the future."""
    require_aware(now)
    if isinstance(value, datetime):
        when = value
    elif m := _DURATION.match(value or ""):
        n, unit = int(m.group(1)), m.group(2)
        when = now + {"d": timedelta(days=n), "w": timedelta(weeks=n), "h": timedelta(hours=n)}[unit]
    else:
        try:
            when = parse_time(value, "--expires", "--expires")
        except FormatError:
            raise InputError(f"--expires {value!r}: give {EXPIRES_FORMS}") from None
    if when <= now:
        raise InputError(f"--expires {format_time(when)} is not in the future")
    return format_time(when)


def _as_public(item: PublicKey | str | os.PathLike) -> PublicKey:
    from airgap.keys import load_public

    return item if isinstance(item, PublicKey) else load_public(item)


def _pick_key(policy: TrustPolicy, prefix: str, option: str) -> str:
    """The keyid of the one key of *policy* whose keyid starts with *prefix* (8+ hex digits)."""
    ids = sorted(policy.keys)
    where = f"{policy.artifact} (version {policy.version})"
    return ids[_keyid.pick(prefix, [(k, policy.keys[k].name or "") for k in ids], option=option, where=where)]


def _role_key(item: PublicKey | str | os.PathLike, policy: TrustPolicy, option: str) -> PublicKey:
    """A key for a role of the next version: a public key file, or the keyid (or a unique
    prefix of 8+ hex digits) of a key the current version lists."""
    if isinstance(item, PublicKey) or Path(item).is_file() or not _keyid.is_prefix(os.fspath(item)):
        return _as_public(item)
    return policy.keys[_pick_key(policy, os.fspath(item), option)]


def describe_key(policy: TrustPolicy, keyid: str) -> dict[str, Any]:
    """What *policy* says about the key whose keyid starts with *keyid* (8+ hex digits)."""
    full = _pick_key(policy, keyid, "--keyid")
    return {"keyid": full, "name": policy.keys[full].name, "roles": policy.roles_of(full),
            "revoked": full in policy.revoked, "policy": policy.artifact, "version": policy.version}


def format_key(key: dict[str, Any]) -> str:
    held = "revoked" if key["revoked"] else (" and ".join(key["roles"]) + " key") if key["roles"] else "listed, no role"
    return (f"{key['name'] or 'unnamed key'} {short_keyid(key['keyid'])}: {held} in {key['policy']} "
            f"(version {key['version']})\nkeyid {key['keyid']}")


def _as_keyid(item: str | os.PathLike | PublicKey, policy: TrustPolicy) -> str:
    """A key to revoke: a PublicKey, a keyid, a unique keyid prefix (8+ hex) of a key
    *policy* lists, or a public key file."""
    if isinstance(item, PublicKey):
        return item.keyid
    if isinstance(item, str) and _digest.is_hex(item):
        return item
    if Path(item).is_file():
        return _as_public(item).keyid
    if isinstance(item, str) and _keyid.is_prefix(item):
        return _pick_key(policy, item, "--revoke")
    raise InputError(f"--revoke {os.fspath(item)!r}: neither a keyid (64 hex digits, or its first 8 or more) "
                     "nor a public key file")


def _sign_all(policy: TrustPolicy, signing_keys: Iterable[Any], previous: TrustPolicy | None = None) -> None:
    """Check every signer first (a refusal writes nothing), then sign."""
    items = keyroles.signers(list(signing_keys))
    keyroles.require_root_signers(policy, items, previous=previous)
    seen: dict[str, str] = {}
    for s in items:
        keyid = s.public_key.keyid
        if keyid in seen:
            raise KeyRoleError(f"{s.source} and {seen[keyid]} are the same key; each root key signs once")
        seen[keyid] = s.source
    for s in items:
        policy.sign(s.key)


def _check_roles(command: str, roles: dict[str, tuple[list[Any], int | None]]) -> None:
    """What the caller asked for is a policy that can be met: keys in every role, thresholds within reach."""
    for role, (keys, threshold) in roles.items():
        if not keys:
            raise UsageError(f"{command} needs at least one --{role} PUB (the public key file of {article(role)} key; "
                             "repeat the option for more)")
        if threshold is not None and not 1 <= threshold <= len(keys):
            raise UsageError(f"--{role}-threshold {threshold} must be between 1 and the number of {role} keys "
                             f"({len(keys)}): a threshold above the key count can never be met")


def _as_usage(command: str, exc: FormatError) -> UsageError:
    """A policy the caller's arguments describe but no valid policy can be: exit 2, the reason kept."""
    return UsageError(f"{command}: {exc.reason}")


def init_policy(
    *,
    target: str,
    expires: str | datetime,
    roots: Iterable[Any], root_threshold: int,
    builders: Iterable[Any], builder_threshold: int,
    officers: Iterable[Any], officer_threshold: int,
    toolkit: Iterable[Any] = (), toolkit_threshold: int | None = None,
    bundles: Iterable[str] | None = None,
    signing_keys: Iterable[Any] = (),
    now: datetime,
) -> TrustPolicy:
    """Version 1 from public keys (``PublicKey`` or ``.pub`` paths), signed by *signing_keys*
    (keys or :class:`~airgap.keyroles.Signer`), each of which must be one of its root keys.
    Without *toolkit* keys the policy has no toolkit role (it accepts no toolkit release)."""
    given = {"root": list(roots), "builder": list(builders), "officer": list(officers)}
    _check_roles("trust init", {"root": (given["root"], root_threshold), "builder": (given["builder"], builder_threshold),
                                "officer": (given["officer"], officer_threshold)})
    toolkit = list(toolkit or ())
    if toolkit or toolkit_threshold is not None:
        _check_roles("trust init", {"toolkit": (toolkit, toolkit_threshold)})
    expires = parse_expires(expires, now)
    keys = {role: [_as_public(k) for k in items] for role, items in given.items()}
    try:
        policy = TrustPolicy.create(target, expires, keys["root"], root_threshold,
                                    keys["builder"], builder_threshold, keys["officer"], officer_threshold,
                                    toolkit=[_as_public(k) for k in toolkit], toolkit_threshold=toolkit_threshold,
                                    bundles=bundles or None)
    except FormatError as exc:
        raise _as_usage("trust init", exc) from None
    _sign_all(policy, signing_keys)
    return policy


def rotate_policy(
    policy: TrustPolicy | str | os.PathLike,
    *,
    expires: str | datetime | None = None,
    roots: Iterable[Any] | None = None, root_threshold: int | None = None,
    builders: Iterable[Any] | None = None, builder_threshold: int | None = None,
    officers: Iterable[Any] | None = None, officer_threshold: int | None = None,
    toolkit: Iterable[Any] | None = None, toolkit_threshold: int | None = None,
    bundles: Iterable[str] | None = None,
    revoke: Iterable[Any] = (),
    signing_keys: Iterable[Any] = (),
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
    for name, keys, threshold in (("root", roots, root_threshold), ("builder", builders, builder_threshold),
                                  ("officer", officers, officer_threshold), ("toolkit", toolkit, toolkit_threshold)):
        if keys:
            changes[_PLURAL[name]] = [_role_key(k, old, f"--{name}") for k in keys]
        if threshold is not None:
            changes[f"{name}_threshold"] = threshold
    revoke = list(revoke)
    if revoke:
        changes["revoke"] = [_as_keyid(k, old) for k in revoke]
    if bundles:
        changes["bundles"] = list(bundles)
    try:
        new = successor(old, **changes)
    except FormatError as exc:
        raise _as_usage("trust rotate", exc) from None
    _sign_all(new, signing_keys, previous=old)
    return new


def sign_policy(policy: TrustPolicy, signing_key: Any, *, previous: TrustPolicy | None = None) -> None:
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
