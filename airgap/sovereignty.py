"""The sovereignty policy: which endpoints the isolated side must never depend on.

The policy (``airgap/data/sovereignty.yaml``) lists endpoint patterns of US
hyperscalers and other external services, each with a provider and a category
(registry, dns, ntp, package-mirror, metadata, code-hosting, cdn,
cloud-service).  It is used in two places:

* ``airgap build`` calls :meth:`SovereigntyPolicy.check_image_source` for every
  image: an image from a listed registry is refused unless the spec carries a
  written ``allow.reason`` for it (which the build then records);
* ``check.yml`` judges every endpoint found on a node against the enclave (an
  allow-list); this policy only *labels* what it finds ("US provider").  The
  controller hands the policy's patterns to the nodes (``airgap_check``'s
  ``policy`` check), which match them with the same code.

Matching is :mod:`airgap._internal.endpoints`, the project's one endpoint
matcher (also shipped to the nodes as ``playbooks/module_utils/airgap_endpoints.py``):
normalised hosts (lower case, no scheme, user info, port, path, brackets or
trailing dot; IPv4-mapped IPv6 unmapped) and whole DNS labels: ``gcr.io``
matches ``gcr.io`` and ``eu.gcr.io``; ``*.amazonaws.com`` matches
``x.y.amazonaws.com`` but not ``amazonaws.com``; neither matches
``amazonaws.com.evil`` nor ``evilamazonaws.com``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from airgap._internal import endpoints
from airgap.exceptions import InputError, SovereigntyError

__all__ = [
    "CATEGORIES",
    "Entry",
    "Match",
    "Provider",
    "SovereigntyPolicy",
    "check_image_source",
    "default_policy",
    "match",
    "normalise_endpoint",
]

CATEGORIES = (
    "registry",
    "dns",
    "ntp",
    "package-mirror",
    "metadata",
    "code-hosting",
    "cdn",
    "cloud-service",
)

@dataclass(frozen=True)
class Provider:
    """Who operates an endpoint: ``name`` (Google), ``kind`` (US hyperscaler), ``jurisdiction`` (US)."""

    id: str
    name: str
    kind: str
    jurisdiction: str


@dataclass(frozen=True)
class Entry:
    """One policy entry: a pattern, its provider and category."""

    pattern: str
    provider: Provider
    category: str
    note: str | None = None


@dataclass(frozen=True)
class Match:
    """An endpoint that matched the policy."""

    endpoint: str
    """The endpoint as given (or as found in the scanned text)."""
    host: str
    """Normalised host name or IP address that was matched."""
    pattern: str
    provider: str
    """Display name of the provider, e.g. ``Google``."""
    provider_kind: str
    """e.g. ``US hyperscaler``."""
    jurisdiction: str
    """``US``, or where a non-US external service sits (``CH``, ``GB``, ``external``)."""
    category: str
    provider_id: str = ""

    @property
    def is_us(self) -> bool:
        """True if the provider is under US jurisdiction."""
        return self.jurisdiction == "US"

    def describe(self) -> str:
        """``registry gcr.io belongs to Google (US hyperscaler)``."""
        return f"{self.category} {self.host} belongs to {self.provider} ({self.provider_kind})"

    def to_dict(self) -> dict:
        """Plain dict (JSON-friendly) for reports and the check playbook."""
        return {
            "endpoint": self.endpoint,
            "host": self.host,
            "pattern": self.pattern,
            "provider": self.provider,
            "provider_kind": self.provider_kind,
            "jurisdiction": self.jurisdiction,
            "category": self.category,
        }


def normalise_endpoint(endpoint: str) -> str:
    """Reduce a host, ``host:port``, URL, image reference or IP to a bare lower-case host.

    IP addresses come back in their compressed canonical form (IPv4-mapped IPv6
    unmapped); an empty string means nothing host-like was found.
    """
    return endpoints.normalise(endpoint)


class SovereigntyPolicy:
    """A loaded sovereignty policy; match endpoints and check image sources against it."""

    def __init__(self, entries: Iterable[Entry], *, source: str = "<policy>"):
        self.source = source
        self.entries: tuple[Entry, ...] = tuple(entries)
        self._set = endpoints.EndpointSet()
        for entry in self.entries:
            try:
                self._set.add(entry.pattern, entry)
            except endpoints.PatternError as exc:
                raise InputError(f"{self.source}: {exc}") from None

    # --- loading ---------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> SovereigntyPolicy:
        """Load the policy from *path*, or the one shipped in ``airgap/data`` if ``None``."""
        if path is None:
            ref = resources.files("airgap").joinpath("data/sovereignty.yaml")
            source = "airgap/data/sovereignty.yaml"
            try:
                text = ref.read_text("utf-8")
            except OSError as exc:  # pragma: no cover - broken installation
                raise InputError(f"{source}: cannot read the packaged policy ({exc})") from None
        else:
            source = str(path)
            try:
                text = Path(path).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{source}: cannot read the sovereignty policy ({exc})") from None
        return cls.from_text(text, source=source)

    @classmethod
    def from_text(cls, text: str, *, source: str = "<policy>") -> SovereigntyPolicy:
        """Parse a policy document (YAML); raise InputError naming *source* if it is malformed."""
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise InputError(f"{source}: not a version 1 sovereignty policy")
        providers: dict[str, Provider] = {}
        for pid, p in (doc.get("providers") or {}).items():
            if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in ("name", "kind", "jurisdiction")):
                raise InputError(f"{source}: provider {pid!r} needs text name, kind and jurisdiction")
            providers[str(pid)] = Provider(str(pid), p["name"], p["kind"], p["jurisdiction"])
        entries = []
        for i, e in enumerate(doc.get("endpoints") or []):
            where = f"{source}: endpoints[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("pattern"), str):
                raise InputError(f"{where}: needs a text pattern")
            if e.get("provider") not in providers:
                raise InputError(f"{where}: unknown provider {e.get('provider')!r}")
            if e.get("category") not in CATEGORIES:
                raise InputError(f"{where}: category must be one of {', '.join(CATEGORIES)}")
            entries.append(Entry(e["pattern"], providers[e["provider"]], e["category"], e.get("note")))
        if not entries:
            raise InputError(f"{source}: the policy lists no endpoints")
        return cls(entries, source=source)

    # --- matching ---------------------------------------------------------------

    def entry_for(self, host: str) -> Entry | None:
        """The most specific entry for an already normalised *host*, or ``None``."""
        hit = self._set.lookup_host(host)
        return None if hit is None else hit[1]

    def match(self, endpoint: str) -> Match | None:
        """Match a host, ``host:port``, URL, image reference or IP; ``None`` if not listed."""
        host = normalise_endpoint(endpoint)
        entry = self.entry_for(host)
        return None if entry is None else _to_match(endpoint, host, entry)

    def check_image_source(
        self, registry: str, allow_reason: str | None, *, artifact: str | None = None
    ) -> Match | None:
        """Refuse an image from a listed registry unless a written reason accepts it.

        Returns ``None`` if the registry is not listed, the :class:`Match` if it is
        listed and *allow_reason* accepts it (so the build can record both), and
        raises :class:`SovereigntyError` naming *artifact* (default: the registry)
        otherwise.
        """
        m = self.match(registry)
        if m is None:
            return None
        if allow_reason and allow_reason.strip():
            return m
        raise SovereigntyError(
            artifact or registry,
            f"registry {m.host} belongs to {m.provider} ({m.provider_kind}); "
            "add allow.reason to the spec to accept it",
        )

    def check_images(self, images) -> list[tuple[object, Match]]:
        """Check every registry image of a spec (``spec.images``); return the accepted exceptions.

        Raises :class:`SovereigntyError` for the first image from a listed registry
        without ``allow.reason``; the artifact is ``images[i].ref <ref>``.
        """
        accepted = []
        for image in images:
            if image.kind != "registry":
                continue
            m = self.check_image_source(
                image.registry, image.allow_reason, artifact=f"images[{image.index}].ref {image.ref}"
            )
            if m is not None:
                accepted.append((image, m))
        return accepted


def _to_match(endpoint: str, host: str, entry: Entry) -> Match:
    return Match(
        endpoint=endpoint,
        host=host,
        pattern=entry.pattern,
        provider=entry.provider.name,
        provider_kind=entry.provider.kind,
        jurisdiction=entry.provider.jurisdiction,
        category=entry.category,
        provider_id=entry.provider.id,
    )


@functools.cache
def default_policy() -> SovereigntyPolicy:
    """The packaged policy, loaded once."""
    return SovereigntyPolicy.load()


def match(endpoint: str) -> Match | None:
    """:meth:`SovereigntyPolicy.match` with the packaged policy."""
    return default_policy().match(endpoint)


def check_image_source(registry: str, allow_reason: str | None, *, artifact: str | None = None) -> Match | None:
    """:meth:`SovereigntyPolicy.check_image_source` with the packaged policy."""
    return default_policy().check_image_source(registry, allow_reason, artifact=artifact)
