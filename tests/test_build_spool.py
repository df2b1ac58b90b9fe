"""Each blob is fetched from the source once: the SBOM pass keeps the layers it
reads in a spool beside the output and the writer copies them from there,
checking their sha256 again (airgap/_internal/spool.py)."""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

import pytest

from airgap import build as buildmod
from airgap import verify
from airgap._internal import spool as spoolmod
from airgap.registry import RegistryClient
from tests.fixtures.images import make_layer
from tests.helpers import airgap, write_spec

CREATED = "2026-11-01T00:00:00Z"
pytestmark = pytest.mark.usefixtures("isolated_auth_files")


def _images(hostile) -> list[str]:
    """Three images; the shared layer sits on other chains (so the SBOM pass reads it twice)."""
    base = make_layer({"etc/os-release": b"ID=debian\nVERSION_ID=12\n"})[0]
    shared = make_layer({"var/lib/dpkg/status": b"Package: bash\nStatus: install ok installed\nVersion: 5.2\n"
                                                b"Architecture: amd64\n"})[0]
    other = make_layer({"etc/other": b"other\n"})[0]
    big = make_layer({"big": bytes(range(256)) * 12_000}, compress=False)[0]  # > 1 MiB: several chunks
    hostile.add_image("pilot/a", layers=[base, shared, big])
    hostile.add_image("pilot/b", layers=[other, shared])
    hostile.add_image("pilot/c", layers=[shared, base])
    return [f"{hostile.host}/pilot/{n}:1.0" for n in "abc"]


def _build(tmp_path: Path, keyring, refs: list[str], out: Path):
    spec = write_spec(tmp_path / "spec", images=refs, files=[])
    return airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", CREATED, "--plain-http")


def _leftovers(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}*"))


def test_every_blob_is_fetched_once_and_the_spool_is_gone(tmp_path, keyring, hostile):
    refs = _images(hostile)
    out = tmp_path / "out" / "b.tar"
    r = _build(tmp_path, keyring, refs, out)
    assert r.code == 0, r.err
    gets = Counter(q.path.rsplit("/", 1)[1] for q in hostile.seen("GET", "/blobs/"))
    manifest, _ = verify.check_structure(out)
    carried = {"sha256:" + m.path.rsplit("/", 1)[1] for m in manifest.members if m.path.startswith("blobs/")}
    layers_and_configs = set(hostile.blobs) & carried
    assert layers_and_configs and set(gets) == layers_and_configs
    assert set(gets.values()) == {1}, gets
    assert _leftovers(out) == []


def test_the_bundle_is_the_one_the_two_fetch_build_makes(tmp_path, keyring, hostile, monkeypatch):
    refs = _images(hostile)
    spooled, fetched = tmp_path / "a" / "b.tar", tmp_path / "b" / "b.tar"
    assert _build(tmp_path, keyring, refs, spooled).code == 0
    once = len(hostile.seen("GET", "/blobs/"))
    monkeypatch.setattr(buildmod, "_SPOOL", False)
    r = _build(tmp_path, keyring, refs, fetched)
    assert r.code == 0, r.err
    assert len(hostile.seen("GET", "/blobs/")) - once > once  # without the spool, layers are fetched again
    assert spooled.read_bytes() == fetched.read_bytes()


@pytest.mark.parametrize("change", ["flip", "truncate", "extend", "remove"])
def test_a_spooled_layer_changed_between_the_passes_is_refused(tmp_path, keyring, hostile, monkeypatch, change):
    refs = _images(hostile)
    out = tmp_path / "out" / "b.tar"
    sbom_members = buildmod._sbom_members
    touched: list[str] = []

    def then_tamper(*args, **kw):
        members = sbom_members(*args, **kw)
        (spool,) = [p for p in _leftovers(out) if ".spool-" in p.name]
        victim = max(spool.iterdir(), key=lambda p: p.stat().st_size)
        touched.append(victim.name.replace("-", ":", 1))
        data = victim.read_bytes()
        if change == "remove":
            victim.unlink()
        else:
            victim.write_bytes({"flip": data[:-1] + bytes([data[-1] ^ 1]), "truncate": data[:-1],
                                "extend": data + b"x"}[change])
        return members

    monkeypatch.setattr(buildmod, "_sbom_members", then_tamper)
    r = _build(tmp_path, keyring, refs, out)
    assert r.code == 1, r.err
    assert touched and touched[0] in r.err and "spooled copy" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not out.exists() and _leftovers(out) == []


def test_a_full_disk_while_spooling_names_the_directory(tmp_path, keyring, hostile, monkeypatch):
    refs = _images(hostile)
    out = tmp_path / "out" / "b.tar"

    def full(fd, view):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spoolmod, "_write", full)
    r = _build(tmp_path, keyring, refs, out)
    assert r.code == 1
    assert r.err.startswith(f"airgap: {out.parent}: no space left while keeping layer sha256:"), r.err
    assert "free" in r.err and "larger disk" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not out.exists() and _leftovers(out) == []


def test_a_link_in_the_spool_is_not_followed(tmp_path, keyring, hostile, monkeypatch):
    """A link planted where a spool file will be created is refused, and its target untouched."""
    refs = _images(hostile)
    out = tmp_path / "out" / "b.tar"
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    init = spoolmod.LayerSpool.__init__

    def plant(self, out_path, wanted):
        init(self, out_path, wanted)
        for digest in wanted:
            (self.path / digest.replace(":", "-")).symlink_to(target)

    monkeypatch.setattr(spoolmod.LayerSpool, "__init__", plant)
    r = _build(tmp_path, keyring, refs, out)
    assert r.code == 1 and "symbolic link" in r.err, r.err
    assert target.read_bytes() == b"keep me"
    assert not out.exists() and _leftovers(out) == []


def test_a_full_output_is_not_taken_for_a_dropped_connection(hostile):
    """The writer's ENOSPC stops the download at once (an OSError from the sink used to be
    retried as a network error); build turns it into the one-line refusal above."""
    data = bytes(range(256)) * 2048
    digest = hostile.add_blob(data)
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with RegistryClient(hostile.host, plain_http=True, backoff=0.01) as c, \
                pytest.raises(buildmod.OutputWriteError) as exc:
            c.fetch_blob_into("pilot/app", digest, len(data), buildmod.RegionWriter(fd, 0, len(data)))
    finally:
        os.close(fd)
    assert exc.value.error.errno == errno.ENOSPC
    assert len(hostile.seen("GET", f"/blobs/{digest}")) == 1
