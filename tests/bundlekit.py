"""Tools to take a valid bundle apart and put a tampered one together.

Tests use these to build attacks the way an adversary would: starting from a
real bundle, changing one thing, and (where the attack needs it) re-signing
with real keys so that the only defect is the one under test.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from airgap import dsse
from airgap._internal import tarfmt
from airgap._internal.jsonutil import canonical_bytes


@dataclass
class Entry:
    name: str
    data: bytes
    mode: int = 0o644


def read_entries(path: Path) -> list[Entry]:
    out = []
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            out.append(Entry(m.name, tf.extractfile(m).read(), m.mode))
    return out


def write_entries(path: Path, entries: list[Entry], *, trailing: bytes = b"") -> Path:
    """Write entries in our strict dialect (no validation of names: attacks need bad ones)."""
    with open(path, "wb") as f:
        for e in entries:
            f.write(raw_header(e.name, len(e.data), e.mode))
            f.write(e.data + tarfmt.padding(len(e.data)))
        f.write(tarfmt.END_OF_ARCHIVE + trailing)
    return path


def raw_header(name: str, size: int, mode: int, typeflag: bytes = b"0", linkname: bytes = b"") -> bytes:
    """The attacker's own header writer: the writer's bytes for a valid (name, size, mode),
    and whatever it is given otherwise (``test_readers_agree`` checks the first half)."""
    buf = bytearray(tarfmt.BLOCK)
    raw = name.encode("utf-8")
    if len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        buf[345:345 + cut] = raw[:cut]
        raw = raw[cut + 1:]
    buf[0:len(raw)] = raw
    buf[100:108] = format(mode, "07o").encode() + b"\0"
    buf[108:116] = b"0000000\0"
    buf[116:124] = b"0000000\0"
    buf[124:136] = format(size, "011o").encode() + b"\0"
    buf[136:148] = b"00000000000\0"
    buf[148:156] = b" " * 8
    buf[156:157] = typeflag
    buf[157:157 + len(linkname)] = linkname
    buf[257:265] = b"ustar\x0000"
    buf[329:337] = b"0000000\0"  # devmajor
    buf[337:345] = b"0000000\0"  # devminor
    buf[148:156] = format(sum(buf), "06o").encode() + b"\0 "
    return bytes(buf)


def manifest_of(entries: list[Entry]) -> dict:
    return json.loads(entries[0].data)


def resign(entries: list[Entry], manifest_bytes: bytes, keys) -> list[Entry]:
    """Replace the manifest and signature with a fresh envelope signed by *keys*."""
    env = dsse.Envelope(manifest_bytes)
    for k in keys:
        env.add_signature(k)
    out = [Entry("manifest.json", manifest_bytes)] + [e for e in entries[1:-1]] + [Entry("signatures.json", env.to_bytes())]
    return out


def refresh_manifest(entries: list[Entry], keys, *, edit=None, raw: bytes | None = None) -> list[Entry]:
    """Recompute the member list from *entries* (so hashes match), apply *edit*, re-sign."""
    doc = manifest_of(entries)
    doc["members"] = [
        {"path": e.name, "size": len(e.data), "sha256": hashlib.sha256(e.data).hexdigest(), "mode": e.mode}
        for e in entries[1:-1]
    ]
    if edit:
        edit(doc)
    data = raw if raw is not None else canonical_bytes(doc)
    return resign(entries, data, keys)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def member_offset(path: Path, name: str) -> tuple[int, int]:
    """(data offset, size) of a member, found by walking headers."""
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            if m.name == name:
                return m.offset_data, m.size
    raise KeyError(name)


def evil_tar(path: Path, members: list[tuple[str, bytes, int, bytes, bytes]]) -> Path:
    """Write raw members (name, data, mode, typeflag, linkname) with no safety at all."""
    with open(path, "wb") as f:
        for name, data, mode, typeflag, link in members:
            f.write(raw_header(name, len(data), mode, typeflag, link))
            f.write(data + tarfmt.padding(len(data)))
        f.write(tarfmt.END_OF_ARCHIVE)
    return path


def tarfile_bytes(build) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        build(tf)
    return buf.getvalue()


def rewrite_blob(entries: list[Entry], old: str, data: bytes, moved: dict[str, tuple[str, int]] | None = None) -> dict[str, tuple[str, int]]:
    """Replace blob *old* with *data* and carry the new digest up: every OCI document and
    index.json that points at it is rewritten (and renamed, recursively).  Returns
    {old digest: (new digest, size)} for every document that moved, to fix the manifest's
    image records with :func:`retarget_images`."""
    moved = {} if moved is None else moved
    new = "sha256:" + hashlib.sha256(data).hexdigest()
    moved[old] = (new, len(data))
    entry = next(e for e in entries if e.name == "blobs/sha256/" + old.split(":")[1])
    entry.name, entry.data = "blobs/sha256/" + new.split(":")[1], data
    for e in list(entries):
        document = e.name == "index.json" or (e.name.startswith("blobs/") and e.data[:1] == b"{")
        if e is entry or not document or old.encode() not in e.data:
            continue
        doc = json.loads(e.data)
        for d in doc.get("manifests", []) + [doc.get("config") or {}] + doc.get("layers", []):
            if d.get("digest") == old:
                d["digest"], d["size"] = new, len(data)
        if e.name == "index.json":
            e.data = canonical_bytes(doc)
        else:
            rewrite_blob(entries, "sha256:" + e.name.rsplit("/", 1)[1], json.dumps(doc, separators=(",", ":")).encode(), moved)
    old_hex, new_hex = old.split(":")[1], new.split(":")[1]
    for e in entries:  # an image's SBOM follows the image to its new digest
        if e.name.startswith("sbom/") and old_hex in e.name:
            e.name, e.data = e.name.replace(old_hex, new_hex), e.data.replace(old_hex.encode(), new_hex.encode())
    head = [e for e in entries if not e.name.startswith(("blobs/", "files/", "sbom/"))][:-1]
    blobs = sorted((e for e in entries if e.name.startswith("blobs/")), key=lambda e: e.name)
    files = [e for e in entries if e.name.startswith("files/")]
    sboms = sorted((e for e in entries if e.name.startswith("sbom/")), key=lambda e: e.name)
    entries[:] = head + blobs + files + sboms + [entries[-1]]
    return moved


def retarget_images(doc: dict, moved: dict[str, tuple[str, int]]) -> None:
    """Point the manifest's image records at the documents :func:`rewrite_blob` moved."""
    for img in doc["images"]:
        while img["digest"] in moved:
            img["digest"], img["size"] = moved[img["digest"]]
