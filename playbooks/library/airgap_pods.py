#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: what a container host runs -- podman pods from rendered workloads, or containerd's pre-pulled images."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_pods
short_description: Converge a container host on the signed workloads, in one module run
description:
  - B(podman nodes.) Each workload is one rendered YAML stream (C(airgap
    manifests render)), kept as C(DIR/NAME.yaml) on the node. Its pods are
    (re)created with C(podman kube play --replace) only when the file, the
    node's ConfigMap or the network mode changed, or when a pod it made is
    missing or not running; otherwise nothing happens. What was played is
    recorded in C(DIR/NAME.state.json) (the content's sha256 and the pods'
    ids). A workload no longer listed is taken down (C(podman kube play
    --down)) and its files removed. I(images) (every image the pods run, the
    infra image included, by digest) are pulled first when missing, with
    I(authfile): podman 4.3 does not use C(kube play)'s C(--authfile) for the
    infra image.
  - B(containerd nodes.) Every image of I(containerd.images) (by digest) that
    containerd's namespace lacks is pulled with C(ctr images pull --hosts-dir):
    the registry credential is in the hosts.toml files (readable by root
    only), never on a command line or in an environment.
  - I(files) (the node's bundle marker, the boot link) are converged last, as
    C(airgap_files) does, so the marker names a bundle only once it runs.
  - Supports check mode (reports what would change).
options:
  dir:
    description: Directory on the node for the workload files and their state.
    type: path
    default: /etc/airgap/workloads
  workloads:
    description: The workloads, each a dict with C(name) and C(content) (the rendered YAML).
    type: list
    elements: dict
    default: []
  configmap:
    description: A ConfigMap (YAML) given to every workload with C(--configmap) (node settings); empty for none.
    type: str
    default: ""
  network:
    description: C(--network) of the pods; empty for podman's default.
    type: str
    default: ""
  authfile:
    description: Registry credentials (containers-auth.json) for the pulls.
    type: path
  images:
    description: Image references (by digest) to pull first when they are missing.
    type: list
    elements: str
    default: []
  containerd:
    description:
      - For a containerd node, C(images) (references by digest, pre-pulled when
        missing), C(address) (the socket), C(hosts_dir) (containerd's
        C(certs.d)) and C(namespace) (C(k8s.io), the CRI's).
    type: dict
    default: {}
  files:
    description: Entries as C(airgap_files) takes them, converged after the workloads.
    type: list
    elements: dict
    default: []
author: airgap project
"""

EXAMPLES = r"""
- name: Run the pilot's workloads
  airgap_pods:
    workloads: [{name: pilot-status, content: "{{ lookup('file', 'manifests/pilot-status.yaml') }}"}]
    network: host
    authfile: /etc/containers/auth.json
    images: ["registry.pilot.geheim.internal:5000/docker.io/library/busybox@sha256:..."]
    files: [{path: /etc/airgap/bundle.json, content: "{{ marker }}", mode: "0644"}]
"""

RETURN = r"""
pods:
  description: Per workload, the ids of the pods it runs.
  returned: always
  type: dict
played:
  description: The workloads (re)created by this run.
  returned: always
  type: list
removed:
  description: The workloads taken down by this run.
  returned: always
  type: list
pulled:
  description: The images pulled by this run (podman or containerd).
  returned: always
  type: list
changed_paths:
  description: The I(files) written.
  returned: always
  type: list
"""

import hashlib
import json
import os

from ansible.module_utils.airgap_entries import EntryError, converge as converge_entries
from ansible.module_utils.airgap_fileio import converge
from ansible.module_utils.basic import AnsibleModule

CONFIGMAP = "airgap-node.yaml"


class Node(object):
    """The module's run on one node: its parameters, what it did, and its commands."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.check = module.check_mode
        self.out = {"changed": False, "pods": {}, "played": [], "removed": [], "pulled": [], "changed_paths": []}

    def run(self, argv, what):
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            self.module.fail_json(msg="%s failed: %s" % (what, (err or out).strip()[-2000:]), **self.out)
        return out

    def bin(self, name):
        return self.module.get_bin_path(name, required=True)


def _state(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _running(node, ids):
    """True when every pod in *ids* exists and it and all its containers run (one podman call)."""
    if not ids:
        return False
    rc, out, _err = node.module.run_command([node.bin("podman"), "pod", "inspect"] + list(ids))
    try:
        infos = json.loads(out) if rc == 0 else None
    except ValueError:
        infos = None
    if infos is None:
        return False
    infos = infos if isinstance(infos, list) else [infos]
    if len(infos) != len(ids):
        return False
    for info in infos:
        if str(info.get("State", "")).lower() != "running":
            return False
        if any(str(c.get("State", "")).lower() != "running" for c in info.get("Containers") or []):
            return False
    return True


def _played_pods(stdout):
    """The pod ids `podman kube play` printed (the lines after "Pod:")."""
    ids, section = [], None
    for line in stdout.splitlines():
        text = line.strip()
        if text.endswith(":") and " " not in text:
            section = text[:-1]
        elif text and section == "Pod":
            ids.append(text)
    return ids


def pull_podman(node):
    podman = node.bin("podman") if node.p["images"] else None
    for ref in node.p["images"]:
        if node.module.run_command([podman, "image", "exists", ref])[0] == 0:
            continue
        node.out["pulled"].append(ref)
        if not node.check:
            auth = ["--authfile", node.p["authfile"]] if node.p["authfile"] else []
            node.run([podman, "pull", "--quiet"] + auth + [ref], "podman pull %s" % ref)


def pull_containerd(node):
    """Every image containerd's namespace lacks, through the hosts.toml files (which hold the credential)."""
    ctd = node.p["containerd"] or {}
    images = ctd.get("images") or []
    if not images:
        return
    base = [node.bin("ctr"), "--address", ctd.get("address") or "/run/containerd/containerd.sock",
            "-n", ctd.get("namespace") or "k8s.io"]
    have = set(node.run(base + ["images", "ls", "-q"], "ctr images ls").split())
    for ref in images:
        if ref in have:
            continue
        node.out["pulled"].append(ref)
        if not node.check:
            node.run(prepull_argv(base, ctd.get("hosts_dir") or "/etc/containerd/certs.d", ref), "ctr images pull %s" % ref)


def prepull_argv(base, hosts_dir, ref):
    """The pre-pull's command line: no --user; containerd reads the credential from hosts_dir (root-only files)."""
    return base + ["images", "pull", "--hosts-dir", hosts_dir, ref]


def play(node):
    """podman kube play each workload whose file, ConfigMap or network changed, or whose pods stopped."""
    p, directory = node.p, node.p["dir"]
    configmap = os.path.join(directory, CONFIGMAP)
    cm_bytes = p["configmap"].encode() if p["configmap"] else b""
    if not node.check:
        if cm_bytes:
            converge(configmap, cm_bytes, mode=0o644)
        elif os.path.exists(configmap):
            os.unlink(configmap)
    names = set()
    for w in p["workloads"]:
        name, content = w["name"], w["content"].encode()
        names.add(name)
        yaml_path = os.path.join(directory, name + ".yaml")
        state_path = os.path.join(directory, name + ".state.json")
        digest = hashlib.sha256(b"\0".join([content, cm_bytes, p["network"].encode()])).hexdigest()
        state = _state(state_path)
        if state.get("sha256") == digest and _running(node, state.get("pods")):
            node.out["pods"][name] = state["pods"]
            continue
        node.out["played"].append(name)
        if node.check:
            continue
        converge(yaml_path, content, mode=0o644)
        argv = [node.bin("podman"), "kube", "play", "--replace", "--annotation", "airgap.workload=" + name]
        argv += ["--authfile", p["authfile"]] if p["authfile"] else []
        argv += ["--network", p["network"]] if p["network"] else []
        argv += ["--configmap", configmap] if cm_bytes else []
        node.out["pods"][name] = _played_pods(node.run(argv + [yaml_path], "podman kube play %s" % yaml_path))
        converge(state_path, (json.dumps({"sha256": digest, "pods": node.out["pods"][name]}, indent=2) + "\n").encode(),
                 mode=0o644)
    return names


def take_down(node, keep):
    """podman kube play --down every workload played before and no longer listed."""
    directory = node.p["dir"]
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if not entry.endswith(".state.json") or entry[:-len(".state.json")] in keep:
            continue
        name = entry[:-len(".state.json")]
        node.out["removed"].append(name)
        if node.check:
            continue
        yaml_path = os.path.join(directory, name + ".yaml")
        if os.path.exists(yaml_path):
            rc, stdout, err = node.module.run_command([node.bin("podman"), "kube", "play", "--down", yaml_path])
            if rc != 0 and "no such pod" not in (err or "").lower():
                node.module.fail_json(msg="podman kube play --down %s failed: %s" % (yaml_path, (err or stdout).strip()),
                                      **node.out)
            os.unlink(yaml_path)
        os.unlink(os.path.join(directory, entry))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path", default="/etc/airgap/workloads"),
            workloads=dict(type="list", elements="dict", default=[]),
            configmap=dict(type="str", default=""),
            network=dict(type="str", default=""),
            authfile=dict(type="path"),
            images=dict(type="list", elements="str", default=[]),
            containerd=dict(type="dict", default={}),
            files=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    node = Node(module)
    if not node.check:
        os.makedirs(node.p["dir"], mode=0o755, exist_ok=True)
    pull_podman(node)
    pull_containerd(node)
    take_down(node, play(node))
    try:
        node.out["changed_paths"] = converge_entries(node.p["files"], node.check)[0]
    except EntryError as exc:
        module.fail_json(msg=str(exc), **node.out)
    node.out["changed"] = bool(node.out["played"] or node.out["removed"] or node.out["pulled"] or node.out["changed_paths"])
    module.exit_json(**node.out)


if __name__ == "__main__":
    main()
