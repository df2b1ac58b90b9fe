"""What every verb shares: the parser class, output, keys, common flags, reporting errors.

Private to :mod:`airgap.cli`; nothing here does a verb's work.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap._internal.fsutil import record_names
from airgap._internal.text import escape, escape_lines
from airgap.exceptions import AirgapError, InputError, UsageError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors: keep that, say it our way
        self.print_usage(sys.stderr)
        print(f"airgap: usage error: {message}", file=sys.stderr)
        raise SystemExit(2)


def emit(args, data: dict[str, Any], human: str, summary: str | None = None) -> None:
    """*data* as JSON with --json; else *human*, or with --quiet only *summary* (default: its first line)."""
    if getattr(args, "json", False):
        print(json.dumps(record_names(data), indent=2, sort_keys=True))
    elif getattr(args, "quiet", False):
        line = summary if summary is not None else human.split("\n", 1)[0]
        if line:
            print(escape(line))
    elif human:
        print(escape_lines(human))


def show_progress(args) -> bool:
    from airgap._internal.progress import wanted

    return wanted(getattr(args, "quiet", False) or getattr(args, "json", False))


OPEN_KEYS: list[Any] = []  # token sessions, closed when the verb ends (closing the last one logs out)


def key_options(args) -> dict[str, dict[str, str]]:
    """Which --passphrase-file / --pin-file belongs to which key argument.

    Each belongs to the key argument just before it; one given before any key
    argument belongs to the first.
    """
    per_key: dict[str, dict[str, str]] = {}
    pending: list[tuple[str, str]] = []
    last: str | None = None
    for kind, value in getattr(args, "_key_seq", None) or []:
        if kind == "key":
            last = value
            per_key.setdefault(value, {})
            for k, v in pending:
                per_key[value][k] = v
            pending = []
            continue
        if last is None:
            if any(k == kind for k, _ in pending):
                raise UsageError(f"--{kind.replace('_', '-')} given twice before the first key argument")
            pending.append((kind, value))
            continue
        if kind in per_key[last]:
            raise UsageError(f"--{kind.replace('_', '-')} given twice for key {last} (it belongs to the key argument before it)")
        per_key[last][kind] = value
    if pending:
        raise UsageError(f"--{pending[0][0].replace('_', '-')} given, but no key argument to unlock")
    return per_key


def load_key(args, ref: str):
    """Every verb loads private keys here: key files and pkcs11: URIs alike."""
    from airgap.keys import KeyOptions, load_signing_key

    options = key_options(args).get(ref, {})
    key = load_signing_key(ref, KeyOptions(**options, pkcs11_module=getattr(args, "pkcs11_module", None)))
    if hasattr(key, "close"):
        OPEN_KEYS.append(key)
    return key


def close_keys() -> None:
    while OPEN_KEYS:
        OPEN_KEYS.pop().close()


def utc_now() -> datetime:
    return datetime.now(UTC)


def common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document for automation")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only the result line: no progress bars, no listing, no notes (errors still go to stderr)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


DEBUG_HELP = ("log registry requests, redirects and token realms (and where credentials go) to stderr, "
               "and show the traceback of an internal error (also AIRGAP_DEBUG=1)")


def force_flag(p: argparse.ArgumentParser, what: str = "an existing output") -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what} (without --force: refused, exit 2)")


def exit_codes(done: str, rejected: str | None, usage: str = "") -> str:
    """The epilog every verb carries; tests hold each verb to the codes it names."""
    codes = [f"0 {done}"] + ([f"1 {rejected}"] if rejected else [])
    codes.append("2 usage or input error" + (f" ({usage})" if usage else ""))
    return "Exit codes: " + "; ".join(codes) + "."


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


class KeyArg(argparse.Action):
    """A private key argument (file or pkcs11: URI); remembers its position so that
    the --passphrase-file / --pin-file after it belong to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.default == []:  # repeatable
            setattr(namespace, self.dest, [*getattr(namespace, self.dest), values])
        else:
            setattr(namespace, self.dest, values)
        namespace._key_seq = [*(getattr(namespace, "_key_seq", None) or []), ("key", values)]


class UnlockArg(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace._key_seq = [*(getattr(namespace, "_key_seq", None) or []), (self.dest, values)]


def key_flags(p: argparse.ArgumentParser, flag: str = "--key", *, required: bool = False, repeat: bool = False,
               help: str = "private key: a key file or a pkcs11: URI (RFC 7512)") -> None:
    p.add_argument(flag, action=KeyArg, required=required, default=[] if repeat else None,
                   metavar="KEY", help=help + (" (repeat)" if repeat else ""))
    unlock_flags(p)


def unlock_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", action=UnlockArg, metavar="FILE",
                   help="file whose first line is the passphrase of the key argument before it")
    p.add_argument("--pin-file", action=UnlockArg, metavar="FILE",
                   help="file whose first line is the token PIN for the pkcs11: key argument before it")
    p.add_argument("--pkcs11-module", metavar="PATH",
                   help="PKCS#11 module of the token (default $AIRGAP_PKCS11_MODULE or the URI's module-path)")


def source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--auth-file", metavar="FILE",
                   help="registry credentials (auths.<host[:port]>, as podman/skopeo/docker write them); default: "
                        "$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, "
                        "~/.docker/config.json")
    p.add_argument("--min-rate", metavar="RATE",
                   help="abandon a transfer slower than this (default 100KiB/s; every request gets at least 30 s)")


def registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true", help="allow HTTP (no TLS) to the registries of this run (loopback tests)")
    p.add_argument("--ca-file", help="CA certificate bundle for registry TLS")


def login_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", help="registry user (with --password-file)")
    p.add_argument("--password-file", metavar="FILE", help="file holding the registry password (never on the command line)")


def override_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-expired", action="store_true",
                   help="officer override: accept an expired bundle or trust policy (needs --reason and --override-key; audited)")
    p.add_argument("--reason", help="the officer's written reason for the override (goes to the audit log)")
    key_flags(p, "--override-key", help="the officer's private key that signs the override: key file or pkcs11: URI")


def review_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--against", metavar="PREVIOUS", help="compare with this bundle (file or media parts) instead of "
                                                          "the history")
    p.add_argument("--history", metavar="DIR", help="the officer's record of signed bundles (default: review-history/ "
                                                    "next to --trust); sign keeps each bundle it signs there")


def verified_output_flags(p: argparse.ArgumentParser, force_help: str) -> None:
    """A verb that verifies BUNDLE, then writes what it carries into a directory."""
    p.add_argument("bundle", help="bundle tar, parts index or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("-o", "--output", required=True, help="directory to write (must not exist, unless --force)")
    p.add_argument("--state", help="state directory: also refuse a rollback; audit the run in STATE/audit.log")
    p.add_argument("--force", action="store_true", help=force_help)
    common_flags(p)


def source_limits(args):
    from airgap.registry import Limits, parse_rate

    return Limits(min_rate=parse_rate(args.min_rate)) if args.min_rate else None


def login_credentials(args) -> tuple[str, str] | None:
    if not getattr(args, "username", None):
        if getattr(args, "password_file", None):
            raise UsageError("--password-file goes with --username")
        return None
    if not args.password_file:
        raise UsageError("--username needs --password-file (passwords never go on the command line)")
    try:
        password = Path(args.password_file).read_text().rstrip("\n")
    except OSError as exc:
        raise InputError(f"{args.password_file}: cannot read: {exc.strerror}") from None
    return args.username, password


def override_of(args):
    if not args.allow_expired:
        if args.reason or args.override_key:
            raise UsageError("--reason and --override-key go with --allow-expired")
        return None
    if not args.reason or not args.override_key:
        raise UsageError("--allow-expired needs --reason \"...\" and --override-key <officer key>")
    from airgap.trust import Override

    return Override(reason=args.reason, signing_key=load_key(args, args.override_key))


def confirm(args, question: str, refusal: str, *, typed_yes: bool = False) -> bool:
    """--yes, or a terminal answer; without a terminal the refusal is a usage error (exit 2)."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(refusal)
    answer = input(question).strip().lower()
    return answer == "yes" if typed_yes else answer in ("y", "yes")


def show_plan(args, plan) -> None:
    """The plan is shown unless it is not wanted (--json) or nobody will be asked (--quiet with --yes)."""
    if not args.json and not (args.quiet and args.yes):
        print(escape_lines(plan.describe()))


def history_dir(args) -> str | None:
    """--history, else review-history/ next to --trust (only a policy can judge the records)."""
    if args.history:
        return args.history
    if args.trust:
        from airgap.history import default_dir

        return str(default_dir(args.trust))
    return None


def signers(args, refs: list[str]) -> list:
    from airgap.keyroles import Signer

    return [Signer(load_key(args, r), r) for r in refs]


def print_report(args, report, error: AirgapError | None) -> None:
    if args.json:
        print(json.dumps(record_names(report.to_dict()), indent=2, sort_keys=True))
        return
    marks = {"pass": "PASS", "fail": "FAIL", "skipped": "skip", "overridden": "OVERRIDE"}
    if not args.quiet:
        for c in report.checks:
            detail = f"{c.artifact}: {c.detail}" if c.artifact else c.detail
            print(f"  {marks.get(c.status, c.status):8} {c.name:13} {escape(detail)}")
        if report.media:  # read from media parts: who signed the part index (or that nobody did)
            mark = "note" if report.media.endswith("index unsigned") else "PASS"
            print(f"  {mark:8} {'media-index':13} {escape(report.media)}")
    if error is None:
        m = report.manifest
        print(f"VERIFIED: {m.name} {m.version} (manifest {m.digest})")
    else:
        print(f"REJECTED: {escape(str(error))}", file=sys.stderr)


def refused(args, exc: AirgapError) -> int:
    """A refusal that carries verification's report: the checks say where (else it goes to :func:`main`)."""
    report = getattr(exc, "report", None)
    if report is None:
        raise exc
    print_report(args, report, exc)
    print_notes(exc)
    return exc.exit_code


def report_error(args, exc: AirgapError) -> int:
    """Say what failed (as JSON too with --json) and return the verb's exit code."""
    if getattr(args, "json", False):
        print(json.dumps({"result": "error", **exc.to_dict()}, indent=2, sort_keys=True))
    print(f"airgap: {escape(str(exc))}", file=sys.stderr)
    print_notes(exc)
    return exc.exit_code


def print_notes(exc: BaseException) -> None:
    """What the library added to an error on its way out (an audit entry it could not write)."""
    for note in getattr(exc, "__notes__", ()):
        print(escape(note), file=sys.stderr)


def group(top, name: str, dest: str, **kwargs):
    """A verb with actions (``airgap trust init``): its parser under *top*, and the sub-parsers of its actions."""
    p = top.add_parser(name, **kwargs)
    sub = p.add_subparsers(dest=dest, metavar="ACTION", parser_class=Parser)
    sub.required = True
    return sub
