# Copyright: airgap project
# License: EUPL-1.2
"""Checks of the node's network configuration: DNS, NTP, /etc/hosts, routes.

Each collector reads the configuration the node's own services read and hands
every endpoint it finds, with file and line, to the enclave's judge.
"""

from __future__ import annotations

import ipaddress
import json
import re

from ansible.module_utils.airgap_check_common import Result, key_value
from ansible.module_utils.airgap_endpoints import as_ip

NETWORKD = ("/etc/systemd/network/*.network", "/etc/systemd/network/*.network.d/*.conf",
            "/run/systemd/network/*.network", "/run/systemd/network/*.network.d/*.conf")
IFUPDOWN = ("/etc/network/interfaces", "/etc/network/interfaces.d/*")
NM_KEYFILES = ("/etc/NetworkManager/system-connections/*.nmconnection", "/etc/NetworkManager/system-connections/*")


def _ini_values(files, path, keys, marks=("#", ";")):
    """(line, value) of every ``KEY=v1 v2`` whose key is in *keys* (systemd and NM syntax)."""
    for n, line in files.lines(path, marks):
        key, value = key_value(line)
        if key is not None and key in keys:
            for item in re.split(r"[\s,;]+", value):
                if item:
                    yield n, item.split("#", 1)[0]


def _judge_keys(res, files, enclave, service, patterns, keys):
    for path in files.glob(*patterns):
        for n, value in _ini_values(files, path, keys):
            enclave.judge(res, files.show(path), n, value, service)


def _judge_words(res, files, enclave, service, patterns, keywords, every=False, marks=("#", ";")):
    """Lines ``KEYWORD value...``: the first value (or *every* value) is an endpoint."""
    for path in files.glob(*patterns):
        for n, line in files.lines(path, marks):
            parts = line.split()
            if len(parts) >= 2 and parts[0] in keywords:
                for value in parts[1:] if every else parts[1:2]:
                    enclave.judge(res, files.show(path), n, value, service)


def check_dns(files, enclave):
    res = Result("dns", "every resolver is the enclave's")
    _judge_words(res, files, enclave, "dns", ("/etc/resolv.conf",), ("nameserver",))
    _judge_keys(res, files, enclave, "dns", ("/etc/systemd/resolved.conf", "/etc/systemd/resolved.conf.d/*.conf",
                                             "/run/systemd/resolved.conf.d/*.conf") + NETWORKD, ("DNS", "FallbackDNS"))
    _judge_words(res, files, enclave, "dns", IFUPDOWN, ("dns-nameservers",), every=True, marks=("#",))
    _judge_keys(res, files, enclave, "dns", NM_KEYFILES, ("dns",))
    if not res.evidence and not res.findings:
        res.note("no resolver configured (no name service on the isolated side)")
    return res


def check_ntp(files, enclave):
    res = Result("ntp", "every time server is the enclave's")
    _judge_words(res, files, enclave, "ntp", ("/etc/chrony/chrony.conf", "/etc/chrony.conf", "/etc/chrony/conf.d/*.conf",
                                              "/etc/chrony/sources.d/*.sources", "/etc/ntp.conf", "/etc/ntpsec/ntp.conf",
                                              "/etc/openntpd/ntpd.conf"),
                 ("server", "pool", "peer", "servers"), marks=("#", "!", ";"))
    _judge_keys(res, files, enclave, "ntp", ("/etc/systemd/timesyncd.conf", "/etc/systemd/timesyncd.conf.d/*.conf",
                                             "/run/systemd/timesyncd.conf.d/*.conf") + NETWORKD, ("NTP", "FallbackNTP"))
    if not res.evidence and not res.findings:
        res.note("no time server configured")
    return res


def check_hosts(files, enclave):
    res = Result("hosts", "every /etc/hosts address lies inside the enclave")
    for path in files.glob("/etc/hosts"):
        for n, line in files.lines(path):
            parts = line.split()
            if len(parts) < 2:
                continue
            address, names = parts[0], parts[1:]
            ip = as_ip(address)
            if ip is not None and ip.is_multicast:
                res.note("%s:%d: %s (multicast, not an endpoint)" % (files.show(path), n, line))
                continue
            inside, why = enclave.inside(address)
            if inside:
                res.note("%s:%d: %s (%s)" % (files.show(path), n, line, why))
            else:
                res.fail(files.show(path), line, "%s maps %s to an address %s" % (address, " ".join(names), why),
                         line=n, label=enclave.labels.label(address))
    return res


# --------------------------------------------------------------------------- routes

# Route types that carry no traffic out of the node (the node's own addresses,
# broadcast, multicast) or that block it.
NOT_FORWARDING = ("local", "broadcast", "anycast", "multicast", "unreachable", "prohibit", "blackhole", "throw", "nat")
_LOCAL_NETS = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "fe80::/10", "ff00::/8")]


