"""The isolated side for real: a network namespace with only loopback.

``airgap verify`` and ``airgap import`` run inside it as separate processes
against a real ``docker-registry`` that also runs inside it; skopeo, inside it
too, sees the bundle's digests.  Any hidden download would fail at once: there
is no route out.
"""

from __future__ import annotations

import hashlib
import json
import shutil

from tests.helpers import airgap


def test_verify_and_import_inside_a_loopback_only_netns(netns, signed_bundle, tmp_path):
    # No route out: only lo exists, and the kernel has no route to a public address.
    links = netns.run("ip", "-o", "link", "show")
    assert links.returncode == 0
    assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"]
    route = netns.run("ip", "route", "get", "192.0.2.1")
    assert route.returncode != 0 and "unreachable" in route.stderr.lower(), route
    assert netns.run("ip", "route", "get", "127.0.0.1").returncode == 0
    connect = netns.run("python3", "-c",
                        "import socket,sys\n"
                        "try:\n socket.create_connection(('192.0.2.1', 443), timeout=2)\n"
                        "except OSError as e:\n print(e.errno); sys.exit(0)\n"
                        "sys.exit(1)")
    assert connect.returncode == 0 and connect.stdout.strip() == "101", connect  # ENETUNREACH

    host = netns.start_registry()
    bundle = tmp_path / signed_bundle.path.name
    shutil.copyfile(signed_bundle.path, bundle)
    state, files = tmp_path / "state", tmp_path / "files"

    v = netns.airgap("verify", bundle, "--trust", signed_bundle.trust, "--state", state)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "VERIFIED: geheim-pilot 1.0.0" in v.stdout

    imp = netns.airgap("import", bundle, "--trust", signed_bundle.trust, "--registry", host, "--plain-http",
                       "--state", state, "--files-dir", files, "--json")
    assert imp.returncode == 0, imp.stderr
    result = json.loads(imp.stdout)
    assert result["status"] == "imported" and result["uploaded_blobs"] > 0

    manifest = airgap("inspect", bundle, "--json").json()["manifest"]
    expected = {img["digest"] for img in manifest["images"]}
    assert {img["digest"] for img in result["images"]} == expected
    for img in result["images"]:
        refs = [img["internal_ref"]] + ([f"{img['internal_name']}:{img['tag']}"] if img["tag"] else [])
        for ref in refs:
            raw = netns.run("skopeo", "inspect", "--raw", "--tls-verify=false", "--no-creds", f"docker://{ref}")
            assert raw.returncode == 0, raw.stderr
            assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == img["digest"], ref

    assert (files / "current" / "configs" / "pilot.conf").read_text() == "registry=internal\n"
    again = netns.airgap("import", bundle, "--trust", signed_bundle.trust, "--registry", host, "--plain-http",
                         "--state", state, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["uploaded_blobs"] == 0
    audit = netns.airgap("audit", "verify", "--state", state)
    assert audit.returncode == 0, audit.stderr
