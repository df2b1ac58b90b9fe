#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: read-only, evidence-gathering checks of an isolated node."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_check
short_description: Read-only checks of an airgap node, with evidence
description:
  - Runs the checks named in I(checks) and returns, for each, C(PASS) or
    C(FAIL) with the evidence it saw. It never changes the node and never
    sends a packet (route checks only ask the kernel's routing table).
  - The module itself does not fail when a check fails; the playbook decides.
  - C(policy) loads the sovereignty policy (the project's
    C(airgap/data/sovereignty.yaml), through C(airgap.sovereignty) when that
    package is importable, or the file in I(policy_file)) and returns its
    endpoint patterns, so that nodes without the toolkit can be checked.
  - C(endpoints) collects every endpoint configured on the node (DNS
    resolvers, NTP servers, package mirrors, proxies, registries, metadata
    endpoints) and matches it against I(patterns).
  - C(values) matches the given I(values) (e.g. inventory settings) against
    I(patterns).
  - C(addresses) proves every address in I(addresses) lies inside I(allowed_ranges).
  - C(runtime_config) proves the container runtime's configuration
    (registries.conf and drop-ins, containers.conf, auth files) names no
    registry other than I(internal_registries).
  - C(route) proves there is no default route (all tables, IPv4 and IPv6) and
    that the kernel finds no route to I(route_probe).
  - C(containers) proves every container runs an image whose digest is in
    I(allowed_digests) from an internal registry, and that every name in
    I(expected_containers) is running.
options:
  checks:
    description: Checks to run.
    type: list
    elements: str
    required: true
    choices: [policy, endpoints, values, addresses, runtime_config, route, containers]
  patterns:
    description:
      - Sovereignty patterns; strings or dicts with C(pattern), C(provider), C(category).
      - A pattern is a domain (matches itself and its subdomains), a glob
        (C(*.amazonaws.com)), a regular expression (starting with C(^)), an
        IP address or a CIDR network.
    type: list
    elements: raw
    default: []
  policy_file:
    description: Sovereignty policy YAML file (for C(policy)); default is the project's.
    type: path
  extra_patterns:
    description: Patterns added to the policy (for C(policy)).
    type: list
    elements: raw
    default: []
  values:
    description: For C(values), a list of dicts with C(name) and C(value) (string or list).
    type: list
    elements: dict
    default: []
  addresses:
    description: For C(addresses), a list of dicts with C(name) and C(value) (an IP address; names are reported, not judged).
    type: list
    elements: dict
    default: []
  allowed_ranges:
    description: For C(addresses), the networks (CIDR) the enclave's addresses must lie in.
    type: list
    elements: str
    default: []
  exclude_categories:
    description: For C(endpoints), categories of endpoints not judged (e.g. C(registry) before the runtime stage).
    type: list
    elements: str
    default: []
  internal_registries:
    description: HOST:PORT of the internal registries.
    type: list
    elements: str
    default: []
  allowed_digests:
    description: Image digests of the accepted bundle.
    type: list
    elements: str
    default: []
  expected_containers:
    description: Container names that must be running.
    type: list
    elements: str
    default: []
  route_probe:
    description: Documentation address (RFC 5737) whose route is looked up; no packet is sent.
    type: str
    default: 192.0.2.1
  fail_jurisdictions:
    description:
      - Jurisdictions whose listed endpoints fail C(endpoints) and C(values);
        other listed endpoints are reported as evidence. C(*) fails every
        listed endpoint.
    type: list
    elements: str
    default: [US]
  root:
    description: Root of the file system to read configuration from.
    type: path
    default: /
author: airgap project
"""

EXAMPLES = r"""
- name: Check the node
  airgap_check:
    checks: [endpoints, runtime_config, route]
    patterns: "{{ sovereignty__patterns }}"
    internal_registries: ["registry.geheim.internal:5000"]
"""

RETURN = r"""
results:
  description: One entry per check, with C(check), C(status), C(summary) and C(evidence).
  returned: always
  type: list
  elements: dict
failed_checks:
  description: Number of checks with status FAIL.
  returned: always
  type: int
patterns:
  description: The policy's patterns (C(policy) only).
  returned: when policy is checked
  type: list
endpoints:
  description: Every endpoint found on the node (C(endpoints) only).
  returned: when endpoints is checked
  type: list
"""

import fnmatch
import glob
import ipaddress
import json
import os
import re
import shlex

from ansible.module_utils.basic import AnsibleModule

try:
    import tomllib  # Python >= 3.11
except ImportError:  # pragma: no cover
    tomllib = None

PASS, FAIL = "PASS", "FAIL"
PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")
URL_RE = re.compile(r"\b(?:https?|ftp|ntp|docker|oci|tcp|udp|tls|socks5h?)://[^\s\"'<>,;\]]+", re.I)
IMAGE_REF_RE = re.compile(r"^(?:docker://)?(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::[0-9]+)?|\[[0-9a-f:]+\](?::[0-9]+)?)/[^\s]+$", re.I)


# --------------------------------------------------------------------------- helpers

def strip_comment(line, marks=("#",)):
    out = line
    for mark in marks:
        idx = out.find(mark)
        if idx >= 0:
            out = out[:idx]
    return out.strip()


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except (OSError, UnicodeError):
        return None


def host_of(value):
    """The host part of an endpoint: URL, host:port, [v6]:port, IP, name."""
    if value is None:
        return ""
    val = str(value).strip().strip("\"'").strip()
    if not val:
        return ""
    if "://" in val:
        val = val.split("://", 1)[1]
    val = val.split("/", 1)[0]
    if "@" in val:
        val = val.rsplit("@", 1)[1]
    if val.startswith("["):
        return val[1:].split("]", 1)[0].lower()
    try:
        ipaddress.ip_address(val)
        return val.lower()
    except ValueError:
        pass
    if val.count(":") == 1:
        val = val.split(":", 1)[0]
    return val.rstrip(".").lower()


def registry_of(ref):
    """Registry host[:port] of an image reference or a registries.conf location."""
    ref = str(ref).strip()
    if ref.startswith("docker://"):
        ref = ref[len("docker://"):]
    first = ref.split("/", 1)[0]
    if "/" not in ref and "." not in first and ":" not in first and first != "localhost":
        return ""
    if "." in first or ":" in first or first == "localhost" or first.startswith("["):
        return first.lower()
    return ""  # a short name: resolved through unqualified-search-registries


class Policy:
    """Sovereignty patterns compiled for matching."""

    def __init__(self, patterns):
        self.items = []
        for raw in patterns or []:
            if isinstance(raw, dict):
                pat = raw.get("pattern") or raw.get("value") or raw.get("host") or ""
                provider = raw.get("provider") or ""
                category = raw.get("category") or ""
                jurisdiction = raw.get("jurisdiction") or "US"
            else:
                pat, provider, category, jurisdiction = raw, "", "", "US"
            pat = str(pat).strip()
            if not pat or " " in pat:
                continue
            self.items.append((self._compile(pat), pat, provider, category, jurisdiction))
        # Without patterns from the controller, use the project's own policy
        # when the toolkit is importable on this host.
        self.project = project_matcher() if not self.items else None

    @staticmethod
    def _compile(pat):
        if pat.startswith("^") or pat.endswith("$") or "\\" in pat:
            try:
                return ("re", re.compile(pat, re.I))
            except re.error:
                return ("none", None)
        try:
            return ("net", ipaddress.ip_network(pat, strict=False))
        except ValueError:
            pass
        if any(c in pat for c in "*?["):
            return ("glob", pat.lower())
        host = host_of(pat)
        return ("domain", host)

    def match(self, endpoint):
        """Return a list of (pattern, provider, category) the endpoint matches."""
        host = host_of(endpoint)
        if not host:
            return []
        hits = []
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        for (kind, obj), pat, provider, category, jurisdiction in self.items:
            ok = False
            if kind == "net":
                ok = ip is not None and ip.version == obj.version and ip in obj
            elif kind == "domain":
                ok = host == obj  # a plain host name is that host only (policy syntax)
            elif kind == "glob":
                # A host pattern judges the host only: `*` must not reach across
                # a path (`internal:5000/registry-1.docker.io` is the internal
                # registry). Patterns with a `/` judge the whole endpoint.
                ok = fnmatch.fnmatchcase(host, obj) or ("/" in obj and fnmatch.fnmatchcase(str(endpoint).lower(), obj))
            elif kind == "re":
                ok = bool(obj.search(host) or obj.search(str(endpoint)))
            if ok:
                hits.append({"pattern": pat, "provider": provider, "category": category,
                             "jurisdiction": jurisdiction})
        if self.project is not None:
            try:
                verdict = self.project(str(endpoint))
            except Exception:  # the project's API is optional here
                verdict = None
            if verdict is not None:
                if hasattr(verdict, "to_dict"):
                    d = verdict.to_dict()
                    hits.append({"pattern": d.get("pattern", ""), "provider": d.get("provider", ""),
                                 "category": d.get("category", ""), "jurisdiction": d.get("jurisdiction", "US")})
                elif verdict:
                    hits.append({"pattern": "airgap.sovereignty", "provider": str(verdict), "category": "",
                                 "jurisdiction": "US"})
        return hits


def project_matcher():
    """A classifier from the project's airgap.sovereignty, when importable here."""
    try:
        from airgap import sovereignty  # type: ignore
    except Exception:
        return None
    for name in ("match", "classify_endpoint", "match_endpoint", "classify"):
        func = getattr(sovereignty, name, None)
        if callable(func):
            return func
    return None


# --------------------------------------------------------------------------- policy

def structured_policy(doc):
    """The project's policy format: `providers` (id -> name, kind, jurisdiction)
    and `endpoints` (pattern, provider id, category)."""
    providers = doc.get("providers") or {}
    out = []
    for entry in doc.get("endpoints") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("pattern"), str):
            continue
        prov = providers.get(entry.get("provider")) or {}
        out.append({"pattern": entry["pattern"], "provider": prov.get("name") or str(entry.get("provider", "")),
                    "category": str(entry.get("category", "")),
                    "jurisdiction": prov.get("jurisdiction") or "US"})
    return out