def judge_route(enclave, dst, gateway=None):
    """``(ok, why)`` for a route to *dst* (``default``, a network or an address) via *gateway*."""
    if dst in ("default", "0.0.0.0/0", "::/0", "0/0"):
        return False, "a default route leads out of the enclave"
    try:
        net = ipaddress.ip_network(dst if "/" in dst else (dst + ("/128" if ":" in dst else "/32")), strict=False)
    except ValueError:
        return False, "unparsable destination"
    if not any(net.version == loc.version and net.subnet_of(loc) for loc in _LOCAL_NETS):
        inside = [r for r in enclave.networks if r.version == net.version and net.subnet_of(r)]
        if not inside:
            return False, "destination %s is outside the enclave's ranges %s" % (
                net, ", ".join(str(r) for r in enclave.networks) or "(none declared)")
    if gateway:
        ok, why = enclave.inside(gateway)
        if not ok:
            return False, "gateway %s: %s" % (gateway, why)
    return True, "inside the enclave"


def _route_finding(res, enclave, source, line, dst, gateway, text):
    ok, why = judge_route(enclave, dst, gateway)
    if ok:
        res.note("%s: %s (%s)" % (source if line is None else "%s:%d" % (source, line), text, why))
    else:
        res.fail(source, text, why, line=line, label=enclave.labels.label(gateway or dst.split("/")[0]))


def check_routes(run, files, enclave, probe="192.0.2.1"):
    """Every route of every table (live, IPv4 and IPv6) and every route in the network configuration."""
    res = Result("routes", "no route leaves the enclave")
    for fam in ("-4", "-6"):
        argv = ["ip", fam, "-j", "route", "show", "table", "all"]
        rc, out, err = run(argv)
        cmd = " ".join(argv)
        if rc != 0:
            if fam == "-6" and "not supported" in (err or "").lower():
                res.note("%s: IPv6 is off on this node" % cmd)
                continue
            res.fail(cmd, (err or out).strip()[:200], "the routing table could not be read")
            continue
        try:
            routes = json.loads(out or "[]")
        except ValueError:
            res.fail(cmd, out[:200], "ip printed no JSON")
            continue
        judged = 0
        for r in routes:
            if r.get("type", "unicast") in NOT_FORWARDING:
                continue
            judged += 1
            dst = str(r.get("dst", ""))
            text = " ".join(str(x) for x in (dst, "via " + r["gateway"] if r.get("gateway") else "",
                                             "dev " + r["dev"] if r.get("dev") else "",
                                             "table " + str(r["table"]) if r.get("table") else "") if x)
            _route_finding(res, enclave, cmd, None, dst, r.get("gateway"), text)
        if not judged:
            res.note("%s: no forwarding route" % cmd)
    if probe:
        rc, out, err = run(["ip", "route", "get", probe])
        if rc == 0:
            res.fail("ip route get %s" % probe, " ".join(out.split()), "the kernel finds a route to a documentation address outside the enclave")
        else:
            res.note("ip route get %s: %s" % (probe, (err or out).strip() or "no route"))
    _configured_routes(res, files, enclave)
    return res


def _configured_routes(res, files, enclave):
    """Routes that the node's network configuration would add (systemd-networkd, ifupdown, NetworkManager)."""
    for path in files.glob(*NETWORKD):
        section = ""
        for n, line in files.lines(path, ("#", ";")):
            if line.startswith("["):
                section = line.strip("[]").strip()
                continue
            key, value = key_value(line)
            if key == "Gateway" and value:
                _route_finding(res, enclave, files.show(path), n, "default", value, line)
            elif key == "Destination" and section == "Route" and value:
                _route_finding(res, enclave, files.show(path), n, value, None, line)
    for path in files.glob(*IFUPDOWN):
        for n, line in files.lines(path):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "gateway" and len(parts) > 1:
                _route_finding(res, enclave, files.show(path), n, "default", parts[1], line)
            elif parts[0] in ("up", "post-up", "pre-up") and "route" in parts and "add" in parts:
                words = parts[parts.index("add") + 1:]
                words = [w for w in words if w not in ("-net", "-host", "-6", "-4")]
                if words:
                    via = words[words.index("via") + 1] if "via" in words[:-1] else (
                        words[words.index("gw") + 1] if "gw" in words[:-1] else None)
                    _route_finding(res, enclave, files.show(path), n, words[0], via, line)
    for path in files.glob(*NM_KEYFILES):
        for n, line in files.lines(path, ("#", ";")):
            key, value = key_value(line)
            if key == "gateway" and value:
                _route_finding(res, enclave, files.show(path), n, "default", value, line)
            elif key and re.match(r"^route\d+$", key) and value:
                dst, _, rest = value.partition(",")
                _route_finding(res, enclave, files.show(path), n, dst, rest.split(",")[0] or None, line)
