#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module (controller only): the controller's evidence of a rollout."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_evidence
short_description: Record and read the controller's evidence of what was signed and rolled out
description:
  - Runs on the controller, with the controller's toolkit (the C(airgap) package
    next to ansible-playbook); never on a node. What it records is what
    check.yml later holds every node to: nothing in it comes from a checked host
    except the copy of the staging host's audit log, whose head it anchors.
  - C(state=signed) takes the JSON of C(airgap verify --json) and
    C(airgap inspect --json --trust) of the same bundle, refuses a rejected
    bundle or two different manifest digests, and returns the signed facts
    (bundle, manifest digest, signers, trust policy, images with their internal
    repositories, workloads with the internal reference of each image they run);
    with I(dir) it also writes them to C(DIR/bundle.json).
  - C(state=anchor) takes the head of the controller's copy of the staging
    host's audit log (C(DIR/state/audit.log)) as C(airgap audit head --json)
    printed it and writes it (C(SEQ:HASH)) to C(DIR/audit-head.json).
  - C(state=read) returns what C(DIR) holds (C(signed) is empty and C(missing) says why when nothing was recorded).
  - Files are written atomically and only when their content changes; the
    module never reports a change (the evidence is the controller's bookkeeping,
    not a change of the site).
options:
  state:
    description: What to do.
    type: str
    choices: [signed, anchor, read]
    required: true
  dir:
    description: The evidence directory of this bundle name on the controller.
    type: path
  verify:
    description: For C(signed), the stdout of C(airgap verify BUNDLE --trust T --json).
    type: str
  inspect:
    description: For C(signed), the stdout of C(airgap inspect BUNDLE --trust T --json).
    type: str
  bundle_path:
    description: For C(signed), the bundle file on the controller.
    type: path
  trust_path:
    description: For C(signed), the trust policy on the controller.
    type: path
  registry:
    description: For C(signed), HOST:PORT of the internal registry's pull endpoint (the prefix of internal names).
    type: str
  staging_host:
    description: For C(anchor), the staging host the log was copied from.
    type: str
  head:
    description: For C(anchor), the stdout of C(airgap audit head --json) on the controller's copy.
    type: str
author: airgap project
"""

EXAMPLES = r"""
- name: Record what the controller verified
  airgap_evidence:
    state: signed
    dir: /root/.local/state/airgap/controller/evidence/geheim-pilot
    verify: "{{ verify.stdout }}"
    inspect: "{{ inspect.stdout }}"
    bundle_path: /media/disc/geheim-pilot-1.0.0.tar
    trust_path: /media/disc/trust.json
    registry: registry.pilot.geheim.internal:5000
  delegate_to: localhost
"""

RETURN = r"""
signed:
  description: The signed facts (C(bundle), C(trust), C(signers), C(registry), C(images)).
  returned: for signed and read
  type: dict
audit:
  description: The anchored audit head (C(head) as C(SEQ:HASH), C(seq), C(hash), C(staging_host), C(log)).
  returned: for anchor and read (when recorded)
  type: dict
