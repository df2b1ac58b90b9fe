# Copyright: airgap project
# License: EUPL-1.2
"""What every check of ``airgap_check`` shares: results, the enclave, labels, file reading.

Runs on the checked node (Ansible ships module_utils with the module): standard
library and ``airgap_endpoints`` only.

A check gives one :class:`Result` per node: ``PASS`` or ``FAIL``, a one-line
summary, *findings* (each failure as node-independent data: the check, the
source it was found in -- a file, a command or a URL --, the line, the value,
the reason and, when the sovereignty policy lists it, a label such as
``US provider: Google (US hyperscaler)``) and *evidence* (what was seen and
judged good, in words).
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re

from ansible.module_utils.airgap_endpoints import EndpointSet, PatternError, as_ip, normalise, split_host_port

PASS, FAIL = "PASS", "FAIL"

# Every check: (section, title, legend). The report names checks by title and
# prints the legend once; sections group them.
CHECKS = {
    "signed": ("Supply chain", "Signed bundle",
               "the controller's verified bundle: manifest digest, signers, images (the anchor of every other check)"),
    "registry_content": ("Supply chain", "Registry content",
                         "every image of the signed manifest: manifest and every blob served by digest"),
    "marker": ("Supply chain", "Bundle marker", "the node's marker names the signed manifest digest"),
    "audit": ("Supply chain", "Audit log",
              "the staging host's audit log is intact (checked by the controller's toolkit) and holds the head recorded at the last rollout"),
    "workloads": ("Runtime", "Workloads",
                  "each pilot application runs its signed digest as specified and answers its health URL; nothing else runs"),
    "image_policy": ("Runtime", "Image trust policy",
                     "policy.json rejects by default and accepts only the internal registry"),
    "registries": ("Runtime", "Container registries",
                   "registries.conf, certs.d (containers and containerd), auth files and runtime configuration name only the internal registry"),
    "containerd": ("Runtime", "containerd images",
                   "every signed image is in containerd's k8s.io namespace by digest; an image the internal registry "
                   "lacks cannot be pulled from anywhere else"),
    "containerd_probe": ("Runtime", "containerd probe logged",
                         "the internal registry's access log shows the node's probe: the request reached it"),
    "credentials": ("Runtime", "Registry credentials",
                    "nodes hold only the pull credential; the push credential exists only on the staging host"),
    "registry_access": ("Runtime", "Registry access",
                        "the registry refuses anonymous access and any push with the pull credential"),
    "certificate": ("Runtime", "Registry certificate",
                    "the registry's TLS certificate chains to the internal CA and is valid for 30 more days"),
    "dns": ("Enclave", "Name resolution", "every DNS resolver configured is one of the enclave's resolvers"),
    "ntp": ("Enclave", "Time sources", "every time server configured is one of the enclave's time servers"),
    "packages": ("Enclave", "Package sources", "apt, dnf and pip sources are the enclave's package repositories"),
    "proxy": ("Enclave", "Proxies", "no proxy is configured except the enclave's own"),
    "hosts": ("Enclave", "Host names", "every /etc/hosts entry maps to an address inside the enclave"),
    "routes": ("Enclave", "Routes", "no default route; every IPv4 and IPv6 route stays inside the enclave's ranges"),
    "enclave": ("Enclave", "Enclave description",
                "the inventory's enclave: ranges are networks, every service and node address lies inside"),
    "policy": ("Enclave", "Sovereignty labels", "the sovereignty policy that labels findings was loaded"),
    # Preflight only (a rollout's first step; check.yml does not run them).
    "commands": ("Preflight", "Commands", "every command the host's roles run is installed"),
    "space": ("Preflight", "Free space", "enough free space for the bundle and the registry's blobs"),
    # Haven: the Compliancy Checker's checks a node and the inventory can prove (airgap_haven) ...
    "haven_nodes": ("Haven", "Nodes", "at least 3 control-plane and 3 worker hosts in the inventory"),
    "haven_zones": ("Haven", "Availability zones", "the hosts are spread over more than one availability zone"),
    "haven_lsm": ("Haven", "Linux security module", "SELinux enforcing or AppArmor enabled on the node"),
    "haven_addresses": ("Haven", "Private addresses", "the node's addresses are private and inside the enclave"),
    "haven_mirrors": ("Haven", "Registry mirrors",
                      "the container runtime pulls only from the internal registry, with no fallback upstream"),
    "haven_time": ("Haven", "Time synchronisation", "time is synchronised from the enclave's time servers only"),
    "haven_logs": ("Haven", "Log shipping", "logs are shipped to a collector inside the enclave"),
    # ... and those only a Kubernetes API can answer (NEEDS-CLUSTER, with what to run there).
    "haven_version": ("Haven", "Kubernetes version", "at most one minor version behind the latest, no skew between nodes (needs a cluster)"),
    "haven_rbac": ("Haven", "RBAC, no anonymous access", "RBAC enabled, basic and anonymous authentication off (needs a cluster)"),
    "haven_conformance": ("Haven", "CNCF conformance", "the cluster passes the CNCF conformance tests (needs a cluster)"),
    "haven_storage": ("Haven", "Dynamic storage", "ReadWriteOnce and ReadWriteMany volumes provisioned on demand (needs a cluster)"),
    "haven_metrics": ("Haven", "Cluster metrics", "metrics are collected centrally, metrics-server (needs a cluster)"),
    "haven_certificates": ("Haven", "Automated certificates", "HTTPS certificates issued automatically, cert-manager (needs a cluster)"),
    "haven_log_aggregation": ("Haven", "Log aggregation", "container logs are aggregated centrally (needs a cluster)"),
}


class Result(object):
    """One check's verdict on one node, built up finding by finding."""

    def __init__(self, check, summary_ok=""):
        self.check = check
        self.summary_ok = summary_ok
        self.findings = []
        self.evidence = []
        self.counts = {}

    def fail(self, source, value, reason, line=None, label=None):
        finding = {"check": self.check, "source": source, "line": line, "value": str(value), "reason": reason}
        if label:
            finding["label"] = label
        self.findings.append(finding)

    def note(self, text):
        self.evidence.append(text)

    def to_dict(self, summary=None):
        status = FAIL if self.findings else PASS
        if summary is None:
            summary = self.summary_ok if not self.findings else "%d finding(s)" % len(self.findings)
        section, title, _legend = CHECKS.get(self.check, ("Other", self.check, ""))
        return {"check": self.check, "title": title, "section": section, "status": status,
                "summary": summary, "findings": self.findings, "evidence": self.evidence}


