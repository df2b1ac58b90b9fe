"""Differential bundles, end to end with the real CLI and real registries.

Build 1.0.0, import it, export the isolated side's inventory, change one layer
of one image at the source, build 1.1.0 ``--since`` the inventory: the bundle
carries only what is new, names its base, verifies and imports on top, and is
refused by a registry that lacks the base.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from pathlib import Path

import pytest

from tests.fixtures.bundles import CREATED
from tests.fixtures.images import (
    ImageSpec,
    build_oci_layout,
    layer,
    push_layout,
    skopeo_inspect_raw,
)
from tests.fixtures.keys import make_policy
from tests.fixtures.registry import start_registry
from tests.helpers import airgap, tar_members, write_spec
from tests.readers import assert_tar_readers_agree

BASE = layer({"etc/os-release": b"NAME=diff-base\nVERSION=1\n"})
APP_V1 = layer({"opt/app/app.py": b"print('v1')\n" * 30})
APP_V2 = layer({"opt/app/app.py": b"print('v2, changed')\n" * 30})
TOOL = layer({"opt/tool/tool.sh": b"#!/bin/sh\necho tool\n"})


def _images(app_layer):
    return {
        "app": ImageSpec(layers=[BASE, app_layer], cmd=("/opt/app/app.py",)),
        "tool": ImageSpec(layers=[BASE, TOOL], cmd=("/opt/tool/tool.sh",)),
    }


def _catalog(host: str) -> list[str]:
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", "/v2/_catalog")
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body).get("repositories") or []


class Site:
    """Source registry (connected side) and target registry (isolated side)."""

    def __init__(self, tmp: Path, source, keyring):
        self.tmp, self.source, self.keyring = tmp, source, keyring
        self.trust = tmp / "trust.json"
        self.trust.write_bytes(make_policy(keyring).to_bytes())
        self.v1 = build_oci_layout(tmp / "layout-v1", _images(APP_V1))
        self.v2 = build_oci_layout(tmp / "layout-v2", _images(APP_V2))
        for name in ("app", "tool"):
            push_layout(tmp / "layout-v1", name, source.host, f"diff/{name}", dest_tag="1.0")

    def push_v2(self) -> None:
        push_layout(self.tmp / "layout-v2", "app", self.source.host, "diff/app", dest_tag="1.0")

    def build(self, version: str, since: Path | None = None) -> Path:
        spec = write_spec(self.tmp / f"spec-{version}", version=version,
                          images=[f"{self.source.host}/diff/app:1.0", f"{self.source.host}/diff/tool:1.0"])
        out = self.tmp / f"geheim-pilot-{version}.tar"
        args = ["build", spec, "-o", out, "--key", self.keyring.key_path("builder-1"), "--plain-http",
                "--created", CREATED, "--quiet"]
        if since is not None:
            args += ["--since", since]
        r = airgap(*args)
        assert r.code == 0, r.err
        r = airgap("sign", out, "--key", self.keyring.key_path("officer-1"), "--yes", "--quiet")
        assert r.code == 0, r.err
        return out

    def import_(self, bundle: Path, target: str, state: Path):
        return airgap("import", bundle, "--trust", self.trust, "--registry", target, "--plain-http",
                      "--state", state, "--files-dir", state.parent / (state.name + "-files"), "--json")


@pytest.fixture
def site(tmp_path, registry, keyring):
    return Site(tmp_path, registry, keyring)


def _blob_members(bundle: Path) -> set[str]:
    return {"sha256:" + m.name.rsplit("/", 1)[1] for m in tar_members(bundle) if m.name.startswith("blobs/sha256/")}


def _check_tags(result: dict, expected: dict[str, str]) -> None:
    """skopeo, a client no one here wrote, sees each tag at the expected digest."""
    seen = {}
    for img in result["images"]:
        repo = img["internal_name"].rsplit("/diff/", 1)[1]
        raw = skopeo_inspect_raw(f"{img['internal_name']}:{img['tag']}")
        seen["diff/" + repo] = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert seen == expected


def _documents(built) -> set[str]:
    return {b.digest for b in built.values()}


def test_differential_since_inventory(site, tmp_path):
    target = start_registry(tmp_path / "target")
    try:
        state = tmp_path / "state"
        b1 = site.build("1.0.0")
        r = site.import_(b1, target.host, state)
        assert r.code == 0, r.err
        assert r.json()["uploaded_blobs"] == 5  # base, app v1, tool, 2 configs

        have = tmp_path / "have.json"
        r = airgap("inventory", "--registry", target.host, "--plain-http", "-o", have, "--json")
        assert r.code == 0, r.err
        inv = json.loads(have.read_text())
        held = {b["digest"] for b in inv["blobs"]}
        assert APP_V1.digest in held and BASE.digest in held and APP_V2.digest not in held

        site.push_v2()
        b2 = site.build("1.1.0", since=have)
        app2, tool = site.v2["app"], site.v2["tool"]
        carried = _blob_members(b2)
        # Only the new layer and the changed image's new config, plus the manifests.
        assert carried - _documents(site.v2) == {APP_V2.digest, app2.config.digest}
        assert _documents(site.v2) <= carried
        assert BASE.digest not in carried and TOOL.digest not in carried and tool.config.digest not in carried

        r = airgap("inspect", b2, "--json")
        assert r.code == 0, r.err
        s = r.json()
        assert s["totals"]["external_blobs"] == 3
        ext = {e["digest"] for e in s["manifest"]["external_blobs"]}
        assert ext == {BASE.digest, TOOL.digest, tool.config.digest}
        base = s["manifest"]["base"]
        assert base["kind"] == "inventory"
        assert base["digest"] == "sha256:" + hashlib.sha256(have.read_bytes()).hexdigest()

        r = airgap("verify", b2, "--trust", site.trust, "--state", state)
        assert r.code == 0, r.out + r.err
        assert_tar_readers_agree(b2)  # what verify accepted, GNU tar and tarfile read the same
        r = site.import_(b2, target.host, state)
        assert r.code == 0, r.err
        res = r.json()
        assert res["version"] == "1.1.0"
        assert res["uploaded_blobs"] == 2  # new layer + new config
        _check_tags(res, {"diff/app": app2.digest, "diff/tool": tool.digest})
        assert airgap("audit", "verify", "--state", state).code == 0

        # The same differential bundle into an EMPTY registry: refused, nothing pushed.
        empty = start_registry(tmp_path / "empty")
        try:
            estate = tmp_path / "estate"
            r = site.import_(b2, empty.host, estate)
            assert r.code == 1, r.out + r.err
            err = r.err
            assert "BaseMissing" in err or "base" in err.lower()
            assert any(d in err for d in ext), err
            assert "inventory of" in err, err
            assert _catalog(empty.host) == []
            assert not (estate / "bundles").exists()
        finally:
            empty.close()
    finally:
        target.close()


def test_differential_since_imported_manifest(site, tmp_path):
    target = start_registry(tmp_path / "target")
    try:
        state = tmp_path / "state"
        b1 = site.build("1.0.0")
        assert site.import_(b1, target.host, state).code == 0
        recorded = state / "bundles" / "geheim-pilot" / "manifest.json"
        assert recorded.is_file()

        site.push_v2()
        b2 = site.build("1.1.0", since=recorded)
        carried = _blob_members(b2)
        assert carried - _documents(site.v2) == {APP_V2.digest, site.v2["app"].config.digest}
        s = airgap("inspect", b2, "--json").json()
        assert s["manifest"]["base"]["kind"] == "bundle"
        assert s["manifest"]["base"]["description"] == "bundle geheim-pilot 1.0.0"
        assert s["totals"]["external_blobs"] == 3

        r = site.import_(b2, target.host, state)
        assert r.code == 0, r.err
        assert r.json()["uploaded_blobs"] == 2
        _check_tags(r.json(), {"diff/app": site.v2["app"].digest, "diff/tool": site.v2["tool"].digest})
    finally:
        target.close()


def test_differential_new_repository_sharing_a_base_layer(site, tmp_path):
    """1.1.0 adds an image in a repository the isolated side has never seen, built
    on the base layer it already holds (in other repositories): import links the
    left-out blob into the new repository instead of refusing or failing."""
    target = start_registry(tmp_path / "target")
    try:
        state = tmp_path / "state"
        assert site.import_(site.build("1.0.0"), target.host, state).code == 0
        have = tmp_path / "have.json"
        assert airgap("inventory", "--registry", target.host, "--plain-http", "-o", have).code == 0

        extra_layer = layer({"opt/extra/run": b"extra\n"})
        extra = build_oci_layout(tmp_path / "layout-extra", {"extra": ImageSpec(layers=[BASE, extra_layer])})
        push_layout(tmp_path / "layout-extra", "extra", site.source.host, "diff/extra", dest_tag="1.0")
        spec = write_spec(tmp_path / "spec-1.1.0", version="1.1.0", images=[
            f"{site.source.host}/diff/app:1.0", f"{site.source.host}/diff/tool:1.0", f"{site.source.host}/diff/extra:1.0"])
        b2 = tmp_path / "geheim-pilot-1.1.0.tar"
        r = airgap("build", spec, "-o", b2, "--key", site.keyring.key_path("builder-1"), "--plain-http",
                   "--created", CREATED, "--since", have, "--quiet")
        assert r.code == 0, r.err
        assert airgap("sign", b2, "--key", site.keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
        assert BASE.digest not in _blob_members(b2)

        r = site.import_(b2, target.host, state)
        assert r.code == 0, r.err
        res = r.json()
        [img] = [i for i in res["images"] if i["internal_name"].endswith("/diff/extra")]
        raw = skopeo_inspect_raw(f"{img['internal_name']}:1.0")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == extra["extra"].digest
        # Every blob of the new image is served from its repository.
        repo = img["internal_name"].split("/", 1)[1]
        for b in extra["extra"].blobs():
            conn = http.client.HTTPConnection(target.host, timeout=10)
            conn.request("HEAD", f"/v2/{repo}/blobs/{b.digest}")
            assert conn.getresponse().status == 200, b.digest
            conn.close()
    finally:
        target.close()
