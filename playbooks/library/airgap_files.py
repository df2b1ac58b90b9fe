#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: several files, directories and links in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_files
short_description: Converge several files, directories and links in one module run
description:
  - Each entry is brought to its state only when it differs (content, mode,
    owner, group, link target); files are written atomically (temporary file
    in the same directory, then renamed) and never through a symlink.
  - One module run instead of one per file: a rollout's second run mostly asks
    "is it still so?", and every module run costs a round trip and a Python
    start on the host.
  - Supports check mode (reports what would change) and diff mode for file content.
options:
  entries:
    description:
      - The entries. Each has C(path) and C(state) (C(file), C(directory), C(link),
        C(absent), or C(attributes): an existing file's owner, group and mode only, and with
        C(sha256) its content's digest, a mismatch or a missing file being reported in C(differs));
        C(content) (files), C(src) (links), C(mode) (an octal string,
        or C(a+x) style for directories), C(owner), C(group), and C(secret) (true:
        the content never appears in a diff).
    type: list
    elements: dict
    required: true
author: airgap project
"""

EXAMPLES = r"""
- name: The runtime's configuration
  airgap_files:
    entries:
      - {path: /etc/containers/certs.d/registry:5000, state: directory, mode: "0755"}
      - {path: /etc/containers/policy.json, state: file, content: "{{ policy | to_json }}", mode: "0644"}
      - {path: /etc/containers/libpod.conf, state: absent}
"""

RETURN = r"""
changed_paths:
  description: The paths that were (or, in check mode, would be) changed.
  returned: always
  type: list
differs:
  description: The C(attributes) entries with a C(sha256) whose file is missing or has another content (left alone).
  returned: always
  type: list
"""

from ansible.module_utils.airgap_entries import EntryError, converge
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(entries=dict(type="list", elements="dict", required=True)),
                           supports_check_mode=True)
    for entry in module.params["entries"]:
        if entry.get("secret") and entry.get("content"):
            module.no_log_values.add(entry["content"])  # masked everywhere in the result
    try:
        changed_paths, diffs, differs = converge(module.params["entries"], module.check_mode)
    except EntryError as exc:
        module.fail_json(msg=str(exc), changed_paths=getattr(exc, "changed_paths", []))
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths, differs=differs,
                     diff=diffs if module._diff else [])


if __name__ == "__main__":
    main()