def where(source, line=None):
    return source if line is None else "%s:%d" % (source, line)


# --------------------------------------------------------------------------- files

class Files(object):
    """Reads configuration under a root directory (``/`` on a node, a tree in tests)."""

    def __init__(self, root="/"):
        self.root = root or "/"

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def show(self, path):
        """The path as the node sees it (without the test root)."""
        if self.root in ("", "/"):
            return path
        return "/" + os.path.relpath(path, self.root)

    def glob(self, *patterns):
        out = []
        for pat in patterns:
            out.extend(sorted(glob.glob(self.path(pat))))
        seen, files = set(), []
        for p in out:
            if p not in seen and os.path.isfile(p):
                seen.add(p)
                files.append(p)
        return files

    def read(self, path):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except (OSError, UnicodeError):
            return None

    def lines(self, path, marks=("#",)):
        """(line number, text without comments) of every line of *path*."""
        text = self.read(path)
        if text is None:
            return []
        return [(n, strip_comment(line, marks)) for n, line in enumerate(text.splitlines(), 1)]


def strip_comment(line, marks=("#",)):
    """*line* without its comment; ``//`` starts one only at the start or after a blank
    (apt.conf), so the ``//`` of a URL is kept."""
    out = line
    for mark in marks:
        if mark == "//":
            m = re.search(r"(^|\s)//", out)
            idx = m.start() if m else -1
        else:
            idx = out.find(mark)
        if idx >= 0:
            out = out[:idx]
    return out.strip()


def key_value(line, sep="="):
    key, found, value = line.partition(sep)
    if not found:
        return None, None
    return key.strip(), value.strip()


# --------------------------------------------------------------------------- labels

class Labels(object):
    """The sovereignty policy's patterns: a label for endpoints it lists."""

    def __init__(self, patterns):
        self.set = EndpointSet()
        self.problems = []
        for raw in patterns or []:
            if isinstance(raw, dict):
                pattern = raw.get("pattern") or ""
                info = raw
            else:
                pattern, info = raw, {}
            try:
                self.set.add(pattern, info)
            except PatternError as exc:
                self.problems.append(str(exc))

    def label(self, endpoint):
        hit = self.set.lookup(endpoint)
        if hit is None:
            return None
        info = hit[1] or {}
        who = info.get("provider") or "listed external service"
        kind = info.get("provider_kind") or info.get("kind")
        if kind:
            who = "%s (%s)" % (who, kind)
        jurisdiction = info.get("jurisdiction") or "US"
        if jurisdiction == "US":
            return "US provider: %s" % who
        if jurisdiction == "external":
            return "external service: %s" % who
        return "external service (%s): %s" % (jurisdiction, who)


