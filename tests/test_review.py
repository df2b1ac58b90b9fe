"""The officer sees what changed: sign's and inspect's review plan against the previous bundle.

Bundle 1.0.0 is signed under the policy (its envelope goes to the history next
to the policy); bundle 1.1.0 changes a wheel (with a new toolkit release), a
config file and the image, and adds an executable file.  The plan of 1.1.0
must list each of them with old and new sizes and digests, code first and
marked, and the code must get its own yes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from airgap import review, toolkit
from airgap.keyroles import Signer
from tests.fixtures.images import ImageSpec, build_oci_layout, layer
from tests.fixtures.keys import make_policy
from tests.helpers import airgap, airgap_proc, write_spec
from tests.test_sign import _on_terminal

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _release_dir(d: Path, policy, keyring, wheels: dict[str, bytes]) -> Path:
    d.mkdir(parents=True)
    for name, data in wheels.items():
        (d / name).write_bytes(data)
    st = toolkit.ReleaseStatement.unsigned(toolkit.make_release(d, "0.1.0", COMMIT))
    st.sign(policy, Signer(keyring["toolkit-1"], "toolkit-1.key"))
    st.write(d / toolkit.RELEASE_FILE)
    return d


STANZA = b"Package: %s\nStatus: install ok installed\nVersion: %s\nArchitecture: amd64\n\n"
PACKAGES = {"1.0": STANZA % (b"bash", b"5.2.15-2") + STANZA % (b"curl", b"7.88.1-10"),
            "1.1": STANZA % (b"bash", b"5.2.15-3") + STANZA % (b"zsh", b"5.9-4")}


def _spec(base: Path, version: str, *, conf: bytes, image: bytes, extra_exec: bool) -> Path:
    d = base / f"spec-{version}"
    cfg = d / "configs"
    (cfg / "sub").mkdir(parents=True)
    (cfg / "pilot.conf").write_bytes(conf)
    (cfg / "sub" / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(cfg / "sub" / "run.sh", 0o755)
    if extra_exec:
        (cfg / "bin").mkdir()
        (cfg / "bin" / "rotate.sh").write_text("#!/bin/sh\necho rotate the logs\n")
        os.chmod(cfg / "bin" / "rotate.sh", 0o755)
    files = {"opt/app/version": image, "var/lib/dpkg/status": PACKAGES[image.decode().strip()]}
    build_oci_layout(d / "images" / "layout", {"app": ImageSpec(layers=[layer(files)])})
    return write_spec(d, version=version, images=[{"ref": "oci:images/layout:app", "platforms": ["linux/amd64"]}],
                      files=[{"src": "configs/", "dest": "configs/"}], extra={"wheels": True})


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, keyring):
    """(workdir, trust path, bundle 1.0.0 signed under the policy, bundle 1.1.0 builder-signed)."""
    base = tmp_path_factory.mktemp("review")
    policy = make_policy(keyring, toolkit=("toolkit-1",))
    trust = base / "policy" / "trust.json"
    trust.parent.mkdir()
    policy.write(trust)
    wheels_1 = {"airgap-0.1.0-py3-none-any.whl": b"toolkit 0.1.0\n" * 30, "tqdm-4.70.1-py3-none-any.whl": b"tqdm\n" * 20}
    wheels_2 = {**wheels_1, "tqdm-4.70.1-py3-none-any.whl": b"tqdm, rebuilt\n" * 20}
    bundles = {}
    for version, wheels, conf, image, extra in (
        ("1.0.0", wheels_1, b"registry=internal\n", b"1.0\n", False),
        ("1.1.0", wheels_2, b"registry=internal\nlog=verbose\n", b"1.1\n", True),
    ):
        house = _release_dir(base / f"wheels-{version}", policy, keyring, wheels)
        spec = _spec(base, version, conf=conf, image=image, extra_exec=extra)
        out = base / f"geheim-pilot-{version}.tar"
        r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created",
                   "2026-05-01T00:00:00Z", "--quiet", env={"AIRGAP_WHEELHOUSE": str(house)})
        assert r.code == 0, r.err
        bundles[version] = out
    r = airgap("sign", bundles["1.0.0"], "--key", keyring.key_path("officer-1"), "--trust", trust, "--yes")
    assert r.code == 0, r.err
    assert "kept for the next review: " in r.out
    return base, trust, bundles["1.0.0"], bundles["1.1.0"]


def _copy(src: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    dest.write_bytes(src.read_bytes())
    return dest


def test_history_record_is_kept_next_to_the_policy(two_versions):
    base, trust, _, _ = two_versions
    records = list((trust.parent / "review-history" / "geheim-pilot" / "geheim-pilot").glob("1.0.0_*.json"))
    assert len(records) == 1
    # With its SBOMs, so the next review can compare packages.
    assert [p.name.endswith(".cdx.json") for p in records[0].with_suffix(".sbom").iterdir()] == [True]


def test_sign_plan_lists_what_changed_code_first(tmp_path, two_versions, keyring):
    _, trust, _, b2 = two_versions
    b = _copy(b2, tmp_path)
    before = b.read_bytes()
    r = airgap_proc("sign", b, "--key", keyring.key_path("officer-1"), "--trust", trust, stdin=subprocess.DEVNULL)
    # No terminal, no --yes: the added and changed code is not approved, nothing is written.
    assert r.code == 2, r.err
    assert "refusing to sign: the bundle adds or changes code that runs on the isolated hosts" in r.err
    assert b.read_bytes() == before
    out = r.out
    assert "Compared with geheim-pilot 1.0.0 (manifest sha256:" in out and "history record" in out
    code_at, images_at, files_at = (out.index("RUNS AS CODE on the isolated hosts; 2 added or changed"),
                                    out.index("Images ("), out.index("Files ("))
    assert code_at < images_at < files_at
    code = out[code_at:images_at]
    # The changed wheel, with old and new size and digest, and the release that covers it.
    assert "~ CODE wheel wheels/tqdm-4.70.1-py3-none-any.whl  0644 100 B sha256:" in code
    assert "-> 0644 280 B sha256:" in code
    assert "covered by toolkit release 0.1.0" in code
    assert "toolkit release airgap 0.1.0 (commit 0123456789ab, 2 wheels): toolkit 1 of 1 (toolkit-1" in code
    # The added executable file, and why it counts as code.
    assert "+ CODE file configs/bin/rotate.sh  0755 31 B sha256:" in code and "(executable: exec bit set)" in code
    # Unchanged code is counted, not hidden: the toolkit wheel and the old script.
    assert "= 2 unchanged" in code
    # The changed config file: not code, old and new size and digest.
    files = out[files_at:]
    assert "~ file configs/pilot.conf  0644 18 B sha256:" in files and "-> 0644 30 B sha256:" in files
    # The image with its old and new digest.
    images = out[images_at:out.index("Packages in changed images")]
    assert "~ image layout" in images and images.count("sha256:") == 3 and "-> oci:images/layout:app" in images
    assert "import writes REGISTRY/local/layout:app @ sha256:" in images  # the name and digest import writes
    assert "SBOM: 2 packages (deb 2)" in images
    # What changed inside the image, from the SBOMs (the previous one's kept in the history).
    packages = out[out.index("Packages in changed images"):files_at]
    assert "~ package layout: deb bash (amd64)  5.2.15-2 -> 5.2.15-3" in packages
    assert "+ package layout: deb zsh (amd64)  5.9-4" in packages
    assert "- package layout: deb curl (amd64)  7.88.1-10" in packages


def test_code_needs_its_own_yes_on_a_terminal(tmp_path, two_versions, keyring):
    _, trust, _, b2 = two_versions
    b = _copy(b2, tmp_path)
    before = b.read_bytes()
    code, text = _on_terminal("sign", b, "--key", keyring.key_path("officer-1"), "--trust", trust, answer=b"y\n")
    assert code == 1 and "Type 'yes' to approve them" in text and "the code was not approved" in text
    assert b.read_bytes() == before
    code, text = _on_terminal("sign", b, "--key", keyring.key_path("officer-1"), "--trust", trust,
                              "--against", two_versions[2], "--history", tmp_path / "h", answer=b"yes\ny\n")
    assert code == 0, text
    assert "2 items marked CODE above will run as code on the isolated" in text and "configs/bin/rotate.sh" in text


def test_json_lists_every_change_and_the_code_to_approve(tmp_path, two_versions, keyring):
    _, trust, b1, b2 = two_versions
    b = _copy(b2, tmp_path)
    r = airgap("sign", b, "--key", keyring.key_path("officer-2"), "--trust", trust, "--against", b1, "--yes",
               "--history", tmp_path / "h", "--json")
    assert r.code == 0, r.err
    plan = r.json()["review"]
    assert plan["previous"]["version"] == "1.0.0" and "(--against)" in plan["previous"]["source"]
    assert sorted(plan["code_to_approve"]) == ["configs/bin/rotate.sh", "wheels/tqdm-4.70.1-py3-none-any.whl"]
    by_key = {s["key"]: s for s in plan["sections"]}
    files = {i["name"]: i for i in by_key["files"]["items"]}
    assert files["configs/pilot.conf"]["status"] == "changed"
    assert files["configs/pilot.conf"]["old"]["size"] == 18 and files["configs/pilot.conf"]["new"]["size"] == 30
    assert files["wheels/toolkit-release.json"]["status"] == "changed"
    assert by_key["images"]["counts"] == {"changed": 1}
    # Recorded in the history given, for the next review.
    assert r.json()["history_record"].startswith(str(tmp_path / "h"))


def test_inspect_prints_the_same_plan(two_versions):
    _, trust, _, b2 = two_versions
    r = airgap("inspect", b2, "--trust", trust)
    assert r.code == 0, r.err
    assert "Compared with geheim-pilot 1.0.0" in r.out
    assert "+ CODE file configs/bin/rotate.sh  0755 31 B sha256:" in r.out
    # inspect lists the unchanged members too.
    assert "= CODE wheel wheels/airgap-0.1.0-py3-none-any.whl" in r.out
    r = airgap("inspect", b2, "--trust", trust, "--json")
    assert r.json()["review"]["code_to_approve"]


def test_an_uncovered_wheel_is_marked_and_a_plain_change_needs_no_code_yes(tmp_path, two_versions, keyring):
    """1.0.1: only the config changes, but the toolkit release statement is gone: the wheels
    are unchanged, yet the plan says they will not be installed; no code yes is asked."""
    base, trust, b1, _ = two_versions
    spec = _spec(tmp_path, "1.0.1", conf=b"registry=internal\nretries=3\n", image=b"1.0\n", extra_exec=False)
    house = tmp_path / "no-release"
    house.mkdir()
    for w in (base / "wheels-1.0.0").glob("*.whl"):
        (house / w.name).write_bytes(w.read_bytes())
    out = tmp_path / "geheim-pilot-1.0.1.tar"
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", "2026-05-01T00:00:00Z",
               "--quiet", env={"AIRGAP_WHEELHOUSE": str(house)})
    assert r.code == 0, r.err
    code, text = _on_terminal("sign", out, "--key", keyring.key_path("officer-1"), "--trust", trust,
                              "--against", b1, "--history", tmp_path / "h", answer=b"y\n")
    assert code == 0, text
    assert "to approve them" not in text
    assert "NO toolkit release counts: the bundle carries no toolkit release statement" in text
    assert "= CODE wheel wheels/airgap-0.1.0-py3-none-any.whl" in text
    assert "NOT COVERED, will not be installed: no valid toolkit release lists it" in text


def test_runs_as_code():
    assert review.runs_as_code("files/wheels/x-1-py3-none-any.whl", 0o644).startswith("wheel")
    assert review.runs_as_code("files/pkgs/curl_8.0_amd64.deb", 0o644).startswith("OS package")
    assert review.runs_as_code("files/bin/tool", 0o755) == "executable: exec bit set"
    assert review.runs_as_code("files/hooks/post.sh", 0o644) == "shell script"
    assert review.runs_as_code("files/ansible/roles/x/tasks/main.yml", 0o644) == "Ansible content"
    assert review.runs_as_code("files/systemd/pilot.service", 0o644) == "systemd unit: starts programs"
    assert review.runs_as_code("files/pilot/app.conf", 0o644) is None
    assert review.runs_as_code("blobs/sha256/" + "a" * 64, 0o755) is None


def test_a_wheel_in_a_subdirectory_is_not_judged_as_a_toolkit_wheel():
    """The toolkit installs only files/wheels/*.whl; a .whl one directory deeper is a file like
    any other to it.  The plan used to call that one a wheel too, found no verdict for it and
    claimed "covered by" the release -- or, with no release statement, crashed."""
    from types import SimpleNamespace

    from airgap.manifest import MemberRecord

    top, nested = "files/wheels/a-1-py3-none-any.whl", "files/wheels/sub/b-1-py3-none-any.whl"
    members = [MemberRecord(p, 10, "a" * 64, 0o644) for p in (top, nested)]
    manifest = SimpleNamespace(members=members, images=(), workloads=(), packages=None)
    plan = review.build(manifest, previous=None, statement=None)
    items = {i.name: i for s in plan.sections for i in s.items}
    assert items["wheels/a-1-py3-none-any.whl"].kind == "wheel"
    assert items["wheels/a-1-py3-none-any.whl"].notes == [
        "NOT COVERED, will not be installed: no valid toolkit release lists it"]
    assert items["wheels/sub/b-1-py3-none-any.whl"].kind == "file"
    assert not any("covered by" in n for n in items["wheels/sub/b-1-py3-none-any.whl"].notes)
    assert items["wheels/sub/b-1-py3-none-any.whl"].code is not None  # still shown as code to approve
