"""Every error airgap raises.

Exit codes follow one rule for every command: 0 accepted, 1 rejected (or the
operation failed on the merits), 2 usage or unreadable input.  Each error knows
its exit code so the CLI never has to guess.

A :class:`RejectedError` always names the artifact that failed and why, because
a security officer has to be able to act on the message alone.
"""

from __future__ import annotations

__all__ = [
    "AirgapError",
    "AnchorError",
    "ArchiveError",
    "AuditError",
    "BaseMissingError",
    "ExpiredError",
    "FormatError",
    "InputError",
    "IntegrityError",
    "KeyFileError",
    "KeyRoleError",
    "NotFoundError",
    "OperationError",
    "RegistryError",
    "RejectedError",
    "RollbackError",
    "SignatureError",
    "SovereigntyError",
    "SpecError",
    "TargetError",
    "TokenError",
    "TransferError",
    "UnreachableError",
    "UnsafePathError",
    "UsageError",
]


class AirgapError(Exception):
    """Base class of every error raised by airgap."""

    exit_code = 1

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": str(self)}


# --- exit code 2: the caller has to fix the invocation or the input ---------


class UsageError(AirgapError):
    """The command was called wrongly (missing option, conflicting flags)."""

    exit_code = 2


class InputError(AirgapError):
    """An input could not be read or parsed (file missing, not YAML, ...)."""

    exit_code = 2


class InvalidValueError(UsageError, ValueError):
    """A library function was given a value it cannot use.

    Also a :class:`ValueError`, the exception Python code expects for a bad
    value (an ``io`` seek, a parse): callers of either kind catch it, and the
    command line still turns it into exit code 2 with its message.
    """


class InvalidTypeError(UsageError, TypeError):
    """A library function was given an object of the wrong type (a :class:`TypeError` too)."""


class OutputExistsError(UsageError):
    """An output file or directory exists and ``--force`` was not given; nothing was written."""

    def __init__(self, path: str, detail: str = ""):
        self.path = path
        super().__init__(f"{path} exists{' ' + detail if detail else ''}: add --force to overwrite")


class SpecError(InputError):
    """The bundle spec is invalid: ``FILE:LINE: field: problem``.

    ``field`` is a path like ``images[2].ref``; ``file`` and ``line`` say where
    it is written (the loader fills them in; ``None`` where unknown).
    """

    def __init__(self, field: str, reason: str, *, file: str | None = None, line: int | None = None):
        self.field = field
        self.reason = reason
        self.file = file
        self.line = line
        where = f"{file}:{line}" if file and line else file or (f"line {line}" if line else "")
        super().__init__(": ".join(part for part in (where, field, reason) if part))

    def located(self, file: str, line: int | None = None) -> SpecError:
        """This error in *file*, at *line* unless it already knows its line."""
        return SpecError(self.field, self.reason, file=file, line=self.line or line)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "field": self.field, "reason": self.reason, "file": self.file, "line": self.line}


class KeyFileError(InputError):
    """A key file is unreadable, of the wrong kind, or the passphrase is wrong."""


class KeyRoleError(InputError):
    """A key was given for a job its role does not allow (a builder key to countersign,
    an officer key to sign a policy, a revoked key, a key that already signed).

    An input error, not a rejection: nothing was examined and found wanting, the
    caller picked the wrong key, and nothing was written."""


# --- exit code 1: the artifact was examined and refused ---------------------


class RejectedError(AirgapError):
    """An artifact was refused.  ``artifact`` names it, ``reason`` says why."""

    exit_code = 1

    def __init__(self, artifact: str, reason: str):
        self.artifact = artifact
        self.reason = reason
        super().__init__(f"{artifact}: {reason}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "artifact": self.artifact, "reason": self.reason}


class IntegrityError(RejectedError):
    """A digest, size or byte-level comparison failed."""


class FormatError(RejectedError):
    """An artifact is malformed: bad JSON, schema violation, wrong media type."""


class ArchiveError(RejectedError):
    """The tar archive itself is unsafe or malformed (traversal, links, ...)."""


class SignatureError(RejectedError):
    """Signatures are missing, invalid, from the wrong role or below threshold."""


class ExpiredError(RejectedError):
    """A bundle or trust policy is past its expiry."""


class RollbackError(RejectedError):
    """A bundle is older than, or conflicts with, what was already accepted."""


class TargetError(RejectedError):
    """A bundle is meant for another enclave (mix-and-match)."""


class SovereigntyError(RejectedError):
    """Content comes from, or points at, an endpoint the sovereignty policy forbids."""


class BaseMissingError(RejectedError):
    """A differential bundle's base content is not present on the receiving side."""


class UnsafePathError(RejectedError):
    """A write would go through a symbolic link (or a non-directory) below a given directory."""


# --- exit code 1: an operation failed (network, registry, disk) -------------


class OperationError(AirgapError):
    """An operation could not be completed; nothing partial was left behind."""

    exit_code = 1


class RegistryError(OperationError):
    """A registry refused a request or answered something unusable."""


class NotFoundError(RegistryError):
    """The registry answered 404 for a manifest, blob or repository."""


class UnreachableError(RegistryError):
    """No HTTP conversation with a registry was possible (refused, DNS, TLS mismatch).

    ``host`` is the ``host[:port]`` that could not be reached, so a caller that
    knows where the address came from (a spec variable) can say what to set.
    """

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(message)


class TransferError(OperationError):
    """Moving a file between machines failed."""


class TokenError(OperationError):
    """A PKCS#11 token is absent, refused the PIN, or failed an operation."""


class AuditError(RejectedError):
    """The audit log's hash chain is broken; ``artifact`` names the first bad line."""


class StateError(RejectedError):
    """The state directory's caches (state.json, trust.json, imported.json) and its audit log disagree,
    or one of them is missing while the other holds history."""


class AnchorError(AuditError):
    """The audit log does not hold the head written down elsewhere (cut, deleted or forked).

    ``expected`` and ``found`` are ``SEQ:HASH`` strings (``found`` is None for a missing log)."""

    def __init__(self, artifact: str, reason: str, *, expected: str, found: str | None):
        self.expected = expected
        self.found = found
        super().__init__(artifact, reason)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "expected_head": self.expected, "found_head": self.found}
