#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: read-only, evidence-gathering checks of an isolated site."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_check
short_description: Read-only checks of an airgap site, with findings and evidence
description:
  - Runs the checks named in I(checks) and returns, for each, C(PASS) or
    C(FAIL), a summary, the I(findings) (source file or command, line, value,
    reason and, when the sovereignty policy lists the endpoint, a label such
    as C(US provider: Google (US hyperscaler))) and the evidence it judged
    good. It never changes the node; the route check only asks the kernel's
    routing table and the registry checks only read (an upload probe that is
    wrongly accepted is deleted at once).
  - The module itself does not fail when a check fails; the playbook decides.
  - Endpoints are judged by allow-list against the I(enclave) -- its ranges,
    internal domains and names, and its declared services. An endpoint is
    inside when it is local to the node, lies in a range, or is an internal
    name; for a service (DNS, NTP, packages, proxy, registry) it must moreover
    be one the enclave declares for that service (none declared, none allowed).
  - Patterns (enclave domains and I(labels)) use the project's one syntax
    (C(airgap_endpoints)) -- C(example.com) matches that host and every name
    below it, C(*.example.com) only names strictly below, an IP address or a
    CIDR network matches addresses.
  - Check families live in C(module_utils/airgap_check_*.py); see
    docs/check.md for what each proves.
