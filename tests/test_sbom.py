"""SBOMs: package databases from layers, whiteouts, CycloneDX 1.5, and what officers see of them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

from airgap.sbom import layers as L
from airgap.sbom.packages import parse_apk, parse_dpkg, parse_python_metadata
from tests.bundlekit import Entry, read_entries, refresh_manifest, write_entries
from tests.fixtures.images import LAYER_GZIP, LAYER_TAR, ImageSpec, IndexSpec, Layer, build_oci_layout
from tests.helpers import airgap, write_spec

SCHEMAS = Path(__file__).parent / "fixtures" / "cyclonedx"
CREATED = "2026-11-01T00:00:00Z"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


# --- layers made by hand: regular files, symlinks, hard links, whiteouts -----------------


def tar_bytes(entries) -> bytes:
    """entries: (name, content) for files, (name, "->", target) for symlinks, (name, "=>", target) for hard links,
    (name, None) for directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e[0])
            info.mtime = 1_700_000_000
            if len(e) == 3:
                info.type = tarfile.SYMTYPE if e[1] == "->" else tarfile.LNKTYPE
                info.linkname = e[2]
                tf.addfile(info)
            elif e[1] is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size = len(e[1])
                tf.addfile(info, io.BytesIO(e[1]))
    return buf.getvalue()


def make_layer(entries, media_type: str = LAYER_GZIP) -> Layer:
    tar = tar_bytes(entries)
    if media_type == LAYER_GZIP:
        data = gzip.compress(tar, mtime=0)
    elif media_type == LAYER_ZSTD:
        data = subprocess.run(["zstd", "-q", "-c"], input=tar, capture_output=True, check=True).stdout
    else:
        data = tar
    return Layer("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type, data=data,
                 diff_id="sha256:" + hashlib.sha256(tar).hexdigest())


def apply(*layer_entries) -> L.FsView:
    view = L.FsView()
    for i, entries in enumerate(layer_entries):
        view = L.apply_layer(view, io.BytesIO(tar_bytes(entries)), f"sha256:{i}", f"layer {i}")
    return view


STANZA = b"Package: %s\nStatus: install ok installed\nVersion: %s\nArchitecture: amd64\n\n"


def names(view: L.FsView) -> set[str]:
    return {p.name for f in view.files.values() for p in f.packages}


def test_whiteout_of_a_file_and_of_a_directory():
    base = [("var/lib/dpkg/status.d/a", STANZA % (b"a", b"1")), ("var/lib/dpkg/status.d/b", STANZA % (b"b", b"1")),
            ("usr/lib/python3/site-packages/x-1.0.dist-info/METADATA", b"Name: x\nVersion: 1.0\n\n")]
    assert names(apply(base)) == {"a", "b", "x"}
    assert names(apply(base, [("var/lib/dpkg/status.d/.wh.a", b"")])) == {"b", "x"}
    assert names(apply(base, [("usr/lib/python3/.wh.site-packages", b"")])) == {"a", "b"}


def test_opaque_directory_hides_lower_entries_but_not_its_own_layer():
    base = [("var/lib/dpkg/status.d/a", STANZA % (b"a", b"1")), ("var/lib/dpkg/status.d/b", STANZA % (b"b", b"1"))]
    upper = [("var/lib/dpkg/status.d/.wh..wh..opq", b""), ("var/lib/dpkg/status.d/c", STANZA % (b"c", b"2"))]
    assert names(apply(base, upper)) == {"c"}
    # The order inside the layer does not matter: a whiteout never hides its own layer.
    assert names(apply(base, list(reversed(upper)))) == {"c"}
    assert names(apply(base, [("var/lib/dpkg/status.d/c", STANZA % (b"c", b"2")), ("var/lib/dpkg/status.d/.wh.c", b"")])) == {"a", "b", "c"}


