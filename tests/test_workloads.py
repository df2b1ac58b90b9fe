"""Kubernetes workloads in a bundle: carried and recorded at build, shown to officers, rendered by digest.

``render`` must refuse an image the bundle does not carry and any reference it
cannot resolve through the bundle, at build (so it is never signed) and again
after verification (so a bundle whose files and manifest disagree renders
nothing).  Every image field that can make a node pull is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from airgap import workloads
from airgap.exceptions import FormatError
from tests import bundlekit
from tests.fixtures.keys import make_policy
from tests.helpers import airgap, audited, write_spec

REGISTRY = "registry.pilot.internal:5000"
CREATED = "2026-11-01T00:00:00Z"

STATUS_APP = """\
# pilot/status: a Deployment and its settings
apiVersion: apps/v1
kind: Deployment
metadata:
  name: pilot-status
  labels: {app: pilot-status}
spec:
  replicas: 1
  selector:
    matchLabels: {app: pilot-status}
  template:
    metadata:
      labels: {app: pilot-status}
    spec:
      initContainers:
        - name: check
          image: {notes_by_digest}
          command: [/bin/busybox, "true"]
      containers:
        - name: status
          image: {status}
          ports: [{containerPort: 8080}]
          volumeMounts: [{name: settings, mountPath: /etc/pilot}]
      ephemeralContainers:
        - name: debug
          image: {status}
      volumes:
        - name: settings
          configMap: {name: pilot-status}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: pilot-status
data:
  status.conf: |
    listen_port=8080
"""

STATUS_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: pilot-status
spec:
  selector: {app: pilot-status}
  ports: [{port: 8080, targetPort: 8080}]
"""

NOTES_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: pilot-notes
spec:
  containers:
    - name: notes
      image: "${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/notes:1.0"
