"""RegistryClient against the real docker-registry (and skopeo as the judge)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from airgap.exceptions import InputError, IntegrityError, RegistryError
from airgap.registry import (
    DOCKER_MANIFEST,
    MANIFEST_CAP,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobRequest,
    RegistryClient,
)
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.images import build_oci_layout, pilot_images, skopeo_inspect_raw

# Never pick up the machine's real credentials.
pytestmark = pytest.mark.usefixtures("isolated_auth_files")


def client(host: str, **kw) -> RegistryClient:
    kw.setdefault("backoff", 0.01)
    return RegistryClient(host, plain_http=True, **kw)


def random_file(path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path.write_bytes(data)
    return path, "sha256:" + hashlib.sha256(data).hexdigest()


class Opener:
    """open_stream for push_blob that records the offsets asked for."""

    def __init__(self, path: Path, fail_at: int | None = None):
        self.path, self.fail_at, self.offsets = path, fail_at, []

    def __call__(self, offset: int):
        self.offsets.append(offset)
        if self.fail_at is not None and offset >= self.fail_at:
            raise _Crash(offset)
        f = open(self.path, "rb")
        f.seek(offset)
        return f


class _Crash(BaseException):
    """Simulates the importer being killed mid-upload."""


def no_part_files(d: Path) -> bool:
    return not [p for p in d.rglob("*") if p.name.endswith(".part")]


def registry_blob_path(registry, digest: str) -> Path:
    hexd = digest.split(":")[1]
    return registry.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


# --- manifests -----------------------------------------------------------------


def test_manifest_by_tag_and_digest(seeded_registry):
    c = client(seeded_registry.host)
    for repo, built in seeded_registry.images.items():
        by_tag = c.get_manifest(repo, "1.0")
        assert by_tag.digest == built.digest
        assert by_tag.data == built.manifest
        assert by_tag.media_type == built.media_type
        by_digest = c.get_manifest(repo, built.digest)
        assert by_digest == by_tag
        assert c.manifest_exists(repo, "1.0") and c.manifest_exists(repo, built.digest)
    assert not c.manifest_exists("pilot/status", "nope")
    with pytest.raises(RegistryError, match=r"pilot/status:nope: manifest not found"):
        c.get_manifest("pilot/status", "nope")


def test_multi_arch_index(seeded_registry):
    c = client(seeded_registry.host)
    built = seeded_registry.images["pilot/multi"]
    index = c.get_manifest("pilot/multi", "1.0")
    assert index.media_type == OCI_INDEX
    doc = json.loads(index.data)
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64", "arm64"]
    for desc, child in zip(doc["manifests"], built.children):
        m = c.get_manifest("pilot/multi", desc["digest"])
        assert m.digest == child.digest == desc["digest"]
        assert m.media_type == OCI_MANIFEST
    # A client that only takes single manifests is refused rather than handed an index.
    with pytest.raises(RegistryError):
        c.get_manifest("pilot/multi", "1.0", accept=(DOCKER_MANIFEST,))


def test_manifest_tampered_in_storage_is_refused(tmp_path, registry):
    built = build_oci_layout(tmp_path / "layout", {"status": pilot_images()["status"]})["status"]
    c = client(registry.host)
    _push_image(c, "pilot/status", built, tmp_path / "layout")
    stored = registry_blob_path(registry, built.digest)
    # Still a valid manifest to the registry, but not the bytes that were pushed.
    tampered = built.manifest[:-1] + b' }'
    stored.write_bytes(tampered)
    with pytest.raises(IntegrityError) as exc:
        c.get_manifest("pilot/status", built.digest)
    assert f"{registry.host}/pilot/status@{built.digest}" in str(exc.value)
    assert "sha256 mismatch (got sha256:" in str(exc.value)
    # By tag there is no digest to compare with, but the registry's own header disagrees.
    with pytest.raises(IntegrityError, match="Docker-Content-Digest"):
        c.get_manifest("pilot/status", "1.0")


def test_manifest_over_cap_is_refused(seeded_registry):
    built = seeded_registry.images["pilot/status"]
    with FaultProxy(seeded_registry.host) as proxy:
        proxy.serve_manifest(built.manifest[:-1] + b" " * MANIFEST_CAP + b"}", OCI_MANIFEST)
        with pytest.raises(IntegrityError, match=rf"{proxy.host}/pilot/status:1.0: manifest of \d+ bytes exceeds the cap"):
            client(proxy.host).get_manifest("pilot/status", "1.0")
        proxy.serve_manifest(b"<html>hello</html>", "text/html")
        with pytest.raises(RegistryError, match="media type 'text/html'"):
            client(proxy.host).get_manifest("pilot/status", "1.0")


def test_bad_input_is_input_error(seeded_registry, tmp_path):
    c = client(seeded_registry.host)
    with pytest.raises(InputError, match="only sha256"):
        c.get_manifest("pilot/status", "sha256:" + "AB" * 32)
    with pytest.raises(InputError, match="only sha256"):
        c.fetch_blob("pilot/status", "sha512:" + "ab" * 64, 1, tmp_path / "x")
    with pytest.raises(InputError):
        c.get_manifest("../etc", "1.0")


# --- blobs: pull ----------------------------------------------------------------


def test_fetch_blobs_verified(seeded_registry, tmp_path):
    c = client(seeded_registry.host)
    built = seeded_registry.images["pilot/status"]
    seen = []
    blobs = built.blobs()
    paths = c.fetch_blobs("pilot/status", [BlobRequest(b.digest, b.size, tmp_path / b.digest) for b in blobs],
                          workers=3, progress=seen.append)
    for b, p in zip(blobs, paths):
        assert p.read_bytes() == b.data
    assert sum(seen) == sum(b.size for b in blobs)
    assert no_part_files(tmp_path)
    # The layer shared with notes is the same blob in both repositories.
    shared = seeded_registry.shared_layer
    c.fetch_blob("pilot/notes", shared.digest, shared.size, tmp_path / "shared")
    assert (tmp_path / "shared").read_bytes() == shared.data


def test_fetch_resumes_after_dropped_connection(registry, fault_proxy, tmp_path):
    src, digest = random_file(tmp_path / "src", 700_000)
    client(registry.host).push_blob("big/blob", digest, 700_000, Opener(src))
    c = client(fault_proxy.host)
    fault_proxy.drop_blob_after(250_000)
    seen = []
    c.fetch_blob("big/blob", digest, 700_000, tmp_path / "out" / "blob", progress=seen.append)
    assert (tmp_path / "out" / "blob").read_bytes() == src.read_bytes()
    ranges = [r.headers.get("Range") for r in fault_proxy.requests if r.method == "GET" and "/blobs/" in r.path]
    assert ranges == [None, "bytes=250000-"]
    assert sum(seen) == 700_000
    assert no_part_files(tmp_path / "out")


def test_fetch_restarts_when_range_is_ignored(registry, fault_proxy, tmp_path):
    src, digest = random_file(tmp_path / "src", 300_000)
    client(registry.host).push_blob("big/blob", digest, 300_000, Opener(src))
    fault_proxy.ignore_range()
    fault_proxy.drop_blob_after(100_000)
    seen = []
    client(fault_proxy.host).fetch_blob("big/blob", digest, 300_000, tmp_path / "blob", progress=seen.append)
    assert (tmp_path / "blob").read_bytes() == src.read_bytes()
    assert sum(seen) == 300_000


def test_corrupt_blob_refused_and_temp_removed(seeded_registry, tmp_path):
    layer = seeded_registry.images["pilot/status"].layers[1]
    with FaultProxy(seeded_registry.host) as proxy:
        proxy.corrupt_blob(layer.digest)
        c = client(proxy.host)
        with pytest.raises(IntegrityError) as exc:
            c.fetch_blob("pilot/status", layer.digest, layer.size, tmp_path / "layer")
    msg = str(exc.value)
    assert msg.startswith(f"{proxy.host}/pilot/status@{layer.digest}: sha256 mismatch (got sha256:")
    assert exc.value.artifact == f"{proxy.host}/pilot/status@{layer.digest}"
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_refused(seeded_registry, tmp_path):
    layer = seeded_registry.images["pilot/status"].layers[1]
    c = client(seeded_registry.host)
    with pytest.raises(IntegrityError, match="size mismatch"):
        c.fetch_blob("pilot/status", layer.digest, layer.size - 1, tmp_path / "a")
    with pytest.raises(IntegrityError, match="size mismatch"):
        c.fetch_blob("pilot/status", layer.digest, layer.size + 1, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RegistryError, match="blob not found"):
        c.fetch_blob("pilot/status", "sha256:" + "0" * 64, 1, tmp_path / "c")


def test_retries_on_5xx_then_gives_up(seeded_registry, tmp_path):
    built = seeded_registry.images["pilot/status"]
    with FaultProxy(seeded_registry.host) as proxy:
        proxy.fail_next(503, 500, 429)
        assert client(proxy.host).get_manifest("pilot/status", "1.0").digest == built.digest
        proxy.fail_next(*[503] * 10)
        with pytest.raises(RegistryError, match="503"):
            client(proxy.host, retries=2).get_manifest("pilot/status", "1.0")


def test_redirect_drops_authorization_on_host_change(seeded_registry, tmp_path):
    layer = seeded_registry.shared_layer
    with FaultProxy(seeded_registry.host) as storage, FaultProxy(seeded_registry.host) as front:
        front.require_auth("pilot", "pw")
        front.redirect_blobs(storage.url)
        c = client(front.host, credentials=("pilot", "pw"))
        c.fetch_blob("pilot/status", layer.digest, layer.size, tmp_path / "l")
        assert (tmp_path / "l").read_bytes() == layer.data
        assert any("Authorization" in r.headers for r in front.requests)
        assert storage.requests and not any("Authorization" in r.headers for r in storage.requests)


# --- authentication ---------------------------------------------------------------


def test_401_without_credentials_names_host_and_files(auth_registry, isolated_auth_files):
    c = client(auth_registry.host)
    with pytest.raises(RegistryError) as exc:
        c.list_tags("pilot/status")
    msg = str(exc.value)
    assert msg.startswith(f"401 Unauthorized from {auth_registry.host}")
    assert f"no credentials for {auth_registry.host} in" in msg
    assert str(isolated_auth_files / ".docker" / "config.json") in msg
    assert str(isolated_auth_files / "run" / "containers" / "auth.json") in msg


def test_basic_auth_explicit_and_from_auth_files(auth_registry, tmp_path, monkeypatch, isolated_auth_files):
    user, pw = auth_registry.credentials
    c = client(auth_registry.host, credentials=(user, pw))
    src, digest = random_file(tmp_path / "b", 1000)
    assert c.push_blob("pilot/status", digest, 1000, Opener(src)) == "uploaded"
    assert c.blob_exists("pilot/status", digest)

    entry = {"auths": {auth_registry.host: {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}}}
    docker_cfg = isolated_auth_files / ".docker" / "config.json"
    docker_cfg.parent.mkdir()
    docker_cfg.write_text(json.dumps(entry))
    assert client(auth_registry.host).blob_exists("pilot/status", digest)

    explicit = tmp_path / "auth.json"
    explicit.write_text(json.dumps({"auths": {f"http://{auth_registry.host}/v2/": {"username": user, "password": pw}}}))
    assert client(auth_registry.host, auth_file=explicit).blob_exists("pilot/status", digest)

    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(explicit))
    docker_cfg.unlink()
    assert client(auth_registry.host).blob_exists("pilot/status", digest)

    with pytest.raises(RegistryError, match="credentials for user 'pilot' rejected"):
        client(auth_registry.host, credentials=(user, "wrong")).blob_exists("pilot/status", digest)


def test_bearer_token_flow_against_real_registry(token_registry, tmp_path):
    c = client(token_registry.host, credentials=token_registry.credentials)
    src, digest = random_file(tmp_path / "b", 200_000)
    c.chunk_size = 64 * 1024
    assert c.push_blob("pilot/status", digest, 200_000, Opener(src)) == "uploaded"
    assert c.push_blob("pilot/notes", digest, 200_000, Opener(src), mount_from="pilot/status") == "mounted"
    c.fetch_blob("pilot/notes", digest, 200_000, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == src.read_bytes()
    assert c.catalog() == ["pilot/notes", "pilot/status"]
    issued = token_registry.token_server.issued
    # Tokens are cached per scope, not fetched per request.
    assert len(issued) == len({tuple(scopes) for _, scopes in issued}) == 5
    assert ("pilot", ["repository:pilot/notes:pull,push", "repository:pilot/status:pull"]) in issued

    with pytest.raises(RegistryError, match=rf"401 Unauthorized .*no credentials for {token_registry.host}"):
        client(token_registry.host).blob_exists("pilot/status", digest)
    with pytest.raises(RegistryError, match="credentials for user 'pilot' rejected"):
        client(token_registry.host, credentials=("pilot", "nope")).blob_exists("pilot/status", digest)


def test_bearer_token_flow(seeded_registry, tmp_path):
    built = seeded_registry.images["pilot/status"]
    with FaultProxy(seeded_registry.host) as proxy:
        proxy.require_bearer("pilot", "pw")
        c = client(proxy.host, credentials=("pilot", "pw"))
        assert c.get_manifest("pilot/status", "1.0").digest == built.digest
        c.fetch_blob("pilot/status", built.config.digest, built.config.size, tmp_path / "cfg")
        assert c.get_manifest("pilot/notes", "1.0").digest == seeded_registry.images["pilot/notes"].digest
        # One token per scope, cached: status (pull) once, notes (pull) once.
        assert sorted(proxy.tokens.values()) == ["repository:pilot/notes:pull", "repository:pilot/status:pull"]
        token_requests = [r for r in proxy.requests if r.path.startswith("/token")]
        assert len(token_requests) == 2
        assert all(r.headers["Authorization"].startswith("Basic ") for r in token_requests)

        with pytest.raises(RegistryError, match="no credentials for"):
            client(proxy.host).get_manifest("pilot/status", "1.0")


# --- blobs: push --------------------------------------------------------------------


def test_push_monolithic_then_skip(registry, tmp_path):
    c = client(registry.host)
    src, digest = random_file(tmp_path / "b", 5000)
    assert not c.blob_exists("app/one", digest)
    opener = Opener(src)
    assert c.push_blob("app/one", digest, 5000, opener) == "uploaded"
    assert opener.offsets == [0]
    assert c.blob_exists("app/one", digest)
    assert c.push_blob("app/one", digest, 5000, Opener(src)) == "exists"
    assert registry_blob_path(registry, digest).read_bytes() == src.read_bytes()
    assert c.push_blob("app/two", digest, 5000, Opener(src), mount_from="app/one") == "mounted"
    assert c.blob_exists("app/two", digest)


def test_push_refuses_wrong_content(registry, tmp_path):
    c = client(registry.host)
    src, digest = random_file(tmp_path / "b", 5000)
    wrong = "sha256:" + "1" * 64
    with pytest.raises(IntegrityError, match=rf"{registry.host}/app/one@{wrong}: sha256 mismatch"):
        c.push_blob("app/one", wrong, 5000, Opener(src))
    with pytest.raises(IntegrityError, match="ended before"):
        c.push_blob("app/one", digest, 6000, Opener(src))
    c.chunk_size = 1024
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        c.push_blob("app/one", wrong, 5000, Opener(src))
    assert not c.blob_exists("app/one", wrong)


def test_push_chunked(registry, fault_proxy, tmp_path):
    c = client(fault_proxy.host, chunk_size=64 * 1024)
    src, digest = random_file(tmp_path / "b", 300_000)
    seen = []
    assert c.push_blob("app/big", digest, 300_000, Opener(src), progress=seen.append) == "uploaded"
    assert sum(seen) == 300_000
    patches = [r for r in fault_proxy.requests if r.method == "PATCH"]
    assert [r.headers["Content-Range"] for r in patches] == [
        "0-65535", "65536-131071", "131072-196607", "196608-262143", "262144-299999"]
    assert registry_blob_path(registry, digest).read_bytes() == src.read_bytes()


def test_push_resumes_interrupted_session(registry, fault_proxy, tmp_path):
    chunk = 64 * 1024
    c = client(fault_proxy.host, chunk_size=chunk)
    src, digest = random_file(tmp_path / "b", 300_000)
    state = tmp_path / "upload.json"
    with pytest.raises(_Crash):
        c.push_blob("app/big", digest, 300_000, Opener(src, fail_at=2 * chunk), state_path=state)
    # Written atomically (no temporary file left beside it), readable by its owner only.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "registry", "upload.json"]
    assert state.stat().st_mode & 0o777 == 0o600
    assert json.loads(state.read_text())["digest"] == digest
    fault_proxy.reset()
    resumed = Opener(src)
    assert client(fault_proxy.host, chunk_size=chunk).push_blob(
        "app/big", digest, 300_000, resumed, state_path=state) == "uploaded"
    # Only what the registry did not have yet was read and sent again.
    assert resumed.offsets == [2 * chunk, 3 * chunk, 4 * chunk]
    assert [r.method for r in fault_proxy.requests][:2] == ["HEAD", "GET"]
    assert not state.exists()
    assert registry_blob_path(registry, digest).read_bytes() == src.read_bytes()


def test_push_recovers_from_dropped_upload(registry, fault_proxy, tmp_path):
    c = client(fault_proxy.host, chunk_size=64 * 1024)
    src, digest = random_file(tmp_path / "b", 300_000)
    fault_proxy.drop_upload_after(100_000 - 64 * 1024, method="PATCH")  # inside the first chunk
    assert c.push_blob("app/big", digest, 300_000, Opener(src)) == "uploaded"
    assert registry_blob_path(registry, digest).read_bytes() == src.read_bytes()
    # distribution 2.8 cancels a session whose PATCH was cut mid-body (its
    # _state offset no longer matches), so the status GET fails and the client
    # starts a new session rather than corrupting the old one.
    methods = [r.method for r in fault_proxy.requests]
    assert methods[:5] == ["HEAD", "POST", "PATCH", "GET", "POST"]
    fault_proxy.reset()
    fault_proxy.drop_upload_after(1000, method="PUT")
    src2, digest2 = random_file(tmp_path / "c", 5000)
    assert c.push_blob("app/big", digest2, 5000, Opener(src2)) == "uploaded"
    assert c.blob_exists("app/big", digest2)


# --- manifests: push, listings ---------------------------------------------------


def _push_image(c: RegistryClient, repo: str, built, layout: Path, tag: str = "1.0") -> str:
    for child in built.children:
        _push_image(c, repo, child, layout, tag=child.digest)
    for blob in ([built.config] if built.config else []) + list(built.layers):
        c.push_blob(repo, blob.digest, blob.size, Opener(layout / "blobs/sha256" / blob.digest.split(":")[1]))
    return c.put_manifest(repo, tag, built.manifest, built.media_type)


def test_put_manifest_seen_by_skopeo(registry, tmp_path):
    layout = tmp_path / "layout"
    built = build_oci_layout(layout, pilot_images())
    c = client(registry.host)
    for name, b in built.items():
        assert _push_image(c, f"pilot/{name}", b, layout) == b.digest
    for name, b in built.items():
        raw = skopeo_inspect_raw(f"{registry.host}/pilot/{name}:1.0")
        assert raw == b.manifest
        assert c.get_manifest(f"pilot/{name}", b.digest).digest == b.digest
    # Pushing again is idempotent.
    assert _push_image(c, "pilot/status", built["status"], layout) == built["status"].digest

    c.put_manifest("pilot/status", "1.1", built["status"].manifest, OCI_MANIFEST)
    c.put_manifest("pilot/status", built["status"].digest, built["status"].manifest, OCI_MANIFEST)
    c.page_size = 2
    assert sorted(c.list_tags("pilot/status")) == ["1.0", "1.1"]
    assert c.catalog() == ["pilot/multi", "pilot/notes", "pilot/status"]
    with pytest.raises(RegistryError, match="not found"):
        c.list_tags("pilot/nothing")

    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        c.put_manifest("pilot/status", "sha256:" + "2" * 64, built["status"].manifest, OCI_MANIFEST)


def test_put_manifest_with_missing_blobs_is_refused(registry, tmp_path):
    built = build_oci_layout(tmp_path / "layout", {"status": pilot_images()["status"]})["status"]
    with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
        client(registry.host).put_manifest("pilot/status", "1.0", built.manifest, OCI_MANIFEST)


def test_fetch_blob_into_a_sink_resumes_and_verifies(registry, fault_proxy, tmp_path):
    import io

    src, digest = random_file(tmp_path / "src", 400_000)
    client(registry.host).push_blob("big/blob", digest, 400_000, Opener(src))
    c = client(fault_proxy.host)
    fault_proxy.drop_blob_after(123_456)
    sink = io.BytesIO()
    c.fetch_blob_into("big/blob", digest, 400_000, sink)
    assert sink.getvalue() == src.read_bytes()
    fault_proxy.ignore_range()
    fault_proxy.drop_blob_after(50_000)
    sink, seen = io.BytesIO(), []
    c.fetch_blob_into("big/blob", digest, 400_000, sink, progress=seen.append)
    assert sink.getvalue() == src.read_bytes() and sum(seen) == 400_000 and min(seen) == -50_000
    fault_proxy.corrupt_blob()
    with pytest.raises(IntegrityError, match=rf"big/blob@{digest}: sha256 mismatch"):
        c.fetch_blob_into("big/blob", digest, 400_000, io.BytesIO())
