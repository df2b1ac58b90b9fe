#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: the Haven Compliancy Checker's checks a node and the inventory can prove."""

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: airgap_haven
short_description: Haven checks that need no Kubernetes API, with evidence
description:
  - Read-only. Runs the checks named in I(checks) and returns, for each,
    C(PASS) or C(FAIL) with the evidence it judged (file, line, value).
  - Inventory checks (run once, on the controller) C(nodes) and C(zones)
    judge I(control_plane), I(workers) and I(zones).
  - Node checks read the node's own files below I(root) C(lsm) (SELinux
    enforcing or AppArmor enabled), C(addresses) (I(addresses) and every
    interface address private and inside I(allowed_ranges)), C(mirrors)
    (registries.conf and containerd certs.d name only internal registries; a
    hosts.toml without C(server) falls back upstream), C(time) and C(logs)
    (sources and targets configured, all internal).
  - C(cluster) adds the checks that need the Kubernetes API as C(NEEDS-CLUSTER)
    with what to run on the cluster.
  - Checks named in I(expected_failures) keep their status and carry the
    reason as C(expected); the module never fails because a check fails.
options:
  checks:
    description: Checks to run.
    type: list
    elements: str
    required: true
    choices: [nodes, zones, lsm, addresses, mirrors, time, logs, cluster]
  control_plane:
    description: Control-plane host names of the inventory (for C(nodes)).
    type: list
    elements: str
    default: []
  workers:
    description: Worker host names of the inventory (for C(nodes)).
    type: list
    elements: str
    default: []
  minimum_nodes:
    description: How many control-plane and worker hosts Haven asks for, each.
    type: int
    default: 3
  zones:
    description: Host name to availability zone (for C(zones)); an empty zone counts as unset.
    type: dict
    default: {}
  addresses:
    description: For C(addresses), dicts with C(name) and C(value) (e.g. the node's ansible_host).
    type: list
    elements: dict
    default: []
  allowed_ranges:
    description: The enclave's networks (CIDR).
    type: list
    elements: str
    default: []
  internal_domains:
    description: DNS domains inside the enclave.
    type: list
    elements: str
    default: []
  internal_hosts:
    description: Names of internal services (registry, time servers, log collectors) that count as inside.
    type: list
    elements: str
    default: []
  expected_failures:
    description: Check id to the reason it is expected to fail on this site (shown, never hidden).
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
    checks: [lsm, addresses, mirrors, time, logs]
    addresses: [{name: ansible_host, value: "{{ ansible_host }}"}]
    allowed_ranges: "{{ airgap__allowed_ranges }}"
    internal_hosts: "{{ airgap__ntp_servers + [airgap__registry_name] }}"
"""

RETURN = r"""
results:
  description: One dict per check with check, title, status, summary, evidence and (if declared) expected.
  returned: always
  type: list
  elements: dict
"""

import json

from ansible.module_utils.airgap_haven import (
    Enclave, FAIL, check_addresses, check_lsm, check_logs, check_mirrors, check_nodes, check_time, check_zones,
    cluster_checks, collect_lsm, collect_log_targets, collect_registries, collect_time_sources, mark_expected)
from ansible.module_utils.basic import AnsibleModule


def interface_addresses(module):
    rc, out, _err = module.run_command(["ip", "-j", "address", "show"])
    if rc != 0:
        return []
    found = []
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            if a.get("scope") in ("global", "site") and a.get("local"):  # not loopback
                found.append(("%s %s" % (link.get("ifname"), a.get("scope")), a["local"]))
    return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="str", required=True,
                        choices=["nodes", "zones", "lsm", "addresses", "mirrors", "time", "logs", "cluster"]),
            control_plane=dict(type="list", elements="str", default=[]),
            workers=dict(type="list", elements="str", default=[]),
            minimum_nodes=dict(type="int", default=3),
            zones=dict(type="dict", default={}),
            addresses=dict(type="list", elements="dict", default=[]),
            allowed_ranges=dict(type="list", elements="str", default=[]),
            internal_domains=dict(type="list", elements="str", default=[]),
            internal_hosts=dict(type="list", elements="str", default=[]),
            expected_failures=dict(type="dict", default={}),
            root=dict(type="path", default="/"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    enclave = Enclave(p["allowed_ranges"], p["internal_domains"], p["internal_hosts"])
    root = p["root"]
    results = []
    for check in p["checks"]:
        if check == "nodes":
            results.append(check_nodes(p["control_plane"], p["workers"], p["minimum_nodes"]))
        elif check == "zones":
            results.append(check_zones(p["zones"]))
        elif check == "lsm":
            results.append(check_lsm(collect_lsm(root)))
        elif check == "addresses":
            given = [(a.get("name", "address"), a.get("value")) for a in p["addresses"]]
            results.append(check_addresses(given + interface_addresses(module), enclave))
        elif check == "mirrors":
            results.append(check_mirrors(collect_registries(root), enclave))
        elif check == "time":
            results.append(check_time(collect_time_sources(root), enclave))
        elif check == "logs":
            results.append(check_logs(collect_log_targets(root), enclave))
        elif check == "cluster":
            results += cluster_checks()
    mark_expected(results, p["expected_failures"])
    module.exit_json(changed=False, results=results,
                     failed_checks=sum(1 for r in results if r["status"] == FAIL))


if __name__ == "__main__":
    main()
