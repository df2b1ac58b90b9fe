"""Source aliases end to end: ``sources: {pilot: HOST:PORT/pilot}`` and refs
``pilot/status:1.0`` pull from the source and become ``<registry>/pilot/status``
in the manifest, inspect, the signing plan and the import, whatever source
registry (or port) the images came from.  The derivation is the one verify
holds the signed record to (``airgap.manifest.names_of``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import bundlekit as kit
from tests.fixtures.images import push_layout
from tests.helpers import airgap, airgap_proc, extract, write_spec

CREATED = "2026-11-01T00:00:00Z"


def _aliased_spec(d: Path) -> Path:
    return write_spec(d, images=["pilot/status:1.0", "pilot/notes:1.0"], files=[], expires="3650d",
                      extra={"sources": {"pilot": "${AIRGAP_SOURCE_REGISTRY}/pilot"}})


def _build(spec: Path, out: Path, keyring, source_host: str, *, sign: bool = True) -> Path:
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--plain-http", "--created", CREATED,
               env={"AIRGAP_SOURCE_REGISTRY": source_host})
    assert r.code == 0, r.err
    if sign:
        r = airgap("sign", out, "--key", keyring.key_path("officer-1"), "--yes")
        assert r.code == 0, r.err
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads(kit.read_entries(bundle)[0].data)


def test_alias_names_the_image_in_manifest_plan_inspect_and_import(tmp_path, seeded_registry, keyring,
                                                                 trust_policy_file, registry):
    spec = _aliased_spec(tmp_path / "spec")
    bundle = _build(spec, tmp_path / "b.tar", keyring, seeded_registry.host)
    status = next(i for i in _manifest(bundle)["images"] if i["ref"] == "pilot/status:1.0")
    # pulled from the source, named by the alias; the source is recorded (signed) as provenance
    assert (status["layout_ref"], status["source"]) == ("pilot/status:1.0", f"{seeded_registry.host}/pilot")
    assert (status["registry"], status["repository"]) == (seeded_registry.host, "pilot/status")
    assert status["digest"] == seeded_registry.images["pilot/status"].digest
    digest = status["digest"]

    doc = airgap("inspect", bundle, "--json").json()
    assert {d["ref"]: d["repository"] for d in doc["destinations"]} == {"pilot/status:1.0": "pilot/status",
                                                                        "pilot/notes:1.0": "pilot/notes"}
    line = f"import writes REGISTRY/pilot/status:1.0 @ {digest}"
    human = airgap("inspect", bundle).out
    assert line in human and f"  pilot/status:1.0  [-]; pulled from {seeded_registry.host}/pilot/status" in human
    unsigned = _build(spec, tmp_path / "unsigned.tar", keyring, seeded_registry.host, sign=False)
    plan = airgap_proc("sign", unsigned, "--key", keyring.key_path("officer-1"), stdin=open(os.devnull))
    assert line in plan.out, plan.out

    r = airgap("import", bundle, "--trust", trust_policy_file, "--registry", registry.host, "--plain-http",
               "--state", tmp_path / "state", "--json")
    assert r.code == 0, r.err
    written = {i["ref"]: i for i in r.json()["images"]}
    assert written["pilot/status:1.0"]["internal_name"] == f"{registry.host}/pilot/status"
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/pilot/status:1.0"],
                         capture_output=True, timeout=60, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest


def test_the_same_images_from_two_source_ports_get_the_same_names(tmp_path, seeded_registry, keyring, registry):
    """A second registry (another port) holding the same images: the same layout,
    the same internal names; only the recorded source differs."""
    for name in ("status", "notes"):
        push_layout(seeded_registry.layout, name, registry.host, f"pilot/{name}", dest_tag="1.0")
    spec = _aliased_spec(tmp_path / "spec")
    one = _build(spec, tmp_path / "one.tar", keyring, seeded_registry.host, sign=False)
    two = _build(spec, tmp_path / "two.tar", keyring, registry.host, sign=False)
    assert seeded_registry.host != registry.host
    m1, m2 = _manifest(one), _manifest(two)

    def names(m):
        return [(i["ref"], i["layout_ref"], i["repository"], i["tag"], i["digest"]) for i in m["images"]]

    assert names(m1) == names(m2)
    assert [i["source"] for i in m2["images"]] == [f"{registry.host}/pilot"] * 2
    for m in (m1, m2):
        for i in m["images"]:
            i.pop("source"), i.pop("registry")
        # the SBOMs name where the image can be fetched (purl repository_url): provenance too
        m["members"] = [x for x in m["members"] if not x["path"].startswith("sbom/")]
    assert m1 == m2  # nothing else in the signed manifest depends on the source
    for b, host in ((one, seeded_registry.host), (two, registry.host)):
        purls = [json.loads(e.data)["metadata"]["component"]["purl"] for e in kit.read_entries(b) if e.name.startswith("sbom/")]
        assert len(purls) == 2 and all(f"repository_url={host}%2Fpilot%2F" in p for p in purls), purls
    l1, l2 = extract(one, tmp_path / "x1"), extract(two, tmp_path / "x2")
    assert (l1 / "index.json").read_bytes() == (l2 / "index.json").read_bytes()
    # inspect (the officer's view) and the internal names agree
    d1 = airgap("inspect", one, "--json").json()["destinations"]
    d2 = airgap("inspect", two, "--json").json()["destinations"]
    assert d1 == d2 and {d["repository"] for d in d1} == {"pilot/status", "pilot/notes"}


def test_without_an_alias_the_source_host_stays_in_the_name(tmp_path, signed_bundle):
    """The default mapping (documented in docs/bundle-format.md): HOST[:PORT]/PATH -> HOST[_PORT]/PATH."""
    doc = airgap("inspect", signed_bundle.path, "--json").json()
    status = next(d for d in doc["destinations"] if "pilot/status" in d["ref"])
    host = status["ref"].split("/", 1)[0]
    assert status["repository"] == f"{host.replace(':', '_')}/pilot/status"
    assert all("source" not in i for i in _manifest(signed_bundle.path)["images"])


@pytest.mark.parametrize("edit,says", [
    (lambda i: i.update(source="registry.example.org/evil"), "images[0].registry is"),
    (lambda i: i.update(layout_ref="127.0.0.1_5000/pilot/status:1.0"), "images[0].layout_ref is"),
    (lambda i: i.pop("source"), "images[0].layout_ref is"),
    (lambda i: i.update(ref="other/status:1.0"), "images[0].layout_ref is"),
], ids=["source-changed", "layout-ref-changed", "source-removed", "alias-renamed"])
def test_verify_holds_an_aliased_record_to_its_ref_and_source(tmp_path, seeded_registry, keyring, trust_policy_file,
                                                             edit, says):
    """A record whose fields disagree with ref + source is refused, so the signed
    name is the name import writes (re-signed, so only the naming check can refuse it)."""
    bundle = _build(_aliased_spec(tmp_path / "spec"), tmp_path / "b.tar", keyring, seeded_registry.host)
    assert airgap("verify", bundle, "--trust", trust_policy_file).code == 0

    def change(doc):
        edit(doc["images"][0])

    entries = kit.refresh_manifest(kit.read_entries(bundle), [keyring["builder-1"], keyring["officer-1"]], edit=change)
    bad = kit.write_entries(tmp_path / "bad.tar", entries)
    r = airgap("verify", bad, "--trust", trust_policy_file)
    assert r.code == 1, r.out + r.err
    assert says in r.err and "import would write another name" in r.err, r.err


def test_a_workload_names_the_image_by_its_alias_and_renders_to_the_internal_name(tmp_path, seeded_registry, keyring,
                                                                                 trust_policy_file):
    """As the sample bundle does: ``image: pilot/status:1.0`` in the Kubernetes
    manifest, rendered to REGISTRY/pilot/status@digest (no source host anywhere)."""
    import yaml

    spec_dir = tmp_path / "spec"
    (spec_dir / "k8s").mkdir(parents=True)
    (spec_dir / "k8s/status.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: status}\nspec:\n  containers:\n"
        "    - name: status\n      image: pilot/status:1.0\n")
    spec = write_spec(spec_dir, images=["pilot/status:1.0"], files=[], expires="3650d",
                      extra={"sources": {"pilot": "${AIRGAP_SOURCE_REGISTRY}/pilot"},
                             "workloads": [{"name": "status", "src": "k8s/status.yaml"}]})
    bundle = _build(spec, tmp_path / "b.tar", keyring, seeded_registry.host)
    r = airgap("manifests", "render", bundle, "--trust", trust_policy_file, "--registry", "registry.pilot.internal:5000",
               "-o", tmp_path / "out")
    assert r.code == 0, r.err
    pod = yaml.safe_load((tmp_path / "out" / "status.yaml").read_text())
    assert pod["spec"]["containers"][0]["image"] == \
        f"registry.pilot.internal:5000/pilot/status@{seeded_registry.images['pilot/status'].digest}"
