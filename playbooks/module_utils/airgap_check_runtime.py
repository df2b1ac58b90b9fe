# Copyright: airgap project
# License: EUPL-1.2
"""Checks of the container runtime's configuration: registries, image trust policy, credentials.

Covers podman/containers (registries.conf and drop-ins, short-name aliases,
policy.json, certs.d, auth files, containers.conf) and containerd
(``certs.d/*/hosts.toml``, ``config.toml`` mirrors) and docker's daemon.json,
whether or not the runtime is installed: a file that names a public registry
is a finding even on a node that does not use it today.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re

from ansible.module_utils.airgap_check_common import Result
from ansible.module_utils.airgap_endpoints import normalise, split_host_port

try:
    import tomllib  # Python >= 3.11
except ImportError:  # pragma: no cover
    tomllib = None

REGISTRIES_CONF = ("/etc/containers/registries.conf", "/etc/containers/registries.conf.d/*.conf",
                   "/root/.config/containers/registries.conf", "/root/.config/containers/registries.conf.d/*.conf")
POLICY_FILES = ("/etc/containers/policy.json", "/root/.config/containers/policy.json")
AUTH_FILES = ("/etc/containers/auth.json", "/run/containers/*/auth.json", "/root/.docker/config.json",
              "/root/.config/containers/auth.json")
CONTAINERS_CONF = ("/etc/containers/containers.conf", "/etc/containers/containers.conf.d/*.conf",
                   "/usr/share/containers/containers.conf", "/etc/containers/libpod.conf",
                   "/root/.config/containers/containers.conf", "/root/.config/containers/containers.conf.d/*.conf")
IMAGE_REF_RE = re.compile(r"^(?:docker://)?(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)+(?::[0-9]+)?|[a-z0-9-]+:[0-9]+|\[[0-9a-f:]+\](?::[0-9]+)?)/\S+$", re.I)


def load_toml(files, path):
    text = files.read(path)
    if text is None:
        return None, "cannot be read"
    if tomllib is None:
        return None, "no TOML parser on this Python (3.11 or later needed)"
    try:
        return tomllib.loads(text), None
    except Exception as exc:  # tomllib.TOMLDecodeError; keep the message
        return None, "not valid TOML: %s" % exc


def line_of(files, path, needle):
    """1-based line of the first occurrence of *needle* in *path* (for reports), or None."""
    text = files.read(path) or ""
    idx = text.find(needle)
    return None if idx < 0 else text.count("\n", 0, idx) + 1


class Internal(object):
    """The internal registry endpoints (HOST:PORT) nodes may name."""

    def __init__(self, registries):
        self.endpoints = []
        for reg in registries or []:
            host, port = split_host_port(reg)
            self.endpoints.append((normalise(host), port))

    def __call__(self, location):
        """True when *location* (``host[:port][/path]``, a URL or ``[v6]:port``) is an internal registry."""
        loc = str(location).strip()
        if not loc:
            return False
        host, port = split_host_port(loc)
        host = normalise(host)
        return any(host == h and (p is None or port == p) for h, p in self.endpoints)

    def describe(self):
        return ", ".join("%s:%s" % (h, p) if p else h for h, p in self.endpoints) or "(none declared)"


def registry_rules(files):
    """Merged [[registry]] rules, search registries, aliases, problems and sources (later files win)."""
    rules, search, aliases, problems, sources = {}, None, {}, [], []
    for path in files.glob(*REGISTRIES_CONF):
        shown = files.show(path)
        doc, err = load_toml(files, path)
        if err:
            problems.append((shown, None, "registries.conf", err))
            continue
        sources.append(shown)
        for reg in doc.get("registry", []) or []:
            prefix = reg.get("prefix") or reg.get("location") or ""
            rules[prefix] = dict(reg, _source=shown, _path=path)
        if "unqualified-search-registries" in doc:
            search = (list(doc.get("unqualified-search-registries") or []), shown, path)
        v1 = doc.get("registries") or {}
        if isinstance(v1, dict):
            for kind in ("search", "insecure", "block"):
                regs = (v1.get(kind) or {}).get("registries") or []
                if regs:
                    problems.append((shown, line_of(files, path, "[registries.%s]" % kind), str(regs),
                                     "the v1 [registries.%s] table is deprecated and not judged here: use [[registry]]" % kind))
        for name, target in (doc.get("aliases") or {}).items():
            aliases[name] = (target, shown, path)
    return rules, search, aliases, problems, sources


def rewrite(ref, rules):
    """Where podman would pull *ref* from: ``(location, blocked, rule prefix)``."""
    best = None
    for prefix in rules:
        if not prefix:
            continue
        if prefix.startswith("*."):
            host = ref.split("/", 1)[0]
            if not fnmatch.fnmatchcase(host, prefix):
                continue
            cand = (len(host), prefix, host)
        elif ref == prefix or ref.startswith((prefix + "/", prefix + ":", prefix + "@")):
            cand = (len(prefix), prefix, prefix)
        else:
            continue
        if best is None or cand[0] > best[0]:
            best = cand
    if best is None:
        return ref, False, None
    _, prefix, matched = best
    rule = rules[prefix]
    location = rule.get("location") or matched
    return location + ref[len(matched):], bool(rule.get("blocked")), prefix


def check_registries(files, internal, labels):
    res = Result("registries", "only the internal registry is named")

    def bad(source, line, value, reason):
        res.fail(source, value, reason, line=line, label=labels.label(value))

    rules, search, aliases, problems, sources = registry_rules(files)
    for source, line, value, reason in problems:
        bad(source, line, value, reason)
    for prefix, rule in sorted(rules.items()):
        src, path = rule["_source"], rule["_path"]
        line = line_of(files, path, '"%s"' % prefix)
        loc = rule.get("location") or prefix
        if rule.get("blocked"):
            res.note("%s: %s blocked" % (src, prefix))
            continue
        if internal(loc):
            res.note("%s: %s -> %s (internal)" % (src, prefix, loc))
        else:
            bad(src, line, "%s -> %s" % (prefix, loc), "pulls of %s go to %s, not the internal registry (%s)"
                % (prefix, loc, internal.describe()))
        for mirror in rule.get("mirror", []) or []:
            mloc = mirror.get("location", "")
            if not internal(mloc):
                bad(src, line_of(files, path, mloc), mloc, "mirror of %s is not the internal registry" % prefix)
    if search is None:
        if sources:
            bad(sources[0], None, "unqualified-search-registries (unset)",
                "unset: the built-in default searches public registries")
    else:
        regs, src, path = search
        line = line_of(files, path, "unqualified-search-registries")
        for reg in regs:
            if not internal(reg):
                bad(src, line, reg, "short names would be searched on %s" % reg)
        if all(internal(r) for r in regs):
            res.note("%s: unqualified-search-registries = %s" % (src, regs))
    for name, (target, src, path) in sorted(aliases.items()):
        loc, blocked, _prefix = rewrite(target, rules)
        if not blocked and not internal(loc):
            bad(src, line_of(files, path, '"%s"' % name) or line_of(files, path, name), "%s = %s" % (name, target),
                "the short name %s resolves to %s" % (name, loc))
    for directory in sorted(_dirs(files, "/etc/containers/certs.d/*", "/etc/docker/certs.d/*")):
        name = os.path.basename(directory)
        if internal(name):
            res.note("%s: CA for the internal registry" % files.show(directory))
        else:
            bad(files.show(directory), None, name, "TLS settings for a registry other than the internal one")
    _containerd(files, internal, res, bad)
    _auth_files(files, internal, res, bad)
    _containers_conf(files, internal, rules, res, bad)
    for path in files.glob("/etc/docker/daemon.json"):
        doc = _json(files, path)
        for key in ("registry-mirrors", "insecure-registries"):
            for value in (doc or {}).get(key) or []:
                if not internal(value):
                    bad(files.show(path), line_of(files, path, value), value, "%s names a registry other than the internal one" % key)
    return res


def _dirs(files, *patterns):
    import glob as _glob

    out = []
    for pat in patterns:
        out.extend(p for p in _glob.glob(files.path(pat)) if os.path.isdir(p))
    return out


def _containerd(files, internal, res, bad):
    """containerd's certs.d: every ``server`` and ``[host."…"]`` must be internal (no fallback upstream)."""
    for directory in sorted(_dirs(files, "/etc/containerd/certs.d/*")):
        namespace = os.path.basename(directory)
        hosts_toml = os.path.join(directory, "hosts.toml")
        shown = files.show(hosts_toml)
        if not os.path.isfile(hosts_toml):
            # No hosts.toml: containerd talks to the namespace's registry itself.
            if not internal(namespace) and namespace != "_default":
                bad(files.show(directory), None, namespace, "no hosts.toml: containerd pulls from %s directly" % namespace)
            continue
        doc, err = load_toml(files, hosts_toml)
        if err:
            bad(shown, None, "hosts.toml", err)
            continue
        server = doc.get("server")
        hosts = list((doc.get("host") or {}).keys())
        if server is None and not internal(namespace) and namespace != "_default":
            bad(shown, None, "(no server)", "without a server line containerd falls back to %s" % namespace)
        if server is not None and not hosts and not internal(namespace) and namespace != "_default":
            # containerd 1.6 (Debian 12) cannot decode such a file ("invalid `host` tree") and
            # uses the upstream instead (tests/test_platform_lab.py shows it).
            bad(shown, None, "(no [host] table)", "containerd 1.6 rejects a hosts.toml without a [host.\"...\"] table "
                                                  "and pulls %s from upstream; name the internal registry as a host too" % namespace)
        if server is not None:
            if internal(server):
                res.note("%s: server = %s (internal)" % (shown, server))
            else:
                bad(shown, line_of(files, hosts_toml, str(server)), server, "containerd pulls %s from %s" % (namespace, server))
        for host in hosts:
            if internal(host):
                res.note("%s: host %s (internal)" % (shown, host))
            else:
                bad(shown, line_of(files, hosts_toml, host), host, "containerd's host for %s is not the internal registry" % namespace)
    for path in files.glob("/etc/containerd/config.toml"):
        doc, err = load_toml(files, path)
        if err:
            bad(files.show(path), None, "config.toml", err)
            continue
        cri = ((doc.get("plugins") or {}).get("io.containerd.grpc.v1.cri") or {}).get("registry") or {}
        for upstream, mirror in sorted((cri.get("mirrors") or {}).items()):
            for endpoint in mirror.get("endpoint") or []:
                if not internal(endpoint):
                    bad(files.show(path), line_of(files, path, endpoint), endpoint,
                        "containerd mirror endpoint for %s is not the internal registry" % upstream)
        for prefix in ("sandbox_image",):
            image = ((doc.get("plugins") or {}).get("io.containerd.grpc.v1.cri") or {}).get(prefix)
            if image and not internal(image):
                bad(files.show(path), line_of(files, path, image), image, "%s is not from the internal registry" % prefix)