def flatten_policy(doc, category="", provider=""):
    """Every pattern string in a policy document, with its category and provider."""
    out = []
    if isinstance(doc, dict):
        prov = provider
        for key in ("provider", "name", "vendor", "owner"):
            if isinstance(doc.get(key), str):
                prov = doc[key]
                break
        for key, val in doc.items():
            if key in ("provider", "name", "vendor", "owner", "description", "reason", "note",
                       "notes", "comment", "country", "jurisdiction", "version", "title", "kind", "type"):
                continue
            if key in ("pattern", "value", "host", "endpoint", "cidr") and isinstance(val, str):
                out.append({"pattern": val, "provider": prov, "category": category})
                continue
            cat = category
            if key not in ("patterns", "endpoints", "hosts", "domains", "cidrs", "networks", "items", "entries"):
                cat = key if not category else category
            out.extend(flatten_policy(val, cat, prov))
    elif isinstance(doc, list):
        for item in doc:
            out.extend(flatten_policy(item, category, provider))
    elif isinstance(doc, str):
        val = doc.strip()
        if val and " " not in val:
            out.append({"pattern": val, "provider": provider, "category": category})
    return out


def load_policy(policy_file, extra):
    evidence = []
    doc = None
    source = policy_file
    if not source:
        try:
            import importlib.resources as resources

            ref = resources.files("airgap").joinpath("data/sovereignty.yaml")
            if ref.is_file():
                source = str(ref)
        except Exception:
            source = None
    if source:
        text = read_text(source)
        if text is None:
            evidence.append("policy file %s cannot be read" % source)
        else:
            try:
                import yaml

                doc = yaml.safe_load(text)
                evidence.append("policy file %s" % source)
            except Exception as exc:
                evidence.append("policy file %s is not valid YAML: %s" % (source, exc))
    if isinstance(doc, dict) and isinstance(doc.get("endpoints"), list):
        patterns = structured_policy(doc)
    else:
        patterns = flatten_policy(doc) if doc is not None else []
    patterns.extend(flatten_policy(list(extra or [])))
    seen, uniq = set(), []
    for item in patterns:
        key = (item["pattern"].lower(), item["provider"], item["category"])
        if key not in seen:
            seen.add(key)
            uniq.append(item)
    return uniq, evidence


