# Copyright: airgap project
# License: EUPL-1.2
"""Checks of the internal registry, asked over its API like a client would.

Everything is anchored to the signed manifest: each image's manifest is
fetched *by digest* and its bytes hashed (a registry cannot substitute one),
an index's children likewise, and every blob those manifests name must be
served by digest with its size.  The registry's access rules are probed (no
anonymous access, no push with the pull credential) and its certificate's
remaining lifetime read from the TLS handshake.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import time

try:
    import http.client as httplib
except ImportError:  # pragma: no cover
    import httplib  # type: ignore

from ansible.module_utils.airgap_check_common import Result
from ansible.module_utils.airgap_endpoints import split_host_port

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MAX_MANIFEST = 4 * 1024 * 1024


class Registry(object):
    """A minimal distribution-API client: TLS with the internal CA, Basic authentication."""

    def __init__(self, endpoint, ca_pem, username=None, password=None, timeout=15):
        self.endpoint = endpoint
        self.host, port = split_host_port(endpoint)
        self.port = int(port or 443)
        self.context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
        self.auth = None
        if username:
            token = base64.b64encode(("%s:%s" % (username, password or "")).encode()).decode()
            self.auth = "Basic " + token
        self.timeout = timeout

    def url(self, path):
        return "https://%s%s" % (self.endpoint, path)

    def request(self, method, path, headers=None, auth=True, limit=MAX_MANIFEST):
        """(status, headers, body) -- body read up to *limit* bytes."""
        conn = httplib.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        try:
            hdrs = dict(headers or {})
            if auth and self.auth:
                hdrs["Authorization"] = self.auth
            conn.request(method, path, headers=hdrs)
            resp = conn.getresponse()
            body = resp.read(limit + 1) if method != "HEAD" else b""
            return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), body
        finally:
            conn.close()

    def certificate(self):
        """The peer certificate (dict, as ``ssl`` parses it) after a verified handshake."""
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as raw:
            with self.context.wrap_socket(raw, server_hostname=self.host) as tls:
                return tls.getpeercert()


def check_registry_content(registry, images):
    """Every image of the signed manifest: manifest (and children) by digest, every blob by digest.

    Returns ``(result, allowed)``: *allowed* maps each image's ``ref`` to the
    manifest digests a container of it may report (the image's own and, for an
    index, its children's).
    """
    res = Result("registry_content", "")
    allowed = {}
    blobs = manifests = 0
    for image in images:
        repo = image["repository"]
        seen = allowed.setdefault(image["ref"], [image["digest"]])
        queue = [(image["digest"], "manifest of %s" % image["ref"])]
        while queue:
            digest, what = queue.pop(0)
            path = "/v2/%s/manifests/%s" % (repo, digest)
            doc, problem = _fetch_manifest(registry, path, digest)
            manifests += 1
            if problem:
                res.fail(registry.url(path), digest, "%s: %s" % (what, problem))
                continue
            if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
                for child in doc.get("manifests") or []:
                    if child.get("digest") and child["digest"] not in seen:
                        seen.append(child["digest"])
                        queue.append((child["digest"], "child %s of %s" % (child["digest"][:19], image["ref"])))
                continue
            for desc in [doc.get("config") or {}] + list(doc.get("layers") or []):
                if not desc.get("digest"):
                    continue
                blobs += 1
                problem = _head_blob(registry, repo, desc)
                if problem:
                    res.fail(registry.url("/v2/%s/blobs/%s" % (repo, desc["digest"])), desc["digest"],
                             "blob of %s: %s" % (image["ref"], problem))
    if not images:
        res.fail("the signed manifest", "(no images)", "no images to check: the controller has no signed bundle")
    res.summary_ok = "%d image(s): %d manifest(s) and %d blob(s) served by digest" % (len(images), manifests, blobs)
    res.note("%s: %d manifest(s), %d blob(s) asked by digest" % (registry.endpoint, manifests, blobs))
    return res, allowed


def _fetch_manifest(registry, path, digest):
    try:
        status, headers, body = registry.request("GET", path, {"Accept": ACCEPT})
    except (OSError, ssl.SSLError, httplib.HTTPException) as exc:
        return None, "no answer (%s)" % exc
    if status != 200:
        return None, "HTTP %d" % status
    if len(body) > MAX_MANIFEST:
        return None, "larger than %d bytes" % MAX_MANIFEST
    algo, _, want = digest.partition(":")
    if algo != "sha256" or hashlib.sha256(body).hexdigest() != want:
        return None, "the served bytes hash to sha256:%s, not the signed digest" % hashlib.sha256(body).hexdigest()
    try:
        return json.loads(body.decode("utf-8")), None
    except ValueError:
        return None, "not JSON"


def _head_blob(registry, repo, desc):
    try:
        status, headers, _ = registry.request("HEAD", "/v2/%s/blobs/%s" % (repo, desc["digest"]))
    except (OSError, ssl.SSLError, httplib.HTTPException) as exc:
        return "no answer (%s)" % exc
    if status != 200:
        return "HTTP %d (not served)" % status
    served = headers.get("docker-content-digest")
    if served and served != desc["digest"]:
        return "served as %s" % served
    size = headers.get("content-length")
    if size is not None and desc.get("size") is not None and int(size) != int(desc["size"]):
        return "served with %s bytes, the manifest says %s" % (size, desc["size"])
    return None


def check_registry_access(pull, push, probe_repo):
    """No anonymous access; the pull credential cannot push (pull endpoint read-only, push endpoint refuses it)."""
    res = Result("registry_access", "anonymous refused; the pull credential cannot push")
    targets = [(pull, "pull endpoint")] + ([(push, "push endpoint")] if push is not None else [])
    for reg, what in targets:
        status = _status(reg, "GET", "/v2/", auth=False)
        if status == 401:
            res.note("%s (%s): anonymous GET /v2/ -> 401" % (reg.endpoint, what))
        else:
            res.fail(reg.url("/v2/"), "anonymous GET -> %s" % status, "the %s answers without authentication" % what)
        path = "/v2/%s/blobs/uploads/" % probe_repo
        status = _upload_probe(reg, path)
        if status == 202:
            res.fail(reg.url(path), "POST with the pull credential -> 202",
                     "the pull credential can start an upload at the %s" % what)
        elif isinstance(status, int):
            res.note("%s (%s): upload with the pull credential refused (HTTP %d)" % (reg.endpoint, what, status))
        else:
            res.fail(reg.url(path), str(status), "the %s did not answer the upload probe" % what)
    return res


def _status(reg, method, path, auth=True):
    try:
        return reg.request(method, path, auth=auth, limit=65536)[0]
    except (OSError, ssl.SSLError, httplib.HTTPException) as exc:
        return "no answer (%s)" % exc


def _upload_probe(reg, path):
    """Try to open an upload; a wrongly permitted session is deleted at once (nothing is left behind)."""
    try:
        status, headers, _ = reg.request("POST", path, limit=65536)
    except (OSError, ssl.SSLError, httplib.HTTPException) as exc:
        return "no answer (%s)" % exc
    if status == 202 and headers.get("location"):
        loc = headers["location"]
        if "://" in loc:
            loc = "/" + loc.split("://", 1)[1].split("/", 1)[1]
        try:
            reg.request("DELETE", loc, limit=65536)
        except (OSError, ssl.SSLError, httplib.HTTPException):
            pass
    return status


def check_certificate(registries, min_days, now=None):
    """The registry's certificate (as presented, verified against the internal CA) has *min_days* left."""
    res = Result("certificate", "")
    now = time.time() if now is None else now
    left_min = None
    for reg in registries:
        try:
            cert = reg.certificate()
        except (OSError, ssl.SSLError, ValueError) as exc:
            res.fail("TLS handshake with %s" % reg.endpoint, str(exc)[:200], "no verified TLS connection with the internal CA")
            continue
        not_after = cert.get("notAfter", "")
        try:
            days = (ssl.cert_time_to_seconds(not_after) - now) / 86400.0
        except ValueError:
            res.fail("TLS handshake with %s" % reg.endpoint, not_after, "unreadable expiry")
            continue
        left_min = days if left_min is None else min(left_min, days)
        if days < min_days:
            res.fail("certificate of %s" % reg.endpoint, "notAfter %s" % not_after,
                     "expires in %.0f day(s), under %d: run site.yml to renew it" % (days, min_days))
        else:
            res.note("%s: valid until %s (%.0f days)" % (reg.endpoint, not_after, days))
    res.summary_ok = "valid for %.0f more days" % (left_min or 0)
    return res
