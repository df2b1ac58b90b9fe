"""One name, shown and used (finding 3); names that are not UTF-8 and errors nobody
expected (finding 5).

The officer approves an image by its ``ref``; the registry, repository and tag
import writes are derived from it, and a manifest whose other fields say
anything else is refused at build and at verify.  A bundle file or directory
whose name is not UTF-8 is recorded losslessly (its display text plus
``<field>_hex``, see docs/trust-model.md), every acceptance and every refusal is audited, and no
traceback reaches a user.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests import bundlekit as kit
from tests.helpers import airgap, airgap_proc


@pytest.fixture
def keys(keyring):
    return [keyring["builder-1"], keyring["officer-1"]]


def _resigned(good, tmp_path, keys, edit):
    entries = kit.refresh_manifest(kit.read_entries(good), keys, edit=edit)
    return kit.write_entries(tmp_path / "x.tar", entries)


def _status(doc):
    return next(i for i in doc["images"] if i["repository"] == "pilot/status")


@pytest.mark.parametrize("field,value", [
    ("repository", "pilot/evil"),
    ("tag", "2.0"),
    ("registry", "registry.example.org"),
    ("layout_ref", "registry.example.org/pilot/status:1.0"),
], ids=["repository-differs", "tag-differs", "registry-differs", "layout-ref-differs"])
def test_manifest_whose_names_disagree_with_the_ref_is_refused(tmp_path, signed_bundle, keys, field, value):
    bundle = _resigned(signed_bundle.path, tmp_path, keys, lambda d: _status(d).__setitem__(field, value))
    r = airgap("verify", bundle, "--trust", signed_bundle.trust)
    assert r.code == 1, r.out + r.err
    assert f".{field} is {value!r} but its ref" in r.err and "import would write another name" in r.err


def test_two_images_with_one_destination_are_refused(tmp_path, signed_bundle, keys):
    def edit(doc):
        notes = next(i for i in doc["images"] if i["repository"] == "pilot/notes")
        doc["images"].append({**notes, "digest": _status(doc)["digest"], "layout_ref": notes["layout_ref"]})

    bundle = _resigned(signed_bundle.path, tmp_path, keys, edit)
    r = airgap("verify", bundle, "--trust", signed_bundle.trust)
    assert r.code == 1 and "would both be tagged" in r.err, r.err


def test_sign_inspect_and_import_show_and_write_the_same_names(tmp_path, signed_bundle, registry):
    doc = airgap("inspect", signed_bundle.path, "--json").json()
    dests = {d["ref"]: d for d in doc["destinations"]}
    status = next(d for ref, d in dests.items() if "pilot/status" in ref)
    host = status["ref"].split("/", 1)[0]
    assert status["repository"] == f"{host.replace(':', '_')}/pilot/status" and status["tag"] == "1.0"
    human = airgap("inspect", signed_bundle.path).out
    assert f"import writes REGISTRY/{status['repository']}:1.0 @ {status['digest']}" in human
    plan = airgap_proc("sign", signed_bundle.copy(tmp_path, builder_only=True), "--key",
                       signed_bundle.keyring.key_path("officer-1"), stdin=open(os.devnull))
    assert f"import writes REGISTRY/{status['repository']}:1.0 @ {status['digest']}" in plan.out
    r = airgap("import", signed_bundle.path, "--trust", signed_bundle.trust, "--registry", registry.host,
               "--plain-http", "--state", tmp_path / "state", "--json")
    assert r.code == 0, r.err
    written = {i["ref"]: i for i in r.json()["images"]}
    for ref, d in dests.items():
        assert written[ref]["internal_name"] == f"{registry.host}/{d['repository']}"
        assert (written[ref]["tag"], written[ref]["digest"]) == (d["tag"], d["digest"])


def test_build_refuses_a_layout_ref_without_a_directory_name(tmp_path, keyring):
    from tests.fixtures.images import ImageSpec, build_oci_layout, layer
    from tests.helpers import write_spec

    spec_dir = tmp_path / "spec"
    build_oci_layout(spec_dir, {"app-1.0": ImageSpec(layers=[layer({"etc/a": b"a\n"})])})
    spec = write_spec(spec_dir, images=["oci:.:app-1.0"], files=[])
    r = airgap("build", spec, "-o", tmp_path / "b.tar", "--key", keyring.key_path("builder-1"))
    assert r.code == 2 and "internal repository" in r.err, r.err


# --------------------------------------------------------------------------- names that are not UTF-8

RAW = b"geheim-pilot-\xff.tar"


def _name(doc, key) -> bytes:
    """A name as recorded: its exact bytes from ``<key>_hex`` when it is not UTF-8."""
    return bytes.fromhex(doc[f"{key}_hex"]) if f"{key}_hex" in doc else doc[key].encode()


def _audit_entries(state):
    return [json.loads(x) for x in (state / "audit.log").read_bytes().splitlines()]


def test_bundle_named_in_bytes_is_imported_and_audited_losslessly(tmp_path, signed_bundle, registry):
    bundle = tmp_path / os.fsdecode(RAW)
    shutil.copyfile(signed_bundle.path, bundle)
    files = tmp_path / os.fsdecode(b"files-\xfe")
    state = tmp_path / "state"
    args = ("import", bundle, "--trust", signed_bundle.trust, "--registry", registry.host, "--plain-http",
            "--state", state, "--files-dir", files)
    r = airgap_proc(*args)  # a real process: argv arrives as bytes
    assert r.code == 0, r.err
    assert "Traceback" not in r.err and "IMPORTED: geheim-pilot 1.0.0" in r.out
    [entry] = _audit_entries(state)
    assert entry["result"] == "accepted" and _name(entry["object"], "bundle") == os.fsencode(bundle)
    assert entry["object"]["bundle"].endswith("geheim-pilot-\\xff.tar")  # what a person reads
    imported = json.loads((state / "bundles" / "geheim-pilot" / "imported.json").read_bytes())
    assert _name(imported, "files_dir") == os.fsencode(files / "current")
    assert airgap_proc("audit", "verify", "--state", state).code == 0
    shown = airgap_proc("audit", "show", "--state", state)
    assert shown.code == 0 and "Traceback" not in shown.err
    j = airgap_proc(*args, "--json")
    assert j.code == 0 and json.loads(j.out)["files"] == 0


def test_bundle_named_in_bytes_is_audited_when_refused(tmp_path, signed_bundle, registry):
    bundle = tmp_path / os.fsdecode(RAW)
    shutil.copyfile(signed_bundle.builder_only, bundle)  # the officer has not signed: refused
    state = tmp_path / "state"
    v = airgap_proc("verify", bundle, "--trust", signed_bundle.trust, "--state", state)
    assert v.code == 1 and "officer: 0 of 1" in v.err and "Traceback" not in v.err
    i = airgap_proc("import", bundle, "--trust", signed_bundle.trust, "--registry", registry.host, "--plain-http",
                    "--state", state)
    assert i.code == 1 and "Traceback" not in i.err
    missing = tmp_path / os.fsdecode(b"nope-\xff.tar")
    m = airgap_proc("verify", missing, "--trust", signed_bundle.trust, "--state", state)
    assert m.code == 2 and "nope-\\xff.tar" in m.err
    entries = _audit_entries(state)
    assert [(e["action"], e["result"]) for e in entries] == [("verify", "rejected"), ("import", "rejected"),
                                                             ("verify", "error")]
    assert [_name(e["object"], "bundle") for e in entries] == [os.fsencode(bundle)] * 2 + [os.fsencode(missing)]
    assert airgap_proc("audit", "verify", "--state", state).code == 0


# --------------------------------------------------------------------------- no traceback


def test_an_unexpected_error_is_one_line_naming_the_verb(signed_bundle, monkeypatch):
    from airgap import inspect

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(inspect, "summary", boom)
    r = airgap("inspect", signed_bundle.path)
    assert r.code == 1
    assert r.err.count("\n") == 1 and r.err.startswith("airgap inspect: internal error (RuntimeError: boom)")
    assert "Traceback" not in r.err
    shown = airgap("inspect", signed_bundle.path, env={"AIRGAP_DEBUG": "1"})
    assert shown.code == 1 and "Traceback" in shown.err and "RuntimeError: boom" in shown.err
    assert "Traceback" in airgap("--debug", "inspect", signed_bundle.path).err


def test_an_unexpected_error_during_import_is_audited(tmp_path, signed_bundle, registry, monkeypatch):
    from airgap import importer

    def boom(*a, **k):
        raise RuntimeError("registry client exploded")

    monkeypatch.setattr(importer, "_push_manifests", boom)
    state = tmp_path / "state"
    r = airgap("import", signed_bundle.path, "--trust", signed_bundle.trust, "--registry", registry.host,
               "--plain-http", "--state", state)
    assert r.code == 1 and "airgap import: internal error" in r.err and "Traceback" not in r.err
    [entry] = _audit_entries(state)
    assert entry["result"] == "rejected" and "registry client exploded" in entry["detail"]["error"]
    assert not (state / "bundles").exists()