def test_rewritten_status_and_replaced_directories():
    base = [("var/lib/dpkg/status", STANZA % (b"a", b"1") + STANZA % (b"b", b"1"))]
    assert names(apply(base, [("var/lib/dpkg/status", STANZA % (b"b", b"2"))])) == {"b"}
    # A file (or link) where a directory was hides the whole tree below it.
    assert names(apply(base, [("var/lib/dpkg", b"not a directory any more")])) == set()
    assert names(apply(base, [("var/lib", "->", "/srv/lib")])) == set()
    # A directory where the database file was replaces it.
    assert names(apply(base, [("var/lib/dpkg/status", None)])) == set()


def test_links_and_problems_are_said():
    view = apply([("usr/lib/os-release", b'ID=debian\nVERSION_ID="12"\n'), ("etc/os-release", "->", "../usr/lib/os-release"),
                  ("lib/apk/db/installed", "->", "/elsewhere"),
                  ("var/lib/dpkg/status.d/a", STANZA % (b"a", b"1")), ("var/lib/dpkg/status.d/b", "=>", "var/lib/dpkg/status.d/a"),
                  ("var/lib/rpm/rpmdb.sqlite", b"SQLite format 3\0")])
    assert view.files["etc/os-release"].symlink == "usr/lib/os-release"
    assert view.files["usr/lib/os-release"].os_release == {"ID": "debian", "VERSION_ID": "12"}
    assert "symbolic link" in view.files["lib/apk/db/installed"].problem
    assert [p.name for p in view.files["var/lib/dpkg/status.d/b"].packages] == ["a"]  # hard link to a read file
    assert "RPM databases are not read" in view.files["var/lib/rpm/rpmdb.sqlite"].problem


def test_capped_pax_header_is_refused():
    info = tarfile.TarInfo("x")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info.pax_headers = {"comment": "x" * (L.MAX_TAR_HEADER + 10)}
        tf.addfile(info, io.BytesIO(b""))
    from airgap.exceptions import FormatError

    with pytest.raises(FormatError, match="PAX header"):
        L.apply_layer(L.FsView(), io.BytesIO(buf.getvalue()), "sha256:0", "layer 0")


def test_parsers():
    dpkg = parse_dpkg(STANZA % (b"bash", b"5.2.15-2+b2") + b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
                      + b"Package: noversion\n\nPackage: lib\nVersion: 1:2.0-1\nSource: libsrc (1.0)\nDescription: x\n multi\n")
    assert [(p.name, p.version, p.arch, p.source) for p in dpkg.packages] == [("bash", "5.2.15-2+b2", "amd64", None), ("lib", "1:2.0-1", None, "libsrc")]
    assert dpkg.skipped == 1
    assert dpkg.packages[0].purl("debian", "debian-12") == "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12"
    assert dpkg.packages[1].purl("debian") == "pkg:deb/debian/lib@1:2.0-1"
    apk = parse_apk(b"C:Q1x\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n")
    assert [(p.name, p.version, p.arch) for p in apk.packages] == [("musl", "1.2.4-r2", "x86_64"), ("busybox", "1.36.1-r5", "x86_64")]
    assert apk.packages[0].purl("alpine", "alpine-3.19") == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19"
    py = parse_python_metadata(b"Metadata-Version: 2.1\nName: Foo_Bar.baz\nVersion: 2.0\n\nName: not a header\n")
    assert py.packages[0].purl() == "pkg:pypi/foo-bar-baz@2.0"


# --- whole builds: a bundle from an OCI layout ----------------------------------------------


def build_bundle(tmp_path: Path, keyring, images: dict, name: str = "sbom") -> Path:
    layout = tmp_path / "spec" / "layout"
    build_oci_layout(layout, images)
    spec = write_spec(tmp_path / "spec", name="sbom-test", files=[], images=[f"oci:layout:{t}" for t in sorted(images)])
    out = tmp_path / f"{name}.tar"
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", CREATED, "-q")
    assert r.code == 0, r.err
    return out