# --------------------------------------------------------------------------- endpoints

class Collector:
    def __init__(self, root):
        self.root = root
        self.found = []

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def files(self, *patterns):
        out = []
        for pat in patterns:
            out.extend(sorted(glob.glob(self.path(pat))))
        return [p for p in out if os.path.isfile(p)]

    def add(self, category, source, value, lineno=None):
        value = str(value).strip().strip("\"'")
        if not value:
            return
        where = source if lineno is None else "%s:%d" % (source, lineno)
        self.found.append({"category": category, "source": where, "value": value, "host": host_of(value)})

    def lines(self, path, marks=("#",)):
        text = read_text(path)
        if text is None:
            return []
        return [(i, strip_comment(ln, marks)) for i, ln in enumerate(text.splitlines(), 1)]


def collect_endpoints(root):
    c = Collector(root)
    for path in c.files("/etc/resolv.conf"):
        for n, ln in c.lines(path, ("#", ";")):
            parts = ln.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                c.add("dns", path, parts[1], n)
    for path in c.files("/etc/systemd/resolved.conf", "/etc/systemd/resolved.conf.d/*.conf"):
        for n, ln in c.lines(path, ("#", ";")):
            key, sep, val = ln.partition("=")
            if sep and key.strip() in ("DNS", "FallbackDNS"):
                for item in val.split():
                    c.add("dns", path, item.split("#", 1)[0], n)
    for path in c.files("/etc/systemd/timesyncd.conf", "/etc/systemd/timesyncd.conf.d/*.conf"):
        for n, ln in c.lines(path, ("#", ";")):
            key, sep, val = ln.partition("=")
            if sep and key.strip() in ("NTP", "FallbackNTP"):
                for item in val.split():
                    c.add("ntp", path, item, n)
    for path in c.files("/etc/chrony/chrony.conf", "/etc/chrony.conf", "/etc/chrony/conf.d/*.conf",
                        "/etc/chrony/sources.d/*.sources", "/etc/ntp.conf", "/etc/ntpsec/ntp.conf",
                        "/etc/openntpd/ntpd.conf"):
        for n, ln in c.lines(path, ("#", "!", ";")):
            parts = ln.split()
            if len(parts) >= 2 and parts[0] in ("server", "pool", "peer", "servers"):
                c.add("ntp", path, parts[1], n)
    for path in c.files("/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list"):
        for n, ln in c.lines(path):
            parts = re.sub(r"\[[^\]]*\]", " ", ln).split()
            if len(parts) >= 2 and parts[0] in ("deb", "deb-src"):
                c.add("package-mirror", path, parts[1], n)
    for path in c.files("/etc/apt/sources.list.d/*.sources"):
        for n, ln in c.lines(path):
            key, sep, val = ln.partition(":")
            if sep and key.strip().lower() == "uris":
                for item in val.split():
                    c.add("package-mirror", path, item, n)
    for path in c.files("/etc/apt/apt.conf", "/etc/apt/apt.conf.d/*"):
        for n, ln in c.lines(path, ("//", "#")):
            for url in URL_RE.findall(ln):
                c.add("proxy" if "proxy" in ln.lower() else "package-mirror", path, url, n)
    for path in c.files("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/root/.config/pip/pip.conf", "/root/.pip/pip.conf"):
        for n, ln in c.lines(path, ("#", ";")):
            key, sep, val = ln.partition("=")
            key = key.strip().lower()
            if sep and key in ("index-url", "extra-index-url", "trusted-host", "proxy", "find-links"):
                for item in val.split():
                    c.add("proxy" if key == "proxy" else "package-mirror", path, item, n)
    env_files = c.files("/etc/environment", "/etc/profile", "/etc/profile.d/*.sh", "/etc/bash.bashrc",
                        "/root/.bashrc", "/root/.profile", "/etc/default/docker")
    for path in env_files:
        for n, ln in c.lines(path):
            m = re.match(r"^(?:export\s+)?([A-Za-z_]+)\s*=\s*(.*)$", ln)
            if m and m.group(1).lower() in PROXY_VARS and m.group(1).lower() != "no_proxy":
                try:
                    val = " ".join(shlex.split(m.group(2)))
                except ValueError:
                    val = m.group(2)
                c.add("proxy", path, val, n)
    for var, val in sorted(os.environ.items()):
        if var.lower() in PROXY_VARS and var.lower() != "no_proxy" and val:
            c.add("proxy", "environment of the module (%s)" % var, val)
    for path in c.files("/etc/systemd/system/*.service.d/*.conf", "/etc/systemd/system.conf"):
        for n, ln in c.lines(path):
            for m in re.finditer(r"(?i)\b(?:https?|all|ftp)_proxy=([^\s\"']+)", ln):
                c.add("proxy", path, m.group(1), n)
    for path in c.files("/etc/cloud/cloud.cfg", "/etc/cloud/cloud.cfg.d/*.cfg"):
        for n, ln in c.lines(path):
            for url in URL_RE.findall(ln):
                c.add("metadata", path, url, n)
            for m in re.finditer(r"\b169\.254\.169\.254\b|\bfd00:ec2::254\b", ln):
                c.add("metadata", path, m.group(0), n)
    for item in registry_endpoints(root):
        c.found.append(item)
    return c.found