def _json(files, path):
    try:
        return json.loads(files.read(path) or "{}")
    except ValueError:
        return None


def auth_entries(files):
    """(path, doc or None) of every registry credential file."""
    return [(p, _json(files, p)) for p in files.glob(*AUTH_FILES)]


def _auth_files(files, internal, res, bad):
    for path, doc in auth_entries(files):
        shown = files.show(path)
        if doc is None:
            bad(shown, None, "auth file", "not valid JSON")
            continue
        keys = list((doc.get("auths") or {}).keys()) + list((doc.get("credHelpers") or {}).keys())
        for key in keys:
            if internal(key):
                res.note("%s: credentials for %s (internal)" % (shown, key))
            else:
                bad(shown, line_of(files, path, key), key, "credentials for a registry other than the internal one")


def _containers_conf(files, internal, rules, res, bad):
    for path in files.glob(*CONTAINERS_CONF):
        doc, err = load_toml(files, path)
        shown = files.show(path)
        if err:
            bad(shown, None, "containers.conf", err)
            continue
        found = False
        for value in _walk_strings(doc):
            ref = value.strip()
            if ref.startswith("/") or not IMAGE_REF_RE.match(ref):
                continue
            found = True
            if internal(ref):
                continue
            loc, blocked, _prefix = rewrite(ref.replace("docker://", ""), rules)
            if blocked or internal(loc):
                continue
            bad(shown, line_of(files, path, ref), ref, "image reference outside the internal registry")
        if not found:
            res.note("%s: no image reference" % shown)