options:
  checks:
    description: Checks to run.
    type: list
    elements: str
    required: true
    choices: [policy, enclave, dns, ntp, packages, proxy, hosts, routes, registries, image_policy,
              credentials, workloads, marker, registry_content, registry_access, certificate, audit,
              containerd, containerd_probe, commands, space]
  enclave:
    description:
      - The enclave, C(ranges) (CIDR list), C(domains), C(names) and C(services)
        (a dict of C(dns), C(ntp), C(registry), C(packages), C(proxy) to lists of endpoints).
    type: dict
    default: {}
  labels:
    description: Sovereignty patterns (dicts with C(pattern), C(provider), C(provider_kind), C(jurisdiction)) that label findings.
    type: list
    elements: raw
    default: []
  policy_file:
    description: For C(policy), a sovereignty policy file; default the toolkit's packaged one.
    type: path
  extra_patterns:
    description: For C(policy), patterns added to the policy (strings or dicts as in I(labels)).
    type: list
    elements: raw
    default: []
  addresses:
    description: For C(enclave), a dict of name to address (node addresses) that must lie inside the enclave; an empty address is not judged.
    type: dict
    default: {}
  registry:
    description:
      - The internal registry, C(pull) and C(push) (HOST:PORT), C(ca_pem), the pull account's
        C(username) and C(password), C(push_secret_sha256) (to recognise the push credential
        without sending it), C(probe_repository) (for the upload probe).
    type: dict
    default: {}
  may_push:
    description: For C(credentials), whether this node may hold the push credential (the staging host).
    type: bool
    default: false
  images:
    description: For C(registry_content), the signed manifest's images (C(ref), C(digest), C(repository)).
    type: list
    elements: dict
    default: []
  workloads:
    description:
      - For C(workloads), this node's workloads, each with C(name), C(image) (internal name),
        C(digests) (allowed manifest digests), C(network), C(mounts), C(health_url).
    type: list
    elements: dict
    default: []
  containerd:
    description:
      - For C(containerd), C(images) (the signed manifest's C([internal name, digest]) pairs), C(hosts_dir),
        C(address) (containerd's socket) and C(token) (the probe's tag, unique per node and run).
      - For C(containerd_probe) (on the registry host), C(probes) (node name to its token), C(logs) (the
        registry's log files) and C(unit) (its systemd unit, read when there are no log files).
    type: dict
    default: {}
  signed_digests:
    description: For C(workloads), every manifest digest of the signed bundle (to say whether a foreign container's image is signed).
    type: list
    elements: str
    default: []
  marker:
    description: For C(marker), C(path), C(manifest_digest), C(name), C(version).
    type: dict
    default: {}
  audit:
    description:
      - For C(audit) (on the controller), C(shown) (the log's path on the staging host), C(anchor_head)
        (the head recorded at the last rollout), C(verify_rc), C(verify_output) and C(command) (the
        controller's C(airgap audit verify --expect-head) of today's copy).
    type: dict
    default: {}
  cert_min_days:
    description: For C(certificate), the fewest days the certificate must still be valid.
    type: int
    default: 30
  route_probe:
    description: Documentation address (RFC 5737) whose route is looked up; no packet is sent.
    type: str
    default: 192.0.2.1
  commands:
    description: For C(commands) (preflight), the executables the host's roles run.
    type: list
    elements: path
    default: []
  space:
    description: For C(space) (preflight), path to the bytes that must be free under it (or its nearest existing parent).
    type: dict
    default: {}
  root:
    description: Root of the file system to read configuration from (tests).
    type: path
    default: /
author: airgap project
"""

EXAMPLES = r"""
- name: Check the node's endpoints against the enclave
  airgap_check:
    checks: [dns, ntp, packages, proxy, hosts, routes]
    enclave:
      ranges: [10.42.10.0/24]
      domains: [pilot.geheim.internal]
      services: {dns: [10.42.10.2], ntp: [10.42.10.4], registry: ["registry.pilot.geheim.internal:5000"]}
    labels: "{{ airgap__sovereignty_patterns }}"
"""

RETURN = r"""
results:
  description: One entry per check, with C(check), C(title), C(section), C(status), C(summary), C(findings) and C(evidence).
  returned: always
  type: list
  elements: dict
failed_checks:
  description: Number of checks with status FAIL.
  returned: always
  type: int
patterns:
  description: The sovereignty policy's patterns (C(policy) only).
  returned: when policy is checked
  type: list
allowed:
  description: Per image ref, the manifest digests a container of it may report (C(registry_content) only).
  returned: when registry_content is checked
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.airgap_check_audit import check_audit
from ansible.module_utils.airgap_check_common import Enclave, Files, Labels, Result
from ansible.module_utils.airgap_check_host import check_commands, check_space
from ansible.module_utils.airgap_check_containerd import check_containerd, check_probe_logs, read_logs
from ansible.module_utils.airgap_check_network import check_dns, check_hosts, check_ntp, check_routes
from ansible.module_utils.airgap_check_registry import (Registry, check_certificate, check_registry_access,
                                                        check_registry_content)
from ansible.module_utils.airgap_check_runtime import (Internal, check_credentials, check_image_policy,
                                                       check_registries)
from ansible.module_utils.airgap_check_sources import check_packages, check_proxy
from ansible.module_utils.airgap_check_workloads import check_marker, check_workloads

NODE_CHECKS = ("dns", "ntp", "packages", "proxy", "hosts", "routes", "registries", "image_policy",
               "credentials", "workloads", "marker", "containerd", "containerd_probe", "commands", "space")
CONTROLLER_CHECKS = ("policy", "enclave", "registry_content", "registry_access", "certificate", "audit")


def load_policy(policy_file, extra):
    """The sovereignty policy's patterns, loaded by the controller's toolkit (airgap.sovereignty)."""
    res = Result("policy")
    try:
        from airgap.sovereignty import SovereigntyPolicy  # the controller's toolkit
    except ImportError as exc:
        res.fail("airgap.sovereignty", "(not importable)",
                 "the toolkit is not installed next to ansible-playbook on the controller (%s)" % exc)
        return res, []
    try:
        policy = SovereigntyPolicy.load(policy_file or None)
    except Exception as exc:  # airgap.exceptions.InputError: the message names the file
        res.fail(policy_file or "airgap/data/sovereignty.yaml", "(unreadable)", str(exc))
        return res, []
    patterns = [{"pattern": e.pattern, "provider": e.provider.name, "provider_kind": e.provider.kind,
                 "jurisdiction": e.provider.jurisdiction, "category": e.category} for e in policy.entries]
    for raw in extra or []:
        patterns.append(raw if isinstance(raw, dict) else {"pattern": str(raw), "provider": "site pattern",
                                                             "jurisdiction": "US"})
    res.summary_ok = "%d pattern(s) from %s" % (len(patterns), policy.source)
    res.note("policy %s: %d entries, %d site pattern(s)" % (policy.source, len(policy.entries), len(extra or [])))
    return res, patterns


def check_enclave(enclave, addresses):
    """The inventory's enclave: ranges parse, services and node addresses lie inside, none is listed."""
    res = Result("enclave", "")
    for problem in enclave.problems + enclave.labels.problems:
        res.fail("inventory", problem, "invalid enclave description")
    if not enclave.networks:
        res.fail("inventory", "airgap__allowed_ranges", "no allowed ranges: nothing can be judged inside the enclave")
    for name, value in sorted(addresses.items()):
        value = str(value or "").strip()
        if not value:
            res.note("inventory %s: not set (not judged)" % name)
            continue
        enclave.judge(res, "inventory %s" % name, None, value)
    for service, values in sorted(enclave.services.items()):
        for value in values:
            before = len(res.findings)
            enclave.judge(res, "inventory services.%s" % service, None, value)
            label = enclave.labels.label(value)
            if label and len(res.findings) == before:
                res.fail("inventory services.%s" % service, value, "listed by the sovereignty policy", label=label)
    res.summary_ok = "%d range(s), %d service endpoint(s), %d address(es) inside" % (
        len(enclave.networks), sum(len(v) for v in enclave.services.values()), len(addresses))
    return res


ARGUMENT_SPEC = dict(
    checks=dict(type="list", elements="str", required=True, choices=list(CONTROLLER_CHECKS + NODE_CHECKS)),
    enclave=dict(type="dict", default={}),
    labels=dict(type="list", elements="raw", default=[]),
    policy_file=dict(type="path"),
    extra_patterns=dict(type="list", elements="raw", default=[]),
    addresses=dict(type="dict", default={}),
    registry=dict(type="dict", default={}, no_log=False),
    may_push=dict(type="bool", default=False),
    images=dict(type="list", elements="dict", default=[]),
    workloads=dict(type="list", elements="dict", default=[]),
    containerd=dict(type="dict", default={}),
    signed_digests=dict(type="list", elements="str", default=[]),
    marker=dict(type="dict", default={}),
    audit=dict(type="dict", default={}),
    cert_min_days=dict(type="int", default=30),
    route_probe=dict(type="str", default="192.0.2.1"),
    commands=dict(type="list", elements="path", default=[]),
    space=dict(type="dict", default={}),
    root=dict(type="path", default="/"),
)


class Context(object):
    """What the checks of one module run share: parameters, the enclave, the labels, the files."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.reg = self.p["registry"] or {}
        self.files = Files(self.p["root"])
        self.relabel(self.p["labels"])

    def relabel(self, patterns):
        self.labels = Labels(patterns)
        self.enclave = Enclave(self.p["enclave"], self.labels)
        self.internal = Internal(self.enclave.services.get("registry"))

    def run(self, argv):
        binary = self.module.get_bin_path(argv[0])
        if not binary:
            return 127, "", "%s: command not found" % argv[0]
        return self.module.run_command([binary] + list(argv[1:]))

    def registry(self, which):
        endpoint = self.reg.get(which)
        if not endpoint:
            return None
        return Registry(endpoint, self.reg.get("ca_pem"), self.reg.get("username"), self.reg.get("password"))


def run_check(check, c, out):
    """One check's Result; controller checks may add to *out* (patterns, allowed digests)."""
    p, reg = c.p, c.reg
    if check == "policy":
        res, out["patterns"] = load_policy(p["policy_file"], p["extra_patterns"])
        c.relabel(out["patterns"])  # the checks after it in the same run are labelled by it
        return res
    if check == "registry_content":
        res, out["allowed"] = check_registry_content(c.registry("pull"), p["images"])
        return res
    ctd = p["containerd"] or {}
    if check == "containerd":
        return check_containerd(c.run, c.module.get_bin_path("ctr"), [tuple(i) for i in ctd.get("images") or []],
                                c.internal, ctd.get("hosts_dir") or "/etc/containerd/certs.d",
                                ctd.get("address") or "/run/containerd/containerd.sock", ctd.get("token") or "airgap-probe")
    if check == "containerd_probe":
        text, shown = read_logs(c.run, c.files, ctd.get("logs") or [], ctd.get("unit") or "airgap-registry")
        out["probes"] = check_probe_logs(text, shown, ctd.get("probes"))
        return None
    audit = p["audit"]
    simple = {
        "enclave": lambda: check_enclave(c.enclave, p["addresses"]),
        "dns": lambda: check_dns(c.files, c.enclave),
        "ntp": lambda: check_ntp(c.files, c.enclave),
        "packages": lambda: check_packages(c.files, c.enclave),
        "proxy": lambda: check_proxy(c.files, c.enclave),
        "hosts": lambda: check_hosts(c.files, c.enclave),
        "routes": lambda: check_routes(c.run, c.files, c.enclave, p["route_probe"]),
        "registries": lambda: check_registries(c.files, c.internal, c.labels),
        "image_policy": lambda: check_image_policy(c.files, c.internal),
        "credentials": lambda: check_credentials(c.files, c.internal, reg.get("username"),
                                                 reg.get("push_secret_sha256"), p["may_push"]),
        "workloads": lambda: check_workloads(c.run, c.module.get_bin_path("podman"), c.files, p["workloads"],
                                             p["signed_digests"]),
        "commands": lambda: check_commands(c.files, p["commands"]),
        "space": lambda: check_space(c.files, p["space"]),
        "marker": lambda: check_marker(c.files, p["marker"].get("path") or "/etc/airgap/bundle.json", p["marker"]),
        "registry_access": lambda: check_registry_access(c.registry("pull"), c.registry("push"),
                                                         reg.get("probe_repository") or "airgap/probe"),
        "certificate": lambda: check_certificate([r for r in (c.registry("pull"), c.registry("push")) if r is not None],
                                                 p["cert_min_days"]),
        "audit": lambda: check_audit(audit.get("anchor_head"), audit.get("verify_rc"), audit.get("verify_output", ""),
                                     audit.get("command", ""), audit.get("shown") or "audit log"),
    }
    return simple[check]()


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    password = (module.params["registry"] or {}).get("password")
    if password:
        module.no_log_values.add(password)
    context = Context(module)
    out = {"changed": False, "results": []}
    for check in module.params["checks"]:
        res = run_check(check, context, out)
        if res is not None:
            out["results"].append(res.to_dict())
    out["failed_checks"] = sum(1 for r in out["results"] if r["status"] == "FAIL")
    module.exit_json(**out)


if __name__ == "__main__":
    main()
