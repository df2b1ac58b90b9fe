"""OS packages in the bundle: apt resolves the closure on the connected side, apt installs from the bundle inside.

The upstream here is a local Debian repository of small packages made with
``dpkg-deb --build`` and indexed by ``dpkg-scanpackages`` (no network): the
resolver is apt's own, the index the bundle carries is compared with
dpkg-scanpackages' reading of the same files, and the carried repository is
proven dependency-closed by apt in a private root whose only source it is.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from airgap import debs
from tests import bundlekit
from tests.helpers import airgap, audited, extract, write_spec

CREATED = "2026-11-01T00:00:00Z"

# name, version, depends
PACKAGES = [
    ("airgap-test-app", "1.0-1", "airgap-test-lib (>= 2.0), airgap-test-net | airgap-test-net-alt"),
    ("airgap-test-lib", "1.0-1", ""),
    ("airgap-test-lib", "2.0-1", "airgap-test-base"),
    ("airgap-test-net", "3:1.5~rc1+ds-2", ""),  # an epoch and the characters pool names keep
    ("airgap-test-net-alt", "1.0-1", ""),
    ("airgap-test-base", "1.0-1", ""),
    ("airgap-test-unrelated", "1.0-1", ""),
]


def make_deb(directory: Path, name: str, version: str, depends: str) -> Path:
    root = directory / f"build-{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    control = f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: airgap tests <t@example.invalid>\n"
    if depends:
        control += f"Depends: {depends}\n"
    control += f"Description: airgap test package {name}\n multi-line description\n .\n kept as dpkg-deb reads it\n"
    (root / "DEBIAN" / "control").write_text(control)
    (root / "usr/share/airgap-test").mkdir(parents=True)
    (root / "usr/share/airgap-test" / name).write_text(f"{name} {version}\n")
    out = directory / f"{name}_{version.split(':')[-1]}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)], check=True,
                   capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1735689600"})
    return out


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("upstream")
    for name, version, depends in PACKAGES:
        make_deb(repo, name, version, depends)
    index = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo, check=True, capture_output=True)
    (repo / "Packages").write_bytes(index.stdout)
    return repo


def _spec(directory: Path, upstream: Path, names: list[str], baseline: str | None = None) -> Path:
    (directory / "apt").mkdir(parents=True, exist_ok=True)
    (directory / "apt/sources.list").write_text(f"deb [trusted=yes] file:{upstream} ./\n")
    packages = {"release": "bookworm", "architecture": "amd64", "sources": "apt/sources.list", "names": names}
    if baseline is not None:
        (directory / "apt/base.status").write_text(baseline)
        packages["baseline"] = "apt/base.status"
    return write_spec(directory, images=[], files=[], extra={"packages": packages})


def _build(spec: Path, out: Path, keyring):
    return airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", CREATED, "--quiet")


@pytest.fixture(scope="module")
def built(tmp_path_factory, upstream, keyring) -> Path:
    work = tmp_path_factory.mktemp("debs")
    out = work / "pkgs.tar"
    r = _build(_spec(work / "spec", upstream, ["airgap-test-app"]), out, keyring)
    assert r.code == 0, r.err
    return out


def test_apt_decides_the_closure_and_the_bundle_pins_it(built, upstream):
    m = bundlekit.manifest_of(bundlekit.read_entries(built))
    p = m["packages"]
    assert p["names"] == ["airgap-test-app"] and p["release"] == "bookworm"
    assert [(d["package"], d["version"]) for d in p["debs"]] == [
        ("airgap-test-app", "1.0-1"), ("airgap-test-base", "1.0-1"), ("airgap-test-lib", "2.0-1"),
        ("airgap-test-net", "3:1.5~rc1+ds-2")]  # apt's choice: the newest lib, the first alternative
    members = {x["path"]: x for x in m["members"]}
    assert p["index"] == ["files/packages/Packages", "files/packages/Release"]
    for d in p["debs"]:
        # The pool's file name (no epoch); the bytes are upstream's, pinned by sha256.
        source = upstream / Path(d["path"]).name
        assert members[d["path"]]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert "files/packages/airgap-test-unrelated_1.0-1_all.deb" not in members


def test_carried_index_agrees_with_dpkg_scanpackages(built, tmp_path):
    repo = extract(built, tmp_path / "x") / "files/packages"
    ours = _stanzas((repo / "Packages").read_text())
    theirs = _stanzas(subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo, check=True,
                                     capture_output=True, text=True).stdout)
    assert set(ours) == set(theirs)
    for key, fields in theirs.items():
        for name in ("Package", "Version", "Architecture", "Depends", "Filename", "Size", "SHA256", "Description"):
            assert ours[key].get(name) == fields.get(name), (key, name)
    release = (repo / "Release").read_text()
    packages = (repo / "Packages").read_bytes()
    assert f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages" in release
    assert "Date: Sun, 01 Nov 2026 00:00:00 UTC" in release


def _stanzas(text: str) -> dict[tuple[str, str], dict[str, str]]:
    out = {}
    for para in text.strip().split("\n\n"):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1].isspace() and key:
                fields[key] += "\n" + line
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        out[(fields["Package"], fields["Version"])] = fields
    return out


def _private_apt(root: Path, source_line: str) -> dict[str, str]:
    return debs.private_apt_root(root, _write(root.parent / "sources.list", source_line), None, "amd64")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trust(tmp_path_factory, keyring) -> Path:
    from tests.fixtures.keys import make_policy

    path = tmp_path_factory.mktemp("trust") / "trust.json"
    path.write_bytes(make_policy(keyring).to_bytes())
    return path


def test_export_writes_the_verified_repository(built, trust, tmp_path, keyring):
    signed = tmp_path / "signed.tar"
    signed.write_bytes(built.read_bytes())
    assert airgap("sign", signed, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
    r = airgap("packages", "export", built, "--trust", trust, "-o", tmp_path / "no")
    assert r.code == 1 and "officer" in r.err  # the builder-only bundle is rejected: nothing written
    assert not (tmp_path / "no").exists()
    out = tmp_path / "repo"
    r = airgap("packages", "export", signed, "--trust", trust, "-o", out, "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["sources_line"] == f"deb [trusted=yes] file:{out} ./"
    assert sorted(p.name for p in out.iterdir()) == sorted(["Packages", "Release"] + [
        Path(d["path"]).name for d in doc["packages"]])
    same = extract(signed, tmp_path / "x") / "files/packages"
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in same.iterdir())
    assert airgap("packages", "export", signed, "--trust", trust, "-o", out).code == 2  # exists, no --force
    r = airgap("packages", "export", signed, "--trust", trust, "-o", out, "--force", "--json")
    assert r.code == 0 and r.json()["written"] == []  # every file already there and checked


def test_export_with_state_audits_what_it_wrote_and_what_it_refused(built, trust, tmp_path, keyring):
    signed, state, out = tmp_path / "signed.tar", tmp_path / "state", tmp_path / "repo"
    signed.write_bytes(built.read_bytes())
    assert airgap("sign", signed, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
    assert airgap("packages", "export", signed, "--trust", trust, "-o", tmp_path / "plain").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "signed.tar"]  # no --state: no audit log
    r = airgap("packages", "export", signed, "--trust", trust, "-o", out, "--state", state, "--json")
    assert r.code == 0, r.err
    [(action, result, obj, detail)] = [e for e in audited(state) if e[0] != "first-use"]
    assert (action, result) == ("packages-export", "accepted")
    assert obj["bundle"] == str(signed) and obj["output"] == str(out) and obj["manifest"] == r.json()["manifest_digest"]
    assert detail["written"] == r.json()["written"] and detail["packages"] == len(r.json()["packages"])
    r = airgap("packages", "export", built, "--trust", trust, "-o", tmp_path / "no", "--state", state)
    assert r.code == 1 and not (tmp_path / "no").exists()  # builder-only: rejected
    action, result, obj, detail = audited(state)[-1]
    assert (action, result, obj["bundle"]) == ("packages-export", "rejected", str(built))
    assert "officer" in detail["error"]


def test_the_carried_repository_alone_satisfies_apt(built, tmp_path):
    repo = extract(built, tmp_path / "x") / "files/packages"
    env = _private_apt(tmp_path / "apt/root", f"deb [trusted=yes] file:{repo} ./\n")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
    sim = subprocess.run(["apt-get", "install", "-s", "airgap-test-app"], env=env, capture_output=True, text=True)
    assert sim.returncode == 0, sim.stderr
    installs = sorted(line.split()[1] for line in sim.stdout.splitlines() if line.startswith("Inst "))
    assert installs == ["airgap-test-app", "airgap-test-base", "airgap-test-lib", "airgap-test-net"]
    # apt checks each .deb against the carried index: a changed byte is refused even from a file: source.
    victim = repo / "airgap-test-base_1.0-1_all.deb"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    (tmp_path / "cache" / "partial").mkdir(parents=True)
    fetch = subprocess.run(["apt-get", "install", "-y", "--download-only", "-o", "Dir::Cache::Archives=" +
                            str(tmp_path / "cache"), "airgap-test-app"], env=env, capture_output=True, text=True)
    assert fetch.returncode != 0 and "airgap-test-base" in fetch.stderr + fetch.stdout


def test_a_baseline_leaves_out_what_the_target_already_has(tmp_path, upstream, keyring):
    baseline = ("Package: airgap-test-base\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: all\n"
                "Maintainer: t <t@example.invalid>\nDescription: base\n")
    out = tmp_path / "o.tar"
    r = _build(_spec(tmp_path / "s", upstream, ["airgap-test-app"], baseline), out, keyring)
    assert r.code == 0, r.err
    got = [d["package"] for d in bundlekit.manifest_of(bundlekit.read_entries(out))["packages"]["debs"]]
    assert got == ["airgap-test-app", "airgap-test-lib", "airgap-test-net"]


def test_an_unknown_package_is_a_spec_error(tmp_path, upstream, keyring):
    r = _build(_spec(tmp_path / "s", upstream, ["airgap-test-nonexistent"]), tmp_path / "o.tar", keyring)
    assert r.code == 2 and "packages.names" in r.err and "airgap-test-nonexistent" in r.err, r.err


def test_inspect_lists_the_packages(built):
    r = airgap("inspect", built)
    assert r.code == 0, r.err
    assert "OS packages for the nodes (dependency-closed by apt) (4 added):" in r.out
    assert "asked for: airgap-test-app" in r.out and "+ package airgap-test-net (all)  3:1.5~rc1+ds-2" in r.out
    # The .deb files themselves are listed as code to approve.
    assert "+ CODE file packages/airgap-test-net_1.5~rc1+ds-2_all.deb" in r.out


def test_same_inputs_same_bundle(tmp_path, upstream, keyring, built):
    out = tmp_path / "again.tar"
    spec = _spec(tmp_path / "spec", upstream, ["airgap-test-app"])
    assert _build(spec, out, keyring).code == 0
    assert out.read_bytes() == built.read_bytes()


def test_diff_shows_package_changes(tmp_path, upstream, keyring, built):
    out = tmp_path / "more.tar"
    assert _build(_spec(tmp_path / "s", upstream, ["airgap-test-app", "airgap-test-unrelated"]), out, keyring).code == 0
    r = airgap("diff", built, out)
    assert "  added:   airgap-test-unrelated:all  1.0-1" in r.out.split("os packages:\n", 1)[1], r.out
