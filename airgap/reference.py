"""Image references: parsing with Docker's normalisation, and internal names.

A bundle records every image by the reference the engineer wrote, normalised
the way Docker and skopeo normalise it (``busybox`` is
``docker.io/library/busybox:latest``), so two builders who spelled the same
image differently still produce the same bundle.

Digests are held to a stricter rule than Docker's grammar: only ``sha256:``
followed by 64 lower-case hex digits.  Anything else (another algorithm,
upper-case hex, a short digest) is refused, because every digest we accept is
one we must later be able to recompute and compare byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from airgap._internal import digest as _digest
from airgap.exceptions import InputError

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "Reference",
    "internal_name",
    "internal_reference",
    "internal_repository",
    "parse_reference",
    "validate_digest",
]

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

# Aliases that all mean Docker Hub; recorded as the canonical name only.
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?"
)
# Docker's limit on the full name (host + path); longer names break registries.
_MAX_NAME = 255


@dataclass(frozen=True, order=True)
class Reference:
    """A normalised image reference; ``str()`` gives it back in canonical form."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        """The same reference pinned to *digest* (validated)."""
        return replace(self, digest=validate_digest(digest, str(self)))

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def validate_digest(digest: str, artifact: str) -> str:
    """Return *digest* if it is ``sha256:`` + 64 lower-case hex, else raise InputError."""
    if not isinstance(digest, str) or not _digest.is_digest(digest):
        raise InputError(
            f"{artifact}: invalid digest {digest!r} (only sha256: followed by 64 lower-case hex digits is accepted)"
        )
    return digest


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(s: str) -> Reference:
    """Parse and normalise an image reference; raise InputError naming it if invalid.

    ``busybox`` -> ``docker.io/library/busybox:latest``; ``index.docker.io/x/y`` ->
    ``docker.io/x/y:latest``.  A reference with a digest and no tag keeps no tag.
    """
    if not isinstance(s, str) or not s or s != s.strip():
        raise InputError(f"{s!r}: not a valid image reference (empty or surrounded by whitespace)")

    def bad(why: str) -> InputError:
        return InputError(f"{s}: not a valid image reference ({why})")

    rest, digest = s, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        validate_digest(digest, s)

    # The tag is after the last ':' only if no '/' follows it; otherwise the
    # ':' belongs to a host's port (localhost:5000/app).
    tag = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise bad(f"invalid tag {tag!r}")

    first, sep, remainder = rest.partition("/")
    if sep and _looks_like_host(first):
        registry, path = first, remainder
        if not _HOST_RE.fullmatch(registry):
            raise bad(f"invalid registry host {registry!r}")
        port = registry.rpartition(":")[2] if ":" in registry else None
        if port is not None and not 0 < int(port) < 65536:
            raise bad(f"invalid port {port!r}")
    else:
        registry, path = DEFAULT_REGISTRY, rest

    if registry.lower() in _DOCKER_HUB_ALIASES:
        registry = DEFAULT_REGISTRY
        if path and "/" not in path:
            path = f"library/{path}"

    if not path:
        raise bad("empty repository")
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise bad(f"invalid repository component {component!r} (lower-case letters, digits, '.', '_', '-')")
    if len(registry) + 1 + len(path) > _MAX_NAME:
        raise bad(f"name longer than {_MAX_NAME} characters")

    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


def internal_repository(ref: Reference) -> str:
    """The repository path an image gets in the internal registry: ``<host>/<path>``.

    The original host becomes the first path component.  A port's ``:`` is not
    allowed in a repository path, so it is replaced by ``_`` (``127.0.0.1:5000``
    -> ``127.0.0.1_5000``); ``_`` cannot occur in a host name, so the mapping
    stays unambiguous.  Hosts are lower-cased because repository paths must be.
    """
    host = ref.registry.lower().replace(":", "_")
    return f"{host}/{ref.repository}"


def internal_name(ref: Reference, internal_registry: str) -> str:
    """``<internal>/<original-host>/<original-path>`` without tag or digest.

    ``internal_name(parse_reference("127.0.0.1:5000/pilot/status:1.0"),
    "registry.pilot.internal:5000")`` is
    ``registry.pilot.internal:5000/127.0.0.1_5000/pilot/status``.
    """
    return internal_reference(ref, internal_registry).name


def internal_reference(ref: Reference, internal_registry: str) -> Reference:
    """*ref* moved into *internal_registry* (see :func:`internal_repository`), tag and digest kept."""
    probe = parse_reference(f"{internal_registry}/x")
    if probe.registry != internal_registry:
        raise InputError(f"{internal_registry!r}: not a registry host[:port]")
    moved = Reference(internal_registry, internal_repository(ref), ref.tag, ref.digest)
    if len(moved.name) > _MAX_NAME:
        raise InputError(f"{ref}: internal name {moved.name} is longer than {_MAX_NAME} characters")
    return moved
