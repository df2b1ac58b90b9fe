#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module (controller only): the controller's evidence of a rollout."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_evidence
short_description: Record the controller's evidence of what was signed and rolled out
description:
  - Runs on the controller, with the controller's toolkit (the C(airgap) package
    next to ansible-playbook); never on a node. What it records is what
    check.yml later holds every node to: nothing in it comes from a checked host
    except the copy of the staging host's audit log, whose head it anchors.
  - C(state=signed) runs the controller's C(airgap verify BUNDLE --trust T
    --state S --json) and C(airgap inspect BUNDLE --trust T --json) (and, with
    I(rendered_dir), C(airgap manifests render); all at once, in one module
    run), fails with verify's own words when it rejects the
    bundle, refuses two different manifest digests, and returns the signed
    facts (bundle, manifest digest, signers, trust policy, images with their
    internal repositories, workloads with the internal reference of each image
    they run, the OS packages it carries with their versions); with I(dir) it
    also writes them to C(DIR/bundle.json).
  - C(state=anchor) verifies the controller's copy of the staging host's audit
    log (C(DIR/state/audit.log)) with the toolkit's own reader (the hash chain,
    as C(airgap audit verify)) and writes its head (C(SEQ:HASH), as C(airgap
    audit head)) to C(DIR/audit-head.json).
  - The plays read C(DIR) with lookups (C(roles/airgap/tasks/signed.yml)): no module run.
  - Files are written atomically and only when their content changes; the
    module never reports a change (the evidence is the controller's bookkeeping,
    not a change of the site).
options:
  state:
    description: What to do.
    type: str
    choices: [signed, anchor]
    required: true
  dir:
    description: The evidence directory of this bundle name on the controller.
    type: path
  airgap:
    description: For C(signed), the controller's C(airgap) command.
    type: path
  state_dir:
    description: For C(signed), the controller's verification state (rollback), given to C(airgap verify --state).
    type: path
  rendered_dir:
    description:
      - For C(signed), where the bundle's workloads are rendered for the internal registry
        (C(airgap manifests render ... --registry REGISTRY), run with verify and inspect). The
        directory is replaced only once verify accepted the bundle; a bundle without workloads
        leaves it alone.
    type: path
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
author: airgap project
"""

EXAMPLES = r"""
- name: Verify the bundle with the controller's toolkit and record what it verified
  airgap_evidence:
    state: signed
    dir: /root/.local/state/airgap/controller/evidence/geheim-pilot
    airgap: /opt/airgap-controller/bin/airgap
    state_dir: /root/.local/state/airgap/controller
    bundle_path: /media/disc/geheim-pilot-1.0.0.tar
    trust_path: /media/disc/trust.json
    registry: registry.pilot.geheim.internal:5000
  delegate_to: localhost
"""

RETURN = r"""
signed:
  description: The signed facts (C(bundle), C(trust), C(signers), C(registry), C(images), C(workloads), C(packages)).
  returned: for signed
  type: dict
audit:
  description: The anchored audit head (C(head) as C(SEQ:HASH), C(seq), C(hash), C(staging_host), C(log)).
  returned: for anchor
  type: dict
