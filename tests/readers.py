"""Other readers of the same bytes, run for real: GNU tar, Python's tarfile, skopeo, umoci.

Each function returns what one reader sees, in one shape, so a test can assert
that airgap and every other reader agree on an accepted bundle:
``{name: (mode, size, sha256 of the content as that reader extracts it)}`` for
tar readers; manifest bytes, layer and config digests for OCI readers.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from airgap import oci
from airgap.bundle import Bundle, stream

Members = dict[str, tuple[int, int, str]]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def airgap_members(path: Path) -> Members:
    """airgap's own reader: the strict scan, then each member streamed from the bundle."""
    out: Members = {}
    with Bundle.open(path) as bundle:
        for m in bundle.members:
            h = hashlib.sha256()
            for chunk in stream(bundle.source, m.data_offset, m.size, artifact=m.name):
                h.update(chunk)
            out[m.name] = (m.mode, m.size, h.hexdigest())
    return out


def tarfile_members(path: Path) -> Members:
    out: Members = {}
    with tarfile.open(path, "r:") as tf:
        for m in tf:
            assert m.isreg(), (m.name, m.type)
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0), m.name
            assert m.name not in out, f"tarfile sees {m.name} twice"
            out[m.name] = (m.mode, m.size, hashlib.sha256(tf.extractfile(m).read()).hexdigest())
    return out


def gnu_tar_listing(path: Path) -> dict[str, tuple[str, str, int]]:
    """``tar -tvf --numeric-owner``: {name: (mode string, owner, size)}; tar must not complain."""
    proc = subprocess.run(["tar", "--numeric-owner", "--full-time", "--quoting-style=literal", "-tvf", str(path)],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode(errors="replace")
    out: dict[str, tuple[str, str, int]] = {}
    for line in proc.stdout.decode("utf-8").splitlines():
        perms, owner, size, _day, _time, name = line.split(None, 5)
        assert name not in out, f"GNU tar lists {name} twice"
        out[name] = (perms, owner, int(size))
    return out


def gnu_tar_members(path: Path) -> Members:
    """Extract with GNU tar (``--numeric-owner``, as root) and hash what it wrote."""
    with tempfile.TemporaryDirectory(prefix="gnu-tar-") as tmp:
        proc = subprocess.run(["tar", "--numeric-owner", "-xf", str(path), "-C", tmp], capture_output=True, timeout=300)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode(errors="replace")
        out: Members = {}
        for dirpath, _dirs, files in os.walk(tmp):
            for f in files:
                full = Path(dirpath, f)
                st = full.lstat()
                assert (st.st_uid, st.st_gid) == (0, 0) or os.getuid() != 0, full
                out[full.relative_to(tmp).as_posix()] = (st.st_mode & 0o7777, st.st_size, _sha256_file(full))
        return out


def _perms(mode: int) -> str:
    bits = "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))
    return "-" + bits


def assert_tar_readers_agree(path: Path) -> Members:
    """GNU tar (listing and extraction), tarfile and airgap see the same members and bytes."""
    ours = airgap_members(path)
    assert tarfile_members(path) == ours
    assert gnu_tar_members(path) == ours
    listing = gnu_tar_listing(path)
    assert listing == {name: (_perms(mode), "0/0", size) for name, (mode, size, _) in ours.items()}
    return ours


# --------------------------------------------------------------------------- OCI readers


def extract_layout(bundle_path: Path, dest: Path) -> Path:
    """Write the bundle's OCI layout with airgap's own reader (no other tar touches it)."""
    with Bundle.open(bundle_path) as bundle:
        for m in bundle.members:
            if not (m.name in ("oci-layout", "index.json") or m.name.startswith("blobs/")):
                continue
            target = dest / m.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                for chunk in stream(bundle.source, m.data_offset, m.size, artifact=m.name):
                    f.write(chunk)
    return dest


def skopeo(*args: str) -> bytes:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, timeout=120)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def skopeo_copy_to_dir(layout: Path, ref: str, dest: Path, *platform: str) -> tuple[bytes, set[str]]:
    """``skopeo copy oci:LAYOUT:REF dir:DEST``: the manifest skopeo wrote and the blobs it fetched."""
    skopeo(*platform, "copy", "--quiet", f"oci:{layout}:{ref}", f"dir:{dest}")
    blobs = {"sha256:" + p.name for p in dest.iterdir() if len(p.name) == 64}
    return (dest / "manifest.json").read_bytes(), blobs


def umoci_rootfs(layout: Path, ref: str, dest: Path) -> set[str]:
    """``umoci unpack``: every regular file umoci wrote into the rootfs."""
    proc = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{ref}", str(dest)], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    root = dest / "rootfs"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def layer_files(layout: Path, layers: tuple[oci.Descriptor, ...]) -> set[str]:
    """The regular files a stack of layers (as airgap parsed the manifest) puts in a rootfs."""
    files: set[str] = set()
    for d in layers:
        with tarfile.open(layout / oci.blob_path(d.digest)) as tf:
            files |= {m.name.lstrip("./") for m in tf if m.isreg()}
    return files


def assert_oci_readers_agree(bundle_path: Path, work: Path) -> int:
    """For every image: skopeo and umoci read the manifest, config and layers airgap checked.

    Returns the number of image manifests compared.
    """
    layout = extract_layout(bundle_path, work / "layout")
    with Bundle.open(bundle_path) as bundle:
        manifest = bundle.manifest()
        docs = {m.name: bundle.read(m, oci.MAX_MANIFEST_BYTES) for m in bundle.members
                if m.name.startswith("blobs/") and m.size <= oci.MAX_MANIFEST_BYTES}
    compared = 0
    for n, img in enumerate(manifest.images):
        raw = skopeo("inspect", "--raw", f"oci:{layout}:{img.layout_ref}")
        assert raw == docs[oci.blob_path(img.digest)], img.ref
        top = oci.parse_document(raw, img.ref, img.media_type)
        if isinstance(top, oci.ImageIndex):
            targets = [(c, ["--override-os", c.platform.os, "--override-arch", c.platform.architecture]) for c in top.manifests]
        else:
            targets = [(None, [])]
        for i, (child, platform) in enumerate(targets):
            digest = child.digest if child else img.digest
            ours = oci.parse_document(docs[oci.blob_path(digest)], img.ref, child.media_type if child else img.media_type)
            want = {ours.config.digest, *(layer.digest for layer in ours.layers)}
            seen_manifest, seen_blobs = skopeo_copy_to_dir(layout, img.layout_ref, work / f"dir-{n}-{i}", *platform)
            assert seen_manifest == docs[oci.blob_path(digest)], (img.ref, digest)
            assert seen_blobs == want, (img.ref, digest)
            config = skopeo(*platform, "inspect", "--config", "--raw", f"oci:{layout}:{img.layout_ref}")
            assert "sha256:" + hashlib.sha256(config).hexdigest() == ours.config.digest
            layers = json.loads(skopeo(*platform, "inspect", f"oci:{layout}:{img.layout_ref}"))["Layers"]
            assert layers == [layer.digest for layer in ours.layers], img.ref
            if child is None:
                # umoci takes no platform choice: it unpacks single-platform images.
                assert umoci_rootfs(layout, img.layout_ref, work / f"umoci-{n}") == layer_files(layout, ours.layers)
            compared += 1
    return compared
