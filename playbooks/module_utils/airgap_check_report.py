# Copyright: airgap project
# License: EUPL-1.2
"""check.yml's report for the security officer: JSON, Markdown and one printable HTML page.

Built to be read in a minute: the verdict and the failures first (node, check,
where, value, why), then a table of every check on every node, then the
evidence summarised (counts and the first items; every item is in the JSON).
The bundle, its manifest digest, the signers and the audit head are at the
top: they are what every line below is measured against.
"""

from __future__ import annotations

import html
import json

from ansible.module_utils.airgap_check_common import CHECKS

EVIDENCE_SHOWN = 3
SECTIONS = ("Supply chain", "Runtime", "Enclave", "Haven")
NEEDS_CLUSTER = "NEEDS-CLUSTER"


def _findings(r):
    out = [dict(f, host=r["host"], title=r.get("title") or r["check"]) for f in r.get("findings") or []]
    if r["status"] == "FAIL" and not out:
        out.append({"host": r["host"], "check": r["check"], "title": r.get("title") or r["check"],
                    "source": "", "line": None, "value": "", "reason": r.get("summary", "")})
    return out


def build(results, header):
    """The report document (what the JSON file holds) from per-host results and the header.

    A FAIL the site's inventory declares as expected (``expected``: the reason,
    e.g. the lab's Haven checks) is listed apart, with its reason, and does not
    fail the verdict; NEEDS-CLUSTER (a check only a Kubernetes API can answer)
    is neither PASS nor FAIL.
    """
    results = sorted(results, key=lambda r: (_host_key(r["host"]), _check_key(r["check"])))
    failures, expected = [], []
    for r in results:
        if r["status"] == "FAIL" and r.get("expected"):
            expected += [dict(f, expected=r["expected"]) for f in _findings(r)]
        else:
            failures += _findings(r)
    hosts = sorted({r["host"] for r in results}, key=_host_key)
    failed = [r for r in results if r["status"] == "FAIL" and not r.get("expected")]
    used = sorted({r["check"] for r in results}, key=_check_key)
    cluster = sum(1 for r in results if r["status"] == NEEDS_CLUSTER)
    return {
        "generated": header.get("generated"),
        "inventory": header.get("inventory"),
        "verdict": "FAIL" if failed else "PASS",
        "passed": not failed,
        "counts": {"hosts": len(hosts), "checks": len(results),
                   "pass": sum(1 for r in results if r["status"] == "PASS"),
                   "fail": len(failed), "findings": len(failures),
                   "expected_fail": sum(1 for r in results if r["status"] == "FAIL" and r.get("expected")),
                   "needs_cluster": cluster},
        "bundle": header.get("bundle") or {},
        "trust": header.get("trust") or {},
        "signers": header.get("signers") or [],
        "audit_head": header.get("audit_head") or "",
        "registry": header.get("registry") or "",
        "legend": dict((c, {"section": CHECKS[c][0], "title": CHECKS[c][1], "legend": CHECKS[c][2]})
                       for c in used if c in CHECKS),
        "hosts": hosts,
        "failures": failures,
        "expected_failures": expected,
        "results": results,
    }


def _host_key(host):
    return (host != "controller", host)


def _check_key(check):
    order = list(CHECKS)
    return (order.index(check) if check in order else len(order), check)


def _signers(report):
    by_role = {}
    for s in report["signers"]:
        by_role.setdefault(s.get("role", "?"), []).append("%s (%s)" % (s.get("name") or "unnamed key", (s.get("keyid") or "")[:16]))
    return "; ".join("%s: %s" % (role, ", ".join(keys)) for role, keys in sorted(by_role.items())) or "none recorded"


def _where(f):
    if not f.get("source"):
        return ""
    return f["source"] if f.get("line") is None else "%s:%s" % (f["source"], f["line"])


def head_lines(report):
    """(label, value) rows of the report's header."""
    b = report["bundle"]
    return [
        ("Verdict", "%s: %d of %d checks failed on %d hosts, %d finding(s)%s" % (
            report["verdict"], report["counts"]["fail"], report["counts"]["checks"], report["counts"]["hosts"],
            report["counts"]["findings"], _also(report["counts"]))),
        ("Bundle", "%s %s (%s, sha256 %s)" % (b.get("name", "?"), b.get("version", "?"), b.get("file", "?"),
                                              (b.get("sha256") or "?")[:16])),
        ("Manifest", b.get("manifest_digest", "?")),
        ("Signers", _signers(report)),
        ("Audit head", report["audit_head"] or "none recorded"),
        ("Registry", report["registry"]),
        ("Generated", "%s, inventory %s" % (report["generated"], ", ".join(report["inventory"] or []))),
    ]


