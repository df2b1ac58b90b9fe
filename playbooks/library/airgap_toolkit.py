#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module (controller only): install, upgrade or keep the staging host's toolkit."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_toolkit
short_description: Decide whether the staging host's toolkit is installed, upgraded or kept
description:
  - Runs on the controller. Takes what the controller's own toolkit answered to
    C(airgap toolkit wheels --json) (the released wheels of the bundle, or a
    refusal naming each wheel and the missing or insufficient toolkit release
    statement) and what the staging host has installed, and decides.
  - C(install) when the controller wrote a released set that differs from the
    set the installed toolkit came from; C(none) when it is the same set.
  - C(keep) when the bundle's wheels are not released but a toolkit is
    installed; the reason (every wheel and the statement) is returned for the
    play to show, so the operator sees why the toolkit did not change.
  - Fails when nothing released can be installed and no toolkit is installed
    (a fresh site): the first install must come from a toolkit release.
  - Never reports a change: the decision is bookkeeping; the tasks that act on
    it do.
options:
  rc:
    description: Exit code of C(airgap toolkit wheels).
    type: int
    required: true
  output:
    description: Its stdout (C(--json)).
    type: str
    required: true
  host:
    description: The staging host, for messages.
    type: str
    required: true
  installed_version:
    description: Version of the toolkit installed on the staging host (empty when none).
    type: str
    default: ""
  installed_set:
    description: The requirements file the installed toolkit was installed from (empty when unknown).
    type: str
    default: ""
author: airgap project
"""

EXAMPLES = r"""
- name: Decide about the toolkit
  airgap_toolkit:
    rc: "{{ released.rc }}"
    output: "{{ released.stdout }}"
    host: "{{ inventory_hostname }}"
    installed_version: "{{ ansible_facts.airgap.toolkit_version }}"
  delegate_to: localhost
"""

RETURN = r"""
action:
  description: C(install), C(none) or C(keep).
  returned: always
  type: str
reason:
  description: One sentence for the operator.
  returned: always
  type: str
problems:
  description: For C(keep), the refusal's lines (the statement's problem, then every wheel).
  returned: always
  type: list
release:
  description: Version, commit and signers of the released set (for C(install) and C(none)).
  returned: always
  type: dict
"""

import json

from ansible.module_utils.basic import AnsibleModule


def decide(p):
    """(action, reason, problems, release) or raise ValueError with the message to fail with."""
    try:
        doc = json.loads(p["output"] or "")
    except ValueError:
        raise ValueError("airgap toolkit wheels on the controller printed no JSON (exit %s)" % p["rc"])
    installed = p["installed_version"] or ""
    if p["rc"] == 0:
        release = {k: doc.get(k) for k in ("version", "commit", "signers", "source", "output", "requirements")}
        try:
            with open(doc["requirements"]) as fh:
                wanted = fh.read()
        except (OSError, KeyError) as exc:
            raise ValueError("the controller's released set has no requirements file: %s" % exc)
        if installed and wanted == p["installed_set"]:
            return "none", "%s runs toolkit release %s already" % (p["host"], release["version"]), [], release
        what = "upgrades" if installed else "installs"
        return "install", "%s %s toolkit release %s (%s), verified by the controller's toolkit" % (
            p["host"], what, release["version"], release["signers"]), [], release
    problems = doc.get("problems") or [doc.get("message") or "refused"]
    if not installed:
        raise ValueError(
            "%s has no toolkit and nothing released can be installed from %s: %s. The first install must come "
            "from a toolkit release: build the bundle from a release directory (AIRGAP_WHEELHOUSE), or give "
            "-e bundle__toolkit_release_dir=DIR (a directory of wheels with the toolkit-release.json the toolkit "
            "role signed)" % (p["host"], doc.get("artifact", "the bundle"), "; ".join(problems)))
    reason = ("%s keeps the installed toolkit %s, because the wheels are not released: %s"
              % (p["host"], installed, "; ".join(problems)))
    return "keep", reason, problems, {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rc=dict(type="int", required=True),
            output=dict(type="str", required=True),
            host=dict(type="str", required=True),
            installed_version=dict(type="str", default=""),
            installed_set=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    try:
        action, reason, problems, release = decide(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, action=action, reason=reason, problems=problems, release=release)


if __name__ == "__main__":
    main()
