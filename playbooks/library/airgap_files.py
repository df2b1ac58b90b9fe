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
        C(absent), or C(attributes): an existing file's owner, group and mode only); C(content) (files), C(src) (links), C(mode) (an octal string,
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
"""

import grp
import os
import pwd
import shutil
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _uid(name):
    return None if name in (None, "") else (int(name) if str(name).isdigit() else pwd.getpwnam(name).pw_uid)


def _gid(name):
    return None if name in (None, "") else (int(name) if str(name).isdigit() else grp.getgrnam(name).gr_gid)


def _mode(spec, current):
    """The wanted mode: an octal string, or `a+x` (add search/execute for all)."""
    if spec in (None, ""):
        return None
    if str(spec) == "a+x":
        return current | 0o111
    return int(str(spec), 8)


def _attrs(path, entry, st, check):
    """Owner, group and mode of an existing path; True when something changed."""
    changed = False
    uid, gid = _uid(entry.get("owner")), _gid(entry.get("group"))
    if (uid is not None and st.st_uid != uid) or (gid is not None and st.st_gid != gid):
        changed = True
        if not check:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid, follow_symlinks=False)
    want = _mode(entry.get("mode"), stat.S_IMODE(st.st_mode))
    if want is not None and stat.S_IMODE(st.st_mode) != want:
        changed = True
        if not check:
            os.chmod(path, want)
    return changed


def _file(path, entry, check, diffs):
    content = (entry.get("content") or "").encode("utf-8")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise ValueError("%s is a symlink: refusing to write through it" % path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ValueError("%s is a directory" % path)
    old = None
    if st is not None:
        with open(path, "rb") as fh:
            old = fh.read()
    if old == content:
        return _attrs(path, entry, st, check)
    if not entry.get("secret"):
        diffs.append({"before_header": path, "after_header": path,
                      "before": (old or b"").decode("utf-8", "replace"), "after": content.decode("utf-8", "replace")})
    if check:
        return True
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".airgap.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        st_tmp = os.lstat(tmp)
        mode = entry.get("mode") or ("%o" % stat.S_IMODE(st.st_mode) if st else "0644")
        _attrs(tmp, dict(entry, mode=mode), st_tmp, False)
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return True


def _directory(path, entry, check):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if check:
            return True
        os.makedirs(path)
        st = os.lstat(path)
        _attrs(path, entry, st, False)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError("%s exists and is not a directory" % path)
    return _attrs(path, entry, st, check)


def _link(path, entry, check):
    src = entry["src"]
    if os.path.islink(path) and os.readlink(path) == src:
        return False
    if os.path.lexists(path) and not os.path.islink(path):
        raise ValueError("%s exists and is not a symlink" % path)
    if not check:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(src, path)
    return True


def _absent(path, check):
    if not os.path.lexists(path):
        return False
    if not check:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return True


def main():
    module = AnsibleModule(argument_spec=dict(entries=dict(type="list", elements="dict", required=True)),
                           supports_check_mode=True)
    changed_paths, diffs = [], []
    for entry in module.params["entries"]:
        if entry.get("secret") and entry.get("content"):
            module.no_log_values.add(entry["content"])  # masked everywhere in the result
        path, state = entry.get("path"), entry.get("state", "file")
        if not path or not os.path.isabs(path):
            module.fail_json(msg="every entry needs an absolute path: %r" % (entry.get("path"),))
        try:
            if state == "file":
                changed = _file(path, entry, module.check_mode, diffs)
            elif state == "directory":
                changed = _directory(path, entry, module.check_mode)
            elif state == "link":
                changed = _link(path, entry, module.check_mode)
            elif state == "absent":
                changed = _absent(path, module.check_mode)
            elif state == "attributes":
                changed = _attrs(path, entry, os.lstat(path), module.check_mode)
            else:
                module.fail_json(msg="%s: unknown state %r (file, directory, link, absent, attributes)" % (path, state))
        except (OSError, ValueError, KeyError) as exc:
            module.fail_json(msg="%s: %s" % (path, exc), changed_paths=changed_paths)
        if changed:
            changed_paths.append(path)
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths, diff=diffs if module._diff else [])


if __name__ == "__main__":
    main()
