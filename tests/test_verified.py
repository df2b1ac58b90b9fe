"""What verify checked is what is used: the bundle is opened once and every byte used is
read from that descriptor and hashed as it is consumed (issue 8, finding 1).

Each attack changes the bundle on disk *after* verification and before use: a
different file renamed over the path (the open descriptor still reads the
verified one), or bytes written into the very file (the same inode: caught by
hashing as consumed, before a tag moves or ``current`` switches).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from airgap import importer
from tests import bundlekit as kit
from tests.fixtures.bundles import build_sample
from tests.helpers import airgap

FILE = "files/configs/pilot.conf"


def _imp(bundle, trust, registry, state, files, *extra):
    return ("import", bundle, "--trust", trust, "--registry", registry.host, "--plain-http", "--state", state,
            "--files-dir", files, "--json", *extra)


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory, seeded_registry, keyring):
    """A second, fully signed bundle (1.1.0, other file content) to rename over the first."""
    work = tmp_path_factory.mktemp("other")
    _, path, _ = build_sample(work, seeded_registry, keyring, version="1.1.0", images=[seeded_registry.ref("pilot/status")])
    return path


def _after(monkeypatch, module, name, action):
    """Run *action* right after ``module.name`` returns (a point between verification and use)."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        action()
        return out

    monkeypatch.setattr(module, name, wrapped)


