# Copyright: airgap project
# License: EUPL-1.2
"""Files the project's modules write on a node: read without following a link, written atomically.

Shipped by Ansible with every module that imports it (standard library only).
One way for every module (airgap_files, airgap_pods, airgap_evidence,
airgap_htpasswd, airgap_secrets, airgap_packages): a file is read with
``O_NOFOLLOW`` (a symlink where a file belongs is an error, never followed), and
written to a temporary file in the same directory that is flushed, synced,
given its owner and mode, then renamed over the path -- a reader sees the old
bytes or the new ones, never a part, and a rename replaces a link instead of
writing through it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile


class LinkError(ValueError):
    """A symlink stands where a file is read or written."""


def read_bytes(path):
    """The bytes of the regular file *path*, or None when it does not exist. Never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise LinkError("%s is a symlink: refusing to follow it" % path)
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError("%s is not a regular file" % path)
        return fh.read()


def write_atomic(path, data, mode=None, uid=-1, gid=-1, prefix=".airgap."):
    """*data* (bytes) at *path*, atomically. *mode* None keeps the present file's mode (0644 for a new one)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise LinkError("%s is a symlink: refusing to write through it" % path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ValueError("%s is a directory" % path)
    if mode is None:
        mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def converge(path, data, mode=None, uid=-1, gid=-1):
    """Write *data* at *path* only when it differs; True when it was written."""
    if read_bytes(path) == data:
        return False
    write_atomic(path, data, mode=mode, uid=uid, gid=gid)
    return True


def write_secret(path, data):
    """A secret file: root's, 0600, its parent directory made (0755) when missing."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_atomic(path, data, mode=0o600, uid=0, gid=0)


def new_secret():
    """A random password: 48 hex digits (192 bits)."""
    return secrets.token_hex(24)


__all__ = ["LinkError", "read_bytes", "write_atomic", "converge", "write_secret", "new_secret"]
