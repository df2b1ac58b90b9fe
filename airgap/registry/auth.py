"""Registry authentication: auth files, challenges, tokens, and where credentials may go.

The rules a hostile registry cannot bend:

* credentials (Basic, or a Bearer token earned with them) are sent only to the
  exact origin (scheme, host, port) of the registry they were configured for;
  a redirect to another origin, including the same host over ``http://`` or on
  another port, gets no ``Authorization`` header;
* that origin is plain HTTP only when the registry was given ``--plain-http``;
* a token realm named by a ``WWW-Authenticate`` challenge gets Basic credentials
  only over TLS, or over plain HTTP when the registry itself is an explicitly
  plain-HTTP registry on loopback and so is the realm (a test set-up).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from airgap.exceptions import InputError, InvalidValueError, RegistryError

__all__ = [
    "Authenticator",
    "Origin",
    "auth_file_candidates",
    "parse_challenge",
    "read_auth_file",
    "realm_allows_credentials",
]

log = logging.getLogger("airgap.registry")

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,16384}")  # RFC 6750 b64token, bounded


@dataclass(frozen=True)
class Origin:
    """``(scheme, host, port)`` of a URL, default ports made explicit, host lower-cased."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an absolute http(s) URL; ValueError for anything else."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InvalidValueError(f"{url!r} is not an http:// or https:// URL")
        host = parts.hostname
        if not host:
            raise InvalidValueError(f"{url!r} has no host")
        return cls(scheme, host.lower(), parts.port or _DEFAULT_PORTS[scheme])

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def realm_allows_credentials(realm: Origin, registry: Origin) -> bool:
    """May Basic credentials for *registry* be sent to the token *realm*?"""
    if realm.scheme == "https":
        return True
    return registry.scheme == "http" and registry.loopback and realm.loopback


# --- auth files ----------------------------------------------------------------


def auth_file_candidates() -> list[Path]:
    """Auth files searched, in order, when no credentials are given explicitly.

    Same order as podman/skopeo, then Docker's own file.
    """
    out: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        out.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    out.append(Path(config_home) / "containers" / "auth.json")
    docker_config = os.environ.get("DOCKER_CONFIG")
    out.append(Path(docker_config) / "config.json" if docker_config else Path.home() / ".docker" / "config.json")
    return out


def _auth_key_host(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``index.docker.io``; ``host/ns`` -> ``host``."""
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0].lower()


def _decode_auth(value: object, p: Path, key: str) -> tuple[str, str]:
    try:
        user, sep, password = base64.b64decode(str(value), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        sep, user, password = "", "", ""
    if not sep:
        raise InputError(f"{p}: auths.{key}.auth is not base64 of user:password")
    return user, password


def read_auth_file(path: str | os.PathLike[str], registry: str) -> tuple[str, str] | None:
    """(user, password) for *registry* from one auth file, or None if it has none.

    Only host-wide entries are used (``auths.<host[:port]>``; a scheme or path in
    the key is ignored, the registry's own flags decide the scheme); credential
    helpers are not, because the isolated side has none to call.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{p}: cannot read auth file ({exc.strerror})") from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{p}: auth file is not valid JSON ({exc})") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = set(DOCKER_HUB_HOSTS) if registry.lower() in DOCKER_HUB_HOSTS else {registry.lower()}
    for key, entry in auths.items():
        if _auth_key_host(key) not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            return _decode_auth(entry["auth"], p, key)
        if entry.get("username") and "password" in entry:
            return str(entry["username"]), str(entry["password"])
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', rest)
    }
    return scheme.lower(), params


