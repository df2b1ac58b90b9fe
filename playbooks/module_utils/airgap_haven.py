# Copyright: airgap project
# License: EUPL-1.2
"""The Haven Compliancy Checker's checks that nodes and the inventory can prove.

Haven (the Dutch government's Kubernetes standard) checks a running cluster
through its API.  Before and beside a cluster, the same requirements can be
proven from the inventory and from each node's own files; check.yml reports
them in its "Haven" section:

==================  =======================================================
``haven_nodes``     at least 3 control-plane and 3 worker hosts in the inventory
``haven_zones``     the hosts are spread over more than one availability zone
``haven_lsm``       each node runs an active LSM: SELinux (enforcing) or AppArmor
``haven_addresses`` each node's addresses are private and inside the enclave
``haven_mirrors``   the container runtime pulls only from the internal registry
                    (check.yml's registries rules: no containerd ``hosts.toml``
                    that falls back to its upstream)
``haven_time``      time is synchronised, from the enclave's time servers only
``haven_logs``      logs are shipped, to collectors inside the enclave only
==================  =======================================================

Each gives PASS or FAIL with findings (source, line, value, reason) and
evidence, like every check of ``airgap_check``.  The checks that need the
Kubernetes API give NEEDS-CLUSTER with what to run there
(:data:`CLUSTER_CHECKS`).  A check the inventory expects to fail on its site
(the lab has no LSM, one zone) stays FAIL and carries ``expected`` (the
reason): the report shows it and does not count it against the verdict.

Runs on the checked node: standard library and the project's module_utils only.
"""

from __future__ import annotations

import ipaddress
import re

from ansible.module_utils.airgap_check_common import FAIL, PASS, Result, key_value
from ansible.module_utils.airgap_check_runtime import check_registries

NEEDS_CLUSTER = "NEEDS-CLUSTER"

NODE_CHECKS = ("haven_lsm", "haven_addresses", "haven_mirrors", "haven_time", "haven_logs")
INVENTORY_CHECKS = ("haven_nodes", "haven_zones")

CLUSTER_CHECKS = (
    ("haven_version", "kubectl version -o yaml; kubectl get nodes -o wide; haven check"),
    ("haven_rbac", "kubectl api-versions | grep rbac.authorization.k8s.io; "
                   "kubectl get --raw /api --as=system:anonymous (must be refused)"),
    ("haven_conformance", "sonobuoy run --mode=certified-conformance --wait; sonobuoy retrieve | sonobuoy results -"),
    ("haven_storage", "kubectl get storageclass; a PersistentVolumeClaim with accessModes [ReadWriteMany] becomes Bound"),
    ("haven_metrics", "kubectl top nodes"),
    ("haven_certificates", "kubectl get crd certificates.cert-manager.io; kubectl get clusterissuers"),
    ("haven_log_aggregation", "kubectl get daemonsets -A (the log shipper runs on every node)"),
)
"""(id, what to run on the cluster) of the checks that need the Kubernetes API (titles: airgap_check_common.CHECKS)."""

def mark_expected(results, expected):
    """Give each result whose check *expected* (``{check: reason}``) names its reason; statuses stay."""
    for r in results:
        reason = (expected or {}).get(r["check"])
        if not reason:
            continue
        r["expected"] = reason
        if r["status"] == PASS:
            r["evidence"].append("expected to fail on this site (%s), but it passes: remove it from "
                                 "check__haven_expected_failures" % reason)
    return results


# --------------------------------------------------------------------------- inventory


def check_nodes(control_plane, workers, minimum=3):
    res = Result("haven_nodes")
    cp, wk = sorted(set(control_plane or [])), sorted(set(workers or []))
    res.note("control plane (%d): %s" % (len(cp), ", ".join(cp) or "none"))
    res.note("workers (%d): %s" % (len(wk), ", ".join(wk) or "none"))
    if len(cp) < minimum:
        res.fail("inventory", "%d control-plane host(s)" % len(cp),
                 "at least %d are needed for a highly available control plane" % minimum)
    if len(wk) < minimum:
        res.fail("inventory", "%d worker host(s)" % len(wk), "at least %d are needed" % minimum)
    return res.to_dict("%d control-plane, %d worker hosts" % (len(cp), len(wk)) if not res.findings else None)


