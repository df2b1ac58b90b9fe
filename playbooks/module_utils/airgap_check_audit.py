# Copyright: airgap project
# License: EUPL-1.2
"""The audit check, judged on the controller from data fetched from the staging host.

The staging host's log is copied to the controller; the controller's toolkit
verifies its hash chain (``airgap audit verify``) and this check proves it
still holds what the controller recorded at the last rollout: the controller's
copy from then must be a prefix of today's log, byte for byte, so no entry up
to the recorded head was edited, removed or reordered and the log was not cut
back (a log can only grow).
"""

from __future__ import annotations

from ansible.module_utils.airgap_check_common import Result

CHUNK = 1 << 20


def check_audit(fetched, anchor_log, anchor_head, verify_rc, verify_text, command, shown_path):
    res = Result("audit", "")
    if verify_rc is None:
        res.fail(command or "airgap audit verify", "(not run)", "the controller's toolkit did not verify the log")
    elif verify_rc != 0:
        res.fail(command, " ".join(str(verify_text).split())[:300],
                 "the controller's toolkit finds the staging host's audit log broken (exit %s)" % verify_rc)
    else:
        res.note("%s: %s" % (command, " ".join(str(verify_text).split())[:200] or "intact"))
    if not anchor_head:
        res.fail("the controller's evidence", "(no head)", "no audit head was recorded at the last rollout: run site.yml")
        return res
    try:
        line = _prefix_mismatch(fetched, anchor_log)
    except OSError as exc:
        res.fail(shown_path, "(unreadable)", str(exc))
        return res
    if line is None:
        entries = _count_lines(fetched)
        res.note("%s holds the head %s recorded at the last rollout (%d entries now)" % (shown_path, anchor_head, entries))
        res.summary_ok = "holds %s, recorded at the last rollout" % anchor_head
    elif line == "short":
        res.fail(shown_path, "%d entries" % _count_lines(fetched),
                 "the log was cut back: it ends before the head %s recorded at the last rollout" % anchor_head)
    else:
        res.fail(shown_path, "entry %d" % line,
                 "differs from the controller's copy at the last rollout (head %s): history was rewritten" % anchor_head,
                 line=line)
    return res


def _prefix_mismatch(fetched, anchor_log):
    """None when *anchor_log* is a byte prefix of *fetched*; "short" when it is longer;
    else the 1-based line number of the first difference."""
    line = 1
    with open(fetched, "rb") as now, open(anchor_log, "rb") as then:
        while True:
            old = then.read(CHUNK)
            if not old:
                return None
            new = now.read(len(old))
            if new == old:
                line += old.count(b"\n")
                continue
            if old.startswith(new):
                return "short"
            for i, (a, b) in enumerate(zip(old, new)):
                if a != b:
                    return line + old[:i].count(b"\n")
            return line


def _count_lines(path):
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(CHUNK), b""))