# --------------------------------------------------------------------------- registries

def load_toml(path):
    text = read_text(path)
    if text is None:
        return None, "cannot read"
    if tomllib is None:
        return None, "no TOML parser on this Python"
    try:
        return tomllib.loads(text), None
    except Exception as exc:
        return None, "not valid TOML: %s" % exc


def registries_conf_files(root):
    c = Collector(root)
    return c.files("/etc/containers/registries.conf", "/etc/containers/registries.conf.d/*.conf",
                   "/root/.config/containers/registries.conf",
                   "/root/.config/containers/registries.conf.d/*.conf")


def registry_rules(root):
    """Merged [[registry]] rules, search registries and aliases (later files win)."""
    rules, search, aliases, problems, sources = {}, None, {}, [], []
    for path in registries_conf_files(root):
        doc, err = load_toml(path)
        if err:
            problems.append("%s: %s" % (path, err))
            continue
        sources.append(path)
        for reg in doc.get("registry", []) or []:
            prefix = reg.get("prefix") or reg.get("location") or ""
            rules[prefix] = dict(reg, _source=path)
        if "unqualified-search-registries" in doc:
            search = (list(doc.get("unqualified-search-registries") or []), path)
        v1 = doc.get("registries") or {}
        if isinstance(v1, dict):
            for kind in ("search", "insecure", "block"):
                regs = (v1.get(kind) or {}).get("registries") or []
                if regs:
                    problems.append("%s: v1 [registries.%s] %s" % (path, kind, regs))
                    if kind == "search":
                        search = (list(regs), path)
        for name, target in (doc.get("aliases") or {}).items():
            aliases[name] = (target, path)
    return rules, search, aliases, problems, sources


