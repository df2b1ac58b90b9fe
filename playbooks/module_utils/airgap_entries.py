# Copyright: airgap project
# License: EUPL-1.2
"""Files, directories and links converged from a list of entries: the logic of ``airgap_files``.

Shipped by Ansible with every module that imports it (standard library and
``airgap_fileio`` only): ``airgap_files`` converges a role's files in one
module run, ``airgap_pods`` the node's marker in the same run as its pods.

Each entry has ``path`` and ``state``: ``file`` (``content``; ``secret``: the
content never appears in a diff), ``directory``, ``link`` (``src``),
``absent``, or ``attributes`` (an existing file's owner, group and mode only;
with ``sha256``, its content must have that digest, or the path is reported in
``differs`` and left alone: the module has no content to write); ``mode`` (an
octal string, or ``a+x`` for directories), ``owner``, ``group``.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat

from ansible.module_utils.airgap_fileio import read_bytes, write_atomic

STATES = ("file", "directory", "link", "absent", "attributes")


class EntryError(ValueError):
    """An entry that cannot be converged (its path and why)."""


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
    old = read_bytes(path)  # refuses a symlink
    if old == content:
        return _attrs(path, entry, os.lstat(path), check)
    if not entry.get("secret"):
        diffs.append({"before_header": path, "after_header": path,
                      "before": (old or b"").decode("utf-8", "replace"), "after": content.decode("utf-8", "replace")})
    if check:
        return True
    uid, gid = _uid(entry.get("owner")), _gid(entry.get("group"))
    current = stat.S_IMODE(os.lstat(path).st_mode) if old is not None else 0o644
    write_atomic(path, content, mode=_mode(entry.get("mode"), current),
                 uid=-1 if uid is None else uid, gid=-1 if gid is None else gid)
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


def _sha256(path):
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _attributes(path, entry, check, differs):
    """state=attributes; with sha256, the content is compared first (a mismatch is reported, not changed)."""
    if entry.get("sha256"):
        if not os.path.isfile(path) or os.path.islink(path) or _sha256(path) != entry["sha256"]:
            differs.append(path)
            return False
    return _attrs(path, entry, os.lstat(path), check)


def converge(entries, check):
    """Bring every entry to its state. Returns (changed paths, diffs, paths whose content differs from a sha256)."""
    changed_paths, diffs, differs = [], [], []
    for entry in entries:
        path, state = entry.get("path"), entry.get("state", "file")
        if not path or not os.path.isabs(path):
            raise EntryError("every entry needs an absolute path: %r" % (path,))
        if state not in STATES:
            raise EntryError("%s: unknown state %r (%s)" % (path, state, ", ".join(STATES)))
        try:
            if state == "file":
                changed = _file(path, entry, check, diffs)
            elif state == "directory":
                changed = _directory(path, entry, check)
            elif state == "link":
                changed = _link(path, entry, check)
            elif state == "absent":
                changed = _absent(path, check)
            else:
                changed = _attributes(path, entry, check, differs)
        except (OSError, ValueError, KeyError) as exc:
            err = EntryError("%s: %s" % (path, exc))
            err.changed_paths = changed_paths
            raise err
        if changed:
            changed_paths.append(path)
    return changed_paths, diffs, differs


__all__ = ["EntryError", "STATES", "converge"]
