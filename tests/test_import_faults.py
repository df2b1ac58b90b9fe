"""Import under faults: kill -9 at chosen points, a registry restart mid-push, a
full files disk, bad media parts, a dropped SFTP link.  Every case ends with a
rerun that converges, checked by skopeo against the bundle's digests."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.bundles import CREATED
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.images import (
    ImageSpec,
    build_oci_layout,
    make_random_layer,
    skopeo_inspect_raw,
)
from tests.helpers import PASSPHRASE, REPO, airgap, airgap_proc, write_spec

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
])


# --------------------------------------------------------------------------- helpers


def _http(host: str, method: str, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def _catalog(host: str) -> list[str]:
    status, body, _ = _http(host, "GET", "/v2/_catalog")
    assert status == 200
    return json.loads(body).get("repositories") or []


def _check_image_complete(host: str, repo: str, reference: str) -> None:
    status, body, _ = _http(host, "GET", f"/v2/{repo}/manifests/{reference}", {"Accept": ACCEPT})
    assert status == 200, f"{repo}:{reference} -> {status}"
    doc = json.loads(body)
    if "manifests" in doc:
        for child in doc["manifests"]:
            _check_image_complete(host, repo, child["digest"])
        return
    for d in [doc["config"], *doc["layers"]]:
        status, _, _ = _http(host, "HEAD", f"/v2/{repo}/blobs/{d['digest']}")
        assert status == 200, f"tag in {repo} points at an image whose blob {d['digest']} is missing ({status})"


def assert_no_tag_points_at_an_incomplete_image(host: str) -> int:
    """For every tag the registry serves, every blob of its image answers HEAD 200; returns the tag count."""
    n = 0
    for repo in _catalog(host):
        status, body, _ = _http(host, "GET", f"/v2/{repo}/tags/list")
        tags = (json.loads(body).get("tags") or []) if status == 200 else []
        for tag in tags:
            _check_image_complete(host, repo, tag)
            n += 1
    return n


def assert_digests(result: dict, bundle: Path, host: str | None = None) -> None:
    """skopeo sees every image of the bundle at its digest, by digest and by tag (at *host*
    if the import went through a proxy)."""
    manifest = airgap("inspect", bundle, "--json").json()["manifest"]
    assert {i["digest"] for i in result["images"]} == {i["digest"] for i in manifest["images"]}
    for img in result["images"]:
        refs = [img["internal_ref"]] + ([f"{img['internal_name']}:{img['tag']}"] if img["tag"] else [])
        for ref in refs:
            if host:
                ref = host + "/" + ref.split("/", 1)[1]
            assert "sha256:" + hashlib.sha256(skopeo_inspect_raw(ref)).hexdigest() == img["digest"], ref


def assert_nothing_recorded(state: Path) -> None:
    leftovers = sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []
    # Lock files (the import's and the rollback state's) are not records.
    assert [p for p in leftovers if not p.endswith(".lock")] == [], leftovers


def _import_args(bundle, trust, host, state, *extra):
    return ("import", bundle, "--trust", trust, "--registry", host, "--plain-http", "--state", state, "--json", *extra)


def _popen_import(*args) -> subprocess.Popen:
    env = {**os.environ, "AIRGAP_PASSPHRASE": PASSPHRASE}
    return subprocess.Popen([sys.executable, "-m", "airgap", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class _Dropped(ConnectionAbortedError):
    pass


class Gate(list):
    """Stands in for ``FaultProxy.requests``: holds the request matching *when*
    (its count-th occurrence) inside the proxy, before it reaches the registry,
    until :meth:`release`; with *drop* the held request is then never forwarded."""

    def __init__(self, proxy: FaultProxy, when, count: int = 1, drop: bool = True):
        super().__init__()
        self.when, self.count, self.drop = when, count, drop
        self.seen = 0
        self.held = threading.Event()
        self.go = threading.Event()
        proxy.requests = self

    def append(self, req) -> None:  # called by the proxy's handler, under its lock
        super().append(req)
        if self.go.is_set() or not self.when(req):
            return
        self.seen += 1
        if self.seen != self.count:
            return
        self.held.set()
        self.go.wait(60)
        if self.drop:
            raise _Dropped("request dropped by the test gate")

    def release(self) -> None:
        self.go.set()


def _blob_upload_put(r) -> bool:
    return r.method == "PUT" and "/blobs/uploads/" in r.path


def _manifest_put(r) -> bool:
    return r.method == "PUT" and "/manifests/" in r.path


def _tag_put(r) -> bool:
    return _manifest_put(r) and "/manifests/sha256:" not in r.path


# --------------------------------------------------------------------------- kill -9


@pytest.mark.parametrize("when,count", [
    (_blob_upload_put, 1),  # the first blob upload in flight
    (_blob_upload_put, 2),  # the first blob finished, the second in flight
    (_manifest_put, 1),  # all blobs pushed, no manifest yet
    (_tag_put, 1),  # every manifest pushed by digest, no tag yet
    (_tag_put, 2),  # between two tags
], ids=["first-blob-uploading", "first-blob-done", "blobs-before-manifests", "manifests-before-tags", "between-tags"])
def test_kill_9_then_rerun_converges(tmp_path, signed_bundle, registry, when, count):
    state = tmp_path / "state"
    proxy = FaultProxy(registry.host)
    gate = Gate(proxy, when, count)
    proc = _popen_import(*_import_args(signed_bundle.path, signed_bundle.trust, proxy.host, state))
    try:
        assert gate.held.wait(60), "the import never reached the kill point: " + str(proc.communicate(timeout=5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        # While the import lies dead: no tag points at an image with missing blobs,
        # and the killed run recorded nothing (no rollback state, no audit entry).
        assert_no_tag_points_at_an_incomplete_image(registry.host)
        assert_nothing_recorded(state)
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.stop()

    r = airgap(*_import_args(signed_bundle.path, signed_bundle.trust, registry.host, state))
    assert r.code == 0, r.err
    result = r.json()
    assert_digests(result, signed_bundle.path)
    assert assert_no_tag_points_at_an_incomplete_image(registry.host) == 3
    assert json.loads((state / "bundles" / "geheim-pilot" / "imported.json").read_text())["version"] == "1.0.0"
    audit = airgap("audit", "verify", "--state", state, "--json")
    assert audit.code == 0 and audit.json()["entries"] == 2  # only the rerun's: the first use, the import


# --------------------------------------------------------------------------- registry restart mid-push


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory, keyring):
    """A signed bundle whose one image has a 20 MiB layer (pushed in PATCH chunks) plus a small one."""
    from tests.fixtures.images import layer
    from tests.fixtures.keys import make_policy

    work = tmp_path_factory.mktemp("big-bundle")
    spec_dir = work / "spec"
    spec_dir.mkdir()
    big = make_random_layer(work / "big.tar", 20 * 1024 * 1024)
    small = layer({"etc/big.conf": b"big=1\n"})
    build_oci_layout(spec_dir / "images", {"big-1.0": ImageSpec(layers=[big, small])})
    spec = write_spec(spec_dir, version="1.0.0", images=["oci:images:big-1.0"])
    out = work / "geheim-pilot-big-1.0.0.tar"
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", CREATED, "--quiet")
    assert r.code == 0, r.err
    assert airgap("sign", out, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
    trust = work / "trust.json"
    trust.write_bytes(make_policy(keyring).to_bytes())
    return out, trust


def test_registry_restart_during_push(tmp_path, big_bundle, registry):
    bundle, trust = big_bundle
    state = tmp_path / "state"
    proxy = FaultProxy(registry.host)
    # Hold the first 16 MiB chunk; take the registry down; let the chunk go on to a dead
    # upstream (the client's connection is cut); bring the registry back on the same port.
    gate = Gate(proxy, lambda r: r.method == "PATCH", 1, drop=False)
    proc = _popen_import(*_import_args(bundle, trust, proxy.host, state))
    try:
        assert gate.held.wait(60), proc.communicate(timeout=5)
        registry.stop()
        gate.release()
        time.sleep(0.3)
        registry.start()
        out, err = proc.communicate(timeout=90)
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.stop()
    if proc.returncode != 0:
        # Failing is allowed, but clearly, and a rerun must then complete.
        assert proc.returncode == 1 and "airgap:" in err and registry.host.split(":")[0] in err, err
        assert_nothing_recorded(state)
        r = airgap(*_import_args(bundle, trust, registry.host, state))
        assert r.code == 0, r.err
        out = r.out
    # The held chunk met a dead registry and had to be sent again.
    assert sum(1 for r in gate if r.method == "PATCH") >= 2 or proc.returncode != 0, [(r.method, r.path) for r in gate]
    result = json.loads(out)
    assert result["uploaded_blobs"] >= 2
    assert_digests(result, bundle, registry.host)
    assert_no_tag_points_at_an_incomplete_image(registry.host)


# --------------------------------------------------------------------------- full files disk


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root: run the suite as root (README)")
    mnt = tmp_path / "files"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"cannot mount tmpfs: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_files_dir_full_disk(tmp_path, signed_bundle, seeded_registry, keyring, registry, small_tmpfs):
    files = small_tmpfs
    state = tmp_path / "state"
    # 1.0.0 fits: current -> its version.
    r = airgap(*_import_args(signed_bundle.path, signed_bundle.trust, registry.host, state, "--files-dir", files))
    assert r.code == 0, r.err
    before = os.readlink(files / "current")

    # 1.1.0 carries a 256 KiB file: more than the 64 KiB disk.
    work = tmp_path / "b11"
    spec_dir = work / "spec-1.1.0"
    (spec_dir / "configs").mkdir(parents=True)
    (spec_dir / "configs" / "pilot.conf").write_text("registry=internal\nversion=1.1\n")
    (spec_dir / "configs" / "big.bin").write_bytes(os.urandom(256 * 1024))
    spec = write_spec(spec_dir, version="1.1.0", images=[seeded_registry.ref("pilot/notes")],
                      files=[{"src": "configs/", "dest": "configs/"}])
    b11 = work / "geheim-pilot-1.1.0.tar"
    assert airgap("build", spec, "-o", b11, "--key", keyring.key_path("builder-1"), "--plain-http", "--created", CREATED,
                  "--quiet").code == 0
    assert airgap("sign", b11, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0

    args = _import_args(b11, signed_bundle.trust, registry.host, state, "--files-dir", files)
    p = airgap_proc(*args)
    assert p.code == 1, p.out + p.err
    assert str(files) in p.err and "no space" in p.err.lower(), p.err
    assert os.readlink(files / "current") == before
    assert not list(files.glob(".incoming-*")) and not list(files.glob(".current-*"))
    assert json.loads((state / "bundles" / "geheim-pilot" / "imported.json").read_text())["version"] == "1.0.0"
    # The rollback state still accepts 1.1.0 (it was not recorded).
    assert airgap("verify", b11, "--trust", signed_bundle.trust, "--state", state).code == 0

    # Free space, rerun: completes and switches.
    subprocess.run(["mount", "-o", "remount,size=4m", str(files)], check=True)
    r = airgap(*args)
    assert r.code == 0, r.err
    assert os.readlink(files / "current") != before
    assert (files / "current" / "configs" / "pilot.conf").read_text().endswith("version=1.1\n")
    assert json.loads((state / "bundles" / "geheim-pilot" / "imported.json").read_text())["version"] == "1.1.0"
    assert not list(files.glob(".incoming-*"))
    assert airgap("audit", "verify", "--state", state).code == 0


# --------------------------------------------------------------------------- bad media parts


@pytest.fixture
def media(tmp_path, signed_bundle):
    out = tmp_path / "media"
    r = airgap("split", signed_bundle.path, "--size", "10K", "-o", out, "--json")
    assert r.code == 0, r.err
    parts = sorted(out.glob("*.part*[0-9]"))
    assert len(parts) >= 3
    return out, parts


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_bad_part_is_named_and_nothing_imported(tmp_path, signed_bundle, registry, media, damage):
    out, parts = media
    bad = parts[1]
    if damage == "missing":
        bad.unlink()
    else:
        data = bytearray(bad.read_bytes())
        data[100] ^= 0xFF
        bad.write_bytes(bytes(data))
    state = tmp_path / "state"
    v = airgap_proc("verify", out, "--trust", signed_bundle.trust)
    assert v.code == 1, v.out + v.err
    assert bad.name in v.out + v.err
    i = airgap_proc(*_import_args(out, signed_bundle.trust, registry.host, state, "--files-dir", tmp_path / "files"))
    assert i.code == 1, i.out + i.err
    assert bad.name in i.out + i.err
    assert _catalog(registry.host) == []
    assert not (state / "bundles").exists()
    assert not (tmp_path / "files" / "current").exists()


def test_good_parts_import(tmp_path, signed_bundle, registry, media):
    out, _ = media
    state = tmp_path / "state"
    r = airgap(*_import_args(out, signed_bundle.trust, registry.host, state))
    assert r.code == 0, r.err
    assert_digests(r.json(), signed_bundle.path)


# --------------------------------------------------------------------------- dropped SFTP transfer


def test_transfer_dropped_midway_then_rerun_completes(tmp_path, sshd):
    src = tmp_path / "geheim-pilot-2.0.0.tar"
    with open(src, "wb") as f:
        f.writelines(os.urandom(1 << 20) for _ in range(48))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    remote = tmp_path / "remote"
    remote.mkdir()
    partial = remote / f"{src.name}.partial"
    args = ("transfer", src, sshd.url(remote), "--identity", sshd.identity, "--known-hosts", sshd.known_hosts, "--json")
    env = {**os.environ, "AIRGAP_PASSPHRASE": PASSPHRASE}
    proc = subprocess.Popen([sys.executable, "-m", "airgap", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 1 << 20):
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        dropped_at = partial.stat().st_size if partial.exists() else None
        sshd.drop_connections()
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert dropped_at is not None and dropped_at < src.stat().st_size, "transfer finished before the drop"
    # Whether the first run recovered by itself or gave up, a rerun completes and checks the hash.
    r = airgap_proc(*args)
    assert r.code == 0, r.err
    [sent] = json.loads(r.out)["files"]
    assert sent["sha256"] == want
    assert hashlib.sha256((remote / src.name).read_bytes()).hexdigest() == want
    assert not partial.exists()


def test_kill_9_mid_large_blob_then_rerun_resumes(tmp_path, big_bundle, registry):
    """The 20 MiB layer goes up in a 16 MiB and a 4 MiB chunk; killed before the
    second, the rerun continues the registry's upload session at 16 MiB."""
    bundle, trust = big_bundle
    state = tmp_path / "state"
    proxy = FaultProxy(registry.host)
    gate = Gate(proxy, lambda r: r.method == "PATCH", 2)
    proc = _popen_import(*_import_args(bundle, trust, proxy.host, state))
    try:
        assert gate.held.wait(60), proc.communicate(timeout=5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert_no_tag_points_at_an_incomplete_image(registry.host)
        assert not (state / "bundles").exists() and not (state / "audit.log").exists()
        gate.release()  # from now on the proxy only records
        time.sleep(0.2)
        gate.clear()
        # The rerun talks to the same registry address, as an operator's would.
        r = airgap(*_import_args(bundle, trust, proxy.host, state))
        assert r.code == 0, r.err
        ranges = [q.headers.get("Content-Range") for q in gate if q.method == "PATCH"]
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.stop()
    assert ranges and not ranges[0].startswith("0-"), ranges  # resumed, not restarted
    assert_digests(r.json(), bundle, registry.host)
    assert not (state / "uploads").exists() or not any((state / "uploads").iterdir())


# --------------------------------------------------------------------------- kill -9 while recording
# The record is the audit entries first (a first use of the policy, the import), then trust.json,
# manifest.json, imported.json and state.json last (airgap.anchored.commit).  A child runs the real
# CLI and SIGKILLs itself right after the chosen write is durable: no hook in the product.

_RECORD_KILLER = r"""
import os, signal, sys
import airgap.audit, airgap.state, airgap.trust.store
from airgap._internal import fsutil

point = sys.argv[1]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_append, real_write_atomic = airgap.audit.AuditLog.append, fsutil.Dir.write_atomic
real_state_write, real_trust_write = airgap.state.atomic_write, airgap.trust.store.atomic_write

def append(self, action, *a, **k):
    entry = real_append(self, action, *a, **k)
    if point == "entry-" + action:
        die()
    return entry

def write_atomic(self, name, *a, **k):
    real_write_atomic(self, name, *a, **k)
    if point == name:
        die()

def state_write(path, *a, **k):
    real_state_write(path, *a, **k)
    if point == os.path.basename(path):
        die()

def trust_write(path, *a, **k):
    real_trust_write(path, *a, **k)
    if point == os.path.basename(path):
        die()

airgap.audit.AuditLog.append = append
fsutil.Dir.write_atomic = write_atomic
airgap.state.atomic_write = state_write
airgap.trust.store.atomic_write = trust_write
from airgap.cli import main
sys.exit(main(sys.argv[2:]))
"""

RECORD_POINTS = ["entry-first-use", "entry-import", "trust.json", "manifest.json", "imported.json", "state.json"]


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, keyring):
    from tests.fixtures.keys import make_policy
    from tests.test_anchored import T1, T3, _build

    work = tmp_path_factory.mktemp("two-versions")
    trust, trust2 = work / "trust.json", work / "trust-v2.json"
    trust.write_bytes(make_policy(keyring).to_bytes())
    trust2.write_bytes(make_policy(keyring, version=2).to_bytes())
    v1, v2 = _build(work, keyring, "geheim-pilot", "1.0.0", T1), _build(work, keyring, "geheim-pilot", "1.1.0", T3)
    return v1, v2, trust, trust2