def rewrite(ref, rules):
    """Where podman would pull `ref` from: (location, blocked, rule prefix)."""
    best = None
    for prefix in rules:
        if not prefix:
            continue
        pfx = prefix
        if pfx.startswith("*."):
            host = ref.split("/", 1)[0]
            if fnmatch.fnmatchcase(host, pfx):
                cand = (len(host), prefix, host)
            else:
                continue
        elif ref == pfx or ref.startswith(pfx + "/") or ref.startswith(pfx + ":") or ref.startswith(pfx + "@"):
            cand = (len(pfx), prefix, pfx)
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


def is_internal(ref, internal):
    reg = registry_of(ref) if "/" in str(ref) else host_port(ref)
    return bool(reg) and reg.lower() in internal


def host_port(value):
    val = str(value).strip()
    if "://" in val:
        val = val.split("://", 1)[1]
    return val.split("/", 1)[0].lower()


def registry_endpoints(root):
    """Registries the runtime may contact, as endpoints (for the sovereignty scan)."""
    found = []
    rules, search, aliases, _problems, _sources = registry_rules(root)
    for prefix, rule in rules.items():
        if rule.get("blocked"):
            continue
        found.append({"category": "registry", "source": rule["_source"],
                      "value": rule.get("location") or prefix, "host": host_of(registry_of(rule.get("location") or prefix) or prefix)})
        for mirror in rule.get("mirror", []) or []:
            loc = mirror.get("location", "")
            found.append({"category": "registry", "source": rule["_source"], "value": loc, "host": host_of(host_port(loc))})
    if search:
        for reg in search[0]:
            found.append({"category": "registry", "source": search[1], "value": reg, "host": host_of(reg)})
    for name, (target, path) in aliases.items():
        loc, blocked, _ = rewrite(target, rules)
        if not blocked:
            found.append({"category": "registry", "source": "%s (alias %s)" % (path, name),
                          "value": loc, "host": host_of(host_port(loc))})
    for path, keys in auth_files(root):
        for key in keys:
            found.append({"category": "registry", "source": path, "value": key, "host": host_of(host_port(key))})
    return found


def auth_files(root):
    c = Collector(root)
    out = []
    for path in c.files("/etc/containers/auth.json", "/run/containers/*/auth.json", "/root/.docker/config.json",
                        "/root/.config/containers/auth.json", "/etc/docker/daemon.json"):
        text = read_text(path)
        try:
            doc = json.loads(text or "{}")
        except ValueError:
            out.append((path, ["<unparsable>"]))
            continue
        keys = list((doc.get("auths") or {}).keys()) + list((doc.get("credHelpers") or {}).keys())
        keys += list(doc.get("registry-mirrors") or []) + list(doc.get("insecure-registries") or [])
        out.append((path, keys))
    return out


