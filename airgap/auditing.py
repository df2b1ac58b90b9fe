"""Where a verb's audit entries go, and writing them: the same for the command and for Python callers.

A verb that is given a state directory audits to ``STATE/audit.log``, the
history the state is a cache of; without one, to ``audit_log`` if given, else
nowhere.  Acceptances that change the state are written by
:func:`airgap.anchored.commit`; everything else a receiving verb accepts or
refuses (a verification without ``--record``, an extraction, a join, any
refusal) is written here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap._internal.fsutil import os_error, record_names
from airgap.exceptions import AirgapError, UsageError

if TYPE_CHECKING:
    from airgap.audit import AuditEntry

__all__ = ["AuditTrail"]


@dataclass(frozen=True)
class AuditTrail:
    """The audit log of one run (``path`` None: the run is not audited)."""

    path: Path | None
    state_dir: Path | None = None

    @classmethod
    def of(cls, state_dir: str | os.PathLike | None = None, audit_log: str | os.PathLike | None = None) -> AuditTrail:
        """With *state_dir* always ``STATE/audit.log``; another *audit_log* beside it is a usage error."""
        if state_dir is None:
            return cls(Path(audit_log) if audit_log else None)
        from airgap.anchored import AUDIT_LOG  # start-up: only needed with a state directory

        log = Path(state_dir) / AUDIT_LOG
        if audit_log and os.path.abspath(audit_log) != os.path.abspath(log):
            raise UsageError(f"--audit-log {audit_log}: with --state the audit log is {log}, the history the state is "
                             "a cache of; leave --audit-log out")
        return cls(log, Path(state_dir))

    def accepted(self, action: str, obj: Mapping[str, Any], *, keyid: str | None = None,
                 detail: Mapping[str, Any] | None = None) -> AuditEntry | None:
        """Append an ``accepted`` entry (None when the run is not audited)."""
        return self._append(action, obj, "accepted", keyid=keyid, detail=detail)

    def refused(self, action: str, obj: Mapping[str, Any], exc: BaseException) -> AuditEntry | None:
        """Append the refusal (exit 1: ``rejected``) or error (``error``) *exc* stands for.

        A log that cannot be written does not hide the refusal: the reason is
        added to *exc* as a note (the command prints it) and *exc* stays the error.
        """
        exit_code = getattr(exc, "exit_code", 1)
        error = str(exc) if isinstance(exc, AirgapError) else f"{type(exc).__name__}: {exc}"
        try:
            return self._append(action, obj, "rejected" if exit_code == 1 else "error", detail={"error": error})
        except (AirgapError, OSError) as log_exc:
            exc.add_note(f"airgap {action}: the audit entry for this refusal could not be written: {log_exc}")
            return None

    @contextmanager
    def refusals(self, action: str, obj: Mapping[str, Any]) -> Iterator[None]:
        """Audit whatever error leaves the block as a refusal of *action*, then let it go on."""
        try:
            yield
        except Exception as exc:
            self.refused(action, obj, exc)
            raise

    def _append(self, action: str, obj: Mapping[str, Any], result: str, *, keyid: str | None = None,
                detail: Mapping[str, Any] | None = None) -> AuditEntry | None:
        if self.path is None:
            return None
        from airgap.audit import Actor, AuditLog  # start-up: only needed when the run is audited

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.path.parent, "make the audit log's directory") from None
        return AuditLog(self.path).append(action, record_names(dict(obj)), result, actor=Actor.current(keyid),
                                          detail=record_names(dict(detail or {})))