def sbom_members(bundle: Path) -> dict[str, bytes]:
    return {e.name: e.data for e in read_entries(bundle) if e.name.startswith("sbom/")}


def _validator() -> jsonschema.Draft7Validator:
    resources = []
    for f in SCHEMAS.glob("*.schema.json"):
        doc = json.loads(f.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / "bom-1.5.schema.json").read_text())
    return jsonschema.Draft7Validator(schema, registry=registry, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def assert_valid_cyclonedx(data: bytes) -> dict:
    doc = json.loads(data)
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    return doc


def _dpkg_query(status: bytes, tmp_path: Path) -> set[tuple[str, str, str]]:
    admin = tmp_path / "dpkg-admin"
    admin.mkdir(exist_ok=True)
    (admin / "status").write_bytes(status)
    out = subprocess.run(["dpkg-query", f"--admindir={admin}", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\n"],
                         capture_output=True, text=True, check=True).stdout
    return {tuple(line.split("\t")[1:]) for line in out.splitlines() if line.split("\t")[0] not in ("not-installed", "config-files")}


def _debs(doc: dict) -> set[tuple[str, str, str]]:
    out = set()
    for c in doc["components"]:
        if c["purl"].startswith("pkg:deb/"):
            arch = c["purl"].split("arch=")[1].split("&")[0]
            out.add((c["name"], c["version"], arch))
    return out


def test_real_dpkg_status_and_a_later_deletion(tmp_path, keyring):
    """The build machine's own dpkg database in a layer: the SBOM says what dpkg-query says."""
    status = Path("/var/lib/dpkg/status").read_bytes()
    os_release = Path("/usr/lib/os-release").read_bytes()
    stanzas = status.split(b"\n\n")
    victim = stanzas[0].split(b"\n")[0].split(b": ", 1)[1].decode()  # the first package: rewritten out
    rewritten = b"\n\n".join(stanzas[1:])
    extra = b"Package: airgap-extra\nVersion: 1.0-1\nArchitecture: all\n"
    base = make_layer([("usr/lib/os-release", os_release), ("etc/os-release", "->", "../usr/lib/os-release"),
                       ("var/lib/dpkg/status", status)])
    added = make_layer([("var/lib/dpkg/status.d/airgap-extra", extra)])
    removal = make_layer([("var/lib/dpkg/status", rewritten), ("var/lib/dpkg/status.d/.wh.airgap-extra", b"")], LAYER_TAR)
    out = build_bundle(tmp_path, keyring, {"before": ImageSpec([base, added]), "after": ImageSpec([base, added, removal])})
    docs = {}
    for data in sbom_members(out).values():
        doc = assert_valid_cyclonedx(data)
        docs[doc["metadata"]["component"]["properties"][0]["value"]] = doc
    before, after = docs["oci:layout:before"], docs["oci:layout:after"]

    expected = _dpkg_query(status, tmp_path)
    assert len(expected) > 100
    assert _debs(before) == expected | {("airgap-extra", "1.0-1", "all")}
    assert _debs(after) == _dpkg_query(rewritten, tmp_path)
    assert victim not in {n for n, _, _ in _debs(after)} and victim in {n for n, _, _ in _debs(before)}
    assert "airgap-extra" not in {n for n, _, _ in _debs(after)}
    bash = next(c for c in after["components"] if c["name"] == "bash")
    assert bash["purl"].startswith("pkg:deb/debian/bash@") and "distro=debian-" in bash["purl"]
    assert bash["evidence"]["occurrences"] == [{"location": "var/lib/dpkg/status"}]
    assert after["compositions"][0]["aggregate"] == "unknown"


def test_sboms_are_deterministic_pinned_and_verified(tmp_path, keyring, trust_policy_file):
    py = make_layer([("usr/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n\n"),
                     ("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\nA:x86_64\n\n"), ("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n")],
                    LAYER_ZSTD)
    empty = make_layer([("opt/app/run", b"#!/bin/sh\n")])
    images = {"app": ImageSpec([py]), "static": ImageSpec([empty]),
              "multi": IndexSpec([ImageSpec([py], architecture="amd64"), ImageSpec([py], architecture="arm64")])}
    a = build_bundle(tmp_path / "a", keyring, images)
    b = build_bundle(tmp_path / "b", keyring, images)
    assert a.read_bytes() == b.read_bytes()  # same inputs, same bytes, SBOMs included
    members = sbom_members(a)
    manifest = json.loads(read_entries(a)[0].data)
    digests = {i["ref"]: i["digest"] for i in manifest["images"]}
    assert set(members) == {f"sbom/sha256/{d.split(':')[1]}.cdx.json" for d in digests.values()}
    pinned = {m["path"]: m["sha256"] for m in manifest["members"]}
    for path, data in members.items():
        assert pinned[path] == hashlib.sha256(data).hexdigest()
        doc = assert_valid_cyclonedx(data)
    assert list(_validator().iter_errors({**doc, "components": [{"name": "x"}]}))  # the schema does check
    static = json.loads(members[f"sbom/sha256/{digests['oci:layout:static'].split(':')[1]}.cdx.json"])
    assert static["components"] == []
    assert "no package database found" in static["metadata"]["properties"][0]["value"]
    multi = json.loads(members[f"sbom/sha256/{digests['oci:layout:multi'].split(':')[1]}.cdx.json"])
    req = next(c for c in multi["components"] if c["name"] == "requests")
    assert req["purl"] == "pkg:pypi/requests@2.31.0"
    assert [p["value"] for p in req["properties"]] == ["linux/amd64", "linux/arm64"]
    musl = next(c for c in multi["components"] if c["name"] == "musl")
    assert musl["purl"] == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"

    # Signed by the builder, countersigned by an officer: verify reads and accepts the SBOMs.
    assert airgap("sign", a, "--key", keyring.key_path("officer-1"), "--yes", "-q").code == 0
    r = airgap("verify", a, "--trust", trust_policy_file)
    assert r.code == 0, r.out + r.err


def _resign(bundle: Path, tmp_path: Path, keyring, entries) -> Path:
    entries = refresh_manifest(entries, [keyring["builder-1"], keyring["officer-1"]])
    return write_entries(tmp_path / "x.tar", entries)


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory, keyring):
    tmp = tmp_path_factory.mktemp("sbom-small")
    deb = make_layer([("var/lib/dpkg/status", STANZA % (b"bash", b"5.2.15-2") + STANZA % (b"curl", b"7.88.1-10"))])
    return build_bundle(tmp, keyring, {"app": ImageSpec([deb])})


def test_verify_accepts_only_the_sbom_area(small_bundle, tmp_path, keyring, trust_policy_file):
    entries = read_entries(small_bundle)
    sbom = next(e for e in entries if e.name.startswith("sbom/"))

    stray = _resign(small_bundle, tmp_path, keyring, entries[:-1] + [Entry("sbom/other.json", b"{}"), entries[-1]])
    r = airgap("verify", stray, "--trust", trust_policy_file)
    assert r.code == 1 and "sbom/other.json: unexpected path under sbom/" in r.err

    foreign = _resign(small_bundle, tmp_path, keyring, entries[:-1] + [Entry("sbom/sha256/" + "a" * 64 + ".cdx.json", sbom.data), entries[-1]])
    r = airgap("verify", foreign, "--trust", trust_policy_file)
    assert r.code == 1 and "SBOM of an image the bundle does not carry" in r.err

    sbom.data = b'{"bomFormat": "SPDX"}'
    bad = _resign(small_bundle, tmp_path, keyring, entries)
    r = airgap("verify", bad, "--trust", trust_policy_file)
    assert r.code == 1 and "not an airgap CycloneDX 1.5 SBOM" in r.err


def test_a_changed_sbom_byte_is_caught(small_bundle, tmp_path, keyring, trust_policy_file):
    entries = read_entries(small_bundle)
    entries = refresh_manifest(entries, [keyring["builder-1"], keyring["officer-1"]])
    sbom = next(e for e in entries if e.name.startswith("sbom/"))
    sbom.data = sbom.data.replace(b"5.2.15-2", b"5.2.15-3")  # the manifest still pins the old bytes
    r = airgap("verify", write_entries(tmp_path / "y.tar", entries), "--trust", trust_policy_file)
    assert r.code == 1 and "sha256 mismatch" in r.err and sbom.name in r.err
    r = airgap("inspect", tmp_path / "y.tar", "--sbom")
    assert r.code == 1 and "sha256 mismatch" in r.err


@pytest.mark.parametrize(("change", "said"), [
    (lambda d: d["metadata"].setdefault("properties", []).append({"name": "airgap:note"}), "airgap:note"),
    (lambda d: d["metadata"].__setitem__("properties", 5), "metadata.properties"),
    (lambda d: d["metadata"]["component"]["properties"].append({"name": "airgap:platform", "value": 3}),
     "airgap:platform"),
    (lambda d: d["components"][0].setdefault("properties", []).append({"name": "airgap:platform", "value": None}),
     "airgap:platform"),
    (lambda d: d["components"][0]["evidence"]["occurrences"].append({}), "location"),
    (lambda d: d["components"][0].__setitem__("evidence", ["x"]), "evidence"),
])
def test_sbom_values_that_are_not_strings_are_refused(change, said):
    """inspect, diff and sign sort and join these values: a None or a number once passed
    verify and then failed there with a TypeError."""
    from airgap.exceptions import FormatError
    from airgap.sbom import count_text, diff_packages, package_rows
    from airgap.sbom.cyclonedx import Component, ImageSbom, document, read

    good = ImageSbom("sha256:" + "a" * 64, "app", [Component("pkg:deb/debian/bash@1?arch=amd64", "bash", "1",
                                                           {"linux/amd64"}, {"var/lib/dpkg/status"})],
                     True, ["a note"], ["linux/amd64", "linux/arm64"])
    doc = json.loads(document(good, image_purl="pkg:oci/app@sha256:" + "a" * 64, reference="app:1"))
    back = read(json.dumps(doc).encode(), "sbom.cdx.json")
    assert (back.notes, back.platforms, back.components) == (good.notes, good.platforms, good.components)
    count_text(back), package_rows(back), diff_packages(back, None)  # the views that used to fail
    change(doc)
    with pytest.raises(FormatError, match=said) as exc:
        read(json.dumps(doc).encode(), "sbom.cdx.json")
    assert "sbom.cdx.json" in str(exc.value)


def test_verify_refuses_a_signed_sbom_with_a_note_that_is_not_a_string(small_bundle, tmp_path, keyring, trust_policy_file):
    entries = read_entries(small_bundle)
    sbom = next(e for e in entries if e.name.startswith("sbom/"))
    doc = json.loads(sbom.data)
    doc["metadata"].setdefault("properties", []).append({"name": "airgap:note", "value": None})
    sbom.data = json.dumps(doc).encode()
    bad = _resign(small_bundle, tmp_path, keyring, entries)
    r = airgap("verify", bad, "--trust", trust_policy_file)
    assert r.code == 1 and sbom.name in r.err and "airgap:note without a string value" in r.err
    r = airgap("inspect", bad, "--sbom")
    assert r.code == 1 and "airgap:note without a string value" in r.err and "Traceback" not in r.err


def test_inspect_sign_and_diff_show_packages(small_bundle, tmp_path, keyring):
    r = airgap("inspect", small_bundle, "--sbom")
    assert r.code == 0, r.err
    assert "2 packages (deb 2)" in r.out
    assert "deb   bash  5.2.15-2   amd64" in r.out
    r = airgap("inspect", small_bundle, "--sbom", "--json")
    img = r.json()["images"][0]
    assert [(p["name"], p["version"]) for p in img["packages"]] == [("bash", "5.2.15-2"), ("curl", "7.88.1-10")]
    assert airgap("inspect", small_bundle).out.count("SBOM: 2 packages (deb 2)") == 1

    b = tmp_path / "b.tar"
    b.write_bytes(small_bundle.read_bytes())
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--yes")
    assert r.code == 0 and "2 packages (deb 2)" in r.out

    newer = make_layer([("var/lib/dpkg/status", STANZA % (b"bash", b"5.2.15-3") + STANZA % (b"zsh", b"5.9-4"))])
    other = build_bundle(tmp_path, keyring, {"app": ImageSpec([newer])}, name="newer")
    r = airgap("diff", small_bundle, other)
    assert r.code == 0, r.err
    assert "  changed: oci:layout:app  deb bash (amd64) 5.2.15-2 → 5.2.15-3" in r.out
    assert "  added:   oci:layout:app  deb zsh (amd64) 5.9-4" in r.out
    assert "  removed: oci:layout:app  deb curl (amd64) 7.88.1-10" in r.out
    d = airgap("diff", small_bundle, other, "--json").json()
    assert d["packages"]["oci:layout:app"]["changed"] == [{"type": "deb", "name": "bash", "arch": "amd64", "platform": None, "from": "5.2.15-2", "to": "5.2.15-3"}]


def test_whiteouts_agree_with_umoci(tmp_path, keyring):
    """Differential: the package databases our layer reader leaves equal those in umoci's unpacked rootfs."""
    from airgap.sbom.packages import parse_dpkg, parse_python_metadata

    site = "usr/lib/python3/site-packages"
    layers = [
        make_layer([("var/lib/dpkg/status", STANZA % (b"a", b"1") + STANZA % (b"b", b"1")),
                    ("var/lib/dpkg/status.d/c", STANZA % (b"c", b"1")), ("var/lib/dpkg/status.d/d", STANZA % (b"d", b"1")),
                    (f"{site}/x-1.dist-info/METADATA", b"Name: x\nVersion: 1\n\n"), (f"{site}/y-1.dist-info/METADATA", b"Name: y\nVersion: 1\n\n"),
                    ("opt/venv/lib/z-1.dist-info/METADATA", b"Name: z\nVersion: 1\n\n")]),
        make_layer([("var/lib/dpkg/status.d/.wh.c", b""), (f"{site}/.wh.x-1.dist-info", b""),
                    ("var/lib/dpkg/status", STANZA % (b"b", b"2"))], LAYER_TAR),
        make_layer([("opt/venv/.wh..wh..opq", b""), ("opt/venv/lib/w-2.dist-info/METADATA", b"Name: w\nVersion: 2\n\n"),
                    ("var/lib/dpkg/status.d/e", STANZA % (b"e", b"3"))]),
    ]
    out = build_bundle(tmp_path, keyring, {"img": ImageSpec(layers)})
    doc = json.loads(next(iter(sbom_members(out).values())))
    ours = {(c["name"], c["version"]) for c in doc["components"]}

    layout = tmp_path / "spec" / "layout"
    rootfs_bundle = tmp_path / "unpacked"
    proc = subprocess.run(["umoci", "unpack", "--image", f"{layout}:img", str(rootfs_bundle)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rootfs = rootfs_bundle / "rootfs"
    theirs = set()
    for f in [rootfs / "var/lib/dpkg/status", *(rootfs / "var/lib/dpkg/status.d").glob("*")]:
        theirs |= {(p.name, p.version) for p in parse_dpkg(f.read_bytes()).packages}
    for f in rootfs.glob("**/*.dist-info/METADATA"):
        theirs |= {(p.name, p.version) for p in parse_python_metadata(f.read_bytes()).packages}
    assert ours == theirs == {("b", "2"), ("d", "1"), ("e", "3"), ("y", "1"), ("w", "2")}
