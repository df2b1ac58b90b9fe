"""Anchored state (issue 9): the audit log is the record, the state files are its caches.

Real imports into the real registry; then each state file deleted or cut, the
log's tail cut, the log deleted; bundles of two and three names moving the same
tag and files; a bundle name the policy does not list.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.fixtures.images import ImageSpec, build_oci_layout, layer
from tests.helpers import airgap, write_spec

T1, T2, T3, T4 = "2026-08-01T00:00:00Z", "2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"
TAG = "local/images:status-1.0"  # every bundle below carries an image under this tag


def _build(work: Path, keyring, name: str, version: str, created: str) -> Path:
    """A signed bundle *name* *version* built at *created*: one image tagged status-1.0 and one file,
    both with content of their own."""
    spec_dir = work / f"{name}-{version}"
    build_oci_layout(spec_dir / "images", {"status-1.0": ImageSpec(layers=[layer({"etc/who": f"{name} {version}\n".encode()})])})
    (spec_dir / "configs").mkdir(parents=True)
    (spec_dir / "configs" / "pilot.conf").write_text(f"from={name} {version}\n")
    spec = write_spec(spec_dir, name=name, version=version, expires="3650d", images=["oci:images:status-1.0"],
                      files=[{"src": "configs/", "dest": "configs/"}])
    out = work / f"{name}-{version}.tar"
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", created, "--quiet")
    assert r.code == 0, r.err
    r = airgap("sign", out, "--key", keyring.key_path("officer-1"), "--yes", "--quiet")
    assert r.code == 0, r.err
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, keyring):
    """Bundles of three names, built at different times, all setting TAG and files/configs/pilot.conf."""
    from tests.fixtures.keys import make_policy

    work = tmp_path_factory.mktemp("fleet")
    bundles = {
        ("geheim-pilot", "1.0.0"): _build(work, keyring, "geheim-pilot", "1.0.0", T1),
        ("geheim-pilot", "1.1.0"): _build(work, keyring, "geheim-pilot", "1.1.0", T3),
        ("geheim-pilot", "1.2.0"): _build(work, keyring, "geheim-pilot", "1.2.0", T2),  # a later version built earlier
        ("geheim-hotfix", "1.0.0"): _build(work, keyring, "geheim-hotfix", "1.0.0", T2),
        ("geheim-extra", "1.0.0"): _build(work, keyring, "geheim-extra", "1.0.0", T4),
    }
    trust = work / "trust.json"
    trust.write_bytes(make_policy(keyring).to_bytes())
    return bundles, trust


def _import(fleet, registry, state: Path, name: str, version: str, files: Path | None = None):
    bundles, trust = fleet
    args = ["import", bundles[(name, version)], "--trust", trust, "--registry", registry.host, "--plain-http",
            "--state", state, "--json"]
    if files is not None:
        args += ["--files-dir", files]
    return airgap(*args)


def _verify(fleet, state: Path, name: str, version: str):
    bundles, trust = fleet
    return airgap("verify", bundles[(name, version)], "--trust", trust, "--state", state)


@pytest.fixture(scope="module")
def imported_twice(tmp_path_factory, fleet):
    """A state directory after importing geheim-pilot 1.0.0, then 1.1.0 (with files)."""
    from tests.fixtures.registry import start_registry

    root = tmp_path_factory.mktemp("anchored")
    reg = start_registry(root / "registry")
    state = root / "state"
    try:
        for version in ("1.0.0", "1.1.0"):
            r = _import(fleet, reg, state, "geheim-pilot", version, root / "files")
            assert r.code == 0, r.err
    finally:
        reg.stop()
    return state


@pytest.fixture
def state(tmp_path, imported_twice) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(imported_twice, copy)
    return copy


def _entries(state: Path) -> list[dict]:
    return [json.loads(x) for x in (state / "audit.log").read_text().splitlines()]


# --------------------------------------------------------------------------- the record itself


def test_the_log_records_the_first_use_and_the_state_is_stamped_with_the_last_entry(state, fleet):
    entries = _entries(state)
    assert [(e["action"], e["result"]) for e in entries] == [("first-use", "accepted"), ("import", "accepted"),
                                                            ("import", "accepted")]
    assert entries[0]["detail"]["state"]["policy"]["version"] == 1
    doc = json.loads((state / "state.json").read_text())
    head = airgap("audit", "head", "--state", state, "--json").json()
    assert doc["audit"] == {"seq": head["seq"], "head": head["head"]} == {"seq": 3, "head": head["head"]}
    imported = json.loads((state / "bundles" / "geheim-pilot" / "imported.json").read_text())
    assert imported["audit"] == doc["audit"] and imported["version"] == "1.1.0"
    assert doc["destinations"][f"tag {TAG}"]["version"] == "1.1.0"
    assert doc["destinations"]["file files/configs/pilot.conf"]["created"] == T3
    shown = airgap("audit", "show", "--state", state)
    assert shown.code == 0 and "first-use" in shown.out.splitlines()[0]
    assert _verify(fleet, state, "geheim-pilot", "1.1.0").code == 0


# --------------------------------------------------------------------------- deletions and cuts


@pytest.mark.parametrize("victim,how", [
    ("state.json", "delete"), ("state.json", "truncate"), ("state.json", "empty"),
    ("trust.json", "delete"), ("trust.json", "truncate"),
    ("bundles/geheim-pilot/imported.json", "delete"), ("bundles/geheim-pilot/imported.json", "truncate"),
])
@pytest.mark.parametrize("verb", ["verify", "import"])
def test_each_state_file_deleted_or_cut_is_refused(state, fleet, registry, victim, how, verb):
    path = state / victim
    if how == "delete":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"")
    # The attack of issue 9: go back to 1.0.0 (or, without trust.json, to a v1 trust-on-first-use).
    for version in ("1.0.0", "1.1.0"):
        r = (_verify(fleet, state, "geheim-pilot", version) if verb == "verify"
             else _import(fleet, registry, state, "geheim-pilot", version))
        assert r.code == 1, (r.out, r.err)
        assert victim.rsplit("/", 1)[-1] in r.err and "tampered" in r.err, r.err


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_last_k_audit_lines_removed_is_refused(state, fleet, k):
    log = state / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-k]))
    r = _verify(fleet, state, "geheim-pilot", "1.1.0")
    assert r.code == 1
    if k < 3:
        assert "state.json" in r.err and "behind the state" in r.err, r.err
    else:
        assert "audit.log" in r.err and "empty" in r.err, r.err
    assert _verify(fleet, state, "geheim-pilot", "1.0.0").code == 1


def test_a_deleted_log_is_refused_while_state_exists(state, fleet, registry):
    (state / "audit.log").unlink()
    r = _verify(fleet, state, "geheim-pilot", "1.0.0")
    assert r.code == 1 and "audit.log" in r.err and "missing" in r.err, r.err
    # The refusal is the new log's first entry: the state is still ahead of it, whatever is tried.
    assert [(e["action"], e["result"]) for e in _entries(state)] == [("verify", "rejected")]
    for r in (_verify(fleet, state, "geheim-pilot", "1.1.0"), _import(fleet, registry, state, "geheim-pilot", "1.0.0")):
        assert r.code == 1 and "state.json" in r.err and "behind the state" in r.err, r.err


def test_a_wiped_state_directory_starts_over_visibly(state, fleet, registry):
    """Deleting everything is the one thing a state directory cannot see: it is a first use
    again, in the log, and the anchor written down outside catches it."""
    anchor = airgap("audit", "head", "--state", state).out.strip()
    shutil.rmtree(state)
    r = _import(fleet, registry, state, "geheim-pilot", "1.0.0")
    assert r.code == 0, r.err
    assert [e["action"] for e in _entries(state)] == ["first-use", "import"]
    r = airgap("audit", "verify", "--state", state, "--expect-head", anchor)
    assert r.code == 1 and "cut from its end" in r.err


def test_an_older_copy_of_state_json_is_refused(tmp_path, state, fleet, registry):
    """state.json put back from a copy taken after 1.0.0: the log says 1.1.0 came after."""
    older = tmp_path / "older"
    r = _import(fleet, registry, older, "geheim-pilot", "1.0.0")
    assert r.code == 0
    (state / "state.json").write_bytes((older / "state.json").read_bytes())
    r = _verify(fleet, state, "geheim-pilot", "1.0.0")
    assert r.code == 1 and "state.json" in r.err


# --------------------------------------------------------------------------- rollback across names


@pytest.mark.parametrize("order,refused", [
    # two names
    ([("geheim-pilot", "1.1.0"), ("geheim-hotfix", "1.0.0")], ("geheim-hotfix", "1.0.0")),  # backward
    ([("geheim-hotfix", "1.0.0"), ("geheim-pilot", "1.1.0")], None),  # forward
    ([("geheim-pilot", "1.1.0"), ("geheim-pilot", "1.2.0")], None),  # the same name forward, built earlier
    # three names
    ([("geheim-pilot", "1.0.0"), ("geheim-extra", "1.0.0"), ("geheim-hotfix", "1.0.0")], ("geheim-hotfix", "1.0.0")),
    ([("geheim-pilot", "1.0.0"), ("geheim-hotfix", "1.0.0"), ("geheim-extra", "1.0.0")], None),
    ([("geheim-hotfix", "1.0.0"), ("geheim-extra", "1.0.0"), ("geheim-pilot", "1.1.0")], ("geheim-pilot", "1.1.0")),
])
def test_tags_and_files_move_only_forward_across_names(tmp_path, fleet, registry, order, refused):
    state, files = tmp_path / "state", tmp_path / "files"
    for i, (name, version) in enumerate(order):
        r = _import(fleet, registry, state, name, version, files)
        if (name, version) != refused:
            assert r.code == 0, r.err
            assert (files / "current" / "configs" / "pilot.conf").read_text() == f"from={name} {version}\n"
            continue
        assert i == len(order) - 1
        setter = order[i - 1]
        assert r.code == 1, r.out
        assert f"{setter[0]} {setter[1]}" in r.err and f"{name} {version}" in r.err, r.err
        assert any(dest in r.err for dest in (TAG, "files/configs/pilot.conf", "files/current")), r.err
        # Nothing moved: the files are still the setter's, and the refusal is in the log.
        assert (files / "current" / "configs" / "pilot.conf").read_text() == f"from={setter[0]} {setter[1]}\n"
        assert _entries(state)[-1]["result"] == "rejected"
        # verify says the same before anything is pushed.
        assert _verify(fleet, state, name, version).code == 1


def test_a_bundle_name_the_policy_does_not_list_is_refused(tmp_path, fleet, keyring):
    from tests.fixtures.keys import make_policy

    bundles, _ = fleet
    policy = make_policy(keyring)
    listed = type(policy).create(
        policy.target, policy.signed["expires"], keyring.pubs("root-1", "root-2", "root-3"), 2,
        keyring.pubs("builder-1", "builder-2"), 1, keyring.pubs("officer-1", "officer-2"), 1,
        bundles=["geheim-pilot", "geheim-extra"])
    for k in ("root-1", "root-2"):
        listed.sign(keyring[k])
    trust = tmp_path / "trust.json"
    listed.write(trust)
    assert "bundles: geheim-extra, geheim-pilot" in airgap("trust", "show", trust).out
    for (name, _version), path in bundles.items():
        r = airgap("verify", path, "--trust", trust)
        if name == "geheim-hotfix":
            assert r.code == 1 and "geheim-hotfix" in r.err and "accepts only the bundles geheim-extra, geheim-pilot" in r.err
        else:
            assert r.code == 0, r.err
