"""No write under --state or --files-dir follows a link (issue 8, finding 6).

Whoever can plant a symbolic link inside the state or files directory must not
choose where airgap writes: every such link is refused and named, before
anything is pushed, and the place it points at stays untouched.
"""

from __future__ import annotations

import http.client
import json
import os

import pytest

from airgap._internal.fsutil import Dir, atomic_write, open_under
from airgap.exceptions import UnsafePathError
from tests.helpers import airgap


def _catalog(host: str) -> list[str]:
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request("GET", "/v2/_catalog")
        return json.loads(conn.getresponse().read()).get("repositories") or []
    finally:
        conn.close()


def _import(signed_bundle, registry, state, files=None):
    extra = ("--files-dir", files) if files is not None else ()
    return airgap("import", signed_bundle.path, "--trust", signed_bundle.trust, "--registry", registry.host,
                  "--plain-http", "--state", state, *extra)


@pytest.fixture
def elsewhere(tmp_path):
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


# --------------------------------------------------------------------------- the primitive


def test_walk_refuses_a_link_at_any_component_and_names_it(tmp_path, elsewhere):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError) as err:
        open_under(root, "a/b/c", create=True)
    assert err.value.artifact == str(root / "a" / "b") and "symbolic link" in err.value.reason
    assert list(elsewhere.iterdir()) == []
    # A file where a directory is expected is refused too.
    (root / "f").write_text("x")
    with pytest.raises(UnsafePathError, match="not a directory"):
        open_under(root, "f/g", create=True)


def test_atomic_write_under_a_root_refuses_links_dangling_or_not(tmp_path, elsewhere):
    root = tmp_path / "root"
    root.mkdir()
    (root / "state.json").symlink_to(elsewhere / "state.json")  # dangling
    with pytest.raises(UnsafePathError, match="symbolic link"):
        atomic_write(root / "state.json", b"{}", root=root)
    assert not (elsewhere / "state.json").exists()
    (root / "sub").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="sub"):
        atomic_write(root / "sub" / "x.json", b"{}", root=root)
    assert list(elsewhere.iterdir()) == []
    atomic_write(root / "new" / "x.json", b"{}", root=root)  # missing directories are made, as directories
    assert (root / "new" / "x.json").read_bytes() == b"{}"


def test_open_file_refuses_a_link_leaf(tmp_path, elsewhere):
    target = elsewhere / "audit.log"
    target.write_text("")
    (tmp_path / "audit.log").symlink_to(target)
    with Dir.open_root(tmp_path) as d, pytest.raises(UnsafePathError, match="audit.log"):
        d.open_file("audit.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)


# --------------------------------------------------------------------------- import


def test_files_versions_link_is_refused_before_anything_is_pushed(tmp_path, signed_bundle, registry, elsewhere):
    files, state = tmp_path / "files", tmp_path / "state"
    files.mkdir()
    (files / "versions").symlink_to(elsewhere)
    r = _import(signed_bundle, registry, state, files)
    assert r.code == 1, r.out + r.err
    assert str(files / "versions") in r.err and "symbolic link" in r.err
    assert list(elsewhere.iterdir()) == []
    assert _catalog(registry.host) == []


def test_state_bundle_record_link_is_refused_before_anything_is_pushed(tmp_path, signed_bundle, registry, elsewhere):
    state = tmp_path / "state"
    (state / "bundles").mkdir(parents=True)
    (state / "bundles" / "geheim-pilot").symlink_to(elsewhere)
    r = _import(signed_bundle, registry, state)
    assert r.code == 1, r.out + r.err
    assert str(state / "bundles" / "geheim-pilot") in r.err
    assert list(elsewhere.iterdir()) == []
    assert _catalog(registry.host) == []


def test_dangling_audit_log_link_is_refused_and_not_created(tmp_path, signed_bundle, registry, elsewhere):
    state = tmp_path / "state"
    state.mkdir()
    (state / "audit.log").symlink_to(elsewhere / "audit.log")
    r = _import(signed_bundle, registry, state)
    assert r.code == 1, r.out + r.err
    assert "audit.log" in r.err and "symbolic link" in r.err
    assert not (elsewhere / "audit.log").exists()
    assert _catalog(registry.host) == []
    # verify --state writes its audit entry there too: refused the same way.
    v = airgap("verify", signed_bundle.path, "--trust", signed_bundle.trust, "--state", state)
    assert v.code == 1 and "audit.log" in v.err
    assert not (elsewhere / "audit.log").exists()


def test_current_that_is_a_directory_is_refused_before_any_tag(tmp_path, signed_bundle, registry):
    files, state = tmp_path / "files", tmp_path / "state"
    (files / "current").mkdir(parents=True)
    (files / "current" / "keep.txt").write_text("operator's")
    r = _import(signed_bundle, registry, state, files)
    assert r.code == 1, r.out + r.err
    assert str(files / "current") in r.err and "not a symbolic link" in r.err
    assert _catalog(registry.host) == []  # nothing pushed, so no tag moved
    assert (files / "current" / "keep.txt").read_text() == "operator's"
    assert not (state / "bundles").exists()


def test_verify_record_refuses_a_linked_state_file_and_audits_the_refusal(tmp_path, signed_bundle, elsewhere):
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").symlink_to(elsewhere / "state.json")
    r = airgap("verify", signed_bundle.path, "--trust", signed_bundle.trust, "--state", state, "--record")
    assert r.code == 1, r.out + r.err
    assert str(state / "state.json") in r.err and "symbolic link" in r.err
    assert not (elsewhere / "state.json").exists()
    entries = [json.loads(x) for x in (state / "audit.log").read_text().splitlines()]
    assert [(e["action"], e["result"]) for e in entries] == [("verify", "rejected")]


def test_extract_never_writes_through_a_link_in_its_output(tmp_path, signed_bundle, elsewhere):
    out = tmp_path / "out"
    (out / "files").mkdir(parents=True)
    (out / "files" / "configs").symlink_to(elsewhere)
    r = airgap("extract", signed_bundle.path, "--trust", signed_bundle.trust, "--member", "files/", "-o", out, "--force")
    assert r.code == 1, r.out + r.err
    assert str(out / "files" / "configs") in r.err
    assert list(elsewhere.iterdir()) == []