# --------------------------------------------------------------------------- the enclave

SERVICES = ("dns", "ntp", "registry", "packages", "proxy")
SERVICE_WORDS = {"dns": "resolvers", "ntp": "time servers", "registry": "registry",
                 "packages": "package repositories", "proxy": "proxies"}
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")


class Enclave(object):
    """The inventory's description of the enclave, and the judge of every endpoint.

    *spec*: ``ranges`` (CIDR networks), ``domains`` (internal DNS domains; each
    covers its subdomains), ``names`` (further internal host names) and
    ``services`` (``dns``, ``ntp``, ``registry``, ``packages``, ``proxy``: the
    endpoints nodes may use for that purpose; none declared means none allowed).
    """

    def __init__(self, spec, labels=None):
        spec = spec or {}
        self.labels = labels or Labels([])
        self.problems = []
        self.networks = []
        for cidr in spec.get("ranges") or []:
            try:
                self.networks.append(ipaddress.ip_network(str(cidr), strict=True))
            except ValueError:
                self.problems.append("allowed range %r is not a network (address/prefix, no host bits)" % (cidr,))
        self.names = EndpointSet()
        for name in list(spec.get("domains") or []) + list(spec.get("names") or []):
            try:
                self.names.add(str(name), name)
            except PatternError as exc:
                if "twice" not in str(exc):
                    self.problems.append("internal domain or name: %s" % exc)
        self.services = {}
        for service in SERVICES:
            values = (spec.get("services") or {}).get(service) or []
            if isinstance(values, str):
                values = [values]
            self.services[service] = [str(v) for v in values if str(v).strip()]

    # -- judging

    @staticmethod
    def local(host):
        """True for endpoints on the node itself: loopback, ``localhost``, no host at all."""
        if host in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"):
            return True
        ip = as_ip(host)
        return ip is not None and (ip.is_loopback or ip.is_unspecified)

    def inside(self, endpoint):
        """``(True, why)`` when *endpoint* lies inside the enclave, else ``(False, why)``."""
        host = normalise(endpoint)
        if not host:
            return True, "no host (local)"
        if self.local(host):
            return True, "local to the node"
        ip = as_ip(host)
        if ip is not None:
            if ip.version == 6 and ip in _LINK_LOCAL_V6:
                return True, "IPv6 link-local (the node's own link)"
            for net in self.networks:
                if net.version == ip.version and ip in net:
                    return True, "inside %s" % net
            return False, "outside the enclave's ranges %s" % ", ".join(str(n) for n in self.networks)
        hit = self.names.lookup_host(host)
        if hit is not None:
            return True, "internal name (%s)" % hit[0]
        return False, "not an internal name of the enclave"

    def service(self, service, endpoint):
        """``(True, why)`` when *endpoint* is one of the declared endpoints of *service*."""
        port = split_host_port(endpoint)[1]
        host = normalise(endpoint)
        if not host or self.local(host):
            return True, "local to the node"
        for declared in self.services.get(service, []):
            d_host, d_port = split_host_port(declared)
            if normalise(declared) == host and (d_port is None or port is None or d_port == port):
                return True, "declared in the enclave's %s" % SERVICE_WORDS[service]
        inside, why = self.inside(endpoint)
        declared = self.services.get(service) or []
        what = SERVICE_WORDS[service]
        listed = ("declared %s: %s" % (what, ", ".join(declared))) if declared else "the enclave declares no %s" % what
        if inside:
            return False, "inside the enclave (%s) but not one of its %s (%s)" % (why, what, listed)
        return False, "outside the enclave: %s (%s)" % (why, listed)

    def judge(self, result, source, line, value, service=None):
        """Judge one endpoint for *result*: a finding when it fails, evidence when not."""
        value = str(value).strip().strip("\"'")
        if not value:
            return True
        ok, why = self.service(service, value) if service else self.inside(value)
        if ok:
            result.note("%s: %s (%s)" % (where(source, line), value, why))
            return True
        result.fail(source, value, why, line=line, label=self.labels.label(value))
        return False
