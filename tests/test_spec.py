"""The bundle spec: strict YAML, schema with field paths, semantic checks."""

from __future__ import annotations

import copy
import hashlib
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml

from airgap.exceptions import InputError, SpecError
from airgap.spec import (
    ALLOWED_VARIABLES,
    BundleSpec,
    load_spec,
    resolve_expires,
    spec_digest,
    spec_schema,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32

BASE = {
    "apiVersion": "airgap/v1",
    "kind": "Bundle",
    "metadata": {"name": "geheim-pilot", "version": "1.0.0", "target": "geheim-pilot", "expires": "180d"},
    "images": [
        {"ref": "127.0.0.1:5000/pilot/status:1.0"},
        {"ref": "127.0.0.1:5000/pilot/notes:1.0", "platforms": ["linux/amd64"]},
        {"ref": "registry.example.nl/team/app@" + DIGEST},
    ],
    "files": [{"src": "configs/", "dest": "configs/", "mode": "0644"}],
    "wheels": True,
}


@pytest.fixture
def specdir(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.conf").write_text("a=1\n")
    (tmp_path / "configs" / "sub").mkdir()
    (tmp_path / "configs" / "sub" / "b.conf").write_text("b=2\n")
    (tmp_path / "single.txt").write_text("x\n")
    return tmp_path


def write(specdir: Path, doc: dict | str, name: str = "bundle.yaml") -> Path:
    path = specdir / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def load(specdir: Path, doc: dict | str, **kw) -> BundleSpec:
    kw.setdefault("now", NOW)
    kw.setdefault("env", {})
    return load_spec(write(specdir, doc), **kw)


def refused(specdir: Path, doc: dict | str, **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(specdir, doc, **kw)
    assert info.value.exit_code == 2
    return info.value


def mutate(fn) -> dict:
    doc = copy.deepcopy(BASE)
    fn(doc)
    return doc


# --- the valid spec ----------------------------------------------------------------


def test_valid_spec_loads(specdir):
    spec = load(specdir, BASE)
    assert spec.metadata.name == "geheim-pilot"
    assert spec.metadata.version == "1.0.0"
    assert spec.metadata.expires_at == NOW + timedelta(days=180)
    assert [i.kind for i in spec.images] == ["registry"] * 3
    status, notes, pinned = spec.images
    assert status.registry == "127.0.0.1:5000" and status.tag == "1.0" and status.platforms is None
    assert notes.platforms == ("linux/amd64",)
    assert pinned.digest == DIGEST and pinned.tag is None
    assert status.field == "images[0].ref"
    (files,) = spec.files
    assert files.is_dir and files.dest == "configs" and files.mode == 0o644
    assert [rel for rel, _ in files.entries] == ["configs/a.conf", "configs/sub/b.conf"]
    assert all(src.is_absolute() and src.is_file() for _, src in files.entries)
    assert spec.wheels is True
    assert spec.digest == spec_digest(specdir / "bundle.yaml")
    assert spec.digest == "sha256:" + hashlib.sha256((specdir / "bundle.yaml").read_bytes()).hexdigest()


def test_schema_is_valid_draft_2020_12():
    schema = spec_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_sample_spec_validates():
    root = Path(__file__).resolve().parents[1] / "bundles" / "geheim-pilot"
    for name, version, tag in (("bundle.yaml", "1.0.0", "1.0"), ("bundle-1.1.0.yaml", "1.1.0", "1.1")):
        spec = load_spec(root / name, env={})
        assert spec.metadata.version == version
        # written through the alias: internal names that do not change with the source's port
        assert [i.ref for i in spec.images] == [f"pilot/status:{tag}", f"pilot/notes:{tag}", "pilot/pause:1.0"]
        assert [str(i.reference) for i in spec.images] == [
            f"127.0.0.1:5000/pilot/status:{tag}",
            f"127.0.0.1:5000/pilot/notes:{tag}",
            "127.0.0.1:5000/pilot/pause:1.0",
        ]
        assert [i.internal for i in spec.images] == ["pilot/status", "pilot/notes", "pilot/pause"]
        assert spec.sources == {"pilot": "127.0.0.1:5000/pilot"}
        assert spec.variables == {"AIRGAP_SOURCE_REGISTRY": "127.0.0.1:5000"}
        assert [w.name for w in spec.workloads] == ["pilot-status", "pilot-notes"]
        assert spec.packages.names == ("docker-registry", "podman", "containerd", "runc")


def test_single_file_source_and_dest_directory(specdir):
    spec = load(specdir, mutate(lambda d: d.update(files=[
        {"src": "single.txt", "dest": "etc/pilot/"},
        {"src": "single.txt", "dest": "etc/renamed.txt"},
    ])))
    assert [f.entries[0][0] for f in spec.files] == ["etc/pilot/single.txt", "etc/renamed.txt"]
    assert spec.files[0].mode is None


def test_oci_layout_source(specdir):
    layout = specdir / "images" / "layout"
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    spec = load(specdir, mutate(lambda d: d["images"].append({"ref": "oci:images/layout:status-1.0"})))
    img = spec.images[-1]
    assert img.kind == "oci-layout" and img.layout_path == layout.resolve() and img.tag == "status-1.0"
    assert img.registry is None


def test_allow_reason_kept(specdir):
    spec = load(specdir, mutate(lambda d: d["images"].append(
        {"ref": "gcr.io/distroless/static:nonroot", "allow": {"reason": "  accepted by the officer, ticket 42  "}})))
    assert spec.images[-1].allow_reason == "accepted by the officer, ticket 42"


def test_expires_absolute(specdir):
    spec = load(specdir, mutate(lambda d: d["metadata"].update(expires="2026-06-30T00:00:00Z")))
    assert spec.metadata.expires_at == datetime(2026, 6, 30, tzinfo=UTC)


def test_unquoted_timestamp_stays_text(specdir):
    text = yaml.safe_dump(BASE, sort_keys=False).replace("expires: 180d", "expires: 2026-06-30T00:00:00Z")
    assert "expires: 2026-06-30T00:00:00Z" in text
    assert load(specdir, text).metadata.expires == "2026-06-30T00:00:00Z"


# --- variables -----------------------------------------------------------------------


def test_variable_default_and_override(specdir):
    doc = mutate(lambda d: d.update(images=[{"ref": "${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/status:1.0"}]))
    spec = load(specdir, doc)
    assert spec.images[0].ref == "127.0.0.1:5000/pilot/status:1.0"
    assert spec.images[0].spec_ref == "${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/status:1.0"
    spec = load(specdir, doc, env={"AIRGAP_SOURCE_REGISTRY": "127.0.0.1:5917"})
    assert spec.images[0].ref == "127.0.0.1:5917/pilot/status:1.0"
    assert spec.variables == {"AIRGAP_SOURCE_REGISTRY": "127.0.0.1:5917"}
    assert set(ALLOWED_VARIABLES) == {"AIRGAP_SOURCE_REGISTRY"}


@pytest.mark.parametrize(
    "ref, env, needle",
    [
        ("${HOME}/pilot/status:1.0", {"HOME": "x.y"}, "not allowed"),
        ("${AIRGAP_SOURCE_REGISTRY}/pilot/status:1.0", {}, "not set"),
        ("${AIRGAP_SOURCE_REGISTRY}/pilot/status:1.0", {"AIRGAP_SOURCE_REGISTRY": "evil.io/x"}, "host[:port]"),
        ("$AIRGAP_SOURCE_REGISTRY/pilot/status:1.0", {"AIRGAP_SOURCE_REGISTRY": "a.b"}, "'$'"),
    ],
)
def test_variable_refused(specdir, ref, env, needle):
    err = refused(specdir, mutate(lambda d: d["images"].insert(0, {"ref": ref})), env=env)
    assert err.field == "images[0].ref" and needle in err.reason


# --- schema errors, with field paths ---------------------------------------------------


@pytest.mark.parametrize(
    "change, field, needle",
    [
        (lambda d: d["images"][2].update(ref="busybox:1.36"), "images[2].ref", "fully qualified"),
        (lambda d: d["images"][2].update(ref="127.0.0.1:5000/pilot/status"), "images[2].ref", "TAG"),
        (lambda d: d["images"][2].update(ref="a.io/x@sha256:" + "AB" * 32), "images[2].ref", "lower-case hex"),
        (lambda d: d["images"][2].update(ref="a.io/x@sha512:" + "ab" * 64), "images[2].ref", "sha256"),
        (lambda d: d["images"][2].update(ref="A.IO/x:1"), "images[2].ref", "lower case"),
        (lambda d: d["images"][1].update(platforms=["amd64"]), "images[1].platforms[0]", "OS/ARCH"),
        (lambda d: d["images"][1].update(platforms=[]), "images[1].platforms", "non-empty"),
        (lambda d: d["images"][0].update(allow={"reason": ""}), "images[0].allow.reason", "written reason"),
        (lambda d: d["images"][0].update(allow={}), "images[0].allow.reason", "required"),
        (lambda d: d["metadata"].update(version="1.0"), "metadata.version", "semantic version"),
        (lambda d: d["metadata"].update(version="01.0.0"), "metadata.version", "semantic version"),
        (lambda d: d["metadata"].update(version="v1.0.0"), "metadata.version", "semantic version"),
        (lambda d: d["metadata"].update(name="Geheim_Pilot"), "metadata.name", "DNS label"),
        (lambda d: d["metadata"].update(target="-x"), "metadata.target", "DNS label"),
        (lambda d: d["metadata"].update(expires="6 months"), "metadata.expires", "duration"),
        (lambda d: d["metadata"].update(expires="2026-06-30T00:00:00+02:00"), "metadata.expires", "UTC"),
        (lambda d: d["metadata"].pop("target"), "metadata.target", "required"),
        (lambda d: d["metadata"].update(owner="me"), "metadata.owner", "unknown field"),
        (lambda d: d.update(extra=1), "extra", "unknown field"),
        (lambda d: d["images"][0].update(tag="1.0"), "images[0].tag", "unknown field"),
        (lambda d: d["files"][0].update(owner="root"), "files[0].owner", "unknown field"),
        (lambda d: d["files"][0].update(mode="4755"), "files[0].mode", "octal"),
        (lambda d: d["files"][0].update(mode="0755 "), "files[0].mode", "octal"),
        (lambda d: d["files"][0].update(src="/etc/passwd"), "files[0].src", "relative"),
        (lambda d: d["files"][0].update(dest="/etc/"), "files[0].dest", "relative"),
        (lambda d: d.update(apiVersion="airgap/v2"), "apiVersion", "airgap/v1"),
        (lambda d: d.update(kind="Bundel"), "kind", "Bundle"),
        (lambda d: d.update(wheels="yes please"), "wheels", "true or false"),
        (lambda d: d.update(images={"ref": "a.io/x:1"}), "images", "a list"),
    ],
)
def test_schema_errors_name_the_field(specdir, change, field, needle):
    err = refused(specdir, mutate(change))
    assert err.field == field, str(err)
    assert needle in err.reason, str(err)
    assert str(err) == f"{specdir / 'bundle.yaml'}:{err.line}: {field}: {err.reason}"
    assert_written_at(err, field)


def assert_written_at(err: SpecError, field: str) -> None:
    """err.line is where *field* is written, or (a missing field) where its parent is."""
    written = Path(err.file).read_text().splitlines()[err.line - 1]
    if field.endswith("]"):  # a list item
        assert written.lstrip().startswith("- "), (field, err.line, written)
        return
    names = [n for n in re.split(r"[.\[\]]", field) if n and not n.isdigit()]
    if err.reason == "required field is missing":
        names = names[:-1]
    assert f"{names[-1]}:" in written, (field, err.line, written)


def test_spec_errors_say_file_line_field_problem(specdir):
    """One of each kind: YAML syntax, YAML reading (duplicate key), schema, variables, semantic
    (a file outside the spec's directory, a colliding destination) and a value in a list."""
    text = base_text()
    cases = [
        (text + "files:\n  - {src: configs/, dest: a}\n", 0, "duplicate key 'files'"),
        (text.replace("kind: Bundle", "kind: [Bundle"), 0, "not valid YAML"),
        (text.replace("expires: 180d", "expires: 6 months"), 0, "metadata.expires: "),
        (text.replace("  mode: '0644'\n", "  mode: '0644'\n- src: single.txt\n  dest: configs/a.conf\n"), 0,
         "files[1].dest: configs/a.conf collides"),
        (text.replace("src: configs/", "src: ../outside/"), 0, "files[0].src: "),
    ]
    for text_, _, needle in cases:
        err = refused(specdir, text_)
        assert err.file == str(specdir / "bundle.yaml") and err.line, str(err)
        assert str(err).startswith(f"{err.file}:{err.line}: "), str(err)
        assert needle in str(err), str(err)
    err = refused(specdir, text.replace("  mode: '0644'\n", "  mode: '0644'\n- src: single.txt\n  dest: configs/a.conf\n"))
    assert_written_at(err, "files[1].dest")
    err = refused(specdir, text + "files:\n  - {src: configs/, dest: a}\n")
    assert err.line == len(text.splitlines()) + 1  # the second 'files:'
    err = refused(specdir, text.replace("kind: Bundle", "kind: [Bundle"))
    assert text.splitlines()[err.line - 1].startswith(("kind:", "metadata:"))
    err = refused(specdir, mutate(lambda d: d["images"].insert(0, {"ref": "${HOME}/pilot/status:1.0"})), env={"HOME": "x"})
    assert err.field == "images[0].ref" and str(err).startswith(f"{err.file}:{err.line}: images[0].ref: variable")
    assert_written_at(err, "images[0].ref")


def test_trailing_newline_in_version_refused(specdir):
    err = refused(specdir, mutate(lambda d: d["metadata"].update(version="1.0.0\n")))
    assert err.field == "metadata.version" and "control character" in err.reason


# --- YAML traps ---------------------------------------------------------------------------


def base_text() -> str:
    return yaml.safe_dump(BASE, sort_keys=False)


@pytest.mark.parametrize("raw", ["1.0", "1.10", "1", "2.0"])
def test_float_version_refused_with_quote_hint(specdir, raw):
    text = base_text().replace("version: 1.0.0", f"version: {raw}")
    err = refused(specdir, text)
    assert err.field == "metadata.version"
    assert "quote" in err.reason and raw in err.reason and "number" in err.reason


def test_unquoted_octal_mode_refused(specdir):
    text = base_text().replace("mode: '0644'", "mode: 0644")
    err = refused(specdir, text)
    assert err.field == "files[0].mode" and "420" in err.reason and '"0644"' in err.reason


def test_yaml_boolean_name_refused(specdir):
    text = base_text().replace("name: geheim-pilot", "name: no")
    err = refused(specdir, text)
    assert err.field == "metadata.name" and "boolean" in err.reason and "quote" in err.reason


def test_duplicate_keys_refused(specdir):
    text = base_text().replace("  target: geheim-pilot\n", "  target: geheim-pilot\n  target: other\n")
    err = refused(specdir, text)
    assert err.field == "metadata.target" and "duplicate key" in err.reason


def test_duplicate_top_level_key_refused(specdir):
    err = refused(specdir, base_text() + "wheels: false\n")
    assert err.field == "wheels" and "duplicate" in err.reason


def test_aliases_and_merge_keys_refused(specdir):
    text = base_text().replace("metadata:\n", "metadata: &m\n") + "extra: *m\n"
    assert "aliases" in refused(specdir, text).reason
    text = base_text() + "x: &a {b: 1}\ny:\n  <<: *a\n"
    assert "aliases" in refused(specdir, text).reason or "merge" in refused(specdir, text).reason


def test_non_text_key_refused(specdir):
    err = refused(specdir, base_text() + "yes: 1\n")
    assert err.field == "yes" and "boolean" in err.reason


@pytest.mark.parametrize("text", ["", "just a string\n", "- a\n- b\n", "a: [\n", "a: 1\n---\nb: 2\n"])
def test_not_a_spec(specdir, text):
    refused(specdir, text)


def test_python_tags_refused(specdir):
    err = refused(specdir, base_text() + "evil: !!python/object/apply:os.system ['true']\n")
    assert "YAML" in str(err)


def test_unreadable_spec_is_input_error(tmp_path):
    with pytest.raises(InputError) as info:
        load_spec(tmp_path / "missing.yaml")
    assert info.value.exit_code == 2


def test_oversize_and_non_utf8(specdir):
    refused(specdir, base_text() + "#" + "x" * (1 << 20) + "\n")
    path = specdir / "bundle.yaml"
    path.write_bytes(base_text().encode() + b"# \xff\n")
    with pytest.raises(SpecError):
        load_spec(path, now=NOW, env={})


# --- semantic checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("src", ["../outside/", "configs/../../outside/", "configs/../configs/"])
def test_src_dotdot_refused(specdir, src):
    (specdir.parent / "outside").mkdir(exist_ok=True)
    err = refused(specdir, mutate(lambda d: d["files"][0].update(src=src)))
    assert err.field == "files[0].src" and ".." in err.reason


def test_src_symlink_escape_refused(specdir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("s")
    os.symlink(outside, specdir / "link")
    err = refused(specdir, mutate(lambda d: d["files"][0].update(src="link/")))
    assert err.field == "files[0].src" and "outside" in err.reason
    os.symlink(outside / "secret", specdir / "configs" / "secret")
    err = refused(specdir, BASE)
    assert err.field == "files[0].src" and "outside" in err.reason


def test_symlink_inside_is_followed(specdir):
    os.symlink("../single.txt", specdir / "configs" / "alias.txt")
    spec = load(specdir, BASE)
    assert ("configs/alias.txt", (specdir / "single.txt").resolve()) in spec.files[0].entries


def test_fifo_in_source_refused(specdir):
    os.mkfifo(specdir / "configs" / "pipe")
    err = refused(specdir, BASE)
    assert err.field == "files[0].src" and "regular file" in err.reason


def test_src_missing_and_kind_mismatch(specdir):
    assert "does not exist" in refused(specdir, mutate(lambda d: d["files"][0].update(src="nope/"))).reason
    assert "not a directory" in refused(specdir, mutate(lambda d: d["files"][0].update(src="single.txt/"))).reason
    assert "trailing" in refused(specdir, mutate(lambda d: d["files"][0].update(src="configs"))).reason or \
        "is a directory" in refused(specdir, mutate(lambda d: d["files"][0].update(src="configs"))).reason


@pytest.mark.parametrize("dest", ["a/../b", "./a", "a//b", "..", "a/./b", "a\\b"])
def test_dest_not_normalised(specdir, dest):
    err = refused(specdir, mutate(lambda d: d["files"][0].update(dest=dest)))
    assert err.field == "files[0].dest" and "normalised" in err.reason


def test_dest_collisions(specdir):
    err = refused(specdir, mutate(lambda d: d["files"].append({"src": "single.txt", "dest": "configs/a.conf"})))
    assert err.field == "files[1].dest" and "collides" in err.reason
    err = refused(specdir, mutate(lambda d: d["files"].append({"src": "single.txt", "dest": "CONFIGS/A.conf"})))
    assert err.field == "files[1].dest" and "collides" in err.reason
    err = refused(specdir, mutate(lambda d: d["files"].append({"src": "single.txt", "dest": "configs/a.conf/x"})))
    assert err.field == "files[1].dest" and "directory" in err.reason


@pytest.mark.parametrize(
    "ref",
    [
        "127.0.0.1:5000/pilot/status:1.0",
        "127.0.0.1:5000/pilot/status:1.0@" + DIGEST,  # same name and tag
        "registry.example.nl/team/app:2@" + DIGEST,  # same name and digest
    ],
)
def test_duplicate_image_refused(specdir, ref):
    err = refused(specdir, mutate(lambda d: d["images"].append({"ref": ref})))
    assert err.field == "images[3].ref" and "same image" in err.reason


def test_docker_hub_aliases_are_duplicates(specdir):
    doc = mutate(lambda d: d.update(images=[{"ref": "docker.io/library/busybox:1.36"},
                                            {"ref": "index.docker.io/library/busybox:1.36"}]))
    err = refused(specdir, doc)
    assert err.field == "images[1].ref"


def test_oci_layout_checks(specdir):
    err = refused(specdir, mutate(lambda d: d["images"].append({"ref": "oci:images/none:t"})))
    assert err.field == "images[3].ref" and "does not exist" in err.reason
    (specdir / "plain").mkdir()
    err = refused(specdir, mutate(lambda d: d["images"].append({"ref": "oci:plain:t"})))
    assert "not an OCI image layout" in err.reason
    err = refused(specdir, mutate(lambda d: d["images"].append({"ref": "oci:../x:t"})))
    assert ".." in err.reason


def test_expired_refused(specdir):
    err = refused(specdir, mutate(lambda d: d["metadata"].update(expires="2025-12-31T23:59:59Z")))
    assert err.field == "metadata.expires" and "not in the future" in err.reason
    err = refused(specdir, mutate(lambda d: d["metadata"].update(expires="2026-02-30T00:00:00Z")))
    assert err.field == "metadata.expires"


def test_empty_bundle_refused(specdir):
    err = refused(specdir, mutate(lambda d: (d.pop("images"), d.pop("files"), d.pop("wheels"))))
    assert "carries nothing" in err.reason


def test_resolve_expires():
    assert resolve_expires("90s", NOW) == NOW + timedelta(seconds=90)
    assert resolve_expires("2w", NOW) == NOW + timedelta(weeks=2)
    assert resolve_expires("1h", NOW.replace(microsecond=5)) == NOW + timedelta(hours=1)
    assert resolve_expires("2027-01-01T00:00:00Z", NOW) == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(SpecError):
        resolve_expires("999999w", datetime(9000, 1, 1, tzinfo=UTC))
    with pytest.raises(SpecError):
        resolve_expires("soon", NOW)
    with pytest.raises(ValueError):
        resolve_expires("1d", datetime(2026, 1, 1))


def test_error_to_dict(specdir):
    err = refused(specdir, mutate(lambda d: d["images"][2].update(ref="busybox")))
    d = err.to_dict()
    assert d["field"] == "images[2].ref" and d["error"] == "SpecError"


# --- source aliases: internal names that do not depend on where an image came from -----------


def test_source_alias_names_the_image_inside(specdir):
    doc = mutate(lambda d: d.update(
        sources={"pilot": "${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot", "hub": "docker.io/library"},
        images=[{"ref": "pilot/status:1.0"}, {"ref": "hub/busybox@" + DIGEST},
                {"ref": "127.0.0.1:5000/pilot/notes:1.0"}]))
    spec = load(specdir, doc, env={"AIRGAP_SOURCE_REGISTRY": "127.0.0.1:43825"})
    status, busybox, notes = spec.images
    assert spec.sources == {"pilot": "127.0.0.1:43825/pilot", "hub": "docker.io/library"}
    assert (status.alias, str(status.reference), status.internal) == ("pilot", "127.0.0.1:43825/pilot/status:1.0", "pilot/status")
    assert (busybox.alias, busybox.reference.name, busybox.internal) == ("hub", "docker.io/library/busybox", "hub/busybox")
    assert busybox.digest == DIGEST
    # without an alias the default mapping: the source host (port after '_') becomes the first component
    assert (notes.alias, notes.internal) == (None, "127.0.0.1_5000/pilot/notes")
    # another port, the same internal name
    other = load(specdir, doc, env={"AIRGAP_SOURCE_REGISTRY": "127.0.0.1:5917"})
    assert other.images[0].internal == status.internal and other.images[0].reference.registry == "127.0.0.1:5917"


def test_source_alias_errors(specdir):
    err = refused(specdir, mutate(lambda d: d.update(images=[{"ref": "pilot/status:1.0"}])))
    assert err.field == "images[0].ref" and "'pilot' is neither a registry host" in err.reason
    assert "sources: {pilot: HOST:PORT}" in err.reason and "Docker Hub" in err.reason
    err = refused(specdir, mutate(lambda d: d.update(sources={"pi.lot": "127.0.0.1:5000"})))
    assert err.field.startswith("sources") and "no '.' or ':'" in err.reason
    err = refused(specdir, mutate(lambda d: d.update(sources={"pilot": "127.0.0.1:5000/pilot:1.0"})))
    assert err.field == "sources.pilot" and "without tag or digest" in err.reason
    both = mutate(lambda d: d.update(sources={"a": "127.0.0.1:5000/x", "b": "127.0.0.1:5001/x"},
                                     images=[{"ref": "a/status:1.0"}, {"ref": "a/status:1.0@" + DIGEST}]))
    err = refused(specdir, both)
    assert err.field == "images[1].ref" and "same image" in err.reason
    clash = mutate(lambda d: d.update(sources={"localhost_5000": "127.0.0.1:5000/x"},
                                      images=[{"ref": "localhost:5000/x:1.0"}, {"ref": "localhost_5000/x:1.0"}]))
    err = refused(specdir, clash)
    assert err.field == "images[1].ref" and "would be imported as localhost_5000/x:1.0, like images[0].ref" in err.reason
