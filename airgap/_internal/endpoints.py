# Copyright: airgap project
# License: EUPL-1.2
"""One endpoint matcher for the whole project.

Used by the build-side sovereignty policy (:mod:`airgap.sovereignty`) and by the
Ansible check modules, which run it on hosts that do not have the toolkit:
``playbooks/module_utils/airgap_endpoints.py`` is this very file (a symlink),
so Ansible ships it to the target.  It must therefore stay self-contained:
standard library only, no airgap imports, Python 3.6+ syntax at run time.

Endpoints are reduced to a host first (:func:`normalise`): lower case, no
scheme, user info, port, path, brackets, zone or trailing dot; IDNA for
non-ASCII names; IP addresses in canonical form, IPv4-mapped IPv6 unmapped.

Pattern syntax (:func:`parse_pattern`), one syntax everywhere (sovereignty
policy, inventory patterns, the enclave's domains and ranges):

``example.com``
    that host **and every name below it** (``a.example.com``,
    ``a.b.example.com``), never ``example.com.evil`` or ``notexample.com``;
``*.example.com``
    every name strictly below ``example.com``, not the apex itself;
``192.0.2.1``, ``2001:db8::1``
    that address;
``192.0.2.0/24``, ``2001:db8::/32``
    that network (host bits must be zero).

When several patterns match, the most specific wins: the pattern equal to the
host, then the longest matching suffix (``*.d`` before ``d`` for the same
suffix); an exact address before the narrowest network.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = ["PatternError", "EndpointSet", "normalise", "as_ip", "parse_pattern", "split_host_port", "in_networks"]

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME_RE = re.compile(r"%s(?:\.%s)*\Z" % (_LABEL, _LABEL))


class PatternError(ValueError):
    """A pattern that is not valid in the syntax above, or listed twice."""


def as_ip(host):
    """The address *host* denotes (IPv4-mapped IPv6 unmapped), or ``None``."""
    try:
        ip = ipaddress.ip_address(str(host))
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def split_host_port(value):
    """``(host, port)`` of ``host``, ``host:port``, ``[v6]:port``, a URL or an image reference.

    The host is returned as written (not normalised); *port* is ``None`` when absent.
    """
    s = str(value).strip().strip("\"'").strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    s = s.split("/", 1)[0].rpartition("@")[2]
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest[1:] if rest.startswith(":") and rest[1:].isdigit() else None
        return host, port
    if s.count(":") == 1:
        host, port = s.split(":", 1)
        return host, port if port.isdigit() else None
    return s, None


def normalise(endpoint):
    """Reduce a host, ``host:port``, URL, image reference or IP to a bare lower-case host.

    IP addresses come back in compressed canonical form; an empty string means
    nothing host-like was found.
    """
    s = str(endpoint).strip()
    if "://" in s:
        try:
            host = urlsplit(s).hostname or ""
        except ValueError:
            host = ""
    else:
        host = split_host_port(s)[0]
    host = host.split("%", 1)[0].lower().rstrip(".")  # IPv6 zone, FQDN dot
    if host and not _is_ascii(host):
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            pass
    ip = as_ip(host)
    return str(ip) if ip is not None else host


def _is_ascii(text):
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        return False
    return True


def parse_pattern(text):
    """``(kind, key)`` of a pattern: kind is ``host``, ``below``, ``ip`` or ``net``.

    Raises :class:`PatternError` naming the pattern when it is not valid.
    """
    pattern = str(text).strip().lower().rstrip(".") if text is not None else ""
    if "/" in pattern:
        try:
            return "net", ipaddress.ip_network(pattern, strict=True)
        except ValueError:
            raise PatternError("invalid network pattern %r (an address/prefix with no host bits set)" % text) from None
    ip = as_ip(pattern)
    if ip is not None:
        return "ip", ip
    if pattern.startswith("*.") and _HOSTNAME_RE.match(pattern[2:]):
        return "below", pattern[2:]
    if _HOSTNAME_RE.match(pattern):
        return "host", pattern
    raise PatternError(
        "invalid pattern %r (a host or domain, *.domain, an IP address or a network)" % text
    )


class EndpointSet:
    """Patterns, each with a value; look up which pattern (and value) an endpoint falls under."""

    def __init__(self, items=()):
        self._host = {}
        self._below = {}
        self._ips = {}
        self._nets = []
        self._count = 0
        for pattern, value in items:
            self.add(pattern, value)

    def __len__(self):
        return self._count

    def add(self, pattern, value=None):
        """Add *pattern* with *value*; :class:`PatternError` when invalid or listed twice."""
        kind, key = parse_pattern(pattern)
        if kind == "net":
            if any(net == key for net, _p, _v in self._nets):
                raise PatternError("pattern %r is listed twice" % pattern)
            self._nets.append((key, pattern, value))
            self._nets.sort(key=lambda item: -item[0].prefixlen)
        else:
            table = {"host": self._host, "below": self._below, "ip": self._ips}[kind]
            if key in table:
                raise PatternError("pattern %r is listed twice" % pattern)
            table[key] = (pattern, value)
        self._count += 1

    def lookup(self, endpoint):
        """``(pattern, value)`` of the most specific pattern *endpoint* falls under, or ``None``."""
        return self.lookup_host(normalise(endpoint))

    def lookup_host(self, host):
        """Like :meth:`lookup` for an already normalised host."""
        if not host:
            return None
        ip = as_ip(host)
        if ip is not None:
            if ip in self._ips:
                return self._ips[ip]
            for net, pattern, value in self._nets:
                if net.version == ip.version and ip in net:
                    return pattern, value
            return None
        if host in self._host:
            return self._host[host]
        labels = host.split(".")
        for i in range(1, len(labels)):  # the longest proper suffix first
            suffix = ".".join(labels[i:])
            hit = self._below.get(suffix) or self._host.get(suffix)
            if hit is not None:
                return hit
        return None

    def __contains__(self, endpoint):
        return self.lookup(endpoint) is not None


def in_networks(host, networks):
    """The first network of *networks* (``ipaddress`` objects) holding the address *host*, or ``None``."""
    ip = as_ip(host)
    if ip is None:
        return None
    for net in networks:
        if net.version == ip.version and ip in net:
            return net
    return None