"""


@dataclass
class WorkloadBundle:
    path: Path
    trust: Path
    spec: Path
    seeded: object
    keyring: object


def _spec(directory: Path, seeded, workload_files: dict[str, str], workloads_: list[dict], *, images=None) -> Path:
    for rel, text in workload_files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    images = images if images is not None else [
        seeded.ref("pilot/status"),
        "${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/notes:1.0",
    ]
    return write_spec(directory, images=images, files=[], extra={"workloads": workloads_})


def _pilot_files(seeded) -> dict[str, str]:
    status = STATUS_APP.replace("{status}", seeded.ref("pilot/status")).replace(
        "{notes_by_digest}", seeded.ref("pilot/notes", by_digest=True))
    return {"k8s/status/app.yaml": status, "k8s/status/service.yaml": STATUS_SERVICE, "k8s/notes.yaml": NOTES_POD}


def _build(spec: Path, out: Path, seeded, keyring, *, sign: bool = True):
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--plain-http", "--created", CREATED,
               "--quiet", env={"AIRGAP_SOURCE_REGISTRY": seeded.host})
    if r.code == 0 and sign:
        s = airgap("sign", out, "--key", keyring.key_path("officer-1"), "--yes", "--quiet")
        assert s.code == 0, s.err
    return r


@pytest.fixture(scope="module")
def wbundle(tmp_path_factory, seeded_registry, keyring) -> WorkloadBundle:
    work = tmp_path_factory.mktemp("workloads")
    spec = _spec(work / "spec", seeded_registry, _pilot_files(seeded_registry),
                 [{"name": "pilot-status", "src": "k8s/status/"}, {"name": "pilot-notes", "src": "k8s/notes.yaml"}])
    out = work / "pilot.tar"
    r = _build(spec, out, seeded_registry, keyring)
    assert r.code == 0, r.err
    trust = work / "trust.json"
    trust.write_bytes(make_policy(keyring).to_bytes())
    return WorkloadBundle(out, trust, spec, seeded_registry, keyring)


def _manifest(path: Path) -> dict:
    return bundlekit.manifest_of(bundlekit.read_entries(path))


# --------------------------------------------------------------------------- build and review


def test_build_carries_workload_files_and_records_every_image(wbundle):
    m = _manifest(wbundle.path)
    seeded = wbundle.seeded
    by_name = {w["name"]: w for w in m["workloads"]}
    status = by_name["pilot-status"]
    assert status["files"] == ["files/workloads/pilot-status/app.yaml", "files/workloads/pilot-status/service.yaml"]
    assert status["objects"] == ["Deployment/pilot-status", "ConfigMap/pilot-status", "Service/pilot-status"]
    fields = sorted((i["field"], i["digest"]) for i in status["images"])
    digest = {r: seeded.images[r].digest for r in ("pilot/status", "pilot/notes")}
    assert fields == sorted([
        ("spec.template.spec.containers[0].image", digest["pilot/status"]),
        ("spec.template.spec.ephemeralContainers[0].image", digest["pilot/status"]),
        ("spec.template.spec.initContainers[0].image", digest["pilot/notes"]),
    ])
    notes = by_name["pilot-notes"]
    assert notes["images"] == [{
        "object": "Pod/pilot-notes", "field": "spec.containers[0].image",
        "ref": "${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/notes:1.0",
        "image": f"{seeded.host}/pilot/notes:1.0", "digest": digest["pilot/notes"]}]
    # The files travel unchanged, pinned like every member.
    members = {x["path"]: x for x in m["members"]}
    src = wbundle.spec.parent / "k8s/status/app.yaml"
    assert members["files/workloads/pilot-status/app.yaml"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_inspect_and_sign_show_workloads_and_their_digests(wbundle, tmp_path):
    digest = wbundle.seeded.images["pilot/notes"].digest
    r = airgap("inspect", wbundle.path)
    assert r.code == 0, r.err
    assert "Workloads (Kubernetes manifests): the digest each container runs (4 added):" in r.out
    assert "pilot-status: Deployment/pilot-status, ConfigMap/pilot-status, Service/pilot-status" in r.out
    assert "+ pilot-notes: Pod/pilot-notes spec.containers[0].image" in r.out
    assert f"${{AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}}/pilot/notes:1.0 -> {digest}" in r.out
    copy = tmp_path / "b.tar"
    shutil.copyfile(wbundle.path, copy)
    r = airgap("sign", copy, "--key", wbundle.keyring.key_path("officer-2"), "--trust", wbundle.trust, "--yes")
    assert r.code == 0, r.err
    assert "+ pilot-notes: Pod/pilot-notes spec.containers[0].image" in r.out and digest in r.out


# --------------------------------------------------------------------------- render


def test_render_pins_every_image_to_the_internal_registry(wbundle, tmp_path):
    out = tmp_path / "rendered"
    r = airgap("manifests", "render", wbundle.path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", out, "--json")
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["pilot-notes.yaml", "pilot-status.yaml"]
    seeded = wbundle.seeded
    internal = seeded.host.replace(":", "_")
    want = {r_: f"{REGISTRY}/{internal}/{r_}@{seeded.images[r_].digest}" for r_ in ("pilot/status", "pilot/notes")}
    docs = list(yaml.safe_load_all((out / "pilot-status.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "ConfigMap", "Service"]
    pod = docs[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == want["pilot/status"]
    assert pod["initContainers"][0]["image"] == want["pilot/notes"]
    assert pod["ephemeralContainers"][0]["image"] == want["pilot/status"]
    assert docs[1]["data"]["status.conf"] == "listen_port=8080\n"
    notes = yaml.safe_load((out / "pilot-notes.yaml").read_text())
    assert notes["spec"]["containers"][0]["image"] == want["pilot/notes"]
    text = (out / "pilot-status.yaml").read_text() + (out / "pilot-notes.yaml").read_text()
    assert seeded.host not in text.replace(internal, "") and "${" not in text
    assert len(r.json()["images"]) == 4
    # Deterministic: the same bundle and registry give the same bytes.
    again = tmp_path / "again"
    assert airgap("manifests", "render", wbundle.path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", again).code == 0
    for name in ("pilot-notes.yaml", "pilot-status.yaml"):
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_render_usage_errors_before_anything_is_verified(wbundle, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    r = airgap("manifests", "render", wbundle.path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", out)
    assert r.code == 2 and "exists: add --force to overwrite" in r.err
    r = airgap("manifests", "render", wbundle.path, "--trust", wbundle.trust, "--registry", "https://x/", "-o", tmp_path / "n")
    assert r.code == 2 and "--registry" in r.err
    r = airgap("manifests", "render", wbundle.path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", out, "--force")
    assert r.code == 0, r.err


def test_render_refuses_a_bundle_verify_rejects(wbundle, tmp_path):
    entries = bundlekit.read_entries(wbundle.path)
    only_builder = bundlekit.resign(entries, entries[0].data, [wbundle.keyring["builder-1"]])
    bad = bundlekit.write_entries(tmp_path / "b.tar", only_builder)
    out = tmp_path / "out"
    r = airgap("manifests", "render", bad, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", out)
    assert r.code == 1 and "officer" in r.err
    assert not out.exists()


def test_render_with_state_audits_what_it_wrote_and_what_it_refused(wbundle, tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    r = airgap("manifests", "render", wbundle.path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o",
               tmp_path / "plain")
    assert r.code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["plain"]  # no --state: no audit log
    r = airgap("manifests", "render", wbundle.path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", out,
               "--state", state, "--json")
    assert r.code == 0, r.err
    entries = audited(state)
    [(action, result, obj, detail)] = [e for e in entries if e[0] != "first-use"]
    assert (action, result) == ("manifests-render", "accepted")
    assert obj["bundle"] == str(wbundle.path) and obj["output"] == str(out) and obj["registry"] == REGISTRY
    assert obj["manifest"] == r.json()["manifest_digest"] and detail["files"] == r.json()["files"]
    entries_ = bundlekit.read_entries(wbundle.path)
    bad = bundlekit.write_entries(tmp_path / "b.tar", bundlekit.resign(entries_, entries_[0].data,
                                                                       [wbundle.keyring["builder-1"]]))
    r = airgap("manifests", "render", bad, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", tmp_path / "no",
               "--state", state)
    assert r.code == 1 and not (tmp_path / "no").exists()
    action, result, obj, detail = audited(state)[-1]
    assert (action, result, obj["bundle"]) == ("manifests-render", "rejected", str(bad))
    assert "officer" in detail["error"]


def _tampered(wbundle, tmp_path, edit_file=None, edit_manifest=None) -> Path:
    """A bundle re-signed by builder and officer whose workload file or record was changed."""
    entries = bundlekit.read_entries(wbundle.path)
    if edit_file:
        for e in entries:
            if e.name == "files/workloads/pilot-notes/notes.yaml":
                e.data = edit_file(e.data.decode()).encode()
    keys = [wbundle.keyring["builder-1"], wbundle.keyring["officer-1"]]
    return bundlekit.write_entries(tmp_path / "t.tar", bundlekit.refresh_manifest(entries, keys, edit=edit_manifest))


@pytest.mark.parametrize("new_ref", ["docker.io/library/nginx:1.25", "nginx", "pilot/notes:1.0"])
def test_render_refuses_a_reference_the_signed_manifest_does_not_record(wbundle, tmp_path, new_ref):
    # Signed by the right keys, hashes all match: the file simply names another image than the record.
    path = _tampered(wbundle, tmp_path, edit_file=lambda t: t.replace(
        '"${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/notes:1.0"', json.dumps(new_ref)))
    out = tmp_path / "out"
    r = airgap("manifests", "render", path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", out)
    assert r.code == 1 and "workload pilot-notes" in r.err and "not approved" in r.err, r.err
    assert not any(out.glob("*.yaml")) if out.exists() else True


def test_render_refuses_a_record_naming_an_image_the_bundle_does_not_carry(wbundle, tmp_path):
    def edit(doc):
        for w in doc["workloads"]:
            for i in w["images"]:
                i["image"] = "docker.io/library/nginx:1.25"

    path = _tampered(wbundle, tmp_path, edit_manifest=edit)
    r = airgap("manifests", "render", path, "--trust", wbundle.trust, "--registry", REGISTRY, "-o", tmp_path / "o")
    assert r.code == 1 and "does not carry" in r.err, r.err


def test_render_refuses_a_bundle_without_workloads(signed_bundle, tmp_path):
    r = airgap("manifests", "render", signed_bundle.path, "--trust", signed_bundle.trust, "--registry", REGISTRY,
               "-o", tmp_path / "o")
    assert r.code == 2 and "no workloads" in r.err


# --------------------------------------------------------------------------- build refusals


@pytest.mark.parametrize("image, reason", [
    ("docker.io/library/nginx:1.25", "not one of the bundle's images"),
    ("status:1.0", "not one of the bundle's images"),  # a bare name is Docker Hub, as a node reads it
    ("{host}/pilot/status@sha256:" + "0" * 64, "not one of the bundle's images"),
    ("{host}/pilot/status:2.0", "not one of the bundle's images"),
])
def test_build_refuses_a_workload_image_the_bundle_does_not_carry(tmp_path, seeded_registry, keyring, image, reason):
    pod = NOTES_POD.replace("${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/notes:1.0",
                            image.replace("{host}", seeded_registry.host))
    spec = _spec(tmp_path / "s", seeded_registry, {"pod.yaml": pod}, [{"name": "w", "src": "pod.yaml"}])
    r = _build(spec, tmp_path / "o.tar", seeded_registry, keyring, sign=False)
    assert r.code == 2 and reason in r.err and "workloads[0]" in r.err, r.err
    assert not (tmp_path / "o.tar").exists()


def test_build_accepts_a_reference_pinned_to_the_carried_digest(tmp_path, seeded_registry, keyring):
    pod = NOTES_POD.replace("${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/notes:1.0",
                            seeded_registry.ref("pilot/status", by_digest=True))
    spec = _spec(tmp_path / "s", seeded_registry, {"pod.yaml": pod}, [{"name": "w", "src": "pod.yaml"}])
    r = _build(spec, tmp_path / "o.tar", seeded_registry, keyring, sign=False)
    assert r.code == 0, r.err
    (use,) = _manifest(tmp_path / "o.tar")["workloads"][0]["images"]
    assert use["digest"] == seeded_registry.images["pilot/status"].digest


# --------------------------------------------------------------------------- reading objects


def _scan(text: str):
    return workloads.scan(workloads.parse(textwrap.dedent(text).encode(), "t.yaml"), "t.yaml")


def test_every_pod_bearing_kind_gives_its_images():
    objects, uses = _scan("""\
        apiVersion: batch/v1
        kind: CronJob
        metadata: {name: nightly}
        spec:
          schedule: "0 1 * * *"
          jobTemplate:
            spec:
              template:
                spec:
                  containers: [{name: a, image: "r.example/a:1"}]
                  volumes: [{name: data, image: {reference: "r.example/data:1"}}]
        ---
        apiVersion: apps/v1
        kind: DaemonSet
        metadata: {name: agent}
        spec: {template: {spec: {containers: [{name: b, image: "r.example/b:1"}]}}}
        """)
    assert objects == ["CronJob/nightly", "DaemonSet/agent"]
    assert [(u.object, u.field, u.ref) for u in uses] == [
        ("CronJob/nightly", "spec.jobTemplate.spec.template.spec.containers[0].image", "r.example/a:1"),
        ("CronJob/nightly", "spec.jobTemplate.spec.template.spec.volumes[0].image.reference", "r.example/data:1"),
        ("DaemonSet/agent", "spec.template.spec.containers[0].image", "r.example/b:1"),
    ]


@pytest.mark.parametrize("text, reason", [
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n", "does not know where this kind keeps images"),
    ("apiVersion: example.io/v1\nkind: App\nmetadata: {name: a}\nspec: {image: x}\n", "does not know where"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n", "must be an image reference"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n", "runs no container"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {image: 'r/x:1'}}\n"
     "spec: {containers: [{name: a, image: 'r/a:1'}]}\n", "metadata.annotations.image"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: 'r/a:1'}],"
     " volumes: [{name: v, image: 'r/v:1'}]}\n", "volumes[0].image.reference must be an image reference"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: P}\nspec: {containers: [{name: a, image: 'r/a:1'}]}\n", "DNS subdomain"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
     "defined twice"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nmetadata: {name: d}\n", "duplicate key"),
    ("a: &x {apiVersion: v1}\nb: *x\n", "aliases"),
    ("- 1\n", "not a Kubernetes object"),
])
def test_objects_airgap_cannot_pin_are_refused(text, reason):
    with pytest.raises(FormatError) as exc:
        _scan(text)
    assert reason in str(exc.value)


def test_rewrite_replaces_every_position_and_nothing_else():
    docs = workloads.parse(b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {image: x}}\n"
                           b"spec: {initContainers: [{name: i, image: 'r/i:1'}], containers: [{name: a, image: 'r/a:1',"
                           b" env: [{name: image, value: 'r/a:1'}]}]}\n", "t")
    with pytest.raises(FormatError, match="metadata.labels.image"):
        workloads.scan(docs, "t")
    del docs[0]["metadata"]["labels"]
    workloads.rewrite(docs, "t", lambda use: f"new/{use.ref}")
    spec = docs[0]["spec"]
    assert spec["initContainers"][0]["image"] == "new/r/i:1"
    assert spec["containers"][0]["image"] == "new/r/a:1"
    assert spec["containers"][0]["env"] == [{"name": "image", "value": "r/a:1"}]


def test_diff_names_the_workload_whose_digest_changes(wbundle, tmp_path):
    seeded = wbundle.seeded
    files = _pilot_files(seeded)
    files["k8s/notes.yaml"] = NOTES_POD.replace("${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/notes:1.0",
                                                seeded.ref("pilot/status"))
    spec = _spec(tmp_path / "s", seeded, files, [{"name": "pilot-status", "src": "k8s/status/"},
                                                 {"name": "pilot-notes", "src": "k8s/notes.yaml"}])
    assert _build(spec, tmp_path / "b.tar", seeded, wbundle.keyring, sign=False).code == 0
    r = airgap("diff", wbundle.path, tmp_path / "b.tar")
    notes, status = seeded.images["pilot/notes"].digest, seeded.images["pilot/status"].digest
    assert f"  changed: pilot-notes Pod/pilot-notes spec.containers[0].image  {notes} → {status}" in r.out, r.out
    assert "  changed: workloads/pilot-notes/notes.yaml" in r.out.split("files:\n", 1)[1]