def _killed_at(point: str, *args) -> None:
    env = {**os.environ, "AIRGAP_PASSPHRASE": PASSPHRASE}
    proc = subprocess.run([sys.executable, "-c", _RECORD_KILLER, point, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"never reached {point}: {proc.returncode} {proc.stderr}"


def _assert_anchored(state: Path, version: str) -> None:
    """The caches are stamped with the log's last acceptance, which is of *version*."""
    entries = [json.loads(x) for x in (state / "audit.log").read_text().splitlines()]
    last = max(i for i, e in enumerate(entries) if e["result"] == "accepted" and "state" in e["detail"])
    head = airgap("audit", "head", "--state", state, "--json").json()
    doc = json.loads((state / "state.json").read_text())
    assert doc["audit"]["seq"] == last + 1 == head["seq"]
    assert doc["bundles"]["geheim-pilot"]["version"] == entries[last]["object"]["version"] == version
    imported = json.loads((state / "bundles" / "geheim-pilot" / "imported.json").read_text())
    assert imported["audit"] == doc["audit"] and imported["version"] == version
    assert sum(e["action"] == "first-use" for e in entries) == 1


@pytest.mark.parametrize("point", RECORD_POINTS)
def test_kill_9_while_recording_the_first_import_converges(tmp_path, two_versions, registry, point):
    v1, _, trust, _ = two_versions
    state, files = tmp_path / "state", tmp_path / "files"
    args = _import_args(v1, trust, registry.host, state, "--files-dir", files)
    _killed_at(point, *args)
    r = airgap(*args)
    assert r.code == 0, r.err
    _assert_anchored(state, "1.0.0")
    assert airgap("verify", v1, "--trust", trust, "--state", state).code == 0


@pytest.mark.parametrize("point", RECORD_POINTS[1:])  # the policy is already pinned: no first use
def test_kill_9_while_recording_a_second_import_converges_and_never_rolls_back(tmp_path, two_versions, registry, point):
    """The second import also rotates the trusted policy to version 2."""
    v1, v2, trust, trust2 = two_versions
    state, files = tmp_path / "state", tmp_path / "files"
    assert airgap(*_import_args(v1, trust, registry.host, state, "--files-dir", files)).code == 0
    args = _import_args(v2, trust2, registry.host, state, "--files-dir", files)
    _killed_at(point, *args)
    if point != "state.json":
        # The log holds 1.1.0's acceptance under policy 2 that the caches lack yet: only that
        # bundle under that policy completes it; the old policy and 1.0.0 are refused, saying what to do.
        written = RECORD_POINTS.index(point) >= RECORD_POINTS.index("trust.json")
        for bundle, policy in ((v2, trust), (v1, trust2)):
            back = airgap(*_import_args(bundle, policy, registry.host, state, "--files-dir", files))
            why = ("older than trusted version 2" if written and policy == trust
                   else "behind the audit log")  # trust.json already holds version 2
            assert back.code == 1 and why in back.err, back.err
            assert written and policy == trust or "rerun" in back.err
    r = airgap(*args)
    assert r.code == 0, r.err
    _assert_anchored(state, "1.1.0")
    assert json.loads((state / "state.json").read_text())["policy"]["version"] == 2
    for policy, why in ((trust2, "older than accepted version 1.1.0"), (trust, "older than trusted version 2")):
        back = airgap(*_import_args(v1, policy, registry.host, state, "--files-dir", files))
        assert back.code == 1 and why in back.err, back.err


@pytest.mark.parametrize("point", ["entry-first-use", "entry-verify", "trust.json", "state.json"])
def test_kill_9_while_verify_records_converges(tmp_path, two_versions, point):
    v1, _, trust, _ = two_versions
    state = tmp_path / "state"
    args = ("verify", v1, "--trust", trust, "--state", state, "--record")
    _killed_at(point, *args)
    r = airgap(*args)
    assert r.code == 0, r.err
    doc = json.loads((state / "state.json").read_text())
    assert doc["audit"]["seq"] == airgap("audit", "head", "--state", state, "--json").json()["seq"]
    assert doc["bundles"]["geheim-pilot"]["version"] == "1.0.0"
