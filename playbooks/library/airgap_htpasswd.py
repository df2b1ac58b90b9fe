#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: airgap project
# License: EUPL-1.2
"""Ansible module: bcrypt entries of htpasswd files (for docker-registry), their passwords made once."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: airgap_htpasswd
short_description: Manage bcrypt entries of htpasswd files, one account per file
description:
  - Adds or updates the bcrypt (C($2b$)) hash of one user in each htpasswd
    file, as read by the distribution registry's C(htpasswd) authentication.
  - Idempotent; an existing entry that already matches the password at the
    requested cost is left alone (no new salt on every run).
  - An entry's password is given (C(password)), or kept in C(password_file) on
    this host, made once (48 random hex digits, C(0600) root) when missing; a
    given password with a C(password_file) is written there. Passwords never
    appear in the result.
  - All entries in one module run (a rollout's second run asks "is it still
    so?" once). Needs no apache2-utils; hashes with the C library's crypt (libxcrypt).
  - Supports check mode.
options:
  entries:
    description:
      - Each has C(path) (the htpasswd file), C(name) (the user) and
        C(password) and/or C(password_file).
    type: list
    elements: dict
    required: true
  cost:
    description: bcrypt cost factor.
    type: int
    default: 12
  mode:
    description: Mode of the htpasswd files.
    type: raw
    default: "0640"
  owner:
    description: Owner of the htpasswd files.
    type: str
  group:
    description: Group of the htpasswd files.
    type: str
author: airgap project
"""

EXAMPLES = r"""
- name: Registry accounts
  airgap_htpasswd:
    entries:
      - {path: /etc/airgap/registry/htpasswd-pull, name: airgap-pull, password_file: /etc/airgap/registry/airgap-pull.password}
      - {path: /etc/airgap/registry/htpasswd-push, name: airgap-import, password: "{{ push_secret }}"}
  no_log: true
"""

RETURN = r"""
changed_paths:
  description: The htpasswd and password files written (or, in check mode, to be written).
  returned: always
  type: list
"""

import ctypes
import ctypes.util
import grp
import os
import pwd

from ansible.module_utils.airgap_fileio import new_secret, read_bytes, write_atomic, write_secret
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


def _password(entry, check, changed):
    """The entry's password: given (and kept in its file), or read from its file, made once when missing."""
    given, path = entry.get("password") or "", entry.get("password_file")
    if not path:
        if not given:
            raise ValueError("%s: an entry needs a password or a password_file" % entry.get("path"))
        return given
    current = read_bytes(path)
    want = (given + "\n").encode() if given else (current if current is not None else (new_secret() + "\n").encode())
    if current != want:
        changed.append(path)
        if not check:
            write_secret(path, want)
    return want.decode("utf-8").strip()


def _entry(module, entry, changed):
    """One user's bcrypt line in one htpasswd file; True when the file changed (or would)."""
    path, name = entry.get("path"), entry.get("name") or ""
    if not path or not name or ":" in name or "\n" in name:
        raise ValueError("an entry needs a path and a user name without ':' or a newline: %r" % (path,))
    password = _password(entry, module.check_mode, changed)
    data = read_bytes(path)
    lines = data.decode("utf-8").splitlines() if data is not None else []
    current = None
    for line in lines:
        user, sep, digest = line.partition(":")
        if sep and user == name:
            current = digest
    cost = module.params["cost"]
    # Up to date: the same password, hashed at the requested cost.
    if bool(current) and current.startswith("$2") and current[4:6] == "%02d" % cost \
            and bcrypt_hash(password, 0, current) == current:
        return False
    if not module.check_mode:
        out = [ln for ln in lines if ln.partition(":")[0] != name] + ["%s:%s" % (name, bcrypt_hash(password, cost))]
        write_atomic(path, ("\n".join(out) + "\n").encode("utf-8"), prefix=".htpasswd.", **_attributes(module.params))
    return True


def _attributes(p):
    """The htpasswd files' mode, owner and group, for write_atomic."""
    mode = p["mode"] if isinstance(p["mode"], int) else int(str(p["mode"]), 8)
    uid = pwd.getpwnam(p["owner"]).pw_uid if p["owner"] else -1
    gid = grp.getgrnam(p["group"]).gr_gid if p["group"] else -1
    return {"mode": mode, "uid": uid, "gid": gid}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            entries=dict(type="list", elements="dict", required=True),
            cost=dict(type="int", default=12),
            mode=dict(type="raw", default="0640"),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    changed = []
    for entry in p["entries"]:
        try:
            written = _entry(module, entry, changed)
        except (OSError, ValueError, KeyError) as exc:
            module.fail_json(msg="htpasswd %s: %s" % (entry.get("path"), exc), changed_paths=changed)
        file_args = module.load_file_common_arguments(dict(path=entry["path"], mode=p["mode"], owner=p["owner"], group=p["group"]))
        if os.path.exists(entry["path"]) and module.set_fs_attributes_if_different(file_args, False):
            written = True
        if written:
            changed.append(entry["path"])
    module.exit_json(changed=bool(changed), changed_paths=changed)


if __name__ == "__main__":
    main()
