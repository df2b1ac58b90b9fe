"""The GEHEIM pilot sample: images built offline are deterministic and readable by real tools."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from airgap.spec import load_spec
from tests.textscan import scan_text

PILOT = Path(__file__).resolve().parents[1] / "bundles" / "geheim-pilot"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _tools():
    missing = [t for t in ("umoci", "skopeo", "docker-registry", "setpriv") if not shutil.which(t)]
    missing += [] if Path("/bin/busybox").exists() else ["busybox-static"]
    if missing:
        pytest.fail(f"the sample images need {', '.join(missing)}: run scripts/setup.sh")
    if os.geteuid() != 0:
        pytest.fail("the rootless build test drops from root to nobody: run the suite as root (README)")


def _load_make_images():
    spec = importlib.util.spec_from_file_location("make_images", PILOT / "make_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_images = _load_make_images()


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    base = tmp_path_factory.mktemp("pilot-images")
    first = make_images.build_layout(base / "a")
    second = make_images.build_layout(base / "b")
    return base / "a", first, base / "b", second


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def test_five_tags_built(layouts):
    _, digests, _, _ = layouts
    assert set(digests) == {"status-1.0", "status-1.1", "notes-1.0", "notes-1.1", "pause-1.0"}
    assert len(set(digests.values())) == 5


def test_deterministic(layouts):
    a, da, b, db = layouts
    assert da == db
    assert (a / "index.json").read_bytes() == (b / "index.json").read_bytes()
    assert sorted(p.name for p in (a / "blobs/sha256").iterdir()) == sorted(p.name for p in (b / "blobs/sha256").iterdir())


def test_layers_shared_and_one_layer_changes(layouts):
    a, digests, _, _ = layouts
    layers = {tag: [l["digest"] for l in json.loads(_blob(a, d))["layers"]] for tag, d in digests.items()}
    assert all(len(v) == 2 for v in layers.values())
    assert len({v[0] for v in layers.values()}) == 1, "busybox base layer shared by all images"
    assert layers["status-1.0"][1] != layers["status-1.1"][1]
    assert layers["notes-1.0"][1] != layers["notes-1.1"][1]


def test_image_config_is_sane(layouts):
    a, digests, _, _ = layouts
    for tag, digest in digests.items():
        app, _, version = tag.partition("-")
        if app == "pause":
            continue
        manifest = json.loads(_blob(a, digest))
        config = json.loads(_blob(a, manifest["config"]["digest"]))
        c = config["config"]
        assert c["Entrypoint"][:2] == ["/bin/busybox", "httpd"]
        port = "8080" if app == "status" else "8081"
        assert c["Cmd"] == ["-p", port] and f"{port}/tcp" in c["ExposedPorts"]
        assert c["User"] == "65534:65534"
        assert c["Labels"]["org.opencontainers.image.title"] == f"pilot/{app}"
        assert c["Labels"]["org.opencontainers.image.version"] == version
        assert config["created"].startswith("2025-")
        assert [h["created"] for h in config["history"]] == [config["history"][0]["created"], config["created"]]
        assert config["architecture"] == "amd64" and config["os"] == "linux"
        # no external endpoint baked into the config
        assert scan_text(json.dumps(config)) == []


def test_pause_image_holds_a_pod_until_told_to_stop(layouts, tmp_path):
    a, digests, _, _ = layouts
    manifest = json.loads(_blob(a, digests["pause-1.0"]))
    config = json.loads(_blob(a, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/pause"] and config["config"]["User"] == "65534:65534"
    assert scan_text(json.dumps(config)) == []
    bundle = tmp_path / "pause"
    subprocess.run(["umoci", "unpack", "--image", f"{a}:pause-1.0", str(bundle)], check=True, capture_output=True)
    root = bundle / "rootfs"
    if os.geteuid() == 0 and shutil.which("chroot"):
        proc = subprocess.Popen([shutil.which("chroot"), str(root), "/pause"], env={"PATH": "/bin"})
        time.sleep(0.5)
        assert proc.poll() is None  # holds
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # and stops cleanly on TERM
    else:  # pragma: no cover - the suite runs as root
        assert os.access(root / "pause", os.X_OK)


def test_umoci_and_skopeo_read_the_layout(layouts):
    a, digests, _, _ = layouts
    for tag, digest in digests.items():
        out = subprocess.run(["umoci", "stat", "--json", "--image", f"{a}:{tag}"], check=True,
                             capture_output=True, text=True).stdout
        assert len(json.loads(out)["history"]) == 2
        info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{a}:{tag}"], check=True,
                                         capture_output=True, text=True).stdout)
        assert info["Digest"] == digest
        assert info["Labels"]["org.opencontainers.image.title"].startswith("pilot/")


def test_rootfs_content(layouts, tmp_path):
    a, _, _, _ = layouts
    bundle = tmp_path / "unpacked"
    subprocess.run(["umoci", "unpack", "--image", f"{a}:notes-1.1", str(bundle)], check=True,
                   capture_output=True)
    root = bundle / "rootfs"
    assert (root / "bin/busybox").stat().st_size > 100_000
    assert (root / "bin/sh").is_symlink()
    assert "1.1" in (root / "www/index.html").read_text()
    cgi = root / "www/cgi-bin/notes"
    assert cgi.stat().st_mode & 0o111
    assert "@VERSION@" not in cgi.read_text()
    if os.geteuid() == 0 and shutil.which("chroot"):
        # the CGI runs inside the image's own root, with nothing but its busybox
        out = subprocess.run([shutil.which("chroot"), str(root), "/bin/sh", "/www/cgi-bin/notes"], capture_output=True,
                             text=True, env={"PATH": "/bin"}, check=True).stdout
        assert out.startswith("Content-Type: text/plain") and "pilot/notes 1.1" in out
        assert "built into pilot/notes 1.1" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_preserves_digests_and_spec_resolves(layouts, tmp_path):
    a, digests, _, _ = layouts
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        registry = f"127.0.0.1:{port}"
        pushed = make_images.push(a, registry)
        assert pushed[f"{registry}/pilot/status:1.0"] == digests["status-1.0"]
        spec = load_spec(PILOT / "bundle.yaml", env={"AIRGAP_SOURCE_REGISTRY": registry})
        for image in spec.images:
            info = json.loads(subprocess.run(
                ["skopeo", "inspect", "--tls-verify=false", f"docker://{image.reference}"],
                check=True, capture_output=True, text=True).stdout)
            tag = image.reference.repository.split("/")[-1] + "-" + image.tag
            assert info["Digest"] == digests[tag]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_rootless_build_gives_the_same_digests(layouts):
    """umoci's rootless mode maps the builder's uid to 0: who builds does not change a digest."""
    _, digests, _, _ = layouts
    # pytest's tmp_path lives under a 0700 directory that nobody cannot enter.
    with tempfile.TemporaryDirectory(prefix="airgap-rootless-") as tmp:
        work = Path(tmp)
        shutil.copytree(PILOT, work / "pilot", ignore=shutil.ignore_patterns("__pycache__"))
        for path in work.rglob("*"):
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))
        work.chmod(0o777)
        r = subprocess.run(
            [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
             "sh", str(work / "pilot" / "make-images.sh"), str(work / "out")],
            capture_output=True, text=True,
            env={"PATH": os.environ["PATH"], "HOME": str(work), "TMPDIR": str(work)},
        )
        assert r.returncode == 0, r.stderr
        assert make_images.layout_digests(work / "out") == digests
