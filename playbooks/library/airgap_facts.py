#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: airgap facts of a node (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_facts
short_description: Facts about airgap on a node
description:
  - Read-only. Sets C(ansible_facts.airgap) with the node's bundle marker, the
    bundle recorded by C(airgap import) (when the node is the staging host),
    the version of the installed toolkit, which paths exist and when
    certificates expire. (Commands and free space are preflight checks:
    C(airgap_check) C(commands) and C(space).)
options:
  marker_path:
    description: The node's bundle marker (JSON).
    type: path
    default: /etc/airgap/bundle.json
  imported_file:
    description: imported.json written by C(airgap import).
    type: path
  toolkit_prefix:
    description: Virtualenv of the toolkit.
    type: path
    default: /opt/airgap
  paths:
    description: Paths whose existence is reported in C(exists) (a dict of path to true/false).
    type: list
    elements: path
    default: []
  certificates:
    description: PEM certificates whose expiry (seconds since the epoch, or null when unreadable) is reported in C(not_after).
    type: list
    elements: path
    default: []
author: airgap project
"""

EXAMPLES = r"""
- name: Airgap facts
  airgap_facts:
    paths: [/etc/airgap/pki/ca.crt]
"""

RETURN = r"""
ansible_facts:
  description: C(airgap) with C(marker), C(imported), C(toolkit_version), C(exists), C(not_after).
  returned: always
  type: dict
"""

import calendar
import glob
import json
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule


def read_json(path):
    if not path or not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh), None
    except (OSError, ValueError) as exc:
        return None, "%s: %s" % (path, exc)


def toolkit_version(prefix):
    pattern = os.path.join(prefix, "lib", "python3*", "site-packages", "airgap-*.dist-info", "METADATA")
    for meta in sorted(glob.glob(pattern)):
        try:
            with open(meta, encoding="utf-8") as fh:
                for line in fh:
                    m = re.match(r"^Version:\s*(\S+)", line)
                    if m:
                        return m.group(1)
        except OSError:
            continue
    return None


def not_after(module, path):
    """A certificate's notAfter in seconds since the epoch (openssl reads it), or None."""
    if not os.path.isfile(path):
        return None
    rc, out, _err = module.run_command(["openssl", "x509", "-noout", "-enddate", "-in", path])
    if rc != 0 or "=" not in out:
        return None
    try:
        return calendar.timegm(time.strptime(out.split("=", 1)[1].strip().replace(" GMT", ""), "%b %d %H:%M:%S %Y"))
    except ValueError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            marker_path=dict(type="path", default="/etc/airgap/bundle.json"),
            imported_file=dict(type="path"),
            toolkit_prefix=dict(type="path", default="/opt/airgap"),
            paths=dict(type="list", elements="path", default=[]),
            certificates=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    errors = []
    marker, err = read_json(p["marker_path"])
    if err:
        errors.append(err)
    imported, err = read_json(p["imported_file"])
    if err:
        errors.append(err)
    facts = {
        "marker": marker,
        "imported": imported,
        "toolkit_version": toolkit_version(p["toolkit_prefix"]),
        "exists": {path: os.path.lexists(path) for path in p["paths"]},
        "not_after": {path: not_after(module, path) for path in p["certificates"]},
        "errors": errors,
    }
    module.exit_json(changed=False, ansible_facts={"airgap": facts})


if __name__ == "__main__":
    main()