def _walk_strings(doc):
    if isinstance(doc, dict):
        for val in doc.values():
            for s in _walk_strings(val):
                yield s
    elif isinstance(doc, list):
        for val in doc:
            for s in _walk_strings(val):
                yield s
    elif isinstance(doc, str):
        yield doc


# --------------------------------------------------------------------------- policy.json

def check_image_policy(files, internal):
    """policy.json rejects by default and accepts only the internal registry's docker scopes."""
    res = Result("image_policy", "rejects everything but the internal registry")
    found = files.glob(*POLICY_FILES)
    if not found:
        res.fail("/etc/containers/policy.json", "(missing)", "no image trust policy: nothing limits where images come from")
    for path in found:
        shown = files.show(path)
        doc = _json(files, path)
        if not isinstance(doc, dict):
            res.fail(shown, "policy.json", "not a JSON object")
            continue
        default = doc.get("default")
        if not _rejects(default):
            res.fail(shown, '"default": %s' % json.dumps(default), "the default accepts images; it must be [{\"type\": \"reject\"}]",
                     line=line_of(files, path, '"default"'))
        else:
            res.note("%s: default reject" % shown)
        for transport, scopes in sorted((doc.get("transports") or {}).items()):
            for scope, reqs in sorted((scopes or {}).items()):
                if _rejects(reqs):
                    continue
                line = line_of(files, path, '"%s"' % scope) if scope else line_of(files, path, '"%s"' % transport)
                value = "%s:%s %s" % (transport, scope or '""', json.dumps(reqs))
                if transport == "docker" and scope and internal(scope):
                    res.note("%s: %s accepted (the internal registry)" % (shown, scope))
                elif transport == "docker":
                    res.fail(shown, value, "accepts images from %s, which is not the internal registry" % (scope or "any registry"), line=line)
                else:
                    res.fail(shown, value, "accepts images through the %s transport (only the internal registry may be a source)" % transport, line=line)
    return res


