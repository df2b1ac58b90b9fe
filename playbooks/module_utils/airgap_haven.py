# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""The Haven Compliancy Checker's checks that nodes and the inventory can prove.

Haven (the Dutch government's Kubernetes standard) checks a running cluster
through its API.  Before and beside a cluster, the same requirements can be
proven from the inventory and from each node's own files:

==============  ===========================================================
``nodes``       at least 3 control-plane and 3 worker hosts in the inventory
``zones``       the hosts are spread over more than one availability zone
``lsm``         each node runs an active LSM: SELinux (enforcing) or AppArmor
``addresses``   each node's addresses are private and inside the enclave
``mirrors``     the container runtime's registries and mirrors are internal,
                and no containerd ``hosts.toml`` falls back to its upstream
``time``        time is synchronised, from internal servers only
``logs``        logs are shipped, to internal collectors only
==============  ===========================================================

Each check returns PASS or FAIL with the evidence it judged (file, line,
value).  The checks that need the Kubernetes API return NEEDS-CLUSTER with
the command to run there (:data:`CLUSTER_CHECKS`).  A check an inventory
declares as expected to fail (the lab has no LSM, one zone) stays FAIL; it is
only marked ``expected`` with the reason, so a report never hides it.

Collectors read files below ``root`` and never change anything; the check
functions take the evidence as plain data, so they are tested without a node.
Standard library only: this runs on the nodes.
"""

from __future__ import absolute_import, division, print_function

import glob
import ipaddress
import os
import re

try:
    import tomllib
except ImportError:  # pragma: no cover - Python < 3.11 on a node
    tomllib = None

PASS, FAIL, NEEDS_CLUSTER = "PASS", "FAIL", "NEEDS-CLUSTER"

CHECKS = (
    ("nodes", "at least 3 control-plane and 3 worker nodes"),
    ("zones", "nodes spread over more than one availability zone"),
    ("lsm", "an active Linux security module (SELinux enforcing or AppArmor)"),
    ("addresses", "node addresses private and inside the enclave"),
    ("mirrors", "container runtime pulls only from the internal registry"),
    ("time", "time synchronised from internal servers"),
    ("logs", "logs shipped to an internal collector"),
)
"""(id, title) of the checks made here, in report order."""

CLUSTER_CHECKS = (
    ("version", "Kubernetes version at most one minor behind the latest, nodes not skewed",
     "kubectl version -o yaml; kubectl get nodes -o wide (kubelet versions); haven check"),
    ("rbac", "RBAC enabled, basic and anonymous authentication off",
     "kubectl api-versions | grep rbac.authorization.k8s.io; "
     "kubectl get --raw /api --as=system:anonymous (must be refused)"),
    ("conformance", "CNCF conformance",
     "sonobuoy run --mode=certified-conformance --wait; sonobuoy retrieve | sonobuoy results -"),
    ("storage", "dynamic ReadWriteOnce and ReadWriteMany volumes",
     "kubectl get storageclass; create a PersistentVolumeClaim with accessModes [ReadWriteMany] and see it Bound"),
    ("metrics", "cluster metrics (metrics-server)", "kubectl top nodes"),
    ("certificates", "automated HTTPS certificates (cert-manager)",
     "kubectl get crd certificates.cert-manager.io; kubectl get clusterissuers"),
    ("log-aggregation", "container logs aggregated centrally",
     "kubectl get daemonsets -A (the log shipper runs on every node)"),
)
"""(id, title, what to run on the cluster) of the checks that need the Kubernetes API."""


def result(check, status, summary, evidence):
    title = dict(CHECKS).get(check) or dict((c[0], c[1]) for c in CLUSTER_CHECKS).get(check, check)
    if status == FAIL and not evidence:
        evidence = [summary]
    return {"check": check, "title": title, "status": status, "summary": summary, "evidence": list(evidence)}


def mark_expected(results, expected):
    """Annotate results whose check the inventory expects to fail (``{check: reason}``); statuses stay."""
    for r in results:
        reason = (expected or {}).get(r["check"])
        if reason:
            r["expected"] = reason
            if r["status"] == PASS:
                r["evidence"].append("the inventory expects this check to fail (%s), but it passes: "
                                     "remove it from the expected failures" % reason)
    return results


# --------------------------------------------------------------------------- enclave


class Enclave(object):
    """What is inside: address ranges, internal domains, and named internal services."""

    def __init__(self, ranges=(), domains=(), hosts=()):
        self.ranges = [ipaddress.ip_network(str(r), strict=False) for r in ranges]
        self.domains = [str(d).lower().strip(".") for d in domains if str(d).strip(".")]
        self.hosts = set(str(h).lower() for h in hosts)

    def inside(self, value):
        """(inside?, why) for an address, a host name, host:port or URL."""
        host = host_of(value)
        if not host:
            return False, "no host in %r" % (value,)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            for net in self.ranges:
                if ip.version == net.version and ip in net:
                    return True, "%s is in %s" % (ip, net)
            return False, "%s is outside %s" % (ip, ", ".join(str(n) for n in self.ranges) or "every enclave range")
        if host in self.hosts:
            return True, "%s is an internal service" % host
        for d in self.domains:
            if host == d or host.endswith("." + d):
                return True, "%s is in the internal domain %s" % (host, d)
        return False, "%s is not an internal name (domains: %s)" % (host, ", ".join(self.domains) or "none")


def host_of(value):
    """The host of an endpoint written as URL, host:port, [v6]:port, address or name."""
    val = str(value or "").strip().strip("\"'").strip()
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


# --------------------------------------------------------------------------- inventory checks


def check_nodes(control_plane, workers, minimum=3):
    cp, wk = sorted(set(control_plane or [])), sorted(set(workers or []))
    ev = ["control plane (%d): %s" % (len(cp), ", ".join(cp) or "none"),
          "workers (%d): %s" % (len(wk), ", ".join(wk) or "none")]
    short = []
    if len(cp) < minimum:
        short.append("%d control-plane host(s), at least %d needed for a highly available control plane" % (len(cp), minimum))
    if len(wk) < minimum:
        short.append("%d worker host(s), at least %d needed" % (len(wk), minimum))
    if short:
        return result("nodes", FAIL, "; ".join(short), short + ev)
    return result("nodes", PASS, "%d control-plane, %d worker hosts" % (len(cp), len(wk)), ev)


def check_zones(zone_of):
    """*zone_of*: host -> its availability zone (``topology.kubernetes.io/zone``), None if unset."""
    missing = sorted(h for h, z in (zone_of or {}).items() if not z)
    zones = {}
    for h, z in sorted((zone_of or {}).items()):
        if z:
            zones.setdefault(str(z), []).append(h)
    ev = ["zone %s: %s" % (z, ", ".join(hs)) for z, hs in sorted(zones.items())]
    ev += ["%s: no zone label" % h for h in missing]
    if missing:
        return result("zones", FAIL, "%d host(s) without a zone label" % len(missing), ev)
    if len(zones) < 2:
        return result("zones", FAIL, "all hosts in %s: one zone is one failure away from an outage"
                      % (next(iter(zones)) if zones else "no zone"), ev)
    return result("zones", PASS, "%d zones" % len(zones), ev)


# --------------------------------------------------------------------------- node checks


def check_lsm(evidence):
    """*evidence*: ``lsm`` (text of /sys/kernel/security/lsm or None), ``selinux_enforce``, ``apparmor_enabled``."""
    active = [x.strip() for x in (evidence.get("lsm") or "").split(",") if x.strip()]
    ev = ["/sys/kernel/security/lsm: %s" % (",".join(active) if evidence.get("lsm") is not None
                                            else "absent (securityfs not mounted, or no LSM list)")]
    enforce = evidence.get("selinux_enforce")
    apparmor = evidence.get("apparmor_enabled")
    ev.append("/sys/fs/selinux/enforce: %s" % (enforce if enforce is not None else "absent"))
    ev.append("/sys/module/apparmor/parameters/enabled: %s" % (apparmor if apparmor is not None else "absent"))
    if "selinux" in active and (enforce or "").strip() == "1":
        return result("lsm", PASS, "SELinux enforcing", ev)
    if "apparmor" in active and (apparmor or "").strip() == "Y":
        return result("lsm", PASS, "AppArmor enabled", ev)
    if "selinux" in active:
        return result("lsm", FAIL, "SELinux is loaded but not enforcing", ev)
    return result("lsm", FAIL, "neither SELinux nor AppArmor is active", ev)


def check_addresses(addresses, enclave):
    """*addresses*: (where, address) pairs: the inventory's ansible_host and the node's interface addresses."""
    ev, bad = [], []
    for where, value in addresses:
        try:
            ip = ipaddress.ip_address(str(value).split("/", 1)[0])
        except ValueError:
            bad.append("%s: %r is not an address" % (where, value))
            continue
        inside, why = enclave.inside(str(ip))
        if ip.is_global or not ip.is_private:
            bad.append("%s: %s is a public address" % (where, ip))
        elif not inside:
            bad.append("%s: %s" % (where, why))
        else:
            ev.append("%s: %s private, %s" % (where, ip, why))
    if not addresses:
        bad.append("no address found")
    if bad:
        return result("addresses", FAIL, "%d address(es) public or outside the enclave" % len(bad), bad + ev)
    return result("addresses", PASS, "%d address(es), all private and inside the enclave" % len(ev), ev)


def _judge_endpoints(check, endpoints, enclave, what, none_found):
    ev, bad = [], []
    for e in endpoints:
        where = "%s:%s" % (e["file"], e["line"]) if e.get("line") else e["file"]
        if e.get("problem"):
            bad.append("%s: %s" % (where, e["problem"]))
            continue
        inside, why = enclave.inside(e["value"])
        (ev if inside else bad).append("%s: %s %s (%s)" % (where, what, e["value"], why))
    if not endpoints:
        return result(check, FAIL, none_found, [none_found])
    if bad:
        return result(check, FAIL, "%d %s outside the enclave or unsafe" % (len(bad), what), bad + ev)
    return result(check, PASS, "%d %s, all internal" % (len(ev), what), ev)


def check_mirrors(endpoints, enclave):
    """*endpoints*: from :func:`collect_registries` (file, line, value[, problem])."""
    return _judge_endpoints("mirrors", endpoints, enclave, "registry endpoint",
                            "no container runtime registry configuration found")


def check_time(sources, enclave):
    """*sources*: from :func:`collect_time_sources`."""
    return _judge_endpoints("time", sources, enclave, "time source",
                            "no time source configured (chrony, systemd-timesyncd or ntpd)")


def check_logs(targets, enclave):
    """*targets*: from :func:`collect_log_targets`."""
    return _judge_endpoints("logs", targets, enclave, "log target",
                            "no log shipping configured (rsyslog forwarding, systemd-journal-upload or fluent-bit)")


def cluster_checks():
    """The Kubernetes-API checks: NEEDS-CLUSTER, with what to run there."""
    return [result(cid, NEEDS_CLUSTER, "needs the Kubernetes API", ["run on the cluster: " + run])
            for cid, _title, run in CLUSTER_CHECKS]


# --------------------------------------------------------------------------- collectors (read-only)


def _files(root, *patterns):
    out = []
    for pattern in patterns:
        out += sorted(glob.glob(os.path.join(root, pattern.lstrip("/"))))
    return [p for p in out if os.path.isfile(p)]


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _shown(root, path):
    return "/" + os.path.relpath(path, root) if root not in ("", "/") else path


def _lines(root, path):
    """(shown path, line number, line without comment) of every non-empty line."""
    text = _read(path) or ""
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield _shown(root, path), no, line


def collect_lsm(root="/"):
    def one(rel):
        text = _read(os.path.join(root, rel))
        return text.strip() if text is not None else None

    return {"lsm": one("sys/kernel/security/lsm"), "selinux_enforce": one("sys/fs/selinux/enforce"),
            "apparmor_enabled": one("sys/module/apparmor/parameters/enabled")}


# systemd-timesyncd's compiled-in fallback: Debian's pool.  Unless FallbackNTP= is set (to
# nothing, or to internal servers), timesyncd uses it whenever NTP= servers do not answer.
TIMESYNCD_BUILTIN_FALLBACK = "0.debian.pool.ntp.org"


def collect_time_sources(root="/"):
    out = []
    for shown, no, line in [x for p in _files(root, "/etc/chrony/chrony.conf", "/etc/chrony/conf.d/*.conf",
                                                "/etc/chrony/sources.d/*.sources", "/etc/chrony.conf",
                                                "/etc/ntp.conf", "/etc/ntpsec/ntp.conf")
                            for x in _lines(root, p)]:
        words = line.split()
        if words[0] in ("server", "pool", "peer") and len(words) > 1:
            out.append({"file": shown, "line": no, "value": words[1]})
    timesyncd = _files(root, "/etc/systemd/timesyncd.conf", "/etc/systemd/timesyncd.conf.d/*.conf")
    servers, fallback_set = [], False
    for shown, no, line in [x for p in timesyncd for x in _lines(root, p)]:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.strip() == "NTP":
            servers += [{"file": shown, "line": no, "value": v} for v in value.split()]
        elif key.strip() == "FallbackNTP":
            fallback_set = True
            out += [{"file": shown, "line": no, "value": v} for v in value.split()]
    out += servers
    if servers and not fallback_set:
        out.append({"file": _shown(root, timesyncd[0]), "line": 0, "value": TIMESYNCD_BUILTIN_FALLBACK,
                    "problem": "FallbackNTP= is not set, so systemd-timesyncd falls back to its built-in "
                               "%s when the NTP= servers do not answer; set FallbackNTP= (empty)"
                               % TIMESYNCD_BUILTIN_FALLBACK})
    return out


_RSYSLOG_LEGACY = re.compile(r"^\S+\s+@@?(?:\([^)]*\))?(\S+)")
_RSYSLOG_TARGET = re.compile(r'target\s*=\s*"([^"]+)"')


def collect_log_targets(root="/"):
    out = []
    for shown, no, line in [x for p in _files(root, "/etc/rsyslog.conf", "/etc/rsyslog.d/*.conf")
                            for x in _lines(root, p)]:
        m = _RSYSLOG_LEGACY.match(line)
        if m:
            out.append({"file": shown, "line": no, "value": m.group(1)})
        elif "omfwd" in line or "omrelp" in line:
            m = _RSYSLOG_TARGET.search(line)
            out.append({"file": shown, "line": no, "value": m.group(1)} if m else
                       {"file": shown, "line": no, "value": line, "problem": "forwarding action without a target"})
    for shown, no, line in [x for p in _files(root, "/etc/systemd/journal-upload.conf",
                                                "/etc/systemd/journal-upload.conf.d/*.conf")
                            for x in _lines(root, p)]:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "URL" and value.strip():
            out.append({"file": shown, "line": no, "value": value.strip()})
    for shown, no, line in [x for p in _files(root, "/etc/fluent-bit/*.conf") for x in _lines(root, p)]:
        words = line.split(None, 1)
        if len(words) == 2 and words[0].lower() == "host":
            out.append({"file": shown, "line": no, "value": words[1].strip()})
    return out


def _toml(path):
    text = _read(path)
    if text is None or tomllib is None:
        return None, "cannot read" if text is None else "no TOML parser on this Python"
    try:
        return tomllib.loads(text), None
    except Exception as exc:  # noqa: BLE001 - any parse error is evidence
        return None, "not valid TOML: %s" % exc


def collect_registries(root="/"):
    """Every registry endpoint podman or containerd may contact, from their own configuration files.

    A containerd ``hosts.toml`` without ``server`` falls back to the upstream
    registry itself (``registry-1.docker.io`` for docker.io) after its hosts,
    and containerd 1.6 drops one without a ``[host]`` table altogether and uses
    the upstream: both are reported as the upstream endpoint with the problem.
    """
    out = []
    for path in _files(root, "/etc/containers/registries.conf", "/etc/containers/registries.conf.d/*.conf"):
        shown = _shown(root, path)
        doc, err = _toml(path)
        if err:
            out.append({"file": shown, "value": "", "problem": err})
            continue
        for reg in doc.get("registry", []) or []:
            if reg.get("blocked"):
                continue
            out.append({"file": shown, "value": reg.get("location") or reg.get("prefix") or ""})
            out += [{"file": shown, "value": m.get("location", "")} for m in reg.get("mirror", []) or []]
        for reg in doc.get("unqualified-search-registries", []) or []:
            out.append({"file": shown, "value": reg})
    for path in _files(root, "/etc/containerd/certs.d/*/hosts.toml"):
        shown = _shown(root, path)
        namespace = os.path.basename(os.path.dirname(path))
        doc, err = _toml(path)
        if err:
            out.append({"file": shown, "value": "", "problem": err})
            continue
        upstream = "registry-1.docker.io" if namespace == "docker.io" else namespace.rstrip("_").replace("_", ":")
        if not doc.get("server"):
            out.append({"file": shown, "value": upstream,
                        "problem": "no server line: containerd falls back to the upstream %s after the hosts" % upstream})
        elif not isinstance(doc.get("host"), dict) or not doc["host"]:
            # containerd 1.6 (Debian 12) refuses such a file ("invalid `host` tree") and
            # silently uses the upstream instead: proven in tests/test_platform_lab.py.
            out.append({"file": shown, "value": upstream,
                        "problem": "no [host.\"...\"] table: containerd 1.6 rejects the file ('invalid host tree') "
                                   "and pulls from the upstream %s; name the internal registry as a host too" % upstream})
        else:
            out.append({"file": shown, "value": doc["server"]})
        out += [{"file": shown, "value": host} for host in (doc.get("host") or {})]
    config = os.path.join(root, "etc/containerd/config.toml")
    if os.path.isfile(config):
        doc, err = _toml(config)
        registry = (((doc or {}).get("plugins") or {}).get("io.containerd.grpc.v1.cri") or {}).get("registry") or {}
        for name, mirror in (registry.get("mirrors") or {}).items():
            out += [{"file": _shown(root, config), "value": e} for e in mirror.get("endpoint", [])]
    return out