def basic_header(creds: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode("ascii")


# --- the authenticator -----------------------------------------------------------

# (url, headers, what) -> (status, JSON document or None); sends one GET, no redirects.
GetJson = Callable[[str, dict[str, str], str], tuple[int, object]]


class Authenticator:
    """Credentials and tokens for one registry origin; safe to share between threads."""

    def __init__(
        self,
        registry: str,
        origin: Origin,
        *,
        credentials: tuple[str, str] | None = None,
        auth_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.registry = registry
        self.origin = origin
        self._explicit_auth_file = Path(auth_file) if auth_file is not None else None
        self._credentials = credentials
        self._loaded = credentials is not None
        self._searched: list[Path] = []
        self._lock = threading.Lock()
        self._scheme: str | None = None  # learnt from the first challenge
        self._bearer: dict[str, str] = {}
        self._tokens: dict[str, str] = {}

    def credentials(self) -> tuple[str, str] | None:
        with self._lock:
            if not self._loaded:
                files = [self._explicit_auth_file] if self._explicit_auth_file else auth_file_candidates()
                self._searched = files
                for f in files:
                    found = read_auth_file(f, self.registry)
                    if found:
                        self._credentials = found
                        log.debug("credentials for %s (user %r) from %s, sent only to %s",
                                  self.registry, found[0], f, self.origin)
                        break
                self._loaded = True
            return self._credentials

    def no_credentials(self, what: str) -> RegistryError:
        searched = ", ".join(str(p) for p in self._searched) or "(no auth file)"
        return RegistryError(f"401 Unauthorized from {self.registry} ({what}): "
                             f"no credentials for {self.registry} in {searched}")

    def rejected(self, netloc: str, what: str) -> RegistryError:
        creds = self.credentials()
        why = f": credentials for user {creds[0]!r} rejected" if creds else ""
        return RegistryError(f"401 Unauthorized from {netloc} ({what}){why}")

    def header(self, scope: str, get_json: GetJson) -> str | None:
        """The Authorization header for a request to the registry's own origin."""
        if self._scheme == "basic":
            creds = self.credentials()
            return basic_header(creds) if creds else None
        if self._scheme == "bearer":
            with self._lock:
                token = self._tokens.get(scope)
            return f"Bearer {token if token is not None else self._fetch_token(scope, get_json)}"
        return None

    def on_challenge(self, header: str | None, scope: str, sent_auth: bool, what: str) -> None:
        """Set up authentication after a 401 from the registry; raise if retrying cannot help."""
        if not header:
            raise RegistryError(f"401 Unauthorized from {self.registry} ({what}) without a WWW-Authenticate challenge")
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            creds = self.credentials()
            if creds is None:
                raise self.no_credentials(what)
            if sent_auth and self._scheme == "basic":
                raise RegistryError(f"401 Unauthorized from {self.registry} ({what}): credentials for user {creds[0]!r} rejected")
            self._scheme = "basic"
        elif scheme == "bearer":
            if "realm" not in params:
                raise RegistryError(f"{self.registry}: Bearer challenge without a realm ({header!r})")
            with self._lock:
                if sent_auth and self._scheme == "bearer" and self._tokens.pop(scope, None) is None:
                    # Expired or insufficient token: one fresh try, then give up.
                    raise RegistryError(f"401 Unauthorized from {self.registry} ({what}): access denied with a fresh token")
                self._scheme = "bearer"
                self._bearer = params
        else:
            raise RegistryError(f"{self.registry}: unsupported authentication scheme {scheme!r} ({what})")

    def _realm(self, what: str) -> tuple[str, Origin]:
        url = self._bearer["realm"]
        try:
            return url, Origin.of(url)
        except ValueError:
            raise RegistryError(f"{self.registry}: Bearer challenge names realm {url!r}, "
                                f"not an http(s) URL ({what})") from None

    def _fetch_token(self, scope: str, get_json: GetJson) -> str:
        what = f"token for {scope or 'registry'}"
        url, realm = self._realm(what)
        query = [("service", self._bearer["service"])] if self._bearer.get("service") else []
        query += [("scope", s) for s in (scope or self._bearer.get("scope", "")).split()]
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        headers = {"Accept": "application/json"}
        creds = self.credentials()
        if creds and not realm_allows_credentials(realm, self.origin):
            raise RegistryError(
                f"{self.registry}: token realm {realm} is plain HTTP: refusing to send the credentials of user "
                f"{creds[0]!r} there ({what}); a plain-HTTP realm is used only for a --plain-http registry on loopback")
        if creds:
            headers["Authorization"] = basic_header(creds)
        log.debug("token for %s from realm %s (%s)", self.registry, realm,
                  f"Basic credentials of user {creds[0]!r}" if creds else "anonymous")
        status, doc = get_json(url, headers, what)
        if status == 401:
            if creds is None:
                raise self.no_credentials(what)
            raise RegistryError(f"401 Unauthorized from {self.registry} ({what}): credentials for user "
                                f"{creds[0]!r} rejected by {realm}")
        if status != 200:
            raise RegistryError(f"{self.registry}: token endpoint {realm} answered {status} ({what})")
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.registry}: token endpoint {realm} gave no token ({what})")
        if not _TOKEN_RE.fullmatch(token):
            # It goes into a header line: nothing that could end the line or the header.
            raise RegistryError(f"{self.registry}: token endpoint {realm} gave a token with characters "
                                f"a Bearer token cannot have ({what})")
        with self._lock:
            self._tokens[scope] = token
        return token