def check_runtime_config(root, internal):
    ev, bad = [], []
    rules, search, aliases, problems, sources = registry_rules(root)
    for p in problems:
        bad.append(p)
    if not sources:
        bad.append("no registries.conf found")
    for prefix, rule in sorted(rules.items()):
        loc = rule.get("location") or prefix
        where = rule["_source"]
        if rule.get("blocked"):
            ev.append("%s: %s blocked" % (where, prefix))
            continue
        if is_internal(loc, internal):
            ev.append("%s: %s -> %s (internal)" % (where, prefix, loc))
        else:
            bad.append("%s: %s -> %s is not the internal registry" % (where, prefix, loc))
        for mirror in rule.get("mirror", []) or []:
            mloc = mirror.get("location", "")
            if not is_internal(mloc, internal):
                bad.append("%s: mirror %s of %s is not the internal registry" % (where, mloc, prefix))
    if search is None:
        bad.append("unqualified-search-registries is not set (the built-in default searches public registries)")
    else:
        regs, path = search
        ext = [r for r in regs if host_port(r) not in internal]
        if ext:
            bad.append("%s: unqualified-search-registries has %s" % (path, ext))
        else:
            ev.append("%s: unqualified-search-registries = %s" % (path, regs))
    for name, (target, path) in sorted(aliases.items()):
        loc, blocked, _ = rewrite(target, rules)
        if not blocked and not is_internal(loc, internal):
            bad.append("%s: alias %s -> %s resolves to %s" % (path, name, target, loc))
    c = Collector(root)
    for path in c.files("/etc/containers/containers.conf", "/etc/containers/containers.conf.d/*.conf",
                        "/usr/share/containers/containers.conf", "/etc/containers/libpod.conf",
                        "/root/.config/containers/containers.conf", "/root/.config/containers/containers.conf.d/*.conf"):
        refs = []
        doc, err = load_toml(path)
        if err:
            bad.append("%s: %s" % (path, err))
            continue
        for val in walk_strings(doc):
            for url in URL_RE.findall(val):
                refs.append(url)
            m = IMAGE_REF_RE.match(val.strip())
            if m and not val.startswith("/"):
                refs.append(val.strip())
        ext = []
        for ref in refs:
            reg = registry_of(ref) or host_port(ref)
            if reg and reg not in internal:
                loc, blocked, _ = rewrite(ref.replace("docker://", ""), rules)
                if blocked or is_internal(loc, internal):
                    continue
                ext.append(ref)
        if ext:
            bad.append("%s: references %s" % (path, sorted(set(ext))))
        else:
            ev.append("%s: no external reference" % path)
    for path, keys in auth_files(root):
        ext = [k for k in keys if host_port(k) not in internal]
        if ext:
            bad.append("%s: credentials or mirrors for %s" % (path, ext))
        else:
            ev.append("%s: only %s" % (path, keys or "no entries"))
    status = FAIL if bad else PASS
    summary = ("runtime config names only %s" % sorted(internal)) if not bad else ("%d external reference(s)" % len(bad))
    return result("runtime_config", status, summary, bad + ev)


def walk_strings(doc):
    if isinstance(doc, dict):
        for val in doc.values():
            for s in walk_strings(val):
                yield s
    elif isinstance(doc, list):
        for val in doc:
            for s in walk_strings(val):
                yield s
    elif isinstance(doc, str):
        yield doc


# --------------------------------------------------------------------------- route, containers

def check_route(module, probe):
    ev, bad = [], []
    ip = module.get_bin_path("ip")
    if not ip:
        return result("route", FAIL, "the ip command is missing", ["ip not found in PATH"])
    for fam in ("-4", "-6"):
        rc, out, err = module.run_command([ip, fam, "-j", "route", "show", "table", "all"])
        if rc != 0:
            bad.append("ip %s route show table all failed: %s" % (fam, (err or out).strip()))
            continue
        try:
            routes = json.loads(out or "[]")
        except ValueError:
            routes = []
        defaults = [r for r in routes if r.get("dst") in ("default", "0.0.0.0/0", "::/0")
                    and r.get("type", "unicast") in ("unicast", "")]
        for r in defaults:
            bad.append("default route (%s): %s" % (fam, json.dumps(r, sort_keys=True)))
        if not defaults:
            ev.append("no default route in any IPv%s table (%d routes)" % (fam[1], len(routes)))
    rc, out, err = module.run_command([ip, "route", "get", probe])
    if rc == 0:
        bad.append("ip route get %s finds a route: %s" % (probe, out.strip()))
    else:
        ev.append("ip route get %s: %s" % (probe, (err or out).strip() or "no route"))
    return result("route", FAIL if bad else PASS,
                  "no route out" if not bad else "a route out exists", bad + ev)