"""

import hashlib
import json
import os
import shutil
import subprocess

from ansible.module_utils.airgap_fileio import converge
from ansible.module_utils.basic import AnsibleModule


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(path, doc):
    """Write *doc* as JSON (readable by the controller's user only), atomically; only when the content differs."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    converge(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)


def _run_all(module, argvs):
    """Run the controller's toolkit commands at once (each verifies the bundle on its own); (rc, out, err) each."""
    try:
        procs = {k: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
                 for k, argv in argvs.items()}
    except OSError as exc:
        module.fail_json(msg="cannot run the controller's toolkit %s: %s" % (module.params["airgap"], exc))
    out = {}
    for verb, proc in procs.items():
        stdout, stderr = (b.decode("utf-8", "replace") for b in proc.communicate())
        out[verb] = (proc.returncode, stdout, stderr)
    return out


def verified(module):
    """The controller's verify and inspect of the bundle (and, with I(rendered_dir), its workloads rendered
    into a new directory beside it), run at once. Returns the two JSON documents and that directory."""
    p = module.params
    common = [p["bundle_path"], "--trust", p["trust_path"]]
    argvs = {"verify": [p["airgap"], "verify"] + common + ["--state", p["state_dir"], "--json"],
             "inspect": [p["airgap"], "inspect"] + common + ["--json"]}
    new = None
    if p["rendered_dir"]:
        new = p["rendered_dir"].rstrip("/") + ".new"
        shutil.rmtree(new, ignore_errors=True)
        os.makedirs(os.path.dirname(new), mode=0o700, exist_ok=True)
        argvs["manifests render"] = [p["airgap"], "manifests", "render"] + common + [
            "--registry", p["registry"], "--output", new, "--force", "--quiet"]
    runs = _run_all(module, argvs)
    docs = {}
    for verb in ("verify", "inspect"):
        rc, out, err = runs[verb]
        if rc != 0:
            # The same words the operator would see running the command (and the verify report's checks).
            module.fail_json(msg="airgap %s on the controller rejected %s (exit %d): %s"
                                 % (verb, p["bundle_path"], rc, (err + " " + out).strip()), rc=rc)
        try:
            docs[verb] = json.loads(out)
        except ValueError as exc:
            module.fail_json(msg="the controller's airgap %s printed no JSON for %s: %s" % (verb, p["bundle_path"], exc))
    if new is not None:
        rc, out, err = runs["manifests render"]
        if not (docs["inspect"].get("manifest") or {}).get("workloads"):
            shutil.rmtree(new, ignore_errors=True)  # nothing to render (render says so, exit 2)
            new = None
        elif rc != 0:
            shutil.rmtree(new, ignore_errors=True)
            module.fail_json(msg="airgap manifests render on the controller failed for %s (exit %d): %s"
                                 % (p["bundle_path"], rc, (err + " " + out).strip()), rc=rc)
    return docs["verify"], docs["inspect"], new


def replace_dir(new, path):
    """*new* becomes *path* (the rendered workloads): only once verify accepted the bundle."""
    old = path.rstrip("/") + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.lexists(path):
        os.rename(path, old)
    os.rename(new, path)
    shutil.rmtree(old, ignore_errors=True)


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
        # The OS packages the bundle carries (name -> version): what a node's
        # installed packages are compared with before anything is copied.
        "packages": {d["package"]: d["version"] for d in ((manifest.get("packages") or {}).get("debs") or [])},
    }


def anchor(module, directory):
    """Verify the controller's copy of the staging host's audit log; record its head."""
    log_path = os.path.join(directory, "state", "audit.log")
    try:
        from airgap.audit import AuditLog, format_head
        from airgap.exceptions import AirgapError
    except ImportError as exc:
        module.fail_json(msg="the toolkit is not installed next to ansible-playbook on the controller: %s" % exc)
    if not os.path.isfile(log_path):
        module.fail_json(msg="%s: no copy of the staging host's audit log" % log_path)
    log = AuditLog(log_path)
    try:
        log.verify()
        seq, digest = log.head()
    except (AirgapError, OSError) as exc:  # the toolkit's own refusal (which entry, why), as airgap audit verify prints it
        module.fail_json(msg="%s: the audit log copied from %s does not verify: %s"
                             % (log_path, module.params["staging_host"], exc))
    doc = {"head": format_head((seq, digest)), "seq": seq, "hash": digest,
           "staging_host": module.params["staging_host"], "log": log_path}
    _write(os.path.join(directory, "audit-head.json"), doc)
    return doc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["signed", "anchor"]),
            dir=dict(type="path"),
            airgap=dict(type="path"),
            state_dir=dict(type="path"),
            rendered_dir=dict(type="path"),
            bundle_path=dict(type="path"),
            trust_path=dict(type="path"),
            registry=dict(type="str"),
            staging_host=dict(type="str"),
        ),
        required_if=[("state", "signed", ("airgap", "state_dir", "bundle_path", "trust_path", "registry")),
                     ("state", "anchor", ("dir",))],
        supports_check_mode=True,
    )
    p = module.params
    out = {"changed": False}
    if p["state"] == "signed":
        verify_doc, inspect_doc, rendered = verified(module)
        out["signed"] = signed_facts(module, verify_doc, inspect_doc)
        if rendered is not None:
            replace_dir(rendered, p["rendered_dir"])
        if p["dir"] and not module.check_mode:
            _write(os.path.join(p["dir"], "bundle.json"), out["signed"])
    else:
        out["audit"] = anchor(module, p["dir"]) if not module.check_mode else {}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
