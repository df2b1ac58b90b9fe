#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: the Haven Compliancy Checker's checks a node and the inventory can prove."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_haven
short_description: Haven checks that need no Kubernetes API, with findings and evidence
description:
  - Read-only. Runs the checks named in I(checks) and returns, for each, C(PASS),
    C(FAIL) or C(NEEDS-CLUSTER), a summary, findings (source, line, value,
    reason) and evidence, in the format of C(airgap_check) (section C(Haven)).
  - Inventory checks (on the controller) C(haven_nodes) (I(control_plane),
    I(workers)) and C(haven_zones) (I(zones)); C(cluster) adds the checks that
    need the Kubernetes API, each with what to run on the cluster.
  - Node checks C(node) read the node below I(root) C(haven_lsm), C(haven_addresses)
    (I(addresses) and the interface addresses), C(haven_mirrors) (check.yml's
    registries rules), C(haven_time) and C(haven_logs), judged against I(enclave).
  - Checks named in I(expected_failures) keep their status and carry the reason
    as C(expected); the module never fails because a check fails.
  - See module_utils/airgap_haven.py and docs/platform.md.
options:
  checks:
    description: Groups of checks to run.
    type: list
    elements: str
    required: true
    choices: [node, inventory, cluster]
  enclave:
    description: The enclave as C(airgap_check) takes it (ranges, domains, names, services).
    type: dict
    default: {}
  labels:
    description: Sovereignty patterns that label findings.
    type: list
    elements: raw
    default: []
  internal_registries:
    description: HOST:PORT of the internal registry's endpoints.
    type: list
    elements: str
    default: []
  addresses:
    description: For C(node), dicts with C(name) and C(value) (e.g. the node's ansible_host).
    type: list
    elements: dict
    default: []
  control_plane:
    description: For C(inventory), the control-plane hosts.
    type: list
    elements: str
    default: []
  workers:
    description: For C(inventory), the worker hosts.
    type: list
    elements: str
    default: []
  minimum_nodes:
    description: How many control-plane and worker hosts Haven asks for, each.
    type: int
    default: 3
  zones:
    description: For C(inventory), host name to availability zone (empty when unset).
    type: dict
    default: {}
  expected_failures:
    description: Check id to the reason it is expected to fail on this site.
    type: dict
    default: {}
  root:
    description: Root of the file system to read.
    type: path
    default: /
author: airgap project
"""

EXAMPLES = r"""
- name: Haven checks of a node
  airgap_haven:
    checks: [node]
    enclave: "{{ airgap__enclave }}"
    internal_registries: ["{{ airgap__registry }}"]
    addresses: [{name: ansible_host, value: "{{ ansible_host }}"}]
"""

RETURN = r"""
results:
  description: One dict per check (check, title, section, status, summary, findings, evidence, expected).
  returned: always
  type: list
  elements: dict
"""

import json

from ansible.module_utils.airgap_check_common import Enclave, Files, Labels
from ansible.module_utils.airgap_check_runtime import Internal
from ansible.module_utils.airgap_haven import (FAIL, check_nodes, check_zones, cluster_checks, mark_expected,
                                               node_checks)
from ansible.module_utils.basic import AnsibleModule


def interface_addresses(module):
    rc, out, _err = module.run_command(["ip", "-j", "address", "show"])
    if rc != 0:
        return []
    found = []
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            if a.get("scope") in ("global", "site") and a.get("local"):  # not loopback or link-local
                found.append(("ip address show %s" % link.get("ifname"), a["local"]))
    return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="str", required=True, choices=["node", "inventory", "cluster"]),
            enclave=dict(type="dict", default={}),
            labels=dict(type="list", elements="raw", default=[]),
            internal_registries=dict(type="list", elements="str", default=[]),
            addresses=dict(type="list", elements="dict", default=[]),
            control_plane=dict(type="list", elements="str", default=[]),
            workers=dict(type="list", elements="str", default=[]),
            minimum_nodes=dict(type="int", default=3),
            zones=dict(type="dict", default={}),
            expected_failures=dict(type="dict", default={}),
            root=dict(type="path", default="/"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    labels = Labels(p["labels"])
    results = []
    if "inventory" in p["checks"]:
        results += [check_nodes(p["control_plane"], p["workers"], p["minimum_nodes"]), check_zones(p["zones"])]
    if "node" in p["checks"]:
        given = [(a.get("name", "address"), a.get("value")) for a in p["addresses"]]
        results += node_checks(Files(p["root"]), Enclave(p["enclave"], labels), Internal(p["internal_registries"]),
                               labels, given + interface_addresses(module))
    if "cluster" in p["checks"]:
        results += cluster_checks()
    mark_expected(results, p["expected_failures"])
    module.exit_json(changed=False, results=results,
                     failed_checks=sum(1 for r in results if r["status"] == FAIL and not r.get("expected")))


if __name__ == "__main__":
    main()