def check_containers(module, internal, allowed, expected):
    podman = module.get_bin_path("podman")
    if not podman:
        return result("containers", FAIL, "podman is missing", ["podman not found in PATH"])
    rc, out, err = module.run_command([podman, "ps", "--all", "--format", "json"])
    if rc != 0:
        return result("containers", FAIL, "podman ps failed", [(err or out).strip()])
    try:
        listing = json.loads(out or "[]") or []
    except ValueError:
        return result("containers", FAIL, "podman ps printed no JSON", [out[:500]])
    ev, bad, running = [], [], set()
    allowed = set(allowed)
    for ctr in listing:
        names = ctr.get("Names") or []
        name = names[0] if names else ctr.get("Id", "")[:12]
        state = str(ctr.get("State", "")).lower()
        if state != "running":
            ev.append("%s: %s (not running, not judged)" % (name, state))
            continue
        running.add(name)
        rc, out, err = module.run_command([podman, "container", "inspect", ctr.get("Id") or name])
        info = {}
        if rc == 0:
            try:
                info = (json.loads(out) or [{}])[0]
            except ValueError:
                info = {}
        image_name = info.get("ImageName") or ctr.get("Image", "")
        digests = set()
        if info.get("ImageDigest"):
            digests.add(info["ImageDigest"])
        rc, out, err = module.run_command([podman, "image", "inspect", info.get("Image") or ctr.get("ImageID", "")])
        if rc == 0:
            try:
                img = (json.loads(out) or [{}])[0]
            except ValueError:
                img = {}
            if img.get("Digest"):
                digests.add(img["Digest"])
            for rd in img.get("RepoDigests") or []:
                if "@" in rd:
                    digests.add(rd.split("@", 1)[1])
        match = sorted(digests & allowed)
        from_internal = is_internal(image_name, internal)
        if match and from_internal:
            ev.append("%s: %s digest %s (accepted)" % (name, image_name, match[0]))
        else:
            why = []
            if not match:
                why.append("digest %s not in the accepted bundle" % (sorted(digests) or "unknown"))
            if not from_internal:
                why.append("image %s not from the internal registry" % image_name)
            bad.append("%s: %s" % (name, "; ".join(why)))
    for name in expected:
        if name not in running:
            bad.append("%s: expected to run, is not running" % name)
    if not listing and not expected:
        ev.append("no containers on this node")
    return result("containers", FAIL if bad else PASS,
                  "%d running container(s) use accepted digests" % len(running) if not bad
                  else "%d problem(s)" % len(bad), bad + ev)


# --------------------------------------------------------------------------- sovereignty

def describe_hits(hits):
    return ", ".join("%s (%s%s)" % (h["pattern"], h["provider"] or "listed",
                                    ", %s" % h["jurisdiction"] if h.get("jurisdiction") else "") for h in hits)


def failing(hits, fail_on):
    """The hits whose jurisdiction fails the check (fail_on: list, '*' = every listed endpoint)."""
    if "*" in fail_on:
        return hits
    return [h for h in hits if h.get("jurisdiction", "US") in fail_on]


def check_endpoints(root, policy, fail_on, exclude=()):
    endpoints = [ep for ep in collect_endpoints(root) if ep["category"] not in exclude]
    bad, ev = [], []
    for ep in endpoints:
        hits = policy.match(ep["value"])
        line = "%s %s (%s)" % (ep["category"], ep["value"], ep["source"])
        ep["matches"] = hits
        if failing(hits, fail_on):
            bad.append("%s belongs to %s" % (line, describe_hits(hits)))
        elif hits:
            ev.append("%s is listed as %s: outside the enclave, not a failing jurisdiction" % (line, describe_hits(hits)))
        else:
            ev.append(line + ": not in the policy")
    if not policy.items and policy.project is None:
        bad.append("the sovereignty policy has no patterns: nothing could be judged")
    return endpoints, result("endpoints", FAIL if bad else PASS,
                             "%d endpoint(s), %d US-provider" % (len(endpoints), len(bad)) if policy.items
                             else "no policy", bad + ev)


