"""Import into a real registry: digests preserved, idempotent, files switched atomically."""

from __future__ import annotations

import hashlib
import json
import subprocess

from tests.helpers import airgap


def test_import_preserves_digests_and_is_idempotent(tmp_path, signed_bundle, registry):
    state, files = tmp_path / "state", tmp_path / "files"
    args = ("import", signed_bundle.path, "--trust", signed_bundle.trust, "--registry", registry.host,
            "--plain-http", "--state", state, "--files-dir", files, "--json")
    r = airgap(*args)
    assert r.code == 0, r.err
    first = r.json()
    assert first["uploaded_blobs"] > 0 and first["status"] == "imported"
    for img in first["images"]:
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{img['internal_ref']}"],
                             capture_output=True, timeout=60, check=True).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == img["digest"]
        if img["tag"]:
            tagged = img["internal_name"] + ":" + img["tag"]
            raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{tagged}"],
                                 capture_output=True, timeout=60, check=True).stdout
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == img["digest"]
    assert (files / "current" / "configs" / "pilot.conf").read_text() == "registry=internal\n"
    imported = json.loads((state / "bundles" / "geheim-pilot" / "imported.json").read_text())
    assert imported["version"] == "1.0.0"
    # Second import: nothing uploaded.
    r = airgap(*args)
    assert r.code == 0, r.err
    second = r.json()
    assert second["uploaded_blobs"] == 0 and second["status"] == "already-present"
    assert airgap("audit", "verify", "--state", state).code == 0
