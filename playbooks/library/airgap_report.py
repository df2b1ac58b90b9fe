#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module (controller only): write check.yml's reports."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_report
short_description: Write check.yml's reports (JSON, Markdown, printable HTML)
description:
  - Runs on the controller. Takes every host's check results and the header
    (the signed bundle, its manifest digest, the signers, the audit head) and
    writes C(NAME.json), C(NAME.md) and C(NAME.html) (one self-contained page,
    no external assets, styled for print) atomically into I(dir).
  - Verdict and failures first; see docs/check.md for the formats.
  - Reports are files on the controller, not a change of the site; the module
    never reports a change.
options:
  dir:
    description: Directory for the reports (created when missing).
    type: path
    required: true
  name:
    description: Base name of the three files.
    type: str
    default: airgap-check
  results:
    description: Every result (dicts as C(airgap_check) returns them) with C(host) added.
    type: list
    elements: dict
    required: true
  header:
    description: C(generated), C(inventory), C(bundle), C(trust), C(signers), C(audit_head), C(registry).
    type: dict
    default: {}
author: airgap project
"""

EXAMPLES = r"""
- name: Write the reports
  airgap_report:
    dir: /var/lib/airgap-reports
    results: "{{ check__all }}"
    header: "{{ check__header }}"
  delegate_to: localhost
"""

RETURN = r"""
passed:
  description: True when no check failed.
  returned: always
  type: bool
counts:
  description: hosts, checks, pass, fail, findings.
  returned: always
  type: dict
summary:
  description: The verdict, the failures one per line, and where the reports are.
  returned: always
  type: list
paths:
  description: The three report files.
  returned: always
  type: list
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.airgap_fileio import write_atomic
from ansible.module_utils.airgap_check_report import build, html_page, markdown, summary_lines, to_json


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path", required=True),
            name=dict(type="str", default="airgap-check"),
            results=dict(type="list", elements="dict", required=True),
            header=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    report = build(p["results"], p["header"])
    os.makedirs(p["dir"], mode=0o750, exist_ok=True)
    base = os.path.join(p["dir"], p["name"])
    paths = [base + ".json", base + ".md", base + ".html"]
    for path, text in zip(paths, (to_json(report), markdown(report), html_page(report))):
        write_atomic(path, text.encode("utf-8"), mode=0o640)
    module.exit_json(changed=False, passed=report["passed"], counts=report["counts"],
                     summary=summary_lines(report, paths), paths=paths)


if __name__ == "__main__":
    main()
