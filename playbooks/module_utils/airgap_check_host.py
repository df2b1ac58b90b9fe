# Copyright: airgap project
# License: EUPL-1.2
"""Preflight checks of a host before a rollout: the commands its roles need, and free space.

Runs on the host (standard library only), in the same module run as the
host's endpoint checks: one round trip per host for the whole preflight.
"""

from __future__ import annotations

import os

from ansible.module_utils.airgap_check_common import Result


def human(size):
    """Bytes in the largest binary unit that keeps a whole number before the point (``1.5 GiB``)."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    return ("%d %s" if unit == "B" else "%.1f %s") % (value, unit)


def check_commands(files, commands):
    """Each command the host's roles run is an executable file."""
    res = Result("commands", "%d command(s) present" % len(commands))
    for cmd in commands:
        path = files.path(cmd)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            res.note(cmd)
        else:
            res.fail(cmd, "(missing)", "the host lacks %s: install its Debian package before the rollout, "
                                       "or let the bundle bring it (airgap__os_packages)" % cmd)
    return res


def check_space(files, needs):
    """Under each path (or its nearest existing parent) at least the bytes *needs* names are free."""
    res = Result("space", "enough free space")
    for path, need in sorted((needs or {}).items()):
        probe = files.path(path)
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        st = os.statvfs(probe)
        free = st.f_bavail * st.f_frsize
        shown = "%s (measured at %s)" % (path, files.show(probe)) if files.show(probe) != path else path
        if free < int(need):
            res.fail(shown, "%s free" % human(free), "needs %s: make room, or give the rollout another directory" % human(int(need)))
        else:
            res.note("%s: %s free, %s needed" % (shown, human(free), human(int(need))))
    return res


__all__ = ["check_commands", "check_space", "human"]