def _before(monkeypatch, module, name, action):
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        action()
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _tags(host: str) -> dict[str, list[str]]:
    import http.client

    def get(path):
        conn = http.client.HTTPConnection(host, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    status, body = get("/v2/_catalog")
    out = {}
    for repo in json.loads(body).get("repositories") or []:
        status, body = get(f"/v2/{repo}/tags/list")
        out[repo] = (json.loads(body).get("tags") or []) if status == 200 else []
    return out


# --------------------------------------------------------------------------- renamed over


@pytest.mark.parametrize("point", ["before-push", "before-unpack"])
def test_bundle_renamed_over_after_verify_is_not_what_is_used(tmp_path, signed_bundle, other_bundle, registry,
                                                                monkeypatch, point):
    bundle = signed_bundle.copy(tmp_path)
    original = {e.name: e.data for e in kit.read_entries(bundle)}
    evil = tmp_path / "evil.tar"
    shutil.copyfile(other_bundle, evil)
    swap = lambda: os.replace(evil, bundle)  # noqa: E731 - a different file now has the bundle's name
    if point == "before-push":
        _before(monkeypatch, importer, "_push_blobs", swap)
    else:
        _before(monkeypatch, importer._FilesTarget, "unpack", swap)
    state, files = tmp_path / "state", tmp_path / "files"
    r = airgap(*_imp(bundle, signed_bundle.trust, registry, state, files))
    assert r.code == 0, r.err
    assert not evil.exists()  # the swap happened
    result = r.json()
    # Everything used is the verified bundle: its three images, its files, its manifest.
    want = json.loads(original["manifest.json"])
    assert result["version"] == "1.0.0" and len(result["images"]) == 3
    assert {i["digest"] for i in result["images"]} == {i["digest"] for i in want["images"]}
    assert (files / "current" / "configs" / "pilot.conf").read_bytes() == original[FILE]
    assert result["files"] == result["files_total"] == 2
    recorded = json.loads((state / "bundles" / "geheim-pilot" / "manifest.json").read_bytes())
    assert recorded == want
    audit = [json.loads(x) for x in (state / "audit.log").read_text().splitlines()]
    assert [(a["action"], a["result"], a["object"].get("version")) for a in audit] == [
        ("first-use", "accepted", 1), ("import", "accepted", "1.0.0")]


def test_part_swapped_after_verify_is_not_what_is_used(tmp_path, signed_bundle, other_bundle, registry, monkeypatch):
    media = tmp_path / "media"
    assert airgap("split", signed_bundle.path, "--size", "8K", "-o", media).code == 0
    parts = sorted(media.glob("*.part[0-9]*"))
    victim = parts[len(parts) // 2]
    stranger = tmp_path / "stranger"
    stranger.write_bytes(os.urandom(victim.stat().st_size))
    _before(monkeypatch, importer, "_push_blobs", lambda: os.replace(stranger, victim))
    state, files = tmp_path / "state", tmp_path / "files"
    r = airgap(*_imp(media, signed_bundle.trust, registry, state, files))
    assert r.code == 0, r.err
    assert not stranger.exists()
    want = json.loads(kit.read_entries(signed_bundle.path)[0].data)
    assert {i["digest"] for i in r.json()["images"]} == {i["digest"] for i in want["images"]}
    assert (files / "current" / "configs" / "pilot.conf").read_text() == "registry=internal\n"


# --------------------------------------------------------------------------- written in place


def _part_at(media: Path, offset: int) -> tuple[Path, int]:
    """The part holding bundle byte *offset*, and the offset within it."""
    index = json.loads(next(media.glob("*.parts.json")).read_bytes())
    start = 0
    for part in index["parts"]:
        if start <= offset < start + part["size"]:
            return media / part["name"], offset - start
        start += part["size"]
    raise AssertionError(offset)


def _write_in_place(path: Path, member: str) -> None:
    off, size = kit.member_offset(path, member)
    kit.flip_byte(path, off + size // 2)


def test_bundle_written_in_place_before_unpack_switches_nothing(tmp_path, signed_bundle, registry, monkeypatch):
    bundle = signed_bundle.copy(tmp_path)
    state, files = tmp_path / "state", tmp_path / "files"
    _before(monkeypatch, importer._FilesTarget, "unpack", lambda: _write_in_place(bundle, FILE))
    r = airgap(*_imp(bundle, signed_bundle.trust, registry, state, files))
    assert r.code == 1, r.out + r.err
    assert FILE in r.err and "sha256 mismatch while reading it for use" in r.err
    assert not (files / "current").exists() and not list((files / "versions").iterdir())
    assert not list(files.glob(".incoming-*"))
    assert not (state / "bundles").exists() and not (state / "state.json").exists()
    audit = [json.loads(x) for x in (state / "audit.log").read_text().splitlines()]
    assert [(a["action"], a["result"]) for a in audit] == [("import", "rejected")]


def test_bundle_written_in_place_before_push_moves_no_tag(tmp_path, signed_bundle, registry, monkeypatch):
    bundle = signed_bundle.copy(tmp_path)
    layer = max((e for e in kit.read_entries(bundle) if e.name.startswith("blobs/") and e.data[:2] == b"\x1f\x8b"),
                key=lambda e: len(e.data))
    _before(monkeypatch, importer, "_push_blobs", lambda: _write_in_place(bundle, layer.name))
    state = tmp_path / "state"
    r = airgap("import", bundle, "--trust", signed_bundle.trust, "--registry", registry.host, "--plain-http",
               "--state", state, "--json")
    assert r.code == 1, r.out + r.err
    assert "sha256 mismatch" in r.err and layer.name.rsplit("/", 1)[1] in r.err
    assert all(tags == [] for tags in _tags(registry.host).values()), _tags(registry.host)
    assert not (state / "bundles").exists()


def test_part_written_in_place_after_verify_is_refused_and_named(tmp_path, signed_bundle, registry, monkeypatch):
    media = tmp_path / "media"
    assert airgap("split", signed_bundle.path, "--size", "8K", "-o", media).code == 0
    victim, within = _part_at(media, kit.member_offset(signed_bundle.path, FILE)[0])

    def scribble():
        with open(victim, "r+b") as f:  # the same inode verify opened
            f.seek(within)
            f.write(b"X")

    _before(monkeypatch, importer._FilesTarget, "unpack", scribble)
    state, files = tmp_path / "state", tmp_path / "files"
    r = airgap(*_imp(media, signed_bundle.trust, registry, state, files))
    assert r.code == 1, r.out + r.err
    assert victim.name in r.err and "sha256 mismatch" in r.err and FILE in r.err
    assert not (files / "current").exists()


# --------------------------------------------------------------------------- join and extract


@pytest.fixture
def media(tmp_path, signed_bundle):
    out = tmp_path / "media"
    assert airgap("split", signed_bundle.path, "--size", "8K", "-o", out).code == 0
    return out


def test_join_writes_the_verified_bundle(tmp_path, signed_bundle, media):
    out = tmp_path / "joined.tar"
    r = airgap("join", media, "--trust", signed_bundle.trust, "-o", out, "--json")
    assert r.code == 0, r.err
    assert out.read_bytes() == signed_bundle.path.read_bytes()
    assert r.json()["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_join_refuses_untrusted_or_changed_parts_and_leaves_nothing(tmp_path, signed_bundle, media, monkeypatch):
    from airgap import media as media_io

    out = tmp_path / "joined.tar"
    # Untrusted: builder-only signatures.
    other = tmp_path / "media-b"
    assert airgap("split", signed_bundle.builder_only, "--size", "8K", "-o", other).code == 0
    r = airgap("join", other, "--trust", signed_bundle.trust, "-o", out)
    assert r.code == 1 and "officer: 0 of 1" in r.err
    # A part written in place (inside a member's bytes) between verification and the join.
    victim, within = _part_at(media, kit.member_offset(signed_bundle.path, FILE)[0])

    def scribble():
        with open(victim, "r+b") as f:
            f.seek(within)
            f.write(b"X")

    _before(monkeypatch, media_io, "BackgroundHash", scribble)
    r = airgap("join", media, "--trust", signed_bundle.trust, "-o", out)
    assert r.code == 1, r.out + r.err
    assert victim.name in r.err and FILE in r.err
    assert not out.exists() and not list(tmp_path.glob(".joined.tar.*"))


def test_extract_writes_verified_members_only(tmp_path, signed_bundle):
    out = tmp_path / "x"
    r = airgap("extract", signed_bundle.path, "--trust", signed_bundle.trust, "--member", "files/configs/", "-o", out, "--json")
    assert r.code == 0, r.err
    assert sorted(r.json()["members"]) == ["files/configs/pilot.conf", "files/configs/sub/run.sh"]
    assert (out / "files/configs/pilot.conf").read_text() == "registry=internal\n"
    assert os.stat(out / "files/configs/sub/run.sh").st_mode & 0o777 == 0o755
    # An existing output is refused unless --force; a prefix that matches nothing is an input error.
    assert airgap("extract", signed_bundle.path, "--trust", signed_bundle.trust, "-o", out).code == 2
    assert airgap("extract", signed_bundle.path, "--trust", signed_bundle.trust, "--member", "files/nope", "-o",
                  tmp_path / "y").code == 2
    # Everything: an OCI layout plus files that skopeo reads.
    full = tmp_path / "full"
    assert airgap("extract", signed_bundle.path, "--trust", signed_bundle.trust, "-o", full).code == 0
    assert (full / "oci-layout").is_file() and (full / "index.json").is_file()
    assert json.loads((full / "index.json").read_bytes())["manifests"]


def test_extract_refuses_a_bundle_changed_in_place_and_writes_nothing_of_it(tmp_path, signed_bundle, monkeypatch):
    from airgap import extract

    bundle = signed_bundle.copy(tmp_path)
    out = tmp_path / "x"
    _before(monkeypatch, extract, "write_member", lambda: _write_in_place(bundle, FILE))
    r = airgap("extract", bundle, "--trust", signed_bundle.trust, "--member", FILE, "-o", out)
    assert r.code == 1, r.out + r.err
    assert FILE in r.err and "sha256 mismatch" in r.err
    assert not (out / FILE).exists() and not list(out.rglob(".*.tmp"))


# --------------------------------------------------------------------------- version directories


def test_reimport_repairs_an_incomplete_version_and_counts_what_it_writes(tmp_path, signed_bundle, registry):
    state, files = tmp_path / "state", tmp_path / "files"
    args = _imp(signed_bundle.path, signed_bundle.trust, registry, state, files)
    first = airgap(*args)
    assert first.code == 0, first.err
    assert (first.json()["files"], first.json()["files_total"]) == (2, 2)
    again = airgap(*args)
    assert again.code == 0 and (again.json()["files"], again.json()["files_total"]) == (0, 2)
    assert again.json()["status"] == "already-present"
    # Damage the version directory the way a foreign writer (or a crash) would: a file
    # missing and no completion marker.  It no longer counts; a re-import repairs it.
    version = next(p for p in (files / "versions").iterdir() if p.is_dir())
    (version / "configs" / "pilot.conf").unlink()
    next(p for p in (files / "versions").iterdir() if p.name.endswith(".complete")).unlink()
    repaired = airgap(*args)
    assert repaired.code == 0, repaired.err
    assert (repaired.json()["files"], repaired.json()["status"]) == (2, "imported")
    assert (files / "current" / "configs" / "pilot.conf").read_text() == "registry=internal\n"
    # A version directory whose marker describes other content is not trusted either.
    marker = next(p for p in (files / "versions").iterdir() if p.name.endswith(".complete"))
    marker.write_bytes(marker.read_bytes().replace(b"pilot.conf", b"pilot.cong"))
    assert airgap(*args).json()["files"] == 2
