"""A client for the OCI distribution API, on the standard library alone.

Pull side (``build``): manifests are fetched with a size cap and their digest is
computed here, never taken from the registry's word; blobs are streamed to disk,
hashed while written, resumed with ``Range`` after a dropped connection and only
moved into place once size and sha256 match.

Push side (``import``): blobs the registry already has are skipped, large blobs
go up in chunks and an interrupted upload session is resumed from where the
registry says it stands; manifests are pushed last by the caller.

Authentication: anonymous, HTTP Basic, and the Bearer token flow, with
credentials from the usual auth files (see :func:`auth_file_candidates`).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import re
import ssl
import tempfile
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Literal, Mapping, Sequence
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

from airgap._internal.http import TRANSIENT_ERRORS, Transport
from airgap.exceptions import InputError, IntegrityError, RegistryError
from airgap.reference import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DEFAULT_ACCEPT: tuple[str, ...] = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

# Same cap as containerd and distribution: a manifest is metadata, and an
# endless one is an attack on the builder's memory.
MANIFEST_CAP = 4 * 1024 * 1024
# Tag lists, catalogs, tokens, error bodies.
_JSON_CAP = 16 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
_COPY_BUF = 1 << 20
_MAX_REDIRECTS = 5
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

Progress = Callable[[int], None]
OpenStream = Callable[[int], IO[bytes]]
PushResult = Literal["exists", "mounted", "uploaded"]


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as served; ``digest`` is the sha256 computed locally."""

    data: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class BlobRequest:
    """One blob for :meth:`RegistryClient.fetch_blobs`."""

    digest: str
    size: int | None
    dest: str | os.PathLike[str]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- credentials -------------------------------------------------------------


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


_DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def read_auth_file(path: str | os.PathLike[str], registry: str) -> tuple[str, str] | None:
    """(user, password) for *registry* from one auth file, or None if it has none.

    Only host-wide entries are used (``auths.<host>``); credential helpers are
    not, because the isolated side has none to call.
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
    wanted = {registry.lower()}
    if registry.lower() in _DOCKER_HUB_HOSTS:
        wanted = set(_DOCKER_HUB_HOSTS)
    for key, entry in auths.items():
        if _auth_key_host(key) not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InputError(f"{p}: auths.{key}.auth is not base64 of user:password") from None
            if not sep:
                raise InputError(f"{p}: auths.{key}.auth is not base64 of user:password")
            return user, password
        if entry.get("username") and "password" in entry:
            return str(entry["username"]), str(entry["password"])
    return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', rest)
    }
    return scheme.lower(), params


def _next_link(header: str | None) -> str | None:
    if not header:
        return None
    for part in header.split(","):
        m = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if m and re.search(r'rel\s*=\s*"?next"?', m.group(2)):
            return m.group(1)
    return None


def _add_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class _Limited:
    """At most *n* bytes of *stream*, hashed as they are read (for request bodies)."""

    def __init__(self, stream: IO[bytes], n: int, hasher, progress: Progress | None) -> None:
        self._stream, self._left, self._hasher, self._progress = stream, n, hasher, progress
        self.short = False

    def read(self, amt: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if amt is None or amt < 0 else min(amt, self._left)
        data = self._stream.read(want)
        if not data:
            # http.client would otherwise send a body shorter than Content-Length and hang.
            self.short = True
            raise _ShortStream
        self._left -= len(data)
        if self._hasher is not None:
            self._hasher.update(data)
        if self._progress:
            self._progress(len(data))
        return data


class _ShortStream(Exception):
    pass


# --- the client --------------------------------------------------------------


class RegistryClient:
    """Talks to one registry (``host[:port]``) over the OCI distribution API.

    Safe to share between threads: each thread gets its own keep-alive connection.
    """

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        credentials: tuple[str, str] | None = None,
        auth_file: str | os.PathLike[str] | None = None,
        timeout: float = 60,
        retries: int = 4,
        backoff: float = 0.5,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not registry or "/" in registry:
            raise InputError(f"{registry!r}: not a registry host[:port]")
        self.registry = registry
        # Docker Hub's name in references is not the host that serves its API.
        endpoint = "registry-1.docker.io" if registry in _DOCKER_HUB_HOSTS else registry
        self._base = f"{'http' if plain_http else 'https'}://{endpoint}"
        self._origin = urlsplit(self._base).netloc
        ctx = ssl.create_default_context()
        if ca_file is not None:
            # Added to the system CAs: a blob redirect may point at a storage host
            # signed by a public CA while the registry uses the internal one.
            ctx.load_verify_locations(cafile=os.fspath(ca_file))
        self._transport = Transport(ssl_context=ctx, timeout=timeout)
        self.retries = retries
        self.backoff = backoff
        self.chunk_size = chunk_size
        self.page_size = 1000
        self._explicit_auth_file = Path(auth_file) if auth_file is not None else None
        self._credentials = credentials
        self._credentials_loaded = credentials is not None
        self._searched: list[Path] = []
        self._lock = threading.Lock()
        self._auth_scheme: str | None = None  # learnt from the first challenge
        self._bearer_params: dict[str, str] = {}
        self._tokens: dict[str, str] = {}

    # -- lifecycle

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- credentials and auth

    def _get_credentials(self) -> tuple[str, str] | None:
        with self._lock:
            if not self._credentials_loaded:
                files = [self._explicit_auth_file] if self._explicit_auth_file else auth_file_candidates()
                self._searched = files
                for f in files:
                    found = read_auth_file(f, self.registry)
                    if found:
                        self._credentials = found
                        break
                self._credentials_loaded = True
            return self._credentials

    def _no_credentials(self, what: str) -> RegistryError:
        searched = ", ".join(str(p) for p in self._searched) or "(no auth file)"
        return RegistryError(f"401 Unauthorized from {self.registry} ({what}): no credentials for {self.registry} in {searched}")

    def _basic_header(self, creds: tuple[str, str]) -> str:
        return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode("ascii")

    def _auth_header(self, scope: str) -> str | None:
        if self._auth_scheme == "basic":
            creds = self._get_credentials()
            return self._basic_header(creds) if creds else None
        if self._auth_scheme == "bearer":
            with self._lock:
                token = self._tokens.get(scope)
            if token is None:
                token = self._fetch_token(scope)
            return f"Bearer {token}"
        return None

    def _on_challenge(self, header: str | None, scope: str, sent_auth: bool, what: str) -> None:
        """Set up authentication after a 401; raise if retrying cannot help."""
        if not header:
            raise RegistryError(f"401 Unauthorized from {self.registry} ({what}) without a WWW-Authenticate challenge")
        scheme, params = _parse_challenge(header)
        creds = self._get_credentials()
        if scheme == "basic":
            if creds is None:
                raise self._no_credentials(what)
            if sent_auth and self._auth_scheme == "basic":
                raise RegistryError(f"401 Unauthorized from {self.registry} ({what}): credentials for user {creds[0]!r} rejected")
            self._auth_scheme = "basic"
        elif scheme == "bearer":
            if "realm" not in params:
                raise RegistryError(f"{self.registry}: Bearer challenge without a realm ({header!r})")
            with self._lock:
                if sent_auth and self._auth_scheme == "bearer":
                    # Expired or insufficient token: one fresh try, then give up.
                    if self._tokens.pop(scope, None) is None:
                        raise RegistryError(f"401 Unauthorized from {self.registry} ({what}): access denied with a fresh token")
                self._auth_scheme = "bearer"
                self._bearer_params = params
        else:
            raise RegistryError(f"{self.registry}: unsupported authentication scheme {scheme!r} ({what})")

    def _fetch_token(self, scope: str) -> str:
        params = self._bearer_params
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for s in (scope or params.get("scope", "")).split():
            query.append(("scope", s))
        url = params["realm"]
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        headers = {"Accept": "application/json"}
        creds = self._get_credentials()
        if creds:
            headers["Authorization"] = self._basic_header(creds)
        what = f"token for {scope or 'registry'}"
        resp = self._with_retries(lambda: self._transport.request("GET", url, headers), what)
        try:
            if resp.status == 401:
                if creds is None:
                    raise self._no_credentials(what)
                raise RegistryError(f"401 Unauthorized from {self.registry} ({what}): credentials for user {creds[0]!r} rejected by {urlsplit(url).netloc}")
            if resp.status != 200:
                raise RegistryError(f"{self.registry}: token endpoint answered {resp.status} {resp.reason} ({what})")
            doc = self._read_json(resp, what)
        finally:
            self._transport.release(resp)
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.registry}: token endpoint gave no token ({what})")
        with self._lock:
            self._tokens[scope] = token
        return token

    # -- requests

    def _url(self, path: str) -> str:
        return self._base + path

    def _sleep(self, attempt: int, resp: http.client.HTTPResponse | None = None) -> None:
        delay = self.backoff * (2**attempt) * (0.5 + random.random() / 2)
        if resp is not None:
            retry_after = resp.getheader("Retry-After")
            if retry_after and retry_after.strip().isdigit():
                delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))

    def _with_retries(self, send: Callable[[], http.client.HTTPResponse], what: str) -> http.client.HTTPResponse:
        attempt = 0
        while True:
            try:
                resp = send()
            except TRANSIENT_ERRORS as exc:
                if attempt >= self.retries:
                    raise RegistryError(f"{self.registry}: {what}: {type(exc).__name__}: {exc} (after {attempt + 1} attempts)") from exc
                self._sleep(attempt)
                attempt += 1
                continue
            if resp.status in _RETRY_STATUSES and attempt < self.retries:
                self._transport.release(resp)
                self._sleep(attempt, resp)
                attempt += 1
                continue
            return resp

    def _send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | Callable[[], IO[bytes] | bytes] | None = None,
        what: str,
        follow_redirects: bool = True,
    ) -> http.client.HTTPResponse:
        """One logical request: authentication and redirects, no retries."""
        challenged = False
        for _ in range(_MAX_REDIRECTS + 1):
            h = dict(headers or {})
            on_registry = urlsplit(url).netloc == self._origin
            # Credentials never follow a redirect to another host (S3, a CDN).
            auth = self._auth_header(scope) if on_registry else None
            if auth:
                h["Authorization"] = auth
            payload = body() if callable(body) else body
            resp = self._transport.request(method, url, h, payload)
            if resp.status == 401 and on_registry and not challenged:
                challenge = resp.getheader("WWW-Authenticate")
                self._transport.release(resp)
                self._on_challenge(challenge, scope, auth is not None, what)
                challenged = True
                if payload is not None and not isinstance(payload, bytes):
                    # A streamed body is spent; the push loop re-sends from the
                    # session's Range, now with valid credentials.
                    raise _Retryable(f"401 from {self.registry}, re-authenticated")
                continue
            if resp.status in _REDIRECT_STATUSES and follow_redirects:
                location = resp.getheader("Location")
                self._transport.release(resp)
                if not location:
                    raise RegistryError(f"{self.registry}: {what}: redirect {resp.status} without Location")
                url = urljoin(url, location)
                if resp.status == 303:
                    method, body = "GET", None
                continue
            if resp.status == 401:
                self._transport.release(resp)
                creds = self._get_credentials() if on_registry else None
                if on_registry and creds is None:
                    # Anonymous tokens exist but do not reach this repository.
                    raise self._no_credentials(what)
                why = f": credentials for user {creds[0]!r} rejected" if creds else ""
                raise RegistryError(f"401 Unauthorized from {urlsplit(url).netloc} ({what}){why}")
            return resp
        raise RegistryError(f"{self.registry}: {what}: more than {_MAX_REDIRECTS} redirects")

    def _request(self, method: str, url: str, *, scope: str, what: str, **kw) -> http.client.HTTPResponse:
        return self._with_retries(lambda: self._send(method, url, scope=scope, what=what, **kw), what)

    def _read_json(self, resp: http.client.HTTPResponse, what: str) -> object:
        data = resp.read(_JSON_CAP + 1)
        if len(data) > _JSON_CAP:
            raise RegistryError(f"{self.registry}: {what}: response larger than {_JSON_CAP} bytes")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"{self.registry}: {what}: response is not JSON ({exc})") from None

    def _fail(self, resp: http.client.HTTPResponse, what: str) -> RegistryError:
        """Turn an unexpected answer into a RegistryError quoting the registry's errors."""
        detail = ""
        try:
            body = resp.read(64 * 1024)
            doc = json.loads(body) if body else None
            if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
                detail = "; ".join(
                    f"{e.get('code')}: {e.get('message')}" for e in doc["errors"] if isinstance(e, dict)
                )
        except (ValueError, *TRANSIENT_ERRORS):
            pass
        finally:
            self._transport.abandon(resp)
        return RegistryError(f"{what}: {resp.status} {resp.reason}" + (f" ({detail})" if detail else ""))

    @staticmethod
    def _check_repo(repo: str) -> None:
        if not repo or repo.startswith("/") or ".." in repo.split("/") or any(c in repo for c in "?#@: "):
            raise InputError(f"{repo!r}: not a repository name")

    def _artifact(self, repo: str, reference: str) -> str:
        # Tags cannot contain ':', digests always do.
        sep = "@" if ":" in reference else ":"
        return f"{self.registry}/{repo}{sep}{reference}"

    # -- manifests

    def _manifest_target(self, repo: str, reference: str) -> tuple[str, str]:
        """(artifact name for messages, URL) of a manifest by tag or validated digest."""
        self._check_repo(repo)
        artifact = self._artifact(repo, reference)
        if ":" in reference:
            validate_digest(reference, artifact)
        return artifact, self._url(f"/v2/{repo}/manifests/{quote(reference, safe=':')}")

    def get_manifest(self, repo: str, reference: str, accept: Sequence[str] = DEFAULT_ACCEPT) -> Manifest:
        """Fetch a manifest by tag or digest (capped at 4 MiB, digest computed locally)."""
        artifact, url = self._manifest_target(repo, reference)
        resp = self._request("GET", url, scope=f"repository:{repo}:pull", what=f"GET manifest {artifact}",
                             headers={"Accept": ", ".join(accept)})
        try:
            if resp.status == 404:
                raise RegistryError(f"{artifact}: manifest not found (404)")
            if resp.status != 200:
                raise self._fail(resp, f"GET manifest {artifact}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > MANIFEST_CAP:
                raise IntegrityError(artifact, f"manifest of {length} bytes exceeds the cap of {MANIFEST_CAP}")
            try:
                data = resp.read(MANIFEST_CAP + 1)
            except TRANSIENT_ERRORS as exc:
                raise RegistryError(f"{artifact}: connection lost while reading the manifest ({exc})") from exc
            if len(data) > MANIFEST_CAP:
                raise IntegrityError(artifact, f"manifest exceeds the cap of {MANIFEST_CAP} bytes")
            header_digest = resp.getheader("Docker-Content-Digest")
            content_type = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        finally:
            self._transport.release(resp)
        digest = sha256_digest(data)
        if ":" in reference and digest != reference:
            raise IntegrityError(artifact, f"sha256 mismatch (got {digest})")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise IntegrityError(artifact, f"registry says Docker-Content-Digest {header_digest}, content is {digest}")
        media_type = content_type
        if media_type not in accept:
            # Some registries answer application/json; the document says what it is.
            try:
                declared = json.loads(data).get("mediaType")
            except (ValueError, AttributeError):
                declared = None
            if isinstance(declared, str) and declared in accept:
                media_type = declared
            else:
                raise RegistryError(f"{artifact}: registry answered media type {content_type!r}, not one of {', '.join(accept)}")
        return Manifest(data=data, media_type=media_type, digest=digest)

    def manifest_exists(self, repo: str, reference: str) -> bool:
        """True if the registry has a manifest under *reference* (tag or digest)."""
        artifact, url = self._manifest_target(repo, reference)
        return self._exists(url, repo, f"HEAD manifest {artifact}", {"Accept": ", ".join(DEFAULT_ACCEPT)})

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Push a manifest under a tag or its digest; return its sha256 digest."""
        self._check_repo(repo)
        digest = sha256_digest(data)
        artifact = self._artifact(repo, reference)
        if ":" in reference and validate_digest(reference, artifact) != digest:
            raise IntegrityError(artifact, f"sha256 mismatch (content is {digest})")
        if len(data) > MANIFEST_CAP:
            raise InputError(f"{artifact}: manifest of {len(data)} bytes exceeds the cap of {MANIFEST_CAP}")
        url = self._url(f"/v2/{repo}/manifests/{quote(reference, safe=':')}")
        resp = self._request("PUT", url, scope=f"repository:{repo}:pull,push", what=f"PUT manifest {artifact}",
                             headers={"Content-Type": media_type, "Content-Length": str(len(data))}, body=data)
        try:
            if resp.status not in (200, 201):
                raise self._fail(resp, f"PUT manifest {artifact}")
            answered = resp.getheader("Docker-Content-Digest")
        finally:
            self._transport.release(resp)
        if answered and answered != digest:
            raise IntegrityError(artifact, f"registry stored the manifest as {answered}, content is {digest}")
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        artifact = f"{self.registry}/{repo}@{validate_digest(digest, f'{self.registry}/{repo}@{digest}')}"
        resp = self._request("DELETE", self._url(f"/v2/{repo}/manifests/{digest}"),
                             scope=f"repository:{repo}:delete", what=f"DELETE manifest {artifact}")
        try:
            if resp.status not in (200, 202):
                raise self._fail(resp, f"DELETE manifest {artifact}")
        finally:
            self._transport.release(resp)

    # -- listings

    def _paginate(self, path: str, key: str, scope: str, what: str) -> list[str]:
        out: list[str] = []
        url: str | None = self._url(path)
        while url:
            resp = self._request("GET", url, scope=scope, what=what)
            try:
                if resp.status == 404:
                    raise RegistryError(f"{what}: not found (404)")
                if resp.status != 200:
                    raise self._fail(resp, what)
                doc = self._read_json(resp, what)
                link = resp.getheader("Link")
            finally:
                self._transport.release(resp)
            items = doc.get(key) if isinstance(doc, dict) else None
            if items is not None and not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
                raise RegistryError(f"{what}: {key!r} is not a list of strings")
            out.extend(items or [])
            nxt = _next_link(link)
            url = urljoin(url, nxt) if nxt else None
        return out

    def list_tags(self, repo: str) -> list[str]:
        """All tags of *repo*, following pagination."""
        self._check_repo(repo)
        return self._paginate(f"/v2/{repo}/tags/list?n={self.page_size}", "tags", f"repository:{repo}:pull",
                              f"GET tags of {self.registry}/{repo}")

    def catalog(self) -> list[str]:
        """All repositories of the registry, following pagination."""
        return self._paginate(f"/v2/_catalog?n={self.page_size}", "repositories", "registry:catalog:*",
                              f"GET catalog of {self.registry}")

    # -- blobs: pull

    def blob_exists(self, repo: str, digest: str) -> bool:
        """True if *repo* has the blob (HEAD, following redirects)."""
        self._check_repo(repo)
        artifact = f"{self.registry}/{repo}@{digest}"
        validate_digest(digest, artifact)
        return self._exists(self._url(f"/v2/{repo}/blobs/{digest}"), repo, f"HEAD blob {artifact}")

    def _exists(self, url: str, repo: str, what: str, headers: dict[str, str] | None = None) -> bool:
        """HEAD *url*: 200 is True, 404 is False, anything else is an error naming *what*."""
        resp = self._request("HEAD", url, scope=f"repository:{repo}:pull", what=what, **({"headers": headers} if headers else {}))
        try:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            raise self._fail(resp, what)
        finally:
            self._transport.release(resp)

    def fetch_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        dest_path: str | os.PathLike[str],
        progress: Progress | None = None,
    ) -> Path:
        """Download a blob to *dest_path*, verified; resume with Range after a drop.

        Written to a temporary file next to *dest_path* and moved into place only
        after size and sha256 match; on mismatch the temporary file is removed and
        IntegrityError raised.  ``progress(n)`` gets byte counts as they arrive (a
        negative count when a restart discards what was already counted).
        """
        artifact = self._blob_artifact(repo, digest, size)
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                self._download(repo, digest, size, f, progress, artifact)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest

    def fetch_blob_into(
        self, repo: str, digest: str, size: int | None, sink: IO[bytes], progress: Progress | None = None
    ) -> None:
        """Stream a blob into *sink* (``write``; ``seek(0)`` for a restart), verified.

        For writers that place the blob themselves (a region of a bundle file).
        Size and sha256 are checked after the last byte: on IntegrityError the
        sink holds unverified bytes and the caller must discard them.
        ``progress`` is called here, so a sink must not count the bytes again.
        """
        artifact = self._blob_artifact(repo, digest, size)
        self._download(repo, digest, size, sink, progress, artifact)

    def _blob_artifact(self, repo: str, digest: str, size: int | None) -> str:
        self._check_repo(repo)
        artifact = f"{self.registry}/{repo}@{digest}"
        validate_digest(digest, artifact)
        if size is not None and size < 0:
            raise InputError(f"{artifact}: negative size {size}")
        return artifact

    def _download(self, repo: str, digest: str, size: int | None, sink: IO[bytes],
                  progress: Progress | None, artifact: str) -> None:
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        scope = f"repository:{repo}:pull"
        what = f"GET blob {artifact}"
        hasher, have = hashlib.sha256(), 0
        drops = 0
        buf = bytearray(_COPY_BUF)
        view = memoryview(buf)
        while True:
            headers = {"Range": f"bytes={have}-"} if have else {}
            resp = self._request("GET", url, scope=scope, what=what, headers=headers)
            if resp.status == 404:
                self._transport.release(resp)
                raise RegistryError(f"{artifact}: blob not found (404)")
            if resp.status == 416 and size is not None and have >= size:
                self._transport.release(resp)
                break
            if resp.status not in (200, 206):
                raise self._fail(resp, what)
            if have and (resp.status == 200 or not (resp.getheader("Content-Range") or "").startswith(f"bytes {have}-")):
                # The registry ignored or mangled the Range: start again from zero.
                if resp.status != 200:
                    self._transport.abandon(resp)
                    resp = self._request("GET", url, scope=scope, what=what)
                    if resp.status != 200:
                        raise self._fail(resp, what)
                sink.seek(0)
                if hasattr(sink, "truncate"):
                    sink.truncate()
                if progress:
                    progress(-have)
                hasher, have = hashlib.sha256(), 0
            length = resp.getheader("Content-Length")
            end = have + int(length) if length and length.isdigit() else None
            try:
                while True:
                    limit = _COPY_BUF if size is None else min(_COPY_BUF, size - have + 1)
                    n = resp.readinto(view[:limit]) if limit > 0 else 0
                    if not n:
                        # http.client reports a body cut short as a plain EOF.
                        if end is not None and have < end:
                            raise http.client.IncompleteRead(b"", end - have)
                        break
                    if size is not None and have + n > size:
                        raise IntegrityError(artifact, f"size mismatch (more than the expected {size} bytes)")
                    sink.write(view[:n])
                    hasher.update(view[:n])
                    have += n
                    if progress:
                        progress(n)
            except TRANSIENT_ERRORS as exc:
                self._transport.abandon(resp)
                drops += 1
                if drops > self.retries:
                    raise RegistryError(f"{artifact}: connection lost {drops} times while downloading ({exc})") from exc
                self._sleep(drops - 1)
                continue
            except BaseException:
                self._transport.abandon(resp)
                raise
            self._transport.release(resp)
            break
        if size is not None and have != size:
            raise IntegrityError(artifact, f"size mismatch (got {have} bytes, expected {size})")
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            raise IntegrityError(artifact, f"sha256 mismatch (got {got})")

    def fetch_blobs(
        self,
        repo: str,
        items: Iterable[BlobRequest | tuple[str, int | None, str | os.PathLike[str]]],
        workers: int = 4,
        progress: Progress | None = None,
    ) -> list[Path]:
        """:meth:`fetch_blob` for several (digest, size, dest) in parallel.

        The first failure cancels what has not started and is raised; *progress*
        is called from worker threads (tqdm's ``update`` is safe for that).
        """
        reqs = [i if isinstance(i, BlobRequest) else BlobRequest(*i) for i in items]
        if not reqs:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(reqs))), thread_name_prefix="airgap-fetch") as pool:
            futures = [pool.submit(self.fetch_blob, repo, r.digest, r.size, r.dest, progress) for r in reqs]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in pending:
                fut.cancel()
            for fut in futures:
                if fut.done() and not fut.cancelled() and fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
            return [fut.result() for fut in futures]

    # -- blobs: push

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True if mounted, False if the registry declined."""
        location = self._start_upload(repo, digest, from_repo)
        if location is None:
            return True
        self._cancel_upload(location, repo)
        return False

    def _start_upload(self, repo: str, digest: str, mount_from: str | None = None) -> str | None:
        """POST a new upload session; None if the blob was mounted instead."""
        artifact = f"{self.registry}/{repo}@{digest}"
        url = self._url(f"/v2/{repo}/blobs/uploads/")
        scope = f"repository:{repo}:pull,push"
        if mount_from:
            self._check_repo(mount_from)
            url = _add_query(url, mount=digest, **{"from": mount_from})
            scope += f" repository:{mount_from}:pull"
        resp = self._request("POST", url, scope=scope, what=f"start upload of {artifact}",
                             headers={"Content-Length": "0"}, body=b"")
        try:
            if resp.status == 201 and mount_from:
                return None
            if resp.status != 202:
                raise self._fail(resp, f"start upload of {artifact}")
            location = resp.getheader("Location")
        finally:
            self._transport.release(resp)
        if not location:
            raise RegistryError(f"{artifact}: upload session started without a Location")
        return urljoin(url, location)

    def _upload_status(self, location: str, repo: str) -> tuple[str, int] | None:
        """(location, offset) of a live upload session, or None if it is gone."""
        try:
            resp = self._request("GET", location, scope=f"repository:{repo}:pull,push", what="upload status")
        except RegistryError:
            return None
        try:
            if resp.status != 204:
                return None
            rng = resp.getheader("Range") or "0-0"
            new_location = urljoin(location, resp.getheader("Location") or location)
        finally:
            self._transport.release(resp)
        m = re.fullmatch(r"(?:bytes=)?0-(\d+)", rng.strip())
        if not m:
            return None
        end = int(m.group(1))
        # Distribution answers "0-0" for an empty session as well as for one
        # byte; chunks are never one byte long, so "0-0" means nothing stored.
        return new_location, (end + 1 if end > 0 else 0)

    def _cancel_upload(self, location: str, repo: str) -> None:
        try:
            resp = self._request("DELETE", location, scope=f"repository:{repo}:pull,push", what="cancel upload")
            self._transport.release(resp)
        except RegistryError:
            pass

    def push_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        open_stream: OpenStream,
        *,
        mount_from: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        """Upload a blob unless *repo* already has it; return what happened.

        ``open_stream(offset)`` returns a binary file positioned at *offset* (the
        blob may sit inside a tar); it is closed after use.  Blobs up to
        ``chunk_size`` go up in one PUT, larger ones in PATCH chunks.  After a
        dropped connection the session is asked for its ``Range`` and continued;
        with *state_path* the session URL is also kept on disk so a later call
        (after a crash) resumes it.  *mount_from* tries a cross-repository mount
        first.
        """
        self._check_repo(repo)
        artifact = f"{self.registry}/{repo}@{digest}"
        validate_digest(digest, artifact)
        if size < 0:
            raise InputError(f"{artifact}: negative size {size}")
        if self.blob_exists(repo, digest):
            self._forget_state(state_path)
            return "exists"
        state = Path(state_path) if state_path is not None else None
        location: str | None = None
        offset = 0
        if state is not None:
            saved = self._load_state(state, digest, repo)
            if saved:
                status = self._upload_status(saved, repo)
                if status:
                    location, offset = status
        if location is None and mount_from:
            location = self._start_upload(repo, digest, mount_from)
            if location is None:
                self._forget_state(state)
                return "mounted"
        if location is None:
            location = self._start_upload(repo, digest)

        # The local hash is only meaningful for bytes streamed in order from 0;
        # snapshots at chunk boundaries let it survive a resume at such a boundary.
        hasher = hashlib.sha256() if offset == 0 else None
        snapshots = {0: hashlib.sha256()} if offset == 0 else {}
        failures = 0
        assert location is not None
        while True:
            try:
                if offset == 0 and size <= self.chunk_size:
                    final_url = _add_query(location, digest=digest)
                    result = self._put_body(final_url, repo, artifact, open_stream, 0, size, hasher, progress,
                                            digest=digest)
                    break
                while offset < size:
                    n = min(self.chunk_size, size - offset)
                    location = self._patch_chunk(location, repo, artifact, open_stream, offset, n, hasher, progress)
                    offset += n
                    if hasher is not None:
                        snapshots = {offset: hasher.copy()}
                    if state is not None:
                        self._save_state(state, digest, repo, location)
                result = self._put_body(_add_query(location, digest=digest), repo, artifact, None, offset, 0,
                                        hasher, progress, digest=digest)
                break
            except _ShortStream:
                self._cancel_upload(location, repo)
                self._forget_state(state)
                raise IntegrityError(artifact, f"source stream ended before the expected {size} bytes") from None
            except _Retryable as exc:
                failures += 1
                if failures > self.retries:
                    raise RegistryError(f"{artifact}: upload failed {failures} times ({exc.args[0]})") from None
                self._sleep(failures - 1)
                status = self._upload_status(location, repo)
                if status is None or (offset == 0 and size <= self.chunk_size):
                    if status is not None:
                        self._cancel_upload(status[0], repo)
                    location, offset = self._start_upload(repo, digest), 0  # type: ignore[assignment]
                    hasher, snapshots = hashlib.sha256(), {0: hashlib.sha256()}
                else:
                    location, offset = status
                    snap = snapshots.get(offset)
                    hasher = snap.copy() if snap is not None else None
        self._forget_state(state)
        return result

    def _check_local_hash(self, hasher, artifact: str, location: str, repo: str, digest: str) -> None:
        if hasher is not None:
            got = "sha256:" + hasher.hexdigest()
            if got != digest:
                self._cancel_upload(location, repo)
                raise IntegrityError(artifact, f"sha256 mismatch (source stream is {got})")

    def _patch_chunk(self, location: str, repo: str, artifact: str, open_stream: OpenStream, offset: int,
                     n: int, hasher, progress: Progress | None) -> str:
        stream = open_stream(offset)
        try:
            body = _Limited(stream, n, hasher, progress)
            try:
                resp = self._send("PATCH", location, scope=f"repository:{repo}:pull,push",
                                  what=f"PATCH {artifact} bytes {offset}-{offset + n - 1}", body=body,
                                  headers={"Content-Type": "application/octet-stream", "Content-Length": str(n),
                                           "Content-Range": f"{offset}-{offset + n - 1}"})
            except RegistryError:
                raise
            except TRANSIENT_ERRORS as exc:
                if body.short:
                    raise _ShortStream from None
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            stream.close()
        try:
            if resp.status in _RETRY_STATUSES:
                raise _Retryable(f"{resp.status} {resp.reason}")
            if resp.status != 202:
                raise self._fail(resp, f"PATCH {artifact}")
            new_location = resp.getheader("Location")
        finally:
            self._transport.release(resp)
        return urljoin(location, new_location) if new_location else location

    def _put_body(self, url: str, repo: str, artifact: str, open_stream: OpenStream | None, offset: int, n: int,
                  hasher, progress: Progress | None, *, digest: str) -> PushResult:
        stream = open_stream(offset) if open_stream is not None else None
        try:
            body: object = _Limited(stream, n, hasher, progress) if stream is not None else b""
            if stream is None:
                self._check_local_hash(hasher, artifact, url, repo, digest)
            headers = {"Content-Length": str(n)}
            if n:
                headers["Content-Type"] = "application/octet-stream"
            try:
                resp = self._send("PUT", url, scope=f"repository:{repo}:pull,push", what=f"PUT blob {artifact}",
                                  body=body, headers=headers)  # type: ignore[arg-type]
            except RegistryError:
                raise
            except TRANSIENT_ERRORS as exc:
                if isinstance(body, _Limited) and body.short:
                    raise _ShortStream from None
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if stream is not None:
                stream.close()
        try:
            if resp.status in _RETRY_STATUSES:
                raise _Retryable(f"{resp.status} {resp.reason}")
            if resp.status == 400:
                err = self._fail(resp, f"PUT blob {artifact}")
                if "DIGEST_INVALID" in str(err) or "SIZE_INVALID" in str(err):
                    got = f"got sha256:{hasher.hexdigest()}" if hasher is not None else "registry answered DIGEST_INVALID"
                    raise IntegrityError(artifact, f"sha256 mismatch ({got})")
                raise err
            if resp.status != 201:
                raise self._fail(resp, f"PUT blob {artifact}")
            answered = resp.getheader("Docker-Content-Digest")
        finally:
            self._transport.release(resp)
        if answered and answered != digest:
            raise IntegrityError(artifact, f"registry stored the blob as {answered}")
        return "uploaded"

    @staticmethod
    def _load_state(state: Path, digest: str, repo: str) -> str | None:
        try:
            doc = json.loads(state.read_bytes())
        except (OSError, ValueError):
            return None
        if isinstance(doc, dict) and doc.get("digest") == digest and doc.get("repo") == repo:
            loc = doc.get("location")
            return loc if isinstance(loc, str) else None
        return None

    @staticmethod
    def _save_state(state: Path, digest: str, repo: str, location: str) -> None:
        from airgap._internal.fsutil import atomic_write

        # Under --state: written atomically, never through a link.
        atomic_write(state, json.dumps({"digest": digest, "repo": repo, "location": location}).encode(), 0o600,
                     root=state.parent)

    @staticmethod
    def _forget_state(state: str | os.PathLike[str] | None) -> None:
        if state is not None:
            Path(state).unlink(missing_ok=True)


class _Retryable(Exception):
    """A push step failed in a way that asking the session for its Range may fix."""