"""

import hashlib
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(path, doc):
    """Write *doc* as JSON atomically; only when the content differs."""
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return
    except OSError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".evidence.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def signed_facts(module, verify_doc, inspect_doc):
    p = module.params
    if verify_doc.get("result") != "accepted":
        module.fail_json(msg="%s: the controller's verify did not accept it (%s)" % (p["bundle_path"], verify_doc.get("error")))
    manifest = inspect_doc.get("manifest") or {}
    digest = verify_doc.get("manifest_digest")
    if not digest or inspect_doc.get("manifest_digest") != digest:
        module.fail_json(msg="%s: verify accepted manifest %s but inspect read %s: the file changed between the two; "
                             "roll out again" % (p["bundle_path"], digest, inspect_doc.get("manifest_digest")))
    try:  # the importer's own naming, so the names are the ones it pushed
        from airgap.importer import internal_repository
        from airgap.manifest import ImageRecord
    except ImportError as exc:
        module.fail_json(msg="the toolkit is not installed next to ansible-playbook on the controller: %s" % exc)
    images, by_layout = [], {}
    for img in manifest.get("images") or []:
        ref = img["ref"]
        repo = internal_repository(ImageRecord.from_dict(img))
        images.append({"ref": ref, "digest": img["digest"], "platforms": img.get("platforms") or [],
                       "repository": repo, "internal_name": "%s/%s" % (p["registry"], repo)})
        by_layout[img["layout_ref"]] = images[-1]
    # Each workload (Kubernetes manifests) and, per image reference in it, the
    # internal reference it runs: what the nodes run and check.yml holds them to.
    workloads = []
    for w in manifest.get("workloads") or []:
        uses = []
        for use in w.get("images") or []:
            img = by_layout.get(use["image"], {})
            uses.append({"object": use["object"], "field": use["field"], "ref": use["ref"], "digest": use["digest"],
                         "internal": "%s@%s" % (img.get("internal_name", ""), use["digest"])})
        workloads.append({"name": w["name"], "objects": w.get("objects") or [], "images": uses})
    signers = []
    for role, info in sorted((((verify_doc.get("signatures") or {}).get("roles")) or {}).items()):
        for key in info.get("keys") or []:
            signers.append({"role": role, "keyid": key.get("keyid"), "name": key.get("name")})
    return {
        "bundle": {"file": os.path.basename(p["bundle_path"]), "path": p["bundle_path"],
                   "sha256": _sha256(p["bundle_path"]), "name": manifest.get("name"),
                   "version": manifest.get("version"), "target": manifest.get("target"),
                   "created": manifest.get("created"), "expires": manifest.get("expires"),
                   "manifest_digest": digest},
        "trust": {"path": p["trust_path"], "sha256": _sha256(p["trust_path"]),
                  "policy_version": verify_doc.get("policy_version")},
        "signers": signers,
        "registry": p["registry"],
        "images": images,
        "workloads": workloads,
    }


def anchor(module, directory):
    try:
        printed = json.loads(module.params["head"] or "")
        seq, digest = int(printed["seq"]), str(printed["head"])
    except (ValueError, KeyError, TypeError) as exc:
        module.fail_json(msg="airgap audit head printed no head for %s/state/audit.log: %s" % (directory, exc))
    doc = {"head": "%d:%s" % (seq, digest), "seq": seq, "hash": digest,
           "staging_host": module.params["staging_host"], "log": os.path.join(directory, "state", "audit.log")}
    _write(os.path.join(directory, "audit-head.json"), doc)
    return doc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["signed", "anchor", "read"]),
            dir=dict(type="path"),
            verify=dict(type="str"),
            inspect=dict(type="str"),
            bundle_path=dict(type="path"),
            trust_path=dict(type="path"),
            registry=dict(type="str"),
            staging_host=dict(type="str"),
            head=dict(type="str"),
        ),
        required_if=[("state", "signed", ("verify", "inspect", "bundle_path", "trust_path", "registry")),
                     ("state", "anchor", ("dir", "head")), ("state", "read", ("dir",))],
        supports_check_mode=True,
    )
    p = module.params
    out = {"changed": False}
    if p["state"] == "signed":
        try:
            verify_doc, inspect_doc = json.loads(p["verify"]), json.loads(p["inspect"])
        except ValueError as exc:
            module.fail_json(msg="the controller's airgap verify/inspect printed no JSON: %s" % exc)
        out["signed"] = signed_facts(module, verify_doc, inspect_doc)
        if p["dir"] and not module.check_mode:
            _write(os.path.join(p["dir"], "bundle.json"), out["signed"])
    elif p["state"] == "anchor":
        out["audit"] = anchor(module, p["dir"]) if not module.check_mode else {}
    else:
        path = os.path.join(p["dir"], "bundle.json")
        try:
            with open(path) as fh:
                out["signed"] = json.load(fh)
        except (OSError, ValueError) as exc:
            out["signed"] = {}
            out["missing"] = "no evidence of a rollout on this controller (%s): run site.yml" % exc
        try:
            with open(os.path.join(p["dir"], "audit-head.json")) as fh:
                out["audit"] = json.load(fh)
        except (OSError, ValueError):
            out["audit"] = {}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
