"""One reader, or proof that every reader agrees (docs/bundle-format.md, "Who else reads it").

For every bundle verify accepts, GNU tar (listing and extraction), Python's
tarfile and airgap see the same members with the same bytes; for every image,
skopeo and umoci (on the OCI layout airgap's own reader wrote out) see the
manifest, config and layers airgap checked.  The tar header writer is the one
source of header bytes (the test kit's attacker writer agrees with it), sizes
above 8 GiB round-trip through base-256 in every reader, and the JSON key
folding is at least as strict as Go's.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile

import pytest

from airgap._internal import tarfmt
from airgap._internal.jsonutil import fold_key, loads_strict
from airgap._internal.positional import FileSource
from airgap.exceptions import ArchiveError, FormatError
from tests import bundlekit as kit
from tests.fixtures.bundles import CREATED
from tests.helpers import airgap, write_spec
from tests.readers import assert_oci_readers_agree, assert_tar_readers_agree


def _verified(path, trust):
    r = airgap("verify", path, "--trust", trust)
    assert r.code == 0, r.out + r.err


# --------------------------------------------------------------------------- tar


@pytest.mark.parametrize("name", [
    "manifest.json",
    "files/" + "n" * 94,                       # exactly 100 bytes: no NUL after the name
    "files/" + "d" * 60 + "/" + "f" * 99,      # needs the prefix field
    "files/" + "/".join(["dir"] * 40) + "/x",  # long, many slashes: the writer picks the split
    "files/caf\u00e9/\u00fcber.conf",          # NFC, non-ASCII
])
@pytest.mark.parametrize("size,mode", [(0, 0o644), (1, 0o755), (512, 0o600), (tarfmt._MAX_OCTAL_SIZE, 0o644)])
def test_one_source_of_header_bytes(name, size, mode):
    """The test kit's raw writer (for attacks), tarfile and the reader all agree with header()."""
    block = tarfmt.header(name, size, mode)
    assert kit.raw_header(name, size, mode) == block
    member = tarfmt.parse_header(block, 0)
    assert (member.name, member.size, member.mode) == (name, size, mode)
    info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    assert (info.name, info.size, info.mode, info.type, info.uid, info.gid, info.mtime) == (name, size, mode, tarfile.REGTYPE, 0, 0, 0)


@pytest.mark.parametrize("size", [tarfmt._MAX_OCTAL_SIZE + 1, 8 * 1024**3 + 12345, 2**40, 2**80])
def test_base256_size_round_trips(size):
    block = tarfmt.header("files/big", size, 0o644)
    assert block[124] == 0x80
    assert tarfmt.parse_header(block, 0).size == size
    assert tarfile.TarInfo.frombuf(block, "utf-8", "strict").size == size


def test_base256_below_8_gib_is_refused():
    block = bytearray(tarfmt.header("files/small", 10, 0o644))
    block[124:136] = bytes([0x80]) + (10).to_bytes(11, "big")
    block[148:156] = format(sum(block[:148]) + 256 + sum(block[156:]), "06o").encode() + b"\0 "
    with pytest.raises(ArchiveError, match="base-256 is written only for sizes above"):
        tarfmt.parse_header(bytes(block), 0)


def test_member_above_8_gib_every_reader_lists_the_same(tmp_path):
    """A sparse archive with a 8 GiB + 1 byte member: airgap, tarfile and GNU tar agree on its size."""
    size = 8 * 1024**3 + 1
    path = tmp_path / "big.tar"
    with open(path, "wb") as f:
        f.write(tarfmt.header("files/big.img", size, 0o644))
        f.seek(tarfmt.BLOCK + tarfmt.padded(size))
        f.write(tarfmt.END_OF_ARCHIVE)
    with FileSource(path) as src:
        [member] = tarfmt.scan(src, max_members=10, artifact=str(path))
    assert (member.name, member.size) == ("files/big.img", size)
    with tarfile.open(path) as tf:
        assert [(m.name, m.size) for m in tf] == [("files/big.img", size)]
    out = subprocess.run(["tar", "--numeric-owner", "-tvf", str(path)], capture_output=True, text=True, check=True, timeout=120)
    fields = out.stdout.split()
    assert (fields[0], fields[1], int(fields[2]), fields[-1]) == ("-rw-r--r--", "0/0", size, "files/big.img"), out.stdout


def test_sample_bundle_every_tar_reader_agrees(signed_bundle):
    _verified(signed_bundle.path, signed_bundle.trust)
    seen = assert_tar_readers_agree(signed_bundle.path)
    r = airgap("inspect", signed_bundle.path, "--json")
    listed = {m["path"]: (m["mode"], m["size"], m["sha256"]) for m in r.json()["manifest"]["members"]}
    assert {k: v for k, v in seen.items() if k not in ("manifest.json", "signatures.json")} == listed