def check_zones(zone_of):
    """*zone_of*: host -> its availability zone (``topology.kubernetes.io/zone``), empty if unset."""
    res = Result("haven_zones")
    zones = {}
    for host, zone in sorted((zone_of or {}).items()):
        if zone:
            zones.setdefault(str(zone), []).append(host)
        else:
            res.fail("inventory", host, "no availability zone (airgap__zone)")
    for zone, hosts in sorted(zones.items()):
        res.note("zone %s: %s" % (zone, ", ".join(hosts)))
    if zones and len(zones) < 2:
        res.fail("inventory", "zone %s" % next(iter(zones)), "every host is in one zone: one failure away from an outage")
    return res.to_dict("%d zones" % len(zones) if not res.findings else None)


def cluster_checks():
    """The Kubernetes-API checks: NEEDS-CLUSTER, with what to run there."""
    out = []
    for cid, run in CLUSTER_CHECKS:
        r = Result(cid)
        r.note("run on the cluster: " + run)
        d = r.to_dict("needs the Kubernetes API: " + run)
        d["status"] = NEEDS_CLUSTER
        out.append(d)
    return out


# --------------------------------------------------------------------------- node


def collect_lsm(files):
    def one(rel):
        text = files.read(files.path(rel))
        return text.strip() if text is not None else None

    return {"lsm": one("/sys/kernel/security/lsm"), "selinux_enforce": one("/sys/fs/selinux/enforce"),
            "apparmor_enabled": one("/sys/module/apparmor/parameters/enabled")}


def check_lsm(evidence):
    """*evidence*: ``lsm`` (/sys/kernel/security/lsm or None), ``selinux_enforce``, ``apparmor_enabled``."""
    res = Result("haven_lsm")
    active = [x.strip() for x in (evidence.get("lsm") or "").split(",") if x.strip()]
    enforce, apparmor = (evidence.get("selinux_enforce") or "").strip(), (evidence.get("apparmor_enabled") or "").strip()
    shown = ",".join(active) if evidence.get("lsm") is not None else "absent (securityfs not mounted or no LSM list)"
    res.note("/sys/kernel/security/lsm: %s" % shown)
    res.note("/sys/fs/selinux/enforce: %s; /sys/module/apparmor/parameters/enabled: %s" % (enforce or "absent",
                                                                                            apparmor or "absent"))
    if "selinux" in active and enforce == "1":
        return res.to_dict("SELinux enforcing")
    if "apparmor" in active and apparmor == "Y":
        return res.to_dict("AppArmor enabled")
    if "selinux" in active:
        res.fail("/sys/fs/selinux/enforce", enforce or "absent", "SELinux is loaded but not enforcing")
    else:
        res.fail("/sys/kernel/security/lsm", shown, "neither SELinux nor AppArmor is active")
    return res.to_dict()


def check_addresses(addresses, enclave):
    """*addresses*: (where, address) pairs: the inventory's address and the node's interface addresses."""
    res = Result("haven_addresses")
    for where, value in addresses:
        try:
            ip = ipaddress.ip_address(str(value).split("/", 1)[0])
        except ValueError:
            res.fail(where, value, "not an IP address")
            continue
        inside, why = enclave.inside(str(ip))
        if ip.is_global or not ip.is_private:
            res.fail(where, str(ip), "a public address", label=enclave.labels.label(str(ip)))
        elif not inside:
            res.fail(where, str(ip), why)
        else:
            res.note("%s: %s private, %s" % (where, ip, why))
    if not addresses:
        res.fail("ip address", "(none)", "no address found")
    return res.to_dict("%d address(es), private and inside the enclave" % len(res.evidence) if not res.findings else None)


def check_mirrors(files, internal, labels):
    """check.yml's registries rules, as Haven's "registry mirrors internal" (one judge, two reports)."""
    base = check_registries(files, internal, labels).to_dict()
    res = Result("haven_mirrors")
    res.findings = [dict(f, check="haven_mirrors") for f in base["findings"]]
    res.evidence = list(base["evidence"])
    return res.to_dict("every registry and mirror the runtimes name is internal" if not res.findings else None)


# systemd-timesyncd's compiled-in fallback is Debian's public pool: unless FallbackNTP=
# is set (empty, or to internal servers) it is used whenever the NTP= servers do not answer.
TIMESYNCD_FALLBACK = "0.debian.pool.ntp.org"
_TIME_FILES = ("/etc/chrony/chrony.conf", "/etc/chrony.conf", "/etc/chrony/conf.d/*.conf",
               "/etc/chrony/sources.d/*.sources", "/etc/ntp.conf", "/etc/ntpsec/ntp.conf")
