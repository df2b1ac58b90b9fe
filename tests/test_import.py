"""Import into a real registry: digests preserved, idempotent, files switched atomically."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import pytest

from airgap._internal.jsonutil import canonical_bytes
from tests.helpers import airgap


def test_import_preserves_digests_and_is_idempotent(tmp_path, signed_bundle, registry):
    state, files = tmp_path / "state", tmp_path / "files"
    args = ("import", signed_bundle.path, "--trust", signed_bundle.trust, "--registry", registry.host,
            "--plain-http", "--state", state, "--files-dir", files, "--json")
    r = airgap(*args)
    assert r.code == 0, r.err
    first = r.json()
    assert first["uploaded_blobs"] > 0 and first["status"] == "imported"
    assert first["files"] == 2  # configs/pilot.conf and configs/sub/run.sh
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


# --------------------------------------------------------------------------- audit log via the CLI


@pytest.fixture(scope="module")
def audited_state(tmp_path_factory, signed_bundle):
    """A state directory whose audit log holds 5 entries written by real imports and a verify
    (the first is the first use of the trust policy)."""
    from tests.fixtures.registry import start_registry

    root = tmp_path_factory.mktemp("audited")
    reg = start_registry(root / "registry")
    try:
        state = root / "state"
        imp = ("import", signed_bundle.path, "--trust", signed_bundle.trust, "--registry", reg.host, "--plain-http",
               "--state", state, "--json")
        assert airgap(*imp).code == 0
        assert airgap(*imp).json()["uploaded_blobs"] == 0  # re-import: nothing uploaded
        assert airgap("verify", signed_bundle.path, "--trust", signed_bundle.trust, "--state", state).code == 0
        assert airgap(*imp).code == 0
    finally:
        reg.stop()
    lines = (state / "audit.log").read_bytes().splitlines(keepends=True)
    assert len(lines) == 5
    assert [json.loads(x)["action"] for x in lines] == ["first-use", "import", "import", "verify", "import"]
    r = airgap("audit", "verify", "--state", state, "--json")
    assert r.code == 0 and r.json()["entries"] == 5
    return state


def _edit(lines):
    obj = json.loads(lines[2])
    obj["detail"]["uploaded_blobs"] = 99
    lines[2] = canonical_bytes(obj) + b"\n"
    return lines


def _delete(lines):
    del lines[2]
    return lines


def _reorder(lines):
    lines[2], lines[3] = lines[3], lines[2]
    return lines


@pytest.mark.parametrize("tamper,line", [(_edit, 3), (_delete, 3), (_reorder, 3)], ids=["edit", "delete", "reorder"])
def test_audit_verify_names_the_tampered_line(tmp_path, audited_state, tamper, line):
    state = tmp_path / "state"
    shutil.copytree(audited_state, state)
    log = state / "audit.log"
    log.write_bytes(b"".join(tamper(log.read_bytes().splitlines(keepends=True))))
    r = airgap("audit", "verify", "--state", state)
    assert r.code == 1, r.out + r.err
    assert re.search(rf"audit\.log:{line}\b", r.err), r.err
    # The subprocess (a real exit code) agrees.
    from tests.helpers import airgap_proc

    p = airgap_proc("audit", "verify", "--state", state)
    assert p.code == 1 and f"audit.log:{line}" in p.err


def test_reimport_reads_no_content_but_first_import_of_a_bad_copy_is_refused(tmp_path, signed_bundle, registry):
    """A re-import of an already-imported manifest uses no content byte of the copy
    (the registry serves everything by digest), and says so; a damaged copy of a
    bundle that was never imported is refused before anything is pushed."""
    from tests import bundlekit as kit

    state, files = tmp_path / "state", tmp_path / "files"
    base = ("--trust", signed_bundle.trust, "--registry", registry.host, "--plain-http", "--state", state, "--files-dir", files, "--json")
    assert airgap("import", signed_bundle.path, *base).code == 0
    damaged = signed_bundle.copy(tmp_path)
    blob = max((e for e in kit.read_entries(damaged) if e.name.startswith("blobs/") and e.data[:2] == b"\x1f\x8b"),
               key=lambda e: len(e.data))  # a gzip layer, not a manifest
    off, size = kit.member_offset(damaged, blob.name)
    kit.flip_byte(damaged, off + size // 2)
    r = airgap("import", damaged, *base)
    assert r.code == 0, r.err
    assert r.json()["uploaded_blobs"] == 0
    # A fresh registry state: the same damaged copy is refused, naming the blob.
    r = airgap("import", damaged, "--trust", signed_bundle.trust, "--registry", registry.host, "--plain-http",
               "--state", tmp_path / "state2")
    assert r.code == 1 and blob.name in r.err and "sha256 mismatch" in r.err


# --------------------------------------------------------------------------- import --json always says what was checked


def _checks(doc):
    return {c["check"]: c["status"] for c in doc["checks"]}


def test_import_json_includes_the_check_list_whatever_happened(tmp_path, signed_bundle, registry):
    from airgap.verify import CHECK_NAMES

    base = ("import", "--trust", signed_bundle.trust, "--plain-http", "--state", tmp_path / "state", "--json")
    # accepted: every check, and the import's own result
    r = airgap(base[0], signed_bundle.path, *base[1:], "--registry", registry.host)
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["result"] == "accepted" and doc["status"] == "imported"
    assert set(_checks(doc)) == set(CHECK_NAMES) and _checks(doc)["signatures"] == "pass"
    # rejected by verification: verify's report, the failing check named
    r = airgap(base[0], signed_bundle.copy(tmp_path, builder_only=True), *base[1:], "--registry", registry.host)
    assert r.code == 1
    doc = r.json()
    assert doc["result"] == "rejected" and _checks(doc)["signatures"] == "fail"
    assert "officer: 0 of 1" in doc["error"]["message"] and doc["registry"] == registry.host
    # failed after verification (nothing listens at the registry): the error and the checks that passed
    r = airgap(base[0], signed_bundle.path, *base[1:], "--registry", "127.0.0.1:1")
    assert r.code == 1
    doc = r.json()
    assert doc["result"] == "error" and "127.0.0.1:1" in doc["message"]
    assert _checks(doc)["signatures"] == "pass" and "fail" not in _checks(doc).values()
    # refused before verification (a usage error): the checks, none run
    r = airgap(base[0], signed_bundle.path, *base[1:], "--registry", registry.host, "--username", "u")
    assert r.code == 2
    doc = r.json()
    assert doc["result"] == "error" and "--password-file" in doc["message"]
    assert set(_checks(doc).values()) == {"skipped"} and set(_checks(doc)) == set(CHECK_NAMES)