def check_values(values, policy, fail_on):
    bad, ev = [], []
    for item in values:
        name = item.get("name", "?")
        vals = item.get("value")
        if vals is None:
            continue
        if not isinstance(vals, list):
            vals = [vals]
        for val in vals:
            if val in (None, ""):
                continue
            hits = policy.match(str(val))
            if failing(hits, fail_on):
                bad.append("%s = %s belongs to %s" % (name, val, describe_hits(hits)))
            elif hits:
                ev.append("%s = %s is listed as %s (not a failing jurisdiction)" % (name, val, describe_hits(hits)))
            else:
                ev.append("%s = %s: not in the policy" % (name, val))
    if not policy.items and policy.project is None:
        bad.append("the sovereignty policy has no patterns: nothing could be judged")
    return result("values", FAIL if bad else PASS,
                  "%d configured value(s) checked" % (len(bad) + len(ev)), bad + ev)


def check_addresses(addresses, ranges):
    bad, ev, nets = [], [], []
    for cidr in ranges:
        try:
            nets.append(ipaddress.ip_network(str(cidr), strict=False))
        except ValueError:
            bad.append("allowed range %r is not a network" % cidr)
    if not nets:
        bad.append("no allowed ranges configured")
    for item in addresses:
        name, value = item.get("name", "?"), str(item.get("value") or "").strip()
        if not value:
            bad.append("%s is empty" % name)
            continue
        try:
            ip = ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            ev.append("%s = %s is a name, not an address: not judged here" % (name, value))
            continue
        inside = [str(n) for n in nets if n.version == ip.version and ip in n]
        if inside:
            ev.append("%s = %s inside %s" % (name, value, inside[0]))
        else:
            bad.append("%s = %s is outside the allowed ranges %s" % (name, value, [str(n) for n in nets]))
    return result("addresses", FAIL if bad else PASS,
                  "%d address(es) checked" % len(addresses), bad + ev)


def result(check, status, summary, evidence):
    return {"check": check, "status": status, "summary": summary, "evidence": evidence}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="str", required=True,
                        choices=["policy", "endpoints", "values", "addresses", "runtime_config", "route",
                                 "containers"]),
            patterns=dict(type="list", elements="raw", default=[]),
            policy_file=dict(type="path"),
            extra_patterns=dict(type="list", elements="raw", default=[]),
            values=dict(type="list", elements="dict", default=[]),
            addresses=dict(type="list", elements="dict", default=[]),
            allowed_ranges=dict(type="list", elements="str", default=[]),
            exclude_categories=dict(type="list", elements="str", default=[]),
            internal_registries=dict(type="list", elements="str", default=[]),
            allowed_digests=dict(type="list", elements="str", default=[]),
            expected_containers=dict(type="list", elements="str", default=[]),
            route_probe=dict(type="str", default="192.0.2.1"),
            root=dict(type="path", default="/"),
            fail_jurisdictions=dict(type="list", elements="str", default=["US"]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    internal = {str(r).lower() for r in p["internal_registries"]}
    out = {"changed": False, "results": []}
    policy = None
    for check in p["checks"]:
        if check == "policy":
            patterns, evidence = load_policy(p["policy_file"], p["extra_patterns"])
            out["patterns"] = patterns
            out["results"].append(result("policy", PASS if patterns else FAIL,
                                         "%d pattern(s)" % len(patterns), evidence))
            continue
        if policy is None:
            policy = Policy(p["patterns"])
        if check == "endpoints":
            endpoints, res = check_endpoints(p["root"], policy, p["fail_jurisdictions"], p["exclude_categories"])
            out["endpoints"] = endpoints
            out["results"].append(res)
        elif check == "values":
            out["results"].append(check_values(p["values"], policy, p["fail_jurisdictions"]))
        elif check == "addresses":
            out["results"].append(check_addresses(p["addresses"], p["allowed_ranges"]))
        elif check == "runtime_config":
            out["results"].append(check_runtime_config(p["root"], internal))
        elif check == "route":
            out["results"].append(check_route(module, p["route_probe"]))
        elif check == "containers":
            out["results"].append(check_containers(module, internal, p["allowed_digests"], p["expected_containers"]))
    out["failed_checks"] = sum(1 for r in out["results"] if r["status"] == FAIL)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