_TIMESYNCD = ("/etc/systemd/timesyncd.conf", "/etc/systemd/timesyncd.conf.d/*.conf")


def collect_time_sources(files):
    """(source, line, value, problem or None) of every configured time source."""
    out = []
    for path in files.glob(*_TIME_FILES):
        for n, line in files.lines(path, marks=("#", "!", ";")):
            words = line.split()
            if len(words) > 1 and words[0] in ("server", "pool", "peer"):
                out.append((files.show(path), n, words[1], None))
    servers, fallback_set, first = [], False, None
    for path in files.glob(*_TIMESYNCD):
        first = first or files.show(path)
        for n, line in files.lines(path):
            key, value = key_value(line)
            if key == "NTP":
                servers += [(files.show(path), n, v, None) for v in value.split()]
            elif key == "FallbackNTP":
                fallback_set = True
                out += [(files.show(path), n, v, None) for v in value.split()]
    out += servers
    if servers and not fallback_set:
        out.append((first, None, TIMESYNCD_FALLBACK,
                    "FallbackNTP= is not set, so systemd-timesyncd falls back to its built-in %s when the NTP= "
                    "servers do not answer; set FallbackNTP= (empty)" % TIMESYNCD_FALLBACK))
    return out


def check_time(sources, enclave):
    res = Result("haven_time")
    for source, line, value, problem in sources:
        if problem:
            res.fail(source, value, problem, line=line, label=enclave.labels.label(value))
        else:
            enclave.judge(res, source, line, value, service="ntp")
    if not sources:
        res.fail("chrony, systemd-timesyncd, ntpd", "(none)", "no time source is configured")
    return res.to_dict("%d time source(s), all the enclave's" % len(res.evidence) if not res.findings else None)


_RSYSLOG_LEGACY = re.compile(r"^\S+\s+@@?(?:\([^)]*\))?(\S+)")
_RSYSLOG_TARGET = re.compile(r'target\s*=\s*"([^"]+)"')


def collect_log_targets(files):
    """(source, line, value, problem or None) of every configured log destination off the node."""
    out = []
    for path in files.glob("/etc/rsyslog.conf", "/etc/rsyslog.d/*.conf"):
        for n, line in files.lines(path):
            legacy = _RSYSLOG_LEGACY.match(line)
            if legacy:
                out.append((files.show(path), n, legacy.group(1), None))
            elif "omfwd" in line or "omrelp" in line:
                target = _RSYSLOG_TARGET.search(line)
                out.append((files.show(path), n, target.group(1) if target else line,
                            None if target else "a forwarding action without a target"))
    for path in files.glob("/etc/systemd/journal-upload.conf", "/etc/systemd/journal-upload.conf.d/*.conf"):
        for n, line in files.lines(path):
            key, value = key_value(line)
            if key == "URL" and value:
                out.append((files.show(path), n, value, None))
    for path in files.glob("/etc/fluent-bit/*.conf"):
        for n, line in files.lines(path):
            words = line.split(None, 1)
            if len(words) == 2 and words[0].lower() == "host":
                out.append((files.show(path), n, words[1].strip(), None))
    return out


def check_logs(targets, enclave):
    res = Result("haven_logs")
    for source, line, value, problem in targets:
        if problem:
            res.fail(source, value, problem, line=line)
        else:
            enclave.judge(res, source, line, value)
    if not targets:
        res.fail("rsyslog, systemd-journal-upload, fluent-bit", "(none)", "no log shipping is configured")
    return res.to_dict("%d log target(s), all inside the enclave" % len(res.evidence) if not res.findings else None)


def node_checks(files, enclave, internal, labels, addresses):
    """Every node check, in report order."""
    return [check_lsm(collect_lsm(files)), check_addresses(addresses, enclave), check_mirrors(files, internal, labels),
            check_time(collect_time_sources(files), enclave), check_logs(collect_log_targets(files), enclave)]


__all__ = ["CLUSTER_CHECKS", "NEEDS_CLUSTER", "NODE_CHECKS", "INVENTORY_CHECKS", "FAIL", "PASS", "mark_expected",
           "check_nodes", "check_zones", "cluster_checks", "check_lsm", "collect_lsm", "check_addresses",
           "check_mirrors", "check_time", "collect_time_sources", "check_logs", "collect_log_targets", "node_checks"]
