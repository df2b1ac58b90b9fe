"""The receiving side's verify, extract and join as library calls, audited as the command audits them.

Each takes the bundle's path, verifies it (:func:`airgap.verify.verify`, which
itself writes nothing) and writes to the run's :class:`~airgap.auditing.AuditTrail`
(``STATE/audit.log`` with a state directory, else ``audit_log``): the acceptance,
or the refusal with its reason.  ``verify_bundle(record=True)`` records the
acceptance in the state through :func:`airgap.anchored.commit` (overrides, a
first use of the policy and the acceptance, before the caches).  An import is
:func:`airgap.importer.import_bundle`, audited the same way.

An existing output is refused before anything is verified, and not audited:
nothing was examined.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap.auditing import AuditTrail
from airgap.exceptions import UsageError

__all__ = ["Extracted", "Joined", "accepted_object", "extract_bundle", "join_parts", "verified_audited", "verify_bundle"]


@dataclass(frozen=True)
class Extracted:
    manifest: Any  # airgap.manifest.BundleManifest
    output: Path
    written: list[str]


@dataclass(frozen=True)
class Joined:
    manifest: Any  # airgap.manifest.BundleManifest
    output: Path
    sha256: str


def verified_audited(bundle: str | os.PathLike, trail: AuditTrail, action: str, *, trust_path: str | os.PathLike,
                     now: datetime | None, **kw: Any):
    """:func:`airgap.verify.verify` under *trail*: a refusal is audited as a refusal of *action*.

    Every verb that verifies and then uses a bundle (extract, join, manifests
    render, packages export, toolkit wheels) goes through here, so each is
    audited alike.
    """
    from airgap import verify

    with trail.refusals(action, {"bundle": os.fspath(bundle)}):
        return verify.verify(bundle, trust_path=trust_path, state_dir=trail.state_dir,
                             now=now or datetime.now(UTC), **kw)


def accepted_object(bundle: str | os.PathLike, manifest, **extra: Any) -> dict[str, Any]:
    """The audit object of an accepted *bundle*: its path, name, version and manifest digest, and *extra*."""
    return {"bundle": os.fspath(bundle), "name": manifest.name, "version": manifest.version,
            "manifest": manifest.digest, **extra}


def verify_bundle(bundle: str | os.PathLike, *, trust_path: str | os.PathLike,
                  state_dir: str | os.PathLike | None = None, audit_log: str | os.PathLike | None = None,
                  record: bool = False, override=None, now: datetime | None = None, progress: bool = False):
    """Verify *bundle*; audit the acceptance (and each override) or the refusal; return the open
    :class:`~airgap.verified.VerifiedBundle` (close it, or use ``with``).

    With *record* the acceptance is recorded in *state_dir* (rollback state,
    trusted policy), as an import records it.  A refusal raises, its
    ``report`` attribute holding the checks when verification ran.
    """
    record_in = None
    if record:
        if state_dir is None:
            raise UsageError("--record needs --state DIR")
        record_in = state_dir
    trail = AuditTrail.of(state_dir, audit_log)
    verified = verified_audited(bundle, trail, "verify", trust_path=trust_path, now=now, override=override,
                         progress=progress)
    try:
        m = verified.manifest
        obj = accepted_object(bundle, m)
        if record_in is not None:
            # Overrides, a first use of the policy and the acceptance are audit entries
            # written before the state they stamp.
            from airgap import anchored  # start-up: only needed with --record

            with trail.refusals("verify", obj):
                anchored.commit(record_in, verified, "verify", obj, {"recorded": True})
        else:
            for o in verified.report.overrides:
                trail.accepted("override", {"bundle": os.fspath(bundle), "manifest": m.digest}, keyid=o["keyid"],
                               detail=o)
            trail.accepted("verify", obj, detail={"recorded": False})
    except BaseException:
        verified.close()
        raise
    return verified


def extract_bundle(bundle: str | os.PathLike, output: str | os.PathLike, *, trust_path: str | os.PathLike,
                   state_dir: str | os.PathLike | None = None, audit_log: str | os.PathLike | None = None,
                   prefixes: list[str] | tuple[str, ...] = (), force: bool = False, now: datetime | None = None,
                   progress: bool = False) -> Extracted:
    """Verify *bundle*, then write its members (those under *prefixes*) into *output*; audited."""
    from airgap import extract

    trail = AuditTrail.of(state_dir, audit_log)
    out = extract.check_output(output, force=force)
    with verified_audited(bundle, trail, "extract", trust_path=trust_path, now=now, progress=progress,
                   hash_content=False) as verified:
        m = verified.manifest
        with trail.refusals("extract", {"bundle": os.fspath(bundle), "output": os.fspath(output)}):
            result = extract.extract(verified, out, prefixes=prefixes, force=force)
        trail.accepted("extract", accepted_object(bundle, m, output=os.fspath(output)),
                       detail={"members": len(result.written)})
    return Extracted(m, out, result.written)


def join_parts(parts: str | os.PathLike, output: str | os.PathLike, *, trust_path: str | os.PathLike,
               state_dir: str | os.PathLike | None = None, force: bool = False, now: datetime | None = None,
               progress: bool = False) -> Joined:
    """Verify the media *parts*, then write the bundle they hold to *output* from what was verified; audited."""
    from airgap import media
    from airgap._internal.fsutil import check_output

    trail = AuditTrail.of(state_dir)
    out = check_output(output, force=force)  # before the parts are read
    with verified_audited(parts, trail, "join", trust_path=trust_path, now=now, progress=progress,
                   hash_content=False) as verified:
        m = verified.manifest
        obj = accepted_object(parts, m, output=os.fspath(output))
        with trail.refusals("join", obj):
            digest = media.join(verified, out, force=force)
        trail.accepted("join", obj, detail={"sha256": digest})
    return Joined(m, out, digest)
