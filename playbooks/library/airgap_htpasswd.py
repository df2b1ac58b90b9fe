#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: one bcrypt entry in an htpasswd file (for docker-registry)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_htpasswd
short_description: Manage one bcrypt entry of an htpasswd file
description:
  - Adds or updates the bcrypt (C($2b$)) hash of one user in an htpasswd
    file, as read by the distribution registry's C(htpasswd) authentication.
  - Idempotent; an existing entry that already matches the password at the
    requested cost is left alone (no new salt on every run).
  - Needs no apache2-utils; hashes with the C library's crypt (libxcrypt).
options:
  path:
    description: The htpasswd file.
    type: path
    required: true
  name:
    description: User name.
    type: str
    required: true
  password:
    description: Clear-text password.
    type: str
    required: true
  cost:
    description: bcrypt cost factor.
    type: int
    default: 12
  mode:
    description: File mode.
    type: raw
    default: "0640"
  owner:
    description: File owner.
    type: str
  group:
    description: File group.
    type: str
author: airgap project
"""

EXAMPLES = r"""
- name: Registry account
  airgap_htpasswd:
    path: /etc/airgap/registry/htpasswd
    name: airgap
    password: "{{ secret }}"
"""

RETURN = r"""
path:
  description: The htpasswd file.
  returned: always
  type: str
"""

import ctypes
import ctypes.util
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _libcrypt():
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    lib = ctypes.CDLL(name)
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    return lib


def bcrypt_hash(password, cost, setting=None):
    lib = _libcrypt()
    if setting is None:
        setting = lib.crypt_gensalt(b"$2b$", cost, None, 0)
        if not setting:
            raise ValueError("crypt_gensalt cannot make a bcrypt salt")
    elif isinstance(setting, str):
        setting = setting.encode("ascii")
    out = lib.crypt(password.encode("utf-8"), setting)
    if not out or out.startswith(b"*"):
        raise ValueError("crypt() does not support bcrypt here")
    return out.decode("ascii")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            name=dict(type="str", required=True),
            password=dict(type="str", required=True, no_log=True),
            cost=dict(type="int", default=12),
            mode=dict(type="raw", default="0640"),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    path, name, password = module.params["path"], module.params["name"], module.params["password"]
    if ":" in name or "\n" in name:
        module.fail_json(msg="user name must not contain ':' or a newline")

    lines = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()

    current = None
    for line in lines:
        user, sep, digest = line.partition(":")
        if sep and user == name:
            current = digest
    try:
        # Up to date: the same password, hashed at the requested cost.
        up_to_date = (bool(current) and current.startswith("$2") and current[4:6] == "%02d" % module.params["cost"]
                      and bcrypt_hash(password, 0, current) == current)
    except (ValueError, OSError) as exc:
        module.fail_json(msg="cannot check the existing hash: %s" % exc)

    changed = not up_to_date
    if changed and not module.check_mode:
        try:
            new = bcrypt_hash(password, module.params["cost"])
        except (ValueError, OSError) as exc:
            module.fail_json(msg="cannot hash with bcrypt: %s" % exc)
        out = [ln for ln in lines if ln.partition(":")[0] != name] + ["%s:%s" % (name, new)]
        directory = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".htpasswd.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")
        module.atomic_move(tmp, path)

    file_args = module.load_file_common_arguments(
        dict(path=path, mode=module.params["mode"], owner=module.params["owner"], group=module.params["group"])
    )
    if os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, path=path)


if __name__ == "__main__":
    main()
