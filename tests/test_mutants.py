"""Mutants of a valid bundle: the verifier rejects each one, or every reader agrees on it.

* Random: flip, insert or delete bytes anywhere; an accepted mutant must cover
  byte-identical content, and GNU tar, tarfile and airgap must read the same
  members from it.  The default suite runs 2,000; ``AIRGAP_MUTANTS=N`` (the
  separate job, ``pytest -m mutants``) runs more.
* Header fields, one by one: every byte range of a ustar header (name tail after
  the NUL, mode, uid, gid, size, mtime, chksum, typeflag, linkname, magic,
  version, uname, gname, devmajor, devminor, prefix, the pad at 500-511), spelled
  the ways other readers accept (``+``, spaces, ``0o``, ``_``, negatives, no NUL,
  base-256, GNU base-64), with the checksum recomputed so that field is the only
  defect.  Each must be refused, naming the member and the field, or agreed on by
  every reader.
* JSON: keys that collide case-insensitively (Go's encoding/json matching) in
  every kind of JSON document a bundle carries or is checked against, refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap import verify as verify_mod
from airgap._internal import tarfmt
from airgap._internal.jsonutil import canonical_bytes
from airgap._internal.positional import FileSource
from airgap.exceptions import AirgapError
from tests import bundlekit as kit
from tests.helpers import airgap
from tests.readers import assert_tar_readers_agree

MUTANTS = int(os.environ.get("AIRGAP_MUTANTS", "2000"))
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def covered(path) -> dict[str, str]:
    """sha256 of every member the manifest covers (and the manifest itself)."""
    out = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            if m.name != "signatures.json":
                out[m.name] = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def original(signed_bundle):
    data = signed_bundle.path.read_bytes()
    return data, covered(signed_bundle.path), signed_bundle.trust


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 600)),
)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for kind, where, arg in ops:
        pos = int(where * len(buf)) if buf else 0
        if kind == "flip" and buf:
            buf[min(pos, len(buf) - 1)] ^= arg
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "delete" and buf:
            del buf[pos:pos + arg]
    return bytes(buf)


@settings(max_examples=MUTANTS, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_every_mutant_is_rejected_or_equivalent(original, tmp_path_factory, ops):
    data, want, trust = original
    mutant = mutate(data, ops)
    if mutant == data:
        return
    path = tmp_path_factory.getbasetemp() / "mutant.tar"
    path.write_bytes(mutant)
    try:
        verify_mod.verify(path, trust_path=trust, now=NOW, workers=1)
    except AirgapError as exc:
        assert exc.exit_code in (1, 2)
        assert str(exc)
        return
    # Accepted: then everything signed is exactly the original, and every reader says so.
    assert covered(path) == want
    assert_tar_readers_agree(path)


# --------------------------------------------------------------------------- header fields


def _spellings(value: int, width: int) -> list[bytes]:
    """The same number spelled the ways tar readers other than ours accept (width incl. terminator)."""
    d = width - 1
    out = [
        b" " + format(value, f"0{d - 1}o").encode() + b"\0",   # leading space
        format(value, f"0{d}o").encode() + b" ",               # space, not NUL
        format(value, f"0{d + 1}o").encode()[-width:],         # no terminator at all
        b"+" + format(value, f"0{d - 1}o").encode() + b"\0",   # sign (GNU tar: base-64)
        b"0o" + format(value, f"0{d - 2}o").encode() + b"\0",  # Python's int(x, 8) takes it
        b"0_" + format(value, f"0{d - 2}o").encode() + b"\0",  # and this
        format(value, f"{d}o").encode() + b"\0",               # space-padded on the left
        b"\x80" + value.to_bytes(width - 1, "big"),            # base-256 for a small value
    ]
    if value == 0:
        out.append(b"-" + b"0" * (d - 1) + b"\0")
    return [x for x in out if len(x) == width]


def _mutations(block: bytes) -> list[tuple[str, int, bytes, bool]]:
    """(field, offset, new bytes, respelled) for one header; every field of tarfmt.FIELDS at
    least once.  *respelled*: the field still means what it meant, to a lenient reader."""
    fields = {name: (start, end) for name, start, end in tarfmt.FIELDS}
    out: list[tuple[str, int, bytes, bool]] = []
    name_len = block[0:100].index(b"\0") if b"\0" in block[0:100] else 100
    if name_len < 99:
        out.append(("name", name_len + 1, b"X", True))  # bytes after the name's NUL
    for field in ("mode", "uid", "gid", "size", "mtime", "devmajor", "devminor"):
        start, end = fields[field]
        value = int(block[start:end - 1], 8)
        out += [(field, start, v, True) for v in _spellings(value, end - start)]
        out.append((field, start, format(value + 1, f"0{end - start - 1}o").encode() + b"\0", False))
    size_start = fields["size"][0]
    out += [("size", size_start, b"+AAAAAAAAAA\0", False), ("size", size_start, b"\xff" * 12, False),
            ("devmajor", fields["devmajor"][0], b"\0" * 8, True), ("devminor", fields["devminor"][0], b"\0" * 8, True)]
    out += [("typeflag", 156, t, True) for t in (b"\0", b"7", b"1", b"2", b"5", b"x", b"g", b"L", b"A")]
    out += [(f, o, v, True) for f, o, v in (
        ("linkname", 157, b"x"), ("linkname", 256, b"x"), ("magic", 257, b"ustar "), ("magic", 257, b"USTAR\0"),
        ("version", 263, b"  "), ("version", 263, b"\0\0"), ("version", 263, b"01"),
        ("uname", 265, b"root"), ("uname", 296, b"x"), ("gname", 297, b"root"), ("gname", 328, b"x"),
        ("prefix", 345, b"x"), ("prefix", 346, b"x"), ("prefix", 499, b"x"), ("pad", 500, b"x"), ("pad", 511, b"\x01"))]
    total = sum(block[:148]) + 256 + sum(block[156:])
    out += [("chksum", 148, c, True) for c in (format(total, "06o").encode() + b"  ", format(total, "07o").encode() + b"\0",
                                           b" " + format(total, "06o").encode() + b"\0", format(total, "06o").encode() + b"\0\0")]
    out.append(("chksum", 148, format(total + 1, "06o").encode() + b"\0 ", False))
    return out


def _with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = format(sum(block), "06o").encode() + b"\0 "
    return bytes(block)


# What a refusal says about each field, besides the member's name.
_NEEDLE = {"chksum": "chksum", "typeflag": "allowed in a bundle", "linkname": "link target", "magic": "ustar",
           "version": "ustar"}


def test_every_header_field_mutant_is_refused_or_agreed_on(signed_bundle, tmp_path):
    path = signed_bundle.copy(tmp_path)
    with FileSource(path) as src:
        members = tarfmt.scan(src, max_members=100, artifact=str(path))
    targets = [members[0], next(m for m in members if m.name.startswith("blobs/")),
               next(m for m in members if m.name.startswith("files/")), members[-1]]
    want = covered(path)
    refused = accepted = 0
    fields_seen: set[str] = set()
    with open(path, "r+b") as f:
        for member in targets:
            original = os.pread(f.fileno(), tarfmt.BLOCK, member.header_offset)
            for field, offset, data, respelled in _mutations(original):
                block = bytearray(original)
                block[offset:offset + len(data)] = data
                mutant = bytes(block) if field == "chksum" else _with_checksum(block)
                if mutant == original:
                    continue
                fields_seen.add(field)
                os.pwrite(f.fileno(), mutant, member.header_offset)
                try:
                    verify_mod.verify(path, trust_path=signed_bundle.trust, now=NOW, workers=1)
                except AirgapError as exc:
                    refused += 1
                    message = str(exc)
                    assert exc.exit_code == 1, (member.name, field, data, message)
                    if respelled and field not in ("name", "prefix"):
                        assert member.name in message, (field, data, message)
                        assert _NEEDLE.get(field, f"field {field}") in message, (member.name, field, data, message)
                else:
                    accepted += 1
                    assert covered(path) == want
                    assert_tar_readers_agree(path)
                finally:
                    os.pwrite(f.fileno(), original, member.header_offset)
    assert fields_seen == {name for name, _, _ in tarfmt.FIELDS}
    assert refused > 300 and accepted == 0, (refused, accepted)
    assert verify_mod.verify(path, trust_path=signed_bundle.trust, now=NOW, workers=1).accepted


# --------------------------------------------------------------------------- JSON documents


def _collide(data: bytes, key: str, value: str = "null") -> bytes:
    """*data* (a JSON object) with a key added that differs from *key* only in case."""
    other = key.upper() if key != key.upper() else key.lower()
    return data[:1] + f'"{other}":{value},'.encode() + data[1:]


def _image(entries, repository):
    doc = kit.manifest_of(entries)
    return next(i for i in doc["images"] if i["repository"] == repository)


def _blob(entries, digest):
    return next(e for e in entries if e.name == "blobs/sha256/" + digest.split(":")[1])


def _rewritten(entries, old, data, keys, path):
    moved = kit.rewrite_blob(entries, old, data)
    entries = kit.refresh_manifest(entries, keys, edit=lambda d: kit.retarget_images(d, moved))
    return kit.write_entries(path, entries)


def _manifest_doc(entries, keys, path):
    return kit.write_entries(path, kit.resign(entries, _collide(entries[0].data, "name", '"x"'), keys))


def _signatures(entries, keys, path):
    entries[-1].data = _collide(entries[-1].data, "payload", '"e30="')
    return kit.write_entries(path, entries)


def _index_json(entries, keys, path):
    e = next(e for e in entries if e.name == "index.json")
    e.data = _collide(e.data, "manifests", "[]")
    return kit.write_entries(path, kit.refresh_manifest(entries, keys))


def _oci_layout(entries, keys, path):
    e = next(e for e in entries if e.name == "oci-layout")
    e.data = _collide(e.data, "imageLayoutVersion", '"9.9.9"')
    return kit.write_entries(path, kit.refresh_manifest(entries, keys))


def _image_manifest(entries, keys, path):
    img = _image(entries, "pilot/status")
    return _rewritten(entries, img["digest"], _collide(_blob(entries, img["digest"]).data, "layers", "[]"), keys, path)


def _image_index(entries, keys, path):
    img = _image(entries, "pilot/multi")
    return _rewritten(entries, img["digest"], _collide(_blob(entries, img["digest"]).data, "manifests", "[]"), keys, path)


def _index_child(entries, keys, path):
    index = json.loads(_blob(entries, _image(entries, "pilot/multi")["digest"]).data)
    child = index["manifests"][0]["digest"]
    return _rewritten(entries, child, _collide(_blob(entries, child).data, "config", "{}"), keys, path)


def _image_config(entries, keys, path):
    manifest = json.loads(_blob(entries, _image(entries, "pilot/notes")["digest"]).data)
    config = manifest["config"]["digest"]
    return _rewritten(entries, config, _collide(_blob(entries, config).data, "architecture", '"arm64"'), keys, path)


JSON_MUTANTS = {
    "manifest.json": (_manifest_doc, "manifest.json"),
    "signatures.json": (_signatures, "signatures.json"),
    "index.json": (_index_json, "index.json"),
    "oci-layout": (_oci_layout, "oci-layout"),
    "image-manifest": (_image_manifest, "pilot/status"),
    "image-index": (_image_index, "pilot/multi"),
    "index-child-manifest": (_index_child, "pilot/multi"),
    "image-config": (_image_config, "config"),
}


@pytest.mark.parametrize("kind", sorted(JSON_MUTANTS))
def test_case_colliding_keys_are_refused_in_every_bundle_document(signed_bundle, keyring, tmp_path, kind):
    make, artifact = JSON_MUTANTS[kind]
    keys = [keyring["builder-1"], keyring["officer-1"]]
    path = make(kit.read_entries(signed_bundle.path), keys, tmp_path / "mutant.tar")
    r = airgap("verify", path, "--trust", signed_bundle.trust)
    assert r.code == 1, (kind, r.out, r.err)
    assert "collide case-insensitively" in r.err and artifact in r.err, (kind, r.err)


def test_case_colliding_keys_are_refused_in_the_trust_policy(signed_bundle, tmp_path):
    policy = signed_bundle.trust.read_bytes()
    doc = json.loads(policy)
    doc["signed"]["Expires"] = doc["signed"]["expires"]
    trust = tmp_path / "trust.json"
    trust.write_bytes(canonical_bytes(doc))
    r = airgap("verify", signed_bundle.path, "--trust", trust)
    assert r.code in (1, 2) and "collide case-insensitively" in r.err and "trust.json" in r.err, r.err


def test_case_colliding_keys_are_refused_in_the_part_index(signed_bundle, tmp_path):
    out = tmp_path / "parts"
    assert airgap("split", signed_bundle.path, "--size", "64K", "-o", out).code == 0
    [index] = out.glob("*.parts.json")
    index.write_bytes(_collide(index.read_bytes(), "parts", "[]"))
    r = airgap("verify", out, "--trust", signed_bundle.trust)
    assert r.code in (1, 2) and "collide case-insensitively" in r.err and "parts.json" in r.err, r.err
