"""Building bundles from a real registry (issue: connected side)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.faultproxy import FaultProxy
from tests.helpers import airgap, extract, tar_members, write_spec

CREATED = "2026-11-01T00:00:00Z"


@pytest.fixture
def pilot_spec(tmp_path, seeded_registry):
    reg = seeded_registry
    return write_spec(
        tmp_path / "spec",
        images=[
            reg.ref("pilot/status"),
            reg.ref("pilot/notes", by_digest=True),
            {"ref": reg.ref("pilot/multi"), "platforms": ["linux/amd64", "linux/arm64"]},
        ],
    )


def build(spec: Path, out: Path, keyring, *extra: str):
    return airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--plain-http", "--created", CREATED, "--json", *extra)


def test_build_pins_tags_digests_and_indexes(tmp_path, pilot_spec, seeded_registry, keyring):
    out = tmp_path / "dist" / "geheim-pilot-1.0.0.tar"
    r = build(pilot_spec, out, keyring)
    assert r.code == 0, r.err
    info = airgap("inspect", out, "--json").json()
    images = {i["repository"]: i for i in info["manifest"]["images"]}
    for repo in ("pilot/status", "pilot/notes", "pilot/multi"):
        assert images[repo]["digest"] == seeded_registry.images[repo].digest
    assert images["pilot/status"]["tag"] == "1.0"
    assert images["pilot/notes"]["ref"].endswith("@" + seeded_registry.images["pilot/notes"].digest)
    assert sorted(images["pilot/multi"]["platforms"]) == ["linux/amd64", "linux/arm64"]
    # The shared base layer is stored once.
    names = [m.name for m in tar_members(out)]
    shared = "blobs/sha256/" + seeded_registry.shared_layer.digest.split(":")[1]
    assert names.count(shared) == 1
    assert len(names) == len(set(names))
    assert names[0] == "manifest.json" and names[-1] == "signatures.json"
    assert "files/configs/sub/run.sh" in names
    modes = {m.name: m.mode for m in tar_members(out)}
    assert modes["files/configs/sub/run.sh"] == 0o755


def test_single_platform_from_index_keeps_the_platform_manifest(tmp_path, seeded_registry, keyring):
    spec = write_spec(tmp_path / "spec", images=[{"ref": seeded_registry.ref("pilot/multi"), "platforms": ["linux/arm64"]}], files=[])
    out = tmp_path / "b.tar"
    assert build(spec, out, keyring).code == 0
    img = airgap("inspect", out, "--json").json()["manifest"]["images"][0]
    multi = seeded_registry.images["pilot/multi"]
    arm = [c for c in multi.children if c.platform["architecture"] == "arm64"][0]
    assert img["digest"] == arm.digest  # the digest that runs, unchanged
    assert img["source_index"] == multi.digest
    assert img["platforms"] == ["linux/arm64"]


def test_missing_platform_is_a_spec_error(tmp_path, seeded_registry, keyring):
    spec = write_spec(tmp_path / "spec", images=[{"ref": seeded_registry.ref("pilot/multi"), "platforms": ["linux/s390x"]}], files=[])
    r = build(spec, tmp_path / "b.tar", keyring)
    assert r.code == 2
    assert "linux/s390x" in r.err and "images[0]" in r.err
    # FILE:LINE: field: problem, the line being the one of images[0] (resolving found it, not loading)
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if text.startswith("- ref:"))
    assert r.err.startswith(f"airgap: {spec}:{line}: images[0].ref "), r.err
    assert not (tmp_path / "b.tar").exists()


def test_two_builds_are_byte_identical(tmp_path, pilot_spec, keyring):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert build(pilot_spec, a, keyring).code == 0
    assert build(pilot_spec, b, keyring).code == 0
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_source_date_epoch_sets_created(tmp_path, pilot_spec, keyring):
    out = tmp_path / "a.tar"
    r = airgap("build", pilot_spec, "-o", out, "--key", keyring.key_path("builder-1"), "--plain-http", env={"SOURCE_DATE_EPOCH": "1790000000"})
    assert r.code == 0, r.err
    m = airgap("inspect", out, "--json").json()["manifest"]
    assert m["created"] == "2026-09-21T14:13:20Z"


def test_real_clients_read_the_extracted_layout(tmp_path, pilot_spec, seeded_registry, keyring, registry):
    out = tmp_path / "b.tar"
    assert build(pilot_spec, out, keyring).code == 0
    layout = extract(out, tmp_path / "x")
    manifest = json.loads((layout / "manifest.json").read_bytes())
    for img in manifest["images"]:
        ref = img["layout_ref"]
        proc = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:{ref}"], capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "sha256:" + hashlib.sha256(proc.stdout).hexdigest() == img["digest"]
        if img["mediaType"].endswith("manifest.v1+json"):
            proc = subprocess.run(["umoci", "stat", "--image", f"{layout}:{ref}"], capture_output=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
        # Copy into a second registry: the digest there is the digest that was built.
        dest = f"{registry.host}/copy/{img['repository']}:1.0"
        proc = subprocess.run(
            ["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:{ref}", f"docker://{dest}"],
            capture_output=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"], capture_output=True, timeout=60)
        assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == img["digest"]


def test_umoci_reads_index_children(tmp_path, seeded_registry, keyring):
    spec = write_spec(tmp_path / "spec", images=[{"ref": seeded_registry.ref("pilot/multi"), "platforms": ["linux/amd64"]}], files=[])
    out = tmp_path / "b.tar"
    assert build(spec, out, keyring).code == 0
    layout = extract(out, tmp_path / "x")
    ref = json.loads((layout / "manifest.json").read_bytes())["images"][0]["layout_ref"]
    proc = subprocess.run(["umoci", "stat", "--image", f"{layout}:{ref}"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_local_oci_layout_source(tmp_path, seeded_registry, keyring):
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    subprocess.run(["cp", "-a", str(seeded_registry.layout), str(spec_dir / "layout")], check=True)
    spec = write_spec(spec_dir, images=["oci:layout:status"], files=[])
    out = tmp_path / "b.tar"
    r = build(spec, out, keyring)
    assert r.code == 0, r.err
    img = airgap("inspect", out, "--json").json()["manifest"]["images"][0]
    assert img["digest"] == seeded_registry.images["pilot/status"].digest


def test_sovereignty_refuses_us_hyperscaler_registry(tmp_path, keyring):
    spec = write_spec(tmp_path / "spec", images=["gcr.io/distroless/static:nonroot"], files=[])
    r = build(spec, tmp_path / "b.tar", keyring)
    assert r.code == 1
    assert "gcr.io" in r.err and "Google" in r.err
    assert not (tmp_path / "b.tar").exists()


def test_invalid_spec_names_the_field(tmp_path, keyring):
    spec = write_spec(tmp_path / "spec", images=["127.0.0.1:1/a:1", "127.0.0.1:1/b:1", "Not A Ref!!"], files=[])
    r = build(spec, tmp_path / "b.tar", keyring)
    assert r.code == 2
    assert "images[2].ref" in r.err


# --- faults: a misbehaving registry never leaves a partial bundle behind ------


def _fault_spec(tmp_path, host):
    return write_spec(tmp_path / "spec", images=[f"{host}/pilot/status:1.0"], files=[])


def test_dropped_connection_mid_blob_is_retried(tmp_path, seeded_registry, keyring):
    big = seeded_registry.images["pilot/status"].layers[1]
    with FaultProxy(seeded_registry.host) as proxy:
        proxy.drop_blob_after(100, big.digest)
        out = tmp_path / "b.tar"
        r = build(_fault_spec(tmp_path, proxy.host), out, keyring)
        gets = [q for q in proxy.requests if q.method == "GET" and q.path.endswith(big.digest)]
    assert r.code == 0, r.err
    assert len(gets) >= 2  # the drop happened and the blob was fetched again
    assert airgap("inspect", out, "--json").json()["manifest"]["images"][0]["digest"] == seeded_registry.images["pilot/status"].digest


def test_wrong_digest_is_refused_and_nothing_left(tmp_path, seeded_registry, keyring):
    out = tmp_path / "dist" / "b.tar"
    with FaultProxy(seeded_registry.host) as proxy:
        proxy.corrupt_blob()
        r = build(_fault_spec(tmp_path, proxy.host), out, keyring)
    assert r.code == 1
    assert "sha256 mismatch" in r.err and "pilot/status@sha256:" in r.err
    assert not out.exists()
    # The config is fetched (and refused) while resolving, before the output directory is made.
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_401_without_credentials_is_refused(tmp_path, auth_registry, keyring, monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "dist" / "b.tar"
    r = build(_fault_spec(tmp_path, auth_registry.host), out, keyring)
    assert r.code == 1
    assert "401" in r.err and auth_registry.host in r.err
    assert not out.exists()


def test_config_checked_for_platform_is_fetched_once(tmp_path, seeded_registry, keyring):
    status = seeded_registry.images["pilot/status"]
    with FaultProxy(seeded_registry.host) as proxy:
        spec = write_spec(tmp_path / "spec", images=[{"ref": f"{proxy.host}/pilot/status:1.0", "platforms": ["linux/amd64"]}], files=[])
        assert build(spec, tmp_path / "b.tar", keyring).code == 0
        gets = [q for q in proxy.requests if q.method == "GET" and q.path.endswith(status.config.digest)]
    assert len(gets) == 1
    names = [m.name for m in tar_members(tmp_path / "b.tar")]
    assert "blobs/sha256/" + status.config.digest.split(":")[1] in names
