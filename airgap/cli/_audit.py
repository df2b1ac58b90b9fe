"""audit verify/show/head: reading the audit log."""

from __future__ import annotations

import json
from pathlib import Path

from airgap._internal.text import escape, plural
from airgap.cli._base import common_flags, emit, exit_codes, group
from airgap.exceptions import InputError, UsageError


def _audit_log_path(args) -> Path:
    if args.log:
        return Path(args.log)
    if args.state:
        return Path(args.state) / "audit.log"
    raise UsageError("give --log FILE or --state DIR")


def cmd_audit_verify(args) -> int:
    from airgap.anchored import FIRST_USE
    from airgap.audit import AuditLog, parse_head
    from airgap.trust.override import check_overrides

    path = _audit_log_path(args)
    anchor = parse_head(args.expect_head) if args.expect_head else None
    if anchor is None and not path.exists():
        raise InputError(f"{path}: no such audit log")
    log = AuditLog(path)
    policy = _officer_policy(args)
    count = log.verify(expect_head=anchor)
    checked = check_overrides(log.entries(), str(path), policy)
    data = {"log": str(path), "entries": count, "result": "intact", "overrides_checked": checked}
    human = f"INTACT: {path}: {plural(count, 'entry')}, hash chain unbroken"
    if anchor is not None:
        data["expected_head"] = f"{anchor[0]}:{anchor[1]}"
        human += f", entry {anchor[0]} is the anchored head"
    human += "\n" + _overrides_line(checked, policy)
    # A first use pins a policy with no history behind it: always shown, so a wiped
    # state directory that started over cannot pass for an old one.
    first = [e for e in log.entries() if e.action == FIRST_USE]
    data["first_use"] = [{"seq": e.seq, "time": e.time, **e.object} for e in first]
    for e in first:
        human += (f"\nfirst use: trust policy version {e.object.get('version')} (sha256 {e.object.get('sha256')}) "
                  f"pinned at entry {e.seq}, {e.time}, by {e.actor.user}@{e.actor.host}")
    emit(args, data, human)
    return 0


def _officer_policy(args):
    """The policy named by --trust (root signatures checked, expiry not: an old override is judged by it)."""
    if not getattr(args, "trust", None):
        return None
    from airgap.trust import TrustPolicy

    return TrustPolicy.load(args.trust, now=None)


def _overrides_line(checked: list[int], policy) -> str:
    if not checked:
        return "overrides: none in the log"
    by = (f"an officer key of {policy.artifact} (version {policy.version})" if policy is not None
          else "the key each records (give --trust POLICY to check that it is an officer's)")
    return f"overrides: {plural(len(checked), 'signed override')} checked, each signed by {by}: entries " \
           f"{', '.join(map(str, checked))}"


def cmd_audit_head(args) -> int:
    from airgap.audit import AuditLog, format_head

    path = _audit_log_path(args)
    if not path.exists():
        raise InputError(f"{path}: no such audit log")
    seq, digest = AuditLog(path).head()
    emit(args, {"log": str(path), "seq": seq, "head": digest}, format_head((seq, digest)))
    return 0


def cmd_audit_show(args) -> int:
    from airgap.audit import AuditLog, entries_by_key, format_entry
    from airgap.trust.override import check_overrides

    path = _audit_log_path(args)
    if not path.exists():
        raise InputError(f"{path}: no such audit log")
    entries = list(AuditLog(path).entries())
    policy = _officer_policy(args)
    checked = check_overrides(entries, str(path), policy)
    shown = entries_by_key(entries, args.keyid, str(path)) if args.keyid else entries
    if args.json:
        print(json.dumps([e.to_dict() if hasattr(e, "to_dict") else e.__dict__ for e in shown], indent=2, sort_keys=True, default=str))
    elif args.quiet:
        print(f"{plural(len(shown), 'entry')} of {len(entries)} in {escape(str(path))}, hash chain unbroken")
    else:
        for e in shown:
            print(escape(format_entry(e)))
        if checked:
            print(escape(_overrides_line(checked, policy)))
    return 0


def add_audit(top) -> None:
    sub = group(top, "audit", "audit_command", help="show or verify the audit log")
    add_audit_verify(sub)
    add_audit_show(sub)
    add_audit_head(sub)


def _audit_action(sub, name: str, func, help_: str, done: str):
    rejected = "the hash chain is broken, an override's signature does not hold" + (", or the log no longer holds --expect-head" if name == "verify" else "")
    p = sub.add_parser(name, help=help_, epilog=exit_codes(done, rejected, "no --log or --state, no log there"))
    p.add_argument("--log", help="audit log file")
    p.add_argument("--state", help="state directory (log at STATE/audit.log)")
    if name != "head":
        p.add_argument("--trust", metavar="POLICY",
                       help="trust policy: every override entry must be signed by one of its officer keys "
                            "(without it, by the key the entry records)")
    p.set_defaults(func=func)
    return p


def add_audit_verify(sub) -> None:
    p = _audit_action(sub, "verify", cmd_audit_verify, "check the hash chain; names the first broken entry", "intact")
    p.add_argument("--expect-head", metavar="SEQ:HASH",
                   help="a head printed earlier by 'airgap audit head' and kept elsewhere: exit 1 unless "
                        "the log still holds exactly that entry (not cut, deleted or forked)")
    common_flags(p)


def add_audit_show(sub) -> None:
    p = _audit_action(sub, "show", cmd_audit_show, "print the entries (after checking the chain)", "shown")
    p.add_argument("--keyid", help="only the entries made with this key (8+ hex digits suffice if unique)")
    common_flags(p)


def add_audit_head(sub) -> None:
    p = _audit_action(sub, "head", cmd_audit_head, "print SEQ:HASH of the last entry, to keep outside the box", "printed")
    common_flags(p)
