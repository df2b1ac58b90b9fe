"""Package databases as found in image layers, and the purl of each package.

Readers take the bytes of one database file and return :class:`Package` records;
they never fail on odd content (a stanza without a name is skipped and counted),
because a build must not break on a quirky image, but what they skip is said.

* dpkg: ``var/lib/dpkg/status`` and the one-file-per-package ``var/lib/dpkg/status.d/``
  of distroless images.  Packages whose state is ``not-installed`` or
  ``config-files`` are not installed software and are left out.
* apk: ``lib/apk/db/installed``.
* Python: ``*.dist-info/METADATA`` anywhere (Name and Version headers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import HeaderParser

__all__ = [
    "PARSERS",
    "Package",
    "Parsed",
    "build_purl",
    "parse_apk",
    "parse_dpkg",
    "parse_os_release",
    "parse_python_metadata",
    "purl_encode",
]

_NOT_INSTALLED = {"not-installed", "config-files"}
# Unreserved characters and ':' (the purl types' own examples write deb epochs as 1:2.4.47-2).
_UNRESERVED = re.compile(r"[A-Za-z0-9._~:-]")


@dataclass(frozen=True)
class Package:
    type: str  # purl type: deb, apk, pypi
    name: str
    version: str
    arch: str | None = None
    source: str | None = None  # deb/apk: the source package (origin), when it differs from the name

    def purl(self, namespace: str | None = None, distro: str | None = None) -> str:
        qualifiers = {}
        if self.arch:
            qualifiers["arch"] = self.arch
        if distro:
            qualifiers["distro"] = distro
        name = _pypi_name(self.name) if self.type == "pypi" else self.name.lower() if self.type == "deb" else self.name
        return build_purl(self.type, namespace, name, self.version, qualifiers)


def purl_encode(text: str) -> str:
    """Percent-encode everything but unreserved characters and ':' ('+' becomes %2B)."""
    return "".join(c if _UNRESERVED.match(c) else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


def build_purl(type_: str, namespace: str | None, name: str, version: str | None, qualifiers: dict[str, str]) -> str:
    out = f"pkg:{type_}/"
    if namespace:
        out += "/".join(purl_encode(seg) for seg in namespace.strip("/").split("/")) + "/"
    out += purl_encode(name)
    if version:
        out += "@" + purl_encode(version)
    pairs = sorted(f"{k.lower()}={purl_encode(v)}" for k, v in qualifiers.items() if v)
    if pairs:
        out += "?" + "&".join(pairs)
    return out


def _pypi_name(name: str) -> str:
    # PEP 503 normalisation, which the purl pypi type asks for.
    return re.sub(r"[-_.]+", "-", name).lower()


def _stanzas(text: str):
    """RFC 822-style paragraphs of a dpkg or similar file: {field: value} (first line of each field)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
                fields = {}
            continue
        if line[0] in " \t":
            continue  # continuation of a multi-line field (Description, Conffiles): not needed
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    if fields:
        yield fields


@dataclass
class Parsed:
    packages: list[Package]
    skipped: int = 0  # stanzas without a usable name or version


def parse_dpkg(data: bytes) -> Parsed:
    out = Parsed([])
    for f in _stanzas(data.decode("utf-8", "replace")):
        name, version = f.get("package"), f.get("version")
        if not name or not version:
            out.skipped += 1
            continue
        status = f.get("status", "install ok installed").split()
        if status and status[-1] in _NOT_INSTALLED:
            continue
        source = f.get("source", "").split(" ")[0] or None
        out.packages.append(Package("deb", name, version, f.get("architecture") or None,
                                    source if source and source != name else None))
    return out


def parse_apk(data: bytes) -> Parsed:
    out = Parsed([])
    fields: dict[str, str] = {}

    def flush() -> None:
        if not fields:
            return
        if fields.get("P") and fields.get("V"):
            origin = fields.get("o")
            out.packages.append(Package("apk", fields["P"], fields["V"], fields.get("A") or None,
                                        origin if origin and origin != fields["P"] else None))
        else:
            out.skipped += 1
        fields.clear()

    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            flush()
        elif len(line) > 1 and line[1] == ":":
            fields.setdefault(line[0], line[2:].strip())
    flush()
    return out


def parse_python_metadata(data: bytes) -> Parsed:
    head = data.decode("utf-8", "replace").split("\n\n", 1)[0]
    msg = HeaderParser().parsestr(head)
    name, version = (msg.get("Name") or "").strip(), (msg.get("Version") or "").strip()
    if not name or not version:
        return Parsed([], 1)
    return Parsed([Package("pypi", name, version)])


def parse_os_release(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out


PARSERS = {"dpkg": parse_dpkg, "apk": parse_apk, "python": parse_python_metadata}
