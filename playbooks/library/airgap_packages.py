#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: a host's OS packages against the bundle's, and apt with the bundle's repository alone."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_packages
short_description: Compare a host's Debian packages with the bundle's; install them from the bundle's repository only
description:
  - C(state=query) (read-only) asks dpkg once for every package in I(names) and
    compares each with the version the signed bundle carries (I(carried), from
    the controller's evidence). C(todo) lists those absent or at another
    version; when it is empty the rollout copies nothing and runs no apt.
    A name the bundle does not carry fails, naming it.
  - C(state=present) installs C(todo) with apt from the repository already
    copied to I(repository) (written by C(airgap packages export) from the
    verified bundle), that repository being apt's only source: a private
    sources list, sources.list.d and lists directory under I(apt_dir), so the
    host's own sources are neither used nor touched. Afterwards every package
    must be installed at the carried version, or the module fails.
  - Supports check mode (C(present) reports what it would install).
options:
  state:
    description: C(query) or C(present).
    type: str
    choices: [query, present]
    default: query
  names:
    description: The packages this host needs.
    type: list
    elements: str
    required: true
  carried:
    description: Every package the bundle carries, name to version.
    type: dict
    required: true
  bundle:
    description: The bundle's file name (named in the sources list and in errors).
    type: str
    default: the bundle
  repository:
    description: For C(present), the bundle's flat apt repository on this host.
    type: path
    default: /var/lib/airgap/packages
  apt_dir:
    description: For C(present), apt's private sources and lists for that repository.
    type: path
    default: /var/lib/airgap/apt
author: airgap project
"""

EXAMPLES = r"""
- name: Compare
  airgap_packages:
    names: [podman, runc]
    carried: {podman: "4.3.1+ds1-8+deb12u1+b3", runc: "1.1.5+ds1-1+deb12u1"}
  register: packages
"""

RETURN = r"""
todo:
  description: The packages absent or at another version than the bundle's (before this run installed them).
  returned: always
  type: list
installed:
  description: Each package's installed version ("" when absent), as dpkg says after this run.
  returned: always
  type: dict
"""

import os

from ansible.module_utils.airgap_fileio import converge
from ansible.module_utils.basic import AnsibleModule

QUERY = ["dpkg-query", "--show", "--showformat", "${Package} ${Version} ${db:Status-Status}\\n"]


def installed(module, names):
    """name -> installed version ("" when not installed), from one dpkg-query."""
    # dpkg-query exits 1 when a name is unknown to it (never installed): not an error.
    rc, out, err = module.run_command(QUERY + list(names))
    if rc not in (0, 1):
        module.fail_json(msg="dpkg-query failed (exit %d): %s" % (rc, err.strip()))
    have = dict.fromkeys(names, "")
    for line in out.splitlines():
        fields = line.split(" ")
        if len(fields) == 3 and fields[2] == "installed" and fields[0] in have:
            have[fields[0]] = fields[1]
    return have


def apt_options(apt_dir):
    return ["-o", "Dir::Etc::SourceList=%s/sources.list" % apt_dir,
            "-o", "Dir::Etc::SourceParts=%s/sources.list.d" % apt_dir,
            "-o", "Dir::State::Lists=%s/lists" % apt_dir]


def install(module, todo):
    p = module.params
    apt_dir = p["apt_dir"]
    # apt owns lists/partial (it gives it to its _apt user).
    for d in (apt_dir, apt_dir + "/lists", apt_dir + "/lists/partial", apt_dir + "/sources.list.d"):
        os.makedirs(d, mode=0o755, exist_ok=True)
    # [trusted=yes]: the repository's trust is the bundle's. Its signatures were
    # checked by the controller's verify and every file hashed as it was
    # written; apt still checks each .deb against the signed index's SHA256.
    converge(apt_dir + "/sources.list",
             ("# Managed by Ansible (airgap packages role): the OS packages of the bundle %s.\n"
              "deb [trusted=yes] file:%s ./\n" % (p["bundle"], p["repository"])).encode(), mode=0o644)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    steps = [("apt-get update", ["update", "-qq"]),
             ("apt-get install " + " ".join(todo),
              ["install", "-y", "-qq", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold"] + todo)]
    for label, args in steps:
        rc, out, err = module.run_command(["apt-get"] + apt_options(apt_dir) + args, environ_update=env)
        if rc != 0:
            module.fail_json(msg="%s from the repository of %s failed (exit %d): %s"
                                 % (label, p["bundle"], rc, (err or out).strip()[-2000:]))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="query", choices=["query", "present"]),
            names=dict(type="list", elements="str", required=True),
            carried=dict(type="dict", required=True),
            bundle=dict(type="str", default="the bundle"),
            repository=dict(type="path", default="/var/lib/airgap/packages"),
            apt_dir=dict(type="path", default="/var/lib/airgap/apt"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    names, carried = p["names"], p["carried"]
    missing = [n for n in names if n not in carried]
    if missing:
        module.fail_json(msg="%s carries no %s (its packages: %s); add them to the spec's packages.names"
                             % (p["bundle"], ", ".join(missing), ", ".join(sorted(carried)) or "none"))
    have = installed(module, names)
    todo = [n for n in names if have[n] != carried[n]]
    if p["state"] == "present" and todo and not module.check_mode:
        install(module, todo)
        have = installed(module, names)
        wrong = ["%s %s (the bundle carries %s)" % (n, have[n] or "absent", carried[n]) for n in names if have[n] != carried[n]]
        if wrong:
            module.fail_json(msg="after apt, not at the bundle's version: %s" % "; ".join(wrong), todo=todo, installed=have)
    module.exit_json(changed=p["state"] == "present" and bool(todo), todo=todo, installed=have)


if __name__ == "__main__":
    main()
