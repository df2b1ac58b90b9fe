"""airgap's small JSON Schema validator and jsonschema agree (one reader, differential test).

verify validates the manifest and the trust policy with airgap/_internal/schema.py
(start-up time); jsonschema stays the reference.  Over the real documents and
thousands of mutants of them, both must give the same verdict.
"""

from __future__ import annotations

import copy
import json
from importlib import resources

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap import caps
from airgap._internal import schema
from tests import bundlekit as kit


def _schema(name: str) -> dict:
    doc = json.loads(resources.files("airgap").joinpath(f"schemas/{name}.schema.json").read_text("utf-8"))
    if name == "manifest":
        props = doc["properties"]
        props["members"]["maxItems"], props["images"]["maxItems"] = caps.MAX_MEMBERS, caps.MAX_IMAGES
        props["external_blobs"]["maxItems"] = caps.MAX_EXTERNAL_BLOBS
    return doc


@pytest.fixture(scope="module")
def documents(signed_bundle):
    manifest = json.loads(kit.read_entries(signed_bundle.path)[0].data)
    manifest["base"] = {"kind": "inventory", "digest": "sha256:" + "a" * 64, "description": "have.json"}
    manifest["external_blobs"] = [{"digest": "sha256:" + "b" * 64, "size": 7}]
    manifest["images"][0]["sovereignty"] = {"provider": "x", "reason": "y"}
    policy = json.loads(signed_bundle.trust.read_bytes())
    return {"manifest": manifest, "trust": policy}


@pytest.mark.parametrize("name", ["manifest", "trust"])
def test_schemas_are_valid_and_documents_pass_both(name, documents):
    doc = _schema(name)
    jsonschema.Draft202012Validator.check_schema(doc)
    assert schema.Validator(doc).is_valid(documents[name])
    assert jsonschema.Draft202012Validator(doc).is_valid(documents[name])


def test_an_unsupported_keyword_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        schema.Validator({"type": "object", "patternProperties": {"^x": {}}})


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**40) | st.sampled_from(
        ["", "x", "1.0.0", "sha256:" + "a" * 64, "a" * 64, "A" * 64, "linux/amd64", "2026-01-01T00:00:00Z",
         "airgap-trust", "airgap-bundle-manifest", "ed25519", "1.0", "abc\n", "files/x", "a" * 300]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["x", "keyid", "sig", "path"]), inner, max_size=2),
    max_leaves=6,
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _mutate(doc, path, op, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif isinstance(parent, dict):
        parent[f"{last}-extra"] = value
    return doc


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(which=st.sampled_from(["manifest", "trust"]), pick=st.integers(0, 10**6),
       op=st.sampled_from(["replace", "delete", "duplicate", "add"]), value=VALUES)
def test_same_verdict_as_jsonschema_on_mutants(documents, which, pick, op, value):
    doc = documents[which]
    paths = list(_paths(doc))
    mutant = _mutate(doc, paths[pick % len(paths)], op, value)
    sch = _schema(which)
    ours = list(schema.Validator(sch).iter_errors(mutant))
    theirs = list(jsonschema.Draft202012Validator(sch).iter_errors(mutant))
    assert (not ours) == (not theirs), (ours[:2], [e.message for e in theirs[:2]])
    if ours:
        # Both point at the same places.
        assert {tuple(e.absolute_path) for e in ours} <= {tuple(e.absolute_path) for e in theirs} | {
            tuple(e.absolute_path)[:-1] for e in theirs} | {()}


# --- one way to name a place in a document (issue 14) ---------------------------------


def test_field_path_is_keys_dotted_and_indexes_bracketed():
    assert schema.field_path(["images", 2, "ref"]) == "images[2].ref"
    assert schema.field_path([0, "name"]) == "[0].name"
    assert schema.field_path([]) == ""
    assert schema.field_path(["spec", "containers", 0, "image"]) == schema.join(schema.join("spec", "containers") + "[0]", "image")


def test_both_validators_errors_read_the_same(documents):
    """describe() renders airgap's SchemaError and jsonschema's ValidationError alike."""
    doc = copy.deepcopy(documents["manifest"])
    doc["members"][1]["size"] = "seven"
    ours = schema.best_match(list(schema.Validator(_schema("manifest")).iter_errors(doc)))
    theirs = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_schema("manifest")).iter_errors(doc))
    assert schema.describe(ours) == schema.describe(theirs) == "members[1].size: 'seven' is not of type 'integer'"
    top = schema.best_match(list(schema.Validator(_schema("manifest")).iter_errors([])))
    assert schema.describe(top).startswith("(top level): ")


def test_manifest_toolkit_spec_and_workload_errors_name_the_field_one_way(documents, tmp_path):
    from airgap import toolkit, workloads
    from airgap._internal.jsonutil import canonical_bytes
    from airgap.exceptions import FormatError, SpecError
    from airgap.manifest import BundleManifest
    from airgap.spec import load_spec

    doc = copy.deepcopy(documents["manifest"])
    doc["members"][1]["size"] = -1
    with pytest.raises(FormatError, match=r": members\[1\]\.size: -1 is less than the minimum of 0"):
        BundleManifest.from_bytes(canonical_bytes(doc))
    release = toolkit.ToolkitRelease("0.1.0", "0" * 40, (toolkit.WheelRecord("airgap-0.1.0-py3-none-any.whl", 1, "a" * 64),))
    bad = release.to_dict()
    bad["wheels"][0]["size"] = "one"
    with pytest.raises(FormatError, match=r"not a toolkit release: wheels\[0\]\.size: 'one' is not of type 'integer'"):
        toolkit.ToolkitRelease.from_bytes(canonical_bytes(bad))
    spec = tmp_path / "bundle.yaml"
    spec.write_text("apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: x, version: 1.0.0, target: t, expires: 30d}\n"
                    "images:\n  - ref: 127.0.0.1:5000/a:1\n    platforms: 7\n")
    with pytest.raises(SpecError) as exc:
        load_spec(spec, env={})
    assert exc.value.field == "images[0].platforms"
    pod = b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: a}]\n  x: [{image: b}]\n"
    with pytest.raises(FormatError, match=r"spec\.x\[0\]\.image: an image reference in a place"):
        workloads.scan(workloads.parse(pod, "k8s/p.yaml"), "k8s/p.yaml")