def _rejects(reqs):
    return isinstance(reqs, list) and len(reqs) > 0 and all(isinstance(r, dict) and r.get("type") == "reject" for r in reqs)


# --------------------------------------------------------------------------- credentials

SECRET_FILES = ("/etc/airgap/*.password", "/etc/airgap/registry/*.password", "/etc/containers/auth.json",
                "/root/.docker/config.json", "/root/.config/containers/auth.json", "/run/containers/*/auth.json")


def _header_credentials(path, doc):
    """(target, user, secret) of each ``Authorization: Basic`` header of a containerd hosts.toml."""
    tables = [(doc.get("server") or os.path.basename(os.path.dirname(path)), doc.get("header") or {})]
    tables += [(url, (host or {}).get("header") or {}) for url, host in sorted((doc.get("host") or {}).items())]
    out = []
    for target, headers in tables:
        for name, values in sorted(headers.items()):
            if name.lower() != "authorization":
                continue
            for value in values if isinstance(values, list) else [values]:
                scheme, _, token = str(value).strip().partition(" ")
                if scheme.lower() == "basic":
                    out.append((target,) + _decode_auth(token.strip()))
    return out


def registry_credentials(files):
    """(path, target, user, secret) of every registry credential on the node: auth files, containerd's
    hosts.toml headers (where the rollout puts the pull credential) and config.toml's CRI auth."""
    out = []
    for path, doc in auth_entries(files):
        for key, entry in sorted(((doc or {}).get("auths") or {}).items()):
            out.append((path, key) + _decode_auth((entry or {}).get("auth", "")))
    for path in files.glob("/etc/containerd/certs.d/*/hosts.toml"):
        doc, _err = load_toml(files, path)
        out.extend((path,) + c for c in _header_credentials(path, doc or {}))
    for path in files.glob("/etc/containerd/config.toml"):
        doc, _err = load_toml(files, path)
        cri = (((doc or {}).get("plugins") or {}).get("io.containerd.grpc.v1.cri") or {}).get("registry") or {}
        for host, cfg in sorted((cri.get("configs") or {}).items()):
            auth = (cfg or {}).get("auth") or {}
            if auth.get("auth"):
                out.append((path, host) + _decode_auth(auth["auth"]))
            elif auth.get("username") or auth.get("password"):
                out.append((path, host, auth.get("username"), auth.get("password")))
    # A hosts.toml names its server and its one host alike: one entry each.
    return list(dict.fromkeys(out))


def check_credentials(files, internal, pull_user, push_secret_sha256, may_push):
    """Container hosts hold the pull credential only; the push credential only where *may_push*."""
    res = Result("credentials", "pull credential only" if not may_push else "push credential where it belongs")
    for path, target, user, secret in registry_credentials(files):
        shown = files.show(path)
        if internal(target) and pull_user and user not in (None, pull_user):
            res.fail(shown, "%s user %s" % (target, user),
                     "a credential other than the pull account (%s) for the internal registry" % pull_user,
                     line=line_of(files, path, target))
        elif user is not None:
            res.note("%s: %s user %s" % (shown, target, user))
        if push_secret_sha256 and secret is not None and not may_push \
                and hashlib.sha256(secret.encode()).hexdigest() == push_secret_sha256:
            res.fail(shown, "%s user %s" % (target, user), "holds the push credential; only the staging host may")
    if push_secret_sha256 and not may_push:
        for path in files.glob(*SECRET_FILES):
            text = files.read(path) or ""
            if any(hashlib.sha256(tok.encode()).hexdigest() == push_secret_sha256 for tok in set(text.split())):
                res.fail(files.show(path), "(secret)", "holds the push credential; only the staging host may")
    if not res.evidence and not res.findings:
        res.note("no registry credential on this node")
    return res


def _decode_auth(value):
    try:
        user, _, secret = base64.b64decode(value).decode("utf-8").partition(":")
        return user, secret
    except (ValueError, UnicodeDecodeError):
        return None, None