@pytest.fixture(scope="module")
def awkward_bundle(tmp_path_factory, signed_bundle):
    """Names and sizes at the edges of ustar: prefix split, exactly 100 bytes, non-ASCII,
    spaces, empty and block-sized files, an executable."""
    root = tmp_path_factory.mktemp("awkward")
    spec_dir = root / "spec"
    cfg = spec_dir / "cfg"
    long_dir = cfg / ("d" * 70) / ("e" * 50)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 99)).write_bytes(b"deep\n")
    (cfg / ("n" * (100 - len("files/c/")))).write_bytes(b"x" * 100)
    (cfg / "caf\u00e9 \u00fcber.conf").write_bytes("s\u00fc\u00df\n".encode())
    (cfg / "empty").write_bytes(b"")
    (cfg / "block").write_bytes(b"b" * 512)
    (cfg / "run.sh").write_bytes(b"#!/bin/sh\necho run\n")
    (cfg / "run.sh").chmod(0o755)
    spec = write_spec(spec_dir, images=[], files=[{"src": "cfg/", "dest": "c/"}])
    out = root / "awkward.tar"
    keyring = signed_bundle.keyring
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", CREATED, "--quiet")
    assert r.code == 0, r.err
    assert airgap("sign", out, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
    return out


def test_awkward_names_every_tar_reader_agrees(awkward_bundle, signed_bundle):
    _verified(awkward_bundle, signed_bundle.trust)
    seen = assert_tar_readers_agree(awkward_bundle)
    assert any(len(n.encode()) > 100 for n in seen) and any(len(n.encode()) == 100 for n in seen)
    assert seen["files/c/run.sh"][0] == 0o755 and seen["files/c/empty"][1] == 0


def test_sample_bundle_skopeo_and_umoci_see_what_airgap_checked(signed_bundle, tmp_path):
    """Every image manifest (the index's children too): the same bytes, config and layers."""
    _verified(signed_bundle.path, signed_bundle.trust)
    assert assert_oci_readers_agree(signed_bundle.path, tmp_path) == 4  # status, notes, multi amd64 + arm64


# --------------------------------------------------------------------------- JSON


def _case_orbits() -> list[set[str]]:
    """Every set of code points that single-character case mappings join (Go's SimpleFold
    orbits are built from the same Unicode data: UnicodeData upper/lower plus CaseFolding)."""
    parent: dict[str, str] = {}

    def find(c: str) -> str:
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        for m in (c.lower(), c.upper(), c.title(), c.casefold()):
            if len(m) == 1 and m != c:
                a, b = find(c), find(m)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    orbits: dict[str, set[str]] = {}
    for c in parent:
        orbits.setdefault(find(c), set()).add(c)
    for orbit in orbits.values():
        orbit.add(min(orbit))
    return list(orbits.values())


def test_key_folding_is_at_least_as_strict_as_go():
    orbits = _case_orbits()
    assert len(orbits) > 1000
    for orbit in orbits:
        assert len({fold_key(c) for c in orbit}) == 1, sorted(orbit)
    # The pairs Go's fold.go is known for, and ones only full folding joins.
    for a, b in [("k", "\u212a"), ("K", "\u212a"), ("s", "\u017f"), ("S", "\u017f"), ("\u00df", "\u1e9e"),
                 ("\u00b5", "\u03bc"), ("i", "\u0131"), ("\u0390", "\u1fd3"), ("\u03c2", "\u03a3"),
                 ("mediaType", "MEDIATYPE"), ("layers", "LAYERS")]:
        assert fold_key(a) == fold_key(b), (a, b)
    assert fold_key("layers") != fold_key("layer")


@pytest.mark.parametrize("doc,needle", [
    (b'{"layers":[],"Layers":[]}', "'layers' and 'Layers'"),
    (b'{"config":{},"CONFIG":{}}', "'config' and 'CONFIG'"),
    (b'{"kind":1,"\\u212aind":2}', "collide case-insensitively"),
    (b'{"size":1,"\\u017fize":2}', "collide case-insensitively"),
    (b'{"a":{"mediaType":"x","MediaType":"y"}}', "'mediaType' and 'MediaType'"),
    (b'[{"digest":"a"},{"digest":"b","Digest":"c"}]', "'digest' and 'Digest'"),
    (b'{"a":"\\ud800"}', "lone UTF-16 surrogate"),
    (b'{"\\udc00":1}', "lone UTF-16 surrogate"),
    (b'{"\\u0378x":1}', "unassigned code point"),
])
def test_strict_json_refuses_what_go_reads_otherwise(doc, needle):
    with pytest.raises(FormatError) as exc:
        loads_strict(doc, "doc.json")
    assert str(exc.value).startswith("doc.json: ") and needle in str(exc.value)


def test_strict_json_keeps_what_go_reads_the_same():
    doc = loads_strict(b'{"a":"\\ud83d\\ude00","b":"\\\\ud800","layers":[{"a":1},{"a":2}],"\\u00e9":1}', "doc.json")
    assert doc == {"a": "\U0001f600", "b": "\\ud800", "layers": [{"a": 1}, {"a": 2}], "\u00e9": 1}

