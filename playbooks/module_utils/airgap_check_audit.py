# Copyright: airgap project
# License: EUPL-1.2
"""The audit check, judged on the controller from data fetched from the staging host.

The staging host's log is copied to the controller and the controller's
toolkit verifies it there: ``airgap audit verify --log COPY --expect-head
SEQ:HASH`` with the head the controller recorded at the last rollout
(``airgap audit head``). The hash chain links every entry up to that head to
its hash, so the log passes only if no entry up to the head was edited,
removed or reordered and the log was not cut back (a log can only grow).
"""

from __future__ import annotations

import re

from ansible.module_utils.airgap_check_common import Result


def check_audit(anchor_head, verify_rc, verify_text, command, shown_path):
    res = Result("audit", "")
    text = " ".join(str(verify_text or "").split())
    if not anchor_head:
        res.fail("the controller's evidence", "(no head)", "no audit head was recorded at the last rollout: run site.yml")
    if verify_rc is None:
        res.fail(command or "airgap audit verify", "(not run)", "the controller's toolkit did not verify the log")
    elif int(verify_rc) != 0:
        res.fail(shown_path, text[:300] or "(no output)",
                 "the controller's toolkit refuses the staging host's audit log (exit %s): %s" % (
                     verify_rc, "edited, reordered, cut back or forked" if anchor_head else "broken"))
    else:
        res.note("%s: %s" % (command, text.split(" first use: ")[0][:300] or "intact"))
        first = re.findall(r"first use: (.*?)(?= first use: |$)", text)
        for item in first:
            # Where the log's history begins: a state directory wiped and started over shows here.
            res.note("first use: %s" % item)
        if anchor_head:
            res.summary_ok = "intact, holds %s recorded at the last rollout" % anchor_head
        if first:
            res.summary_ok = (res.summary_ok or "intact") + "; history begins with the first use of trust policy %s" % (
                first[0].split(" pinned at ")[0].replace("trust policy ", ""))
    return res
