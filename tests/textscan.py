"""Listed endpoints mentioned in free text: how the tests prove sample configs name none.

airgap itself never scans text (the spec's image sources and the check
module's observed endpoints are matched one by one); this scanner serves the
tests that hold the sample configs and images to the sovereignty list.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from airgap._internal import endpoints
from airgap.sovereignty import Match, SovereigntyPolicy, default_policy

_HOSTNAME_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*")
_HOST_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]+")
_V6_TOKEN_RE = re.compile(r"(?<![A-Za-z0-9_.:-])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[A-Za-z0-9_.-]+)?(?![A-Za-z0-9_:-])")
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


@dataclass(frozen=True)
class Found:
    match: Match
    span: tuple[int, int]  # (start, end) offsets in the scanned text
    line: int  # 1-based


def scan_text(text: str, policy: SovereigntyPolicy | None = None) -> list[Found]:
    """Every listed endpoint mentioned in *text*, in order of appearance.

    Host names are taken as whole dotted tokens, so ``gcr.io.internal``,
    ``notgcr.io`` and ``my_gcr.io`` are not mentions of ``gcr.io``; IPv4 and
    IPv6 addresses are recognised in any notation ``ipaddress`` accepts.
    """
    policy = policy or default_policy()
    found: list[Found] = []

    def add(endpoint: str, host: str, span: tuple[int, int]) -> None:
        m = policy.match(host)
        if m is not None:
            m = dataclasses.replace(m, endpoint=endpoint)
            found.append(Found(m, span, text.count("\n", 0, span[0]) + 1))

    v6_spans: list[tuple[int, int]] = []
    for m in _V6_TOKEN_RE.finditer(text):
        token = m.group(0).split("%", 1)[0]
        if token.count(":") < 2:
            continue
        ip = endpoints.as_ip(token)
        if ip is None:
            continue
        v6_spans.append(m.span())
        add(m.group(0), str(ip), m.span())
    for m in _HOST_TOKEN_RE.finditer(text):
        start, end = m.span()
        if any(s <= start and end <= e for s, e in v6_spans):
            continue
        token = m.group(0)
        stripped = token.strip(".-")
        if not stripped or "." not in stripped:
            continue
        offset = start + token.index(stripped)
        host = stripped.lower()
        if ".." in host or not (_IPV4_RE.fullmatch(host) or _HOSTNAME_RE.fullmatch(host)):
            continue
        ip = endpoints.as_ip(host)
        add(stripped, str(ip) if ip is not None else host, (offset, offset + len(stripped)))
    found.sort(key=lambda f: f.span)
    return found
