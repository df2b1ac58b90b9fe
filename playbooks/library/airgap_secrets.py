#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: small files the rollout keeps on a host (passwords, the CA), made, given and read in one run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_secrets
short_description: Make, write and read small root-only files (passwords, a CA certificate) in one module run
description:
  - Each file is read without following a symlink. With C(value) it is
    written with that content (a password from Vault); with C(create) and no
    C(value) a random password (48 hex digits) is made when the file is
    missing. New and rewritten files are C(0600) root, written atomically.
  - What the result carries per file is chosen by C(give) -- C(content), or
    only its C(sha256) (the stripped content's), so a secret that is only
    compared never leaves its host. A content is returned as it is (Ansible
    would otherwise mask it in the registered result too): give the task
    C(no_log).
  - Supports check mode (reports what would be made; nothing is written).
options:
  files:
    description:
      - The files. Each has C(path); C(value) (the content it must have;
        empty or absent for none), C(create) (make a random password when
        missing; default false), C(give) (C(content), the default, C(sha256)
        or C(none)).
    type: list
    elements: dict
    required: true
author: airgap project
"""

EXAMPLES = r"""
- name: The push password, made once on the staging host
  airgap_secrets:
    files: [{path: /etc/airgap/airgap-import.password, create: true}]
  register: push
  no_log: true

- name: Only the hash of the push password, for a comparison
  airgap_secrets:
    files: [{path: /etc/airgap/airgap-import.password, give: sha256}]
"""

RETURN = r"""
files:
  description: Per path, C(exists) and, as asked, C(content) (as in the file) or C(sha256) (of the content without surrounding whitespace).
  returned: always
  type: dict
changed_paths:
  description: The files made or rewritten.
  returned: always
  type: list
"""

import hashlib

from ansible.module_utils.airgap_fileio import LinkError, new_secret, read_bytes, write_secret
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(files=dict(type="list", elements="dict", required=True)),
                           supports_check_mode=True)
    out, changed = {}, []
    for entry in module.params["files"]:
        path, value = entry.get("path"), entry.get("value") or ""
        give = entry.get("give", "content")
        if not path or give not in ("content", "sha256", "none"):
            module.fail_json(msg="every file needs a path, and give is content, sha256 or none: %r" % (path,))
        try:
            data = read_bytes(path)
            want = (value + "\n").encode() if value else None
            if want is None and data is None and entry.get("create"):
                want = (new_secret() + "\n").encode()
            if want is not None and data != want:
                changed.append(path)
                if not module.check_mode:
                    write_secret(path, want)
                data = want
        except (OSError, ValueError, LinkError) as exc:
            module.fail_json(msg="%s: %s" % (path, exc), changed_paths=changed)
        text = data.decode("utf-8", "replace") if data is not None else ""
        res = {"exists": data is not None}
        if give == "content":
            res["content"] = text
        elif give == "sha256":
            res["sha256"] = hashlib.sha256(text.strip().encode()).hexdigest() if data is not None else ""
        out[path] = res
    module.exit_json(changed=bool(changed), changed_paths=changed, files=out)


if __name__ == "__main__":
    main()
