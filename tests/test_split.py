"""Media splitting: parts, the index, checking before reading, reading across boundaries."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap._internal.jsonutil import canonical_bytes
from airgap._internal.positional import FileSource
from airgap.exceptions import FormatError, InputError, IntegrityError
from airgap.media import PartIndex, PartsReader, open_bundle, verify_index_signature
from airgap.split import parse_size, split

NAME = "geheim-pilot-1.0.0.tar"


@pytest.fixture(scope="module")
def data() -> bytes:
    # Deterministic, non-repeating content so an off-by-one read shows up.
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(3200))[:100_003]


@pytest.fixture
def bundle(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / NAME
    path.write_bytes(data)
    return path


@pytest.fixture
def parts_dir(tmp_path: Path, bundle: Path) -> Path:
    out = tmp_path / "media"
    split(bundle, out, 30_000)
    return out


def _index(parts_dir: Path) -> Path:
    return parts_dir / f"{NAME}.parts.json"


def test_parse_size() -> None:
    assert parse_size("4480M") == 4480 * 2**20
    assert parse_size("4G") == 4 * 2**30
    assert parse_size("2KiB") == 2048
    assert parse_size("1t") == 2**40
    assert parse_size("4700000000") == 4_700_000_000
    assert parse_size(512) == 512
    for bad in ["4.7G", "", "0", "-1", "1X", "G", "1 GB GB", True]:
        with pytest.raises(InputError):
            parse_size(bad)


def test_split_writes_parts_and_canonical_index(parts_dir: Path, data: bytes) -> None:
    names = sorted(os.listdir(parts_dir))
    assert names == [f"{NAME}.part001", f"{NAME}.part002", f"{NAME}.part003", f"{NAME}.part004", f"{NAME}.parts.json"]
    sizes = [os.path.getsize(parts_dir / n) for n in names[:-1]]
    assert sizes == [30_000, 30_000, 30_000, 10_003]
    raw = _index(parts_dir).read_bytes()
    doc = json.loads(raw)
    assert canonical_bytes(doc) == raw
    assert doc["_type"] == "airgap-parts"
    assert doc["bundle"] == {"name": NAME, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    offset = 0
    for part in doc["parts"]:
        piece = data[offset : offset + part["size"]]
        assert part["sha256"] == hashlib.sha256(piece).hexdigest()
        assert (parts_dir / part["name"]).read_bytes() == piece
        offset += part["size"]


def test_exact_multiple_and_single_part(tmp_path: Path) -> None:
    src = tmp_path / "b.tar"
    src.write_bytes(b"x" * 4096)
    assert [p.size for p in split(src, tmp_path / "a", "1K").parts] == [1024] * 4
    assert [p.size for p in split(src, tmp_path / "b", "1G").parts] == [4096]
    empty = tmp_path / "e.tar"
    empty.touch()
    with pytest.raises(InputError):
        split(empty, tmp_path / "c", 10)


def test_resplit_removes_stale_parts(tmp_path: Path, bundle: Path) -> None:
    out = tmp_path / "media"
    split(bundle, out, 10_000)
    split(bundle, out, 60_000, force=True)
    assert sorted(os.listdir(out)) == [f"{NAME}.part001", f"{NAME}.part002", f"{NAME}.parts.json"]


def test_check_then_read_whole(parts_dir: Path, data: bytes) -> None:
    with PartsReader(_index(parts_dir)) as reader:
        reader.check()
        assert reader.size == len(data) and reader.name == NAME
        assert reader.read() == data
        assert reader.read(10) == b""


def test_reads_open_every_part_first_and_hash_none(parts_dir: Path, data: bytes) -> None:
    # Every part is opened (never through a link) and its size checked before the first byte is read...
    (parts_dir / f"{NAME}.part004").write_bytes(b"z" * 10_004)
    with PartsReader(_index(parts_dir)) as reader:
        with pytest.raises(IntegrityError, match="part004: size 10004 bytes, index says 10003"):
            reader.read(10)
    # ...but no part is hashed up front: the bundle's own hashes decide, and a
    # failure then asks diagnose() which disc is bad.
    (parts_dir / f"{NAME}.part004").write_bytes(b"z" * 10_003)
    with PartsReader(_index(parts_dir)) as reader:
        assert reader.read(10) == data[:10]
        with pytest.raises(IntegrityError, match="part004: sha256 mismatch"):
            reader.diagnose()
        with pytest.raises(IntegrityError, match="part004: sha256 mismatch"):
            reader.check()


def test_missing_part_is_named(parts_dir: Path) -> None:
    os.unlink(parts_dir / f"{NAME}.part002")
    with pytest.raises(IntegrityError) as err:
        open_bundle(parts_dir)
    assert str(err.value) == f"{NAME}.part002: missing"


def test_corrupt_part_is_named(parts_dir: Path) -> None:
    path = parts_dir / f"{NAME}.part003"
    raw = bytearray(path.read_bytes())
    raw[12345] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as err:
        PartsReader(_index(parts_dir)).check()
    assert str(err.value) == f"{NAME}.part003: sha256 mismatch"


def test_several_corrupt_parts_all_named(parts_dir: Path) -> None:
    for n in ("002", "004"):
        (parts_dir / f"{NAME}.part{n}").write_bytes(b"\0" * os.path.getsize(parts_dir / f"{NAME}.part{n}"))
    with pytest.raises(IntegrityError) as err:
        PartsReader(_index(parts_dir)).check()
    assert err.value.artifact == f"{NAME}.part002" and "part004" in err.value.reason


def test_wrong_size_part_is_named(parts_dir: Path) -> None:
    with open(parts_dir / f"{NAME}.part001", "ab") as fh:
        fh.write(b"extra")
    with pytest.raises(IntegrityError, match=r"part001: size 30005 bytes, index says 30000"):
        PartsReader(_index(parts_dir)).check()


def test_part_that_is_a_symlink_is_refused(parts_dir: Path, tmp_path: Path) -> None:
    part = parts_dir / f"{NAME}.part001"
    os.replace(part, tmp_path / "elsewhere")
    part.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IntegrityError, match="part001"):
        PartsReader(_index(parts_dir)).check()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["parts"][1].__setitem__("name", "../../etc/passwd"), "not a plain file name"),
        (lambda d: d["parts"][1].__setitem__("name", d["parts"][0]["name"]), "listed twice"),
        (lambda d: d["parts"][1].__setitem__("size", 1), "add up"),
        (lambda d: d["parts"][1].__setitem__("sha256", "A" * 64), "hex"),
        (lambda d: d.__setitem__("_type", "x"), "_type"),
        (lambda d: d.__setitem__("extra", 1), "exactly"),
        (lambda d: d.__setitem__("parts", []), "non-empty"),
    ],
)
def test_malformed_index_is_refused(parts_dir: Path, mutate, message: str) -> None:
    doc = json.loads(_index(parts_dir).read_bytes())
    mutate(doc)
    _index(parts_dir).write_bytes(canonical_bytes(doc))
    with pytest.raises(FormatError, match=message):
        PartsReader(_index(parts_dir))


def test_index_with_duplicate_keys_is_refused(parts_dir: Path) -> None:
    raw = _index(parts_dir).read_bytes()
    _index(parts_dir).write_bytes(raw.replace(b'{"_type":"airgap-parts"', b'{"_type":"x","_type":"airgap-parts"'))
    with pytest.raises(FormatError, match="duplicate"):
        PartsReader(_index(parts_dir))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 100_010), st.integers(0, 70_000)), min_size=1, max_size=6))
def test_random_reads_match_the_original(parts_dir: Path, data: bytes, reads: list[tuple[int, int]]) -> None:
    with PartsReader(_index(parts_dir)) as reader:
        for offset, length in reads:
            assert reader.pread(offset, length) == data[offset : offset + length]
            reader.seek(offset)
            assert reader.read(length) == data[offset : offset + length]
            assert reader.tell() == min(offset + length, len(data)) if offset < len(data) else offset


def test_seek_whence_and_buffered_wrapper(parts_dir: Path, data: bytes) -> None:
    with PartsReader(_index(parts_dir)) as reader:
        assert reader.seek(-5, io.SEEK_END) == len(data) - 5
        assert reader.read() == data[-5:]
        reader.seek(29_990)
        assert reader.seek(5, io.SEEK_CUR) == 29_995
        assert reader.read(10) == data[29_995:30_005]
        with pytest.raises(ValueError):
            reader.seek(-1)
        reader.seek(0)
        buffered = io.BufferedReader(reader, buffer_size=7000)
        assert buffered.read(60_001) == data[:60_001]


def test_pread_is_thread_safe(parts_dir: Path, data: bytes) -> None:
    errors: list[str] = []
    with PartsReader(_index(parts_dir)) as reader:
        reader.check()

        def worker(seed: int) -> None:
            for i in range(200):
                off = (seed * 7919 + i * 104_729) % len(data)
                n = (i * 3571) % 40_000
                if reader.pread(off, n) != data[off : off + n]:
                    errors.append(f"{off}+{n}")

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_open_bundle_forms(parts_dir: Path, bundle: Path, data: bytes, tmp_path: Path) -> None:
    with open_bundle(bundle) as plain:
        assert isinstance(plain, FileSource)
        assert plain.size == len(data) and plain.pread(29_999, 3) == data[29_999:30_002]
    with open_bundle(_index(parts_dir)) as by_index, open_bundle(parts_dir) as by_dir:
        assert isinstance(by_index, PartsReader) and isinstance(by_dir, PartsReader)
        assert by_dir.read() == data
    with pytest.raises(InputError, match="exactly one"):
        open_bundle(tmp_path)  # holds no index directly
    with pytest.raises(InputError):
        open_bundle(tmp_path / "nope.tar")
    with pytest.raises(InputError, match="cannot read bundle: Is a directory"):
        FileSource(tmp_path)  # os.open accepts a directory; the reader must not


def test_tarfile_streams_over_parts(tmp_path: Path) -> None:
    # The verifier's view: a tar read straight from the parts, no joined copy.
    src = tmp_path / "b.tar"
    with tarfile.open(src, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(5):
            payload = os.urandom(3000 + i)
            info = tarfile.TarInfo(f"files/f{i}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    split(src, tmp_path / "m", 2048)
    with open_bundle(tmp_path / "m") as reader, tarfile.open(fileobj=reader, mode="r:") as tar:
        assert [m.name for m in tar.getmembers()] == [f"files/f{i}" for i in range(5)]
        assert len(tar.extractfile("files/f4").read()) == 3004


def test_signed_index(tmp_path: Path, bundle: Path, keyring, trust_policy) -> None:
    """The index signature is judged by trust.verify_envelope over the bytes the reader read."""
    from airgap.dsse import Envelope
    from airgap.exceptions import SignatureError
    from airgap.keys import SigningKey

    out = tmp_path / "signed"
    split(bundle, out, 40_000, signing_key=keyring["officer-1"])
    index_path = _index(out)
    sig_path = out / f"{NAME}.parts.json.dsse"
    env = Envelope.from_bytes(sig_path.read_bytes(), "sig")
    assert env.payload == index_path.read_bytes()
    with open_bundle(out) as reader:  # the signature file is not mistaken for an index
        assert reader.size == bundle.stat().st_size
        index_bytes = reader.index_bytes
    assert index_bytes == index_path.read_bytes()
    report = verify_index_signature(index_path, index_bytes, trust_policy)
    assert [k.name for k in report.signers()] == ["officer-1"]
    # a key outside the policy, another payload type, other bytes than the reader's: refused
    split(bundle, out, 40_000, signing_key=SigningKey.generate("stranger"), force=True)
    with pytest.raises(SignatureError, match="any role: 0 of 1 required signatures \\(unknown: "):
        verify_index_signature(index_path, index_path.read_bytes(), trust_policy)
    manifest_type = Envelope(index_path.read_bytes())  # the bundle manifest's payloadType
    manifest_type.add_signature(keyring["officer-1"])
    sig_path.write_bytes(manifest_type.to_bytes())
    with pytest.raises(SignatureError, match="payloadType 'application/vnd.airgap.manifest.v1\\+json' is not the expected"):
        verify_index_signature(index_path, index_path.read_bytes(), trust_policy)
    split(bundle, out, 40_000, signing_key=keyring["officer-1"], force=True)
    edited = index_path.read_bytes().replace(b'"size":40000', b'"size":40001', 1)
    with pytest.raises(SignatureError, match="the signed payload is not the part index"):
        verify_index_signature(index_path, edited, trust_policy)
    split(bundle, out, 40_000, force=True)  # unsigned re-split drops the stale signature
    assert not sig_path.exists()
    assert verify_index_signature(index_path, index_path.read_bytes(), trust_policy) is None


def test_index_roundtrip(parts_dir: Path) -> None:
    index = PartIndex.load(_index(parts_dir))
    assert index.to_bytes() == _index(parts_dir).read_bytes()
    assert PartIndex.from_bytes(index.to_bytes(), "x") == index
