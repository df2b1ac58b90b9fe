#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: run rendered Kubernetes workloads with ``podman kube play``, idempotently."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_pods
short_description: Run Kubernetes workloads with podman kube play, converging on the rendered files
description:
  - Each workload is one rendered YAML stream (C(airgap manifests render)), kept
    as C(DIR/NAME.yaml) on the node. Its pods are (re)created with C(podman kube
    play --replace) only when the file, the node's ConfigMap or the network mode
    changed, or when a pod it made is missing or not running; otherwise nothing
    happens. What was played is recorded in C(DIR/NAME.state.json) (the
    content's sha256 and the pods' ids).
  - A workload no longer listed is taken down (C(podman kube play --down)) and
    its files removed.
  - I(images) (every image the pods run, the infra image included, by digest)
    are pulled first when missing, with I(authfile): podman 4.3 does not use
    C(kube play)'s C(--authfile) for the infra image.
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
author: airgap project
"""

EXAMPLES = r"""
- name: Run the pilot's workloads
  airgap_pods:
    workloads: [{name: pilot-status, content: "{{ lookup('file', 'manifests/pilot-status.yaml') }}"}]
    network: host
    authfile: /etc/containers/auth.json
    images: ["registry.pilot.geheim.internal:5000/docker.io/library/busybox@sha256:..."]
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
  description: The images pulled by this run.
  returned: always
  type: list
"""

import hashlib
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

CONFIGMAP = "airgap-node.yaml"


def _write(path, data, mode=0o644):
    """*data* at *path*, atomically; False when it was already so."""
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".airgap-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def _state(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _pods_running(module, ids):
    """True when every pod in *ids* exists and it and all its containers run."""
    if not ids:
        return False
    for pod in ids:
        rc, out, _err = module.run_command(["podman", "pod", "inspect", pod])
        if rc != 0:
            return False
        try:
            info = json.loads(out)
        except ValueError:
            return False
        info = info[0] if isinstance(info, list) and info else info
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path", default="/etc/airgap/workloads"),
            workloads=dict(type="list", elements="dict", default=[]),
            configmap=dict(type="str", default=""),
            network=dict(type="str", default=""),
            authfile=dict(type="path"),
            images=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    directory, check = p["dir"], module.check_mode
    out = {"changed": False, "pods": {}, "played": [], "removed": [], "pulled": []}
    if not check:
        os.makedirs(directory, mode=0o755, exist_ok=True)

    for ref in p["images"]:
        if module.run_command(["podman", "image", "exists", ref])[0] == 0:
            continue
        out["pulled"].append(ref)
        if not check:
            argv = ["podman", "pull", "--quiet"] + (["--authfile", p["authfile"]] if p["authfile"] else []) + [ref]
            rc, _o, err = module.run_command(argv)
            if rc != 0:
                module.fail_json(msg="podman pull %s failed: %s" % (ref, err.strip()), **out)

    configmap = os.path.join(directory, CONFIGMAP)
    cm_bytes = p["configmap"].encode() if p["configmap"] else b""
    if not check:
        if cm_bytes:
            _write(configmap, cm_bytes)
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
        if state.get("sha256") == digest and _pods_running(module, state.get("pods")):
            out["pods"][name] = state["pods"]
            continue
        out["played"].append(name)
        if check:
            continue
        _write(yaml_path, content)
        argv = ["podman", "kube", "play", "--replace", "--annotation", "airgap.workload=" + name]
        argv += ["--authfile", p["authfile"]] if p["authfile"] else []
        argv += ["--network", p["network"]] if p["network"] else []
        argv += ["--configmap", configmap] if cm_bytes else []
        rc, stdout, err = module.run_command(argv + [yaml_path])
        if rc != 0:
            module.fail_json(msg="podman kube play %s failed: %s" % (yaml_path, (err or stdout).strip()), **out)
        out["pods"][name] = _played_pods(stdout)
        _write(state_path, (json.dumps({"sha256": digest, "pods": out["pods"][name]}, indent=2) + "\n").encode())

    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if not entry.endswith(".state.json") or entry[:-len(".state.json")] in names:
            continue
        name = entry[:-len(".state.json")]
        out["removed"].append(name)
        if check:
            continue
        yaml_path = os.path.join(directory, name + ".yaml")
        if os.path.exists(yaml_path):
            rc, stdout, err = module.run_command(["podman", "kube", "play", "--down", yaml_path])
            if rc != 0 and "no such pod" not in (err or "").lower():
                module.fail_json(msg="podman kube play --down %s failed: %s" % (yaml_path, (err or stdout).strip()), **out)
            os.unlink(yaml_path)
        os.unlink(os.path.join(directory, entry))

    out["changed"] = bool(out["played"] or out["removed"] or out["pulled"])
    module.exit_json(**out)


if __name__ == "__main__":
    main()