def _also(counts):
    parts = []
    if counts.get("expected_fail"):
        parts.append("%d FAIL expected on this site (listed below)" % counts["expected_fail"])
    if counts.get("needs_cluster"):
        parts.append("%d need a Kubernetes cluster" % counts["needs_cluster"])
    return "; " + "; ".join(parts) if parts else ""


def _cell(r):
    return "FAIL (expected)" if r["status"] == "FAIL" and r.get("expected") else r["status"]


def _matrix(report):
    """rows: (section, check, title, {host: status})"""
    cells = {}
    for r in report["results"]:
        cells.setdefault(r["check"], {})[r["host"]] = _cell(r)
    rows = []
    for check in sorted(cells, key=_check_key):
        section, title, _ = CHECKS.get(check, ("Other", check, ""))
        rows.append((section, check, title, cells[check]))
    return rows


def _evidence(r):
    ev = r.get("evidence") or []
    shown = ev[:EVIDENCE_SHOWN]
    more = len(ev) - len(shown)
    return shown, more


# --------------------------------------------------------------------------- Markdown

def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report):
    out = ["# airgap check: %s" % report["verdict"], ""]
    for label, value in head_lines(report):
        out.append("- **%s**: %s" % (label, _md(value)))
    out.append("")
    fails = report["failures"]
    out.append("## Failures (%d)" % len(fails))
    out.append("")
    if fails:
        out.append("| Node | Check | Where | Value | Why |")
        out.append("| --- | --- | --- | --- | --- |")
        for f in fails:
            why = f["reason"] + (" [%s]" % f["label"] if f.get("label") else "")
            out.append("| %s | %s | `%s` | `%s` | %s |" % (_md(f["host"]), _md(f["title"]), _md(_where(f)),
                                                          _md(f["value"]), _md(why)))
    else:
        out.append("None: every check passed on every host.")
    out.append("")
    exp = report.get("expected_failures") or []
    if exp:
        out.append("## Expected failures on this site (%d)" % len(exp))
        out.append("")
        out.append("FAIL, and declared expected by the inventory (check__haven_expected_failures): shown, not counted in the verdict.")
        out.append("")
        out.append("| Node | Check | Where | Value | Why | Expected because |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for f in exp:
            out.append("| %s | %s | `%s` | `%s` | %s | %s |" % (_md(f["host"]), _md(f["title"]), _md(_where(f)),
                                                              _md(f["value"]), _md(f["reason"]), _md(f["expected"])))
        out.append("")
    out.append("## Every check on every host")
    out.append("")
    hosts = report["hosts"]
    out.append("| Check | %s |" % " | ".join(hosts))
    out.append("| --- |%s" % (" --- |" * len(hosts)))
    section = None
    for sec, _check, title, cells in _matrix(report):
        if sec != section:
            out.append("| **%s** |%s" % (sec, " |" * len(hosts)))
            section = sec
        out.append("| %s | %s |" % (title, " | ".join(("**%s**" % cells[h] if cells.get(h, "").startswith("FAIL")
                                                      else cells.get(h, "-")) for h in hosts)))
    out.append("")
    out.append("Legend: " + "; ".join("**%s**: %s" % (v["title"], v["legend"]) for v in report["legend"].values()) + ".")
    out.append("")
    out.append("## Evidence (first %d items of each; every item is in the JSON report)" % EVIDENCE_SHOWN)
    for r in report["results"]:
        shown, more = _evidence(r)
        out.append("")
        out.append("- **%s / %s: %s**. %s%s" % (r["host"], r.get("title") or r["check"], r["status"], _md(r.get("summary", "")),
                                               (" (%d item(s))" % (len(shown) + more)) if shown else ""))
        for e in shown:
            out.append("  - `%s`" % str(e).replace("`", "'"))
        if more:
            out.append("  - ... %d more" % more)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:11pt/1.35 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:70em;color:#111;padding:0 1em}
h1{font-size:1.6em;margin:0 0 .4em}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #999}
.verdict{display:inline-block;padding:.1em .6em;border-radius:.2em;color:#fff;font-weight:700}
.PASS{background:#1a7f37}.FAIL{background:#c62828}
table{border-collapse:collapse;width:100%;margin:.3em 0}th,td{border:1px solid #bbb;padding:.2em .4em;text-align:left;vertical-align:top}
th{background:#eee}td.c{text-align:center}td.f{color:#c62828;font-weight:700}td.s{background:#f5f5f5;font-weight:700}
code{font:9.5pt ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:0}dt{font-weight:700}dd{margin:0}
ul{margin:.2em 0 .6em 1.2em;padding:0}.label{color:#555;font-size:.9em}
@media print{body{margin:0;max-width:none;font-size:9.5pt}h2{break-after:avoid}tr,li{break-inside:avoid}
.verdict{-webkit-print-color-adjust:exact;print-color-adjust:exact}a{color:inherit;text-decoration:none}}
"""


def _h(text):
    return html.escape(str(text), quote=True)


def html_page(report):
    v = report["verdict"]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>airgap check: %s</title>" % v, "<style>%s</style></head><body>" % CSS,
           '<h1>airgap check <span class="verdict %s">%s</span></h1>' % (v, v), "<dl>"]
    for label, value in head_lines(report):
        out.append("<dt>%s</dt><dd>%s</dd>" % (_h(label), _h(value)))
    out.append("</dl>")
    fails = report["failures"]
    out.append("<h2>Failures (%d)</h2>" % len(fails))
    if fails:
        out.append("<table><tr><th>Node</th><th>Check</th><th>Where</th><th>Value</th><th>Why</th></tr>")
        for f in fails:
            label = ('<br><span class="label">%s</span>' % _h(f["label"])) if f.get("label") else ""
            out.append("<tr><td>%s</td><td>%s</td><td><code>%s</code></td><td><code>%s</code></td><td>%s%s</td></tr>" % (
                _h(f["host"]), _h(f["title"]), _h(_where(f)), _h(f["value"]), _h(f["reason"]), label))
        out.append("</table>")
    else:
        out.append("<p>None: every check passed on every host.</p>")
    exp = report.get("expected_failures") or []
    if exp:
        out.append("<h2>Expected failures on this site (%d)</h2><p>FAIL, and declared expected by the inventory: "
                   "shown, not counted in the verdict.</p>" % len(exp))
        out.append("<table><tr><th>Node</th><th>Check</th><th>Where</th><th>Value</th><th>Why</th><th>Expected because</th></tr>")
        for f in exp:
            out.append("<tr><td>%s</td><td>%s</td><td><code>%s</code></td><td><code>%s</code></td><td>%s</td><td>%s</td></tr>" % (
                _h(f["host"]), _h(f["title"]), _h(_where(f)), _h(f["value"]), _h(f["reason"]), _h(f["expected"])))
        out.append("</table>")
    hosts = report["hosts"]
    out.append("<h2>Every check on every host</h2><table><tr><th>Check</th>%s</tr>" % "".join(
        "<th>%s</th>" % _h(h) for h in hosts))
    section = None
    for sec, _check, title, cells in _matrix(report):
        if sec != section:
            out.append('<tr><td class="s" colspan="%d">%s</td></tr>' % (len(hosts) + 1, _h(sec)))
            section = sec
        out.append("<tr><td>%s</td>%s</tr>" % (_h(title), "".join(
            '<td class="c%s">%s</td>' % (" f" if cells.get(h, "").startswith("FAIL") else "", _h(cells.get(h, "-")))
            for h in hosts)))
    out.append("</table><dl>")
    for item in report["legend"].values():
        out.append("<dt>%s</dt><dd>%s</dd>" % (_h(item["title"]), _h(item["legend"])))
    out.append("</dl><h2>Evidence</h2><p>The first %d items of each check; every item is in the JSON report.</p>" % EVIDENCE_SHOWN)
    for r in report["results"]:
        shown, more = _evidence(r)
        out.append("<p><b>%s / %s: %s</b>. %s</p><ul>" % (_h(r["host"]), _h(r.get("title") or r["check"]), _h(r["status"]),
                                                         _h(r.get("summary", ""))))
        out.extend("<li><code>%s</code></li>" % _h(e) for e in shown)
        if more:
            out.append("<li>... %d more</li>" % more)
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def summary_lines(report, paths):
    """What check.yml prints at its end: the verdict, the failures, where the reports are."""
    lines = ["%s -- %s" % (label, value) for label, value in head_lines(report)[:5]]
    for f in report["failures"]:
        lines.append("FAIL %s %s: %s %s -- %s%s" % (f["host"], f["check"], _where(f), f["value"], f["reason"],
                                                   (" [%s]" % f["label"]) if f.get("label") else ""))
    for f in report.get("expected_failures") or []:
        lines.append("FAIL (expected: %s) %s %s: %s %s -- %s" % (f["expected"], f["host"], f["check"], _where(f),
                                                                f["value"], f["reason"]))
    lines.append("Reports: %s" % ", ".join(paths))
    return lines


def to_json(report):
    return json.dumps(report, indent=2, sort_keys=True) + "\n"
