"""The ``airgap`` command.  Parses arguments and calls the library; nothing else.

Exit codes, for every verb: 0 accepted / done, 1 rejected or failed, 2 usage or
unreadable input.  ``--json`` prints one JSON document on stdout; human output
goes to stdout, progress bars and errors to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from airgap import __version__

if TYPE_CHECKING:
    import logging
from airgap._internal.fsutil import check_output, display, os_error, record_names
from airgap._internal.text import article, escape, escape_lines, plural
from airgap.exceptions import AirgapError, InputError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors: keep that, say it our way
        self.print_usage(sys.stderr)
        print(f"airgap: usage error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _emit(args, data: dict[str, Any], human: str, summary: str | None = None) -> None:
    """*data* as JSON with --json; else *human*, or with --quiet only *summary* (default: its first line)."""
    if getattr(args, "json", False):
        print(json.dumps(record_names(data), indent=2, sort_keys=True))
    elif getattr(args, "quiet", False):
        line = summary if summary is not None else human.split("\n", 1)[0]
        if line:
            print(escape(line))
    elif human:
        print(escape_lines(human))


def _progress(args) -> bool:
    from airgap._internal.progress import wanted

    return wanted(getattr(args, "quiet", False) or getattr(args, "json", False))


_OPEN_KEYS: list[Any] = []  # token sessions, closed when the verb ends (closing the last one logs out)


def _key_options(args) -> dict[str, dict[str, str]]:
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


def _load_key(args, ref: str):
    """Every verb loads private keys here: key files and pkcs11: URIs alike."""
    from airgap.keys import KeyOptions, load_signing_key

    options = _key_options(args).get(ref, {})
    key = load_signing_key(ref, KeyOptions(**options, pkcs11_module=getattr(args, "pkcs11_module", None)))
    if hasattr(key, "close"):
        _OPEN_KEYS.append(key)
    return key


def _close_keys() -> None:
    while _OPEN_KEYS:
        _OPEN_KEYS.pop().close()


def _actor(keyid: str | None = None) -> dict[str, Any]:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name is not a reason to fail
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(), "keyid": keyid}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _audit(args, action: str, obj: dict, result: str, *, keyid=None, detail=None) -> None:
    log = _audit_target(args)
    if not log:
        return
    from airgap.audit import AuditLog

    try:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, Path(log).parent, "make the audit log's directory") from None
    AuditLog(log).append(action, record_names(obj), result, actor=_actor(keyid), detail=record_names(detail or {}))


def _audit_target(args) -> Path | None:
    """The log a verb audits to: with --state always STATE/audit.log, the state's own history."""
    given, state = getattr(args, "audit_log", None), getattr(args, "state", None)
    if state is None:
        return Path(given) if given else None
    log = Path(state) / "audit.log"
    if given and os.path.abspath(given) != os.path.abspath(log):
        raise UsageError(f"--audit-log {given}: with --state the audit log is {log}, the history the state is "
                         "a cache of; leave --audit-log out")
    return log


def _audit_refusal(args, action: str, obj: dict, exc: BaseException) -> None:
    """Record a refusal (or a failure) in the audit log; a log that cannot be written is said, not hidden."""
    exit_code = getattr(exc, "exit_code", 1)
    error = str(exc) if isinstance(exc, AirgapError) else f"{type(exc).__name__}: {exc}"
    try:
        _audit(args, action, obj, "rejected" if exit_code == 1 else "error", detail={"error": error})
    except (AirgapError, OSError) as log_exc:
        print(f"airgap {action}: the audit entry for this refusal could not be written: {log_exc}", file=sys.stderr)


# --------------------------------------------------------------------------- verbs


def cmd_keygen(args) -> int:
    from airgap.keys import PassphraseSource, check_keygen, keygen, load_public

    if args.pkcs11:
        return _keygen_on_token(args)
    if args.pin_file:
        raise UsageError("--pin-file goes with --pkcs11 URI")
    if args.no_passphrase and args.passphrase_file:
        raise UsageError("--no-passphrase and --passphrase-file exclude each other")
    check_keygen(args.name, args.dir, force=args.force)  # before asking for a passphrase
    passphrase = None if args.no_passphrase else PassphraseSource.for_key(
        Path(args.dir) / f"{args.name}.key", args.passphrase_file, label=args.name, confirm=True)()
    key_path, pub_path = keygen(args.name, args.dir, passphrase, force=args.force)
    pub = load_public(pub_path)
    data = {"private_key": str(key_path), "public_key": str(pub_path), "keyid": pub.keyid, "encrypted": passphrase is not None}
    human = f"wrote {key_path} (0600, {'encrypted' if passphrase else 'NOT ENCRYPTED'}) and {pub_path}\nkeyid {pub.keyid}"
    _emit(args, data, human)
    return 0


def _limits(args):
    from airgap.registry import Limits, parse_rate

    return Limits(min_rate=parse_rate(args.min_rate)) if args.min_rate else None


def _keygen_on_token(args) -> int:
    from airgap import pkcs11
    from airgap.keys import keygen_check_name, write_public

    if args.no_passphrase or args.passphrase_file:
        raise UsageError("a key made on a token has no passphrase: it is guarded by the token's PIN (--pin-file)")
    keygen_check_name(args.name)
    pub_path = check_output(Path(args.dir) / f"{args.name}.pub", force=args.force)
    pub, uri = pkcs11.generate(args.pkcs11, args.name, module=args.pkcs11_module, pin_file=args.pin_file)
    write_public(pub_path, pub, overwrite=args.force)
    data = {"private_key": uri, "public_key": str(pub_path), "keyid": pub.keyid, "on_token": True, "extractable": False}
    _emit(args, data, f"generated an Ed25519 key pair on the token (private key sensitive, not extractable)\n"
                      f"wrote {pub_path}\nkeyid {pub.keyid}\nsign with: --key '{uri}'")
    return 0


def cmd_key_export(args) -> int:
    from airgap import pkcs11
    from airgap.keys import is_pkcs11_uri, write_public

    out = check_output(args.output, force=args.force)
    if is_pkcs11_uri(args.key):
        opts = _key_options(args).get(args.key, {})
        if "passphrase_file" in opts:
            raise UsageError("--passphrase-file is for key files; a token key takes --pin-file")
        pub = pkcs11.export_public(args.key, module=args.pkcs11_module, pin_file=opts.get("pin_file"), name=args.name)
    else:
        key = _load_key(args, args.key)
        pub = key.public_key.with_name(args.name or key.name or Path(args.key).stem)
    write_public(out, pub, overwrite=args.force)
    _emit(args, {"public_key": str(out), "keyid": pub.keyid, "name": pub.name}, f"wrote {out} ({pub.name})\nkeyid {pub.keyid}")
    return 0


def cmd_build(args) -> int:
    from airgap import build

    limits = _limits(args)
    key = _load_key(args, args.key)
    result = build.build(
        args.spec,
        args.output,
        key,
        plain_http=args.plain_http,
        ca_file=args.ca_file,
        auth_file=args.auth_file,
        limits=limits,
        created=args.created,
        since=args.since,
        workers=args.jobs,
        progress=_progress(args),
        force=args.force,
        apt_sources=args.apt_sources,
        apt_baseline=args.apt_baseline,
    )
    m = result.manifest
    data = {
        "bundle": str(result.path),
        "name": m.name,
        "version": m.version,
        "manifest_digest": m.digest,
        "images": [{"ref": i.ref, "digest": i.digest} for i in m.images],
        "blob_bytes": result.blob_bytes,
        "external_blobs": result.external_blobs,
        "signed_by": key.public_key.keyid,
        "warnings": list(result.warnings),
    }
    for w in result.warnings:
        print(f"airgap: warning: {w}", file=sys.stderr)
    lines = [f"built {result.path}: {m.name} {m.version} ({plural(len(m.images), 'image')}, "
             f"{plural(len(m.members), 'member')})"]
    lines += [f"  {i.ref} -> {i.digest}" for i in m.images]
    if result.external_blobs:
        lines.append(f"  differential: {plural(result.external_blobs, 'blob')} left out (present at the base)")
    lines.append(f"manifest {m.digest}, signed by builder key {key.public_key.keyid[:16]}")
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_inspect(args) -> int:
    from airgap import inspect

    if args.sbom:
        if args.trust:
            raise UsageError("--sbom shows packages; give --trust without --sbom to see signatures")
        d = inspect.sbom_summary(args.bundle)
        _emit(args, d, inspect.format_sbom(d))
        return 0
    s = inspect.summary(args.bundle, trust_path=args.trust, against=args.against, history_dir=_history_dir(args))
    _emit(args, s, inspect.format_summary(s))
    return 0


def cmd_diff(args) -> int:
    from airgap import inspect

    d = inspect.diff(args.a, args.b)
    _emit(args, d, inspect.format_diff(d), inspect.diff_summary(d))
    return 0


def _show_plan(args, plan) -> None:
    """The plan is shown unless it is not wanted (--json) or nobody will be asked (--quiet with --yes)."""
    if not args.json and not (args.quiet and args.yes):
        print(escape_lines(plan.describe()))


def _confirm(args, question: str, refusal: str, *, typed_yes: bool = False) -> bool:
    """--yes, or a terminal answer; without a terminal the refusal is a usage error (exit 2)."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(refusal)
    answer = input(question).strip().lower()
    return answer == "yes" if typed_yes else answer in ("y", "yes")


UNCHECKED_KEY = ("airgap: warning: no --trust given, so {key} cannot be checked: a signature by a key that is not "
                 "an officer key of the trust policy is no officer's approval, and one by an unknown, revoked or "
                 "root-only key makes every verify reject the bundle until 'airgap unsign' removes it. "
                 "Give --trust TRUST.json to check the key first.")


def _history_dir(args) -> str | None:
    """--history, else review-history/ next to --trust (only a policy can judge the records)."""
    if args.history:
        return args.history
    if args.trust:
        from airgap.history import default_dir

        return str(default_dir(args.trust))
    return None


def _approve_signing(args, plan, key) -> bool:
    """The code first (its own typed yes), then the signature; --yes answers both."""
    name = f"{plan.manifest.name} {plan.manifest.version}"
    if not args.trust:
        print(UNCHECKED_KEY.format(key=args.key), file=sys.stderr)
    code = plan.code_to_approve
    if code and not _confirm(args, f"{plural(len(code), 'item')} marked CODE above will run as code on the isolated "
                                   f"hosts ({', '.join(i.name for i in code[:3])}{', …' if len(code) > 3 else ''}). "
                                   "Type 'yes' to approve them: ",
                             "refusing to sign: the bundle adds or changes code that runs on the isolated hosts "
                             "(marked CODE in the plan); approve it on a terminal or pass --yes", typed_yes=True):
        print("not signed: the code was not approved", file=sys.stderr)
        return False
    if args.trust:
        ok = _confirm(args, f"Sign {name} with {key.public_key.label}? [y/N] ",
                      "refusing to sign without confirmation: run on a terminal or pass --yes")
    else:
        ok = _confirm(args, f"Sign {name} with the unchecked key {key.public_key.label}? Type 'yes': ",
                      "refusing to sign with a key whose role was not checked: give --trust TRUST.json "
                      "(or --yes to sign unchecked)", typed_yes=True)
    if not ok:
        print("not signed", file=sys.stderr)
    return ok


def cmd_sign(args) -> int:
    from airgap import sign

    sign.check_bundle_file(args.bundle, "sign")  # media parts are refused before a passphrase is asked
    key = _load_key(args, args.key)
    plan = sign.prepare(args.bundle, key, key_source=args.key, trust_path=args.trust, now=_now(),
                        against=args.against, history_dir=_history_dir(args))
    _show_plan(args, plan)
    if not _approve_signing(args, plan, key):
        return 1
    env = plan.commit()
    status = plan.thresholds(env)
    try:
        kept = plan.record()
    except (AirgapError, OSError) as exc:
        kept = None
        print(f"airgap: warning: signed, but the review history was not updated: {exc}", file=sys.stderr)
    data = {"bundle": str(args.bundle), "manifest_digest": plan.manifest.digest, "keyid": key.public_key.keyid,
            "signatures": plan.signature_count, "key_checked": bool(args.trust), "thresholds": status,
            "review": plan.review.to_dict(), "history_record": str(kept) if kept else None}
    human = f"signed: {plural(plan.signature_count, 'signature')} on {args.bundle}" + (f" ({status})" if status else "")
    if kept:
        human += f"\nkept for the next review: {kept}"
    _emit(args, data, human)
    return 0


def cmd_unsign(args) -> int:
    from airgap import sign

    plan = sign.prepare_unsign(args.bundle, args.keyid, trust_path=args.trust)
    _show_plan(args, plan)
    removed = plan.removed
    if not _confirm(args, f"Remove signature {plan.index + 1} (keyid {removed.keyid[:16]}…) from "
                          f"{plan.manifest.name} {plan.manifest.version}? [y/N] ",
                    "refusing to remove a signature without confirmation: run on a terminal or pass --yes"):
        print("nothing removed", file=sys.stderr)
        return 1
    env = plan.commit()
    status = plan.thresholds(env)
    data = {"bundle": str(args.bundle), "manifest_digest": plan.manifest.digest, "removed_keyid": removed.keyid,
            "signatures": len(env.signatures), "thresholds": status}
    human = (f"removed the signature by {removed.keyid[:16]}… from {args.bundle}: {len(env.signatures)} left"
             + (f" ({status})" if status else ""))
    _emit(args, data, human)
    return 0


def _override(args):
    if not args.allow_expired:
        if args.reason or args.override_key:
            raise UsageError("--reason and --override-key go with --allow-expired")
        return None
    if not args.reason or not args.override_key:
        raise UsageError("--allow-expired needs --reason \"...\" and --override-key <officer key>")
    from airgap.trust import Override

    return Override(reason=args.reason, signing_key=_load_key(args, args.override_key))


def _print_report(args, report, error: AirgapError | None) -> None:
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


def _verified(args, action: str, **kw):
    """Run verify for a verb; on a refusal print the report (and audit it): (verified, None) or (None, exit code)."""
    from airgap import verify

    obj = {"bundle": args.bundle}
    try:
        verified = verify.verify(args.bundle, trust_path=args.trust, state_dir=getattr(args, "state", None), now=_now(),
                                 progress=_progress(args), **kw)
    except AirgapError as exc:
        _audit_refusal(args, action, obj, exc)
        report = getattr(exc, "report", None)
        if report is None:
            raise
        _print_report(args, report, exc)
        return None, exc.exit_code
    except Exception as exc:
        _audit_refusal(args, action, obj, exc)
        raise
    return verified, None


def cmd_verify(args) -> int:
    from airgap import anchored

    if args.record and not args.state:
        raise UsageError("--record needs --state DIR")
    _audit_target(args)
    verified, code = _verified(args, "verify", override=_override(args))
    if verified is None:
        return code
    with verified:
        report, m = verified.report, verified.manifest
        obj = {"bundle": args.bundle, "name": m.name, "version": m.version, "manifest": m.digest}
        if args.record:
            # Overrides, a first use of the policy and the acceptance are audit entries
            # written before the state they stamp (airgap.anchored).
            try:
                anchored.commit(args.state, verified, "verify", obj, {"recorded": True})
            except Exception as exc:
                _audit_refusal(args, "verify", obj, exc)
                raise
        else:
            for o in report.overrides:
                _audit(args, "override", {"bundle": args.bundle, "manifest": m.digest}, "accepted", keyid=o["keyid"], detail=o)
            _audit(args, "verify", obj, "accepted", detail={"recorded": False})
        _print_report(args, report, None)
    return 0


def cmd_extract(args) -> int:
    from airgap import extract

    _audit_target(args)
    out = extract.check_output(args.output, force=args.force)
    verified, code = _verified(args, "extract", hash_content=False)
    if verified is None:
        return code
    with verified:
        m = verified.manifest
        try:
            result = extract.extract(verified, out, prefixes=args.member, force=args.force)
        except AirgapError as exc:
            _audit_refusal(args, "extract", {"bundle": args.bundle, "output": args.output}, exc)
            raise
        _audit(args, "extract", {"bundle": args.bundle, "name": m.name, "version": m.version, "manifest": m.digest,
                                 "output": args.output}, "accepted", detail={"members": len(result.written)})
    data = {"result": "accepted", "bundle": args.bundle, "name": m.name, "version": m.version, "manifest_digest": m.digest,
            "output": args.output, "members": result.written}
    _emit(args, data, f"EXTRACTED: {plural(len(result.written), 'member')} of {m.name} {m.version} (manifest {m.digest}) into {display(out)}, "
                      "each checked against the verified manifest as it was written")
    return 0


def _role_args(args) -> dict[str, Any]:
    return {
        "roots": args.root, "root_threshold": args.root_threshold,
        "builders": args.builder, "builder_threshold": args.builder_threshold,
        "officers": args.officer, "officer_threshold": args.officer_threshold,
        "toolkit": args.toolkit, "toolkit_threshold": args.toolkit_threshold,
        "bundles": args.bundles,
    }


def _signers(args, refs: list[str]) -> list:
    from airgap.keyroles import Signer

    return [Signer(_load_key(args, r), r) for r in refs]


def _policy_written(args, policy, path: str, done: str, previous=None, previous_path: str | None = None) -> None:
    from airgap.keyroles import RootStatus

    status = RootStatus.of(policy, previous)
    hint = status.hint(path, previous_path)
    _emit(args, {"trust": path, "version": policy.version, "target": policy.target, **status.to_dict()},
          f"{done}: trust policy version {policy.version} for {policy.target}\n{policy.describe()}"
          + (f"\n{hint}" if hint else ""))


def cmd_trust_init(args) -> int:
    from airgap import trust

    check_output(args.output, force=args.force)
    policy = trust.init_policy(
        target=args.target,
        expires=args.expires,
        **_role_args(args),
        signing_keys=_signers(args, args.key),
        now=_now(),
    )
    policy.write(args.output, overwrite=args.force)
    _policy_written(args, policy, args.output, f"wrote {args.output}")
    return 0


def cmd_trust_rotate(args) -> int:
    from airgap import trust

    check_output(args.output, force=args.force)
    old = trust.TrustPolicy.load(args.policy, now=None)
    new = trust.rotate_policy(
        old,
        expires=args.expires,
        **_role_args(args),
        revoke=args.revoke,
        signing_keys=_signers(args, args.key),
        now=_now(),
    )
    new.write(args.output, overwrite=args.force)
    _policy_written(args, new, args.output, f"wrote {args.output}", old, args.policy)
    return 0


def cmd_trust_sign(args) -> int:
    """A root officer adds a signature to a policy (offline keys sign one at a time)."""
    from airgap import trust

    policy = trust.TrustPolicy.from_file(args.policy)
    previous = trust.TrustPolicy.load(args.successor_of, now=None) if args.successor_of else None
    signer = _signers(args, [args.key])[0]
    trust.sign_policy(policy, signer, previous=previous)
    policy.write(args.policy)
    _policy_written(args, policy, args.policy, f"signed {args.policy} with {signer.public_key.label}",
                    previous, args.successor_of)
    return 0


def cmd_trust_show(args) -> int:
    from airgap import trust

    policy = trust.TrustPolicy.load(args.policy, now=_now() if not args.ignore_expiry else None)
    if args.keyid:
        key = trust.describe_key(policy, args.keyid)
        _emit(args, key, trust.format_key(key))
        return 0
    _emit(args, policy.to_dict(), policy.describe())
    return 0


def _statement_lines(statement, policy, path: str) -> tuple[dict[str, Any], list[str]]:
    release = statement.release
    lines = [f"toolkit release {release.short}"]
    lines += [f"  {w.file}  {plural(w.size, 'byte')}  sha256:{w.sha256}" for w in release.wheels]
    data: dict[str, Any] = {"release": path, **release.to_dict(), "signatures": len(statement.envelope.signatures)}
    if policy is not None:
        report = statement.report(policy)
        role = report.roles["toolkit"]
        data.update(thresholds=report.to_dict(), complete=report.ok)
        lines.append(f"  signed: {statement.status(policy)}")
        if not report.ok and role.missing:
            lines.append(f"INCOMPLETE: {role.missing} more toolkit {'signature' if role.missing == 1 else 'signatures'} "
                         "needed before any isolated host "
                         f"installs these wheels; each toolkit key holder runs: airgap toolkit sign {path} "
                         f"--key <toolkit key> --trust {policy.artifact}")
    return data, lines


def cmd_toolkit_release(args) -> int:
    from airgap import toolkit, trust

    if args.key and not args.trust:
        raise UsageError("--key needs --trust TRUST.json, so the key is checked to be a toolkit key of the policy")
    check_output(args.output, force=args.force)
    release = toolkit.make_release(args.wheels, args.version, args.commit)
    statement = toolkit.ReleaseStatement.unsigned(release, args.output)
    policy = trust.TrustPolicy.load(args.trust, now=_now()) if args.trust else None
    return _sign_statement(args, statement, policy, _signers(args, args.key), args.output, f"wrote {args.output}",
                           overwrite=args.force)


def _sign_statement(args, statement, policy, signers: list, path: str, done: str, *, overwrite: bool = True) -> int:
    """Every signer is checked before anything is written (a refusal leaves the file as it was)."""
    for signer in signers:
        statement.sign(policy, signer)
    statement.write(path, overwrite=overwrite)
    data, lines = _statement_lines(statement, policy, path)
    _emit(args, data, "\n".join([done, *lines]))
    return 0


def cmd_toolkit_sign(args) -> int:
    from airgap import toolkit, trust

    statement = toolkit.ReleaseStatement.from_file(args.release)
    policy = trust.TrustPolicy.load(args.trust, now=_now())
    signer = _signers(args, [args.key])[0]
    return _sign_statement(args, statement, policy, [signer], args.release,
                           f"signed {args.release} with {signer.public_key.label}")


def cmd_toolkit_verify(args) -> int:
    from airgap import toolkit, trust

    statement = toolkit.ReleaseStatement.from_file(args.release)
    policy = trust.TrustPolicy.load(args.trust, now=_now())
    statement.verify(policy)
    data, lines = _statement_lines(statement, policy, args.release)
    if args.wheels:
        problems = toolkit.check_wheels_dir(statement.release, args.wheels)
        if problems:
            raise toolkit.ToolkitRefused(args.wheels, problems)
        lines.append(f"  every wheel in {args.wheels} is listed with its size and sha256, and every listed wheel is there")
    data["result"] = "verified"
    _emit(args, data, "\n".join([*lines, f"VERIFIED: toolkit release {statement.release.version} ({args.release})"]))
    return 0


def cmd_toolkit_wheels(args) -> int:
    from airgap import toolkit_wheels, trust

    if (args.bundle is None) == (args.release is None):
        raise UsageError("give a bundle or --release DIR (one of them)")
    check_output(args.output, force=args.force, directory=True)
    if args.release:
        policy = trust.TrustPolicy.load(args.trust, now=_now())
        result = toolkit_wheels.from_release_dir(args.release, policy, args.output)
    else:
        result = toolkit_wheels.from_bundle(args.bundle, trust_path=args.trust, state_dir=args.state, now=_now(),
                                            out=args.output, progress=_progress(args))
    r = result.release
    _emit(args, {"result": "written", **result.to_dict()},
          f"wrote the {plural(len(result.wheels), 'wheel')} of toolkit release {r.version} (commit {r.commit[:12]}) from "
          f"{result.source} to {result.output}, with {toolkit_wheels.REQUIREMENTS} for pip --require-hashes\n"
          f"  signed: {result.signers}")
    return 0


def _credentials(args) -> tuple[str, str] | None:
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


def cmd_import(args) -> int:
    from airgap import importer

    _audit_target(args)
    override = _override(args)
    obj = {"bundle": args.bundle, "registry": args.registry}
    try:
        result = importer.import_bundle(
            args.bundle,
            trust_path=args.trust,
            registry=args.registry,
            state_dir=args.state,
            files_dir=args.files_dir,
            plain_http=args.plain_http,
            ca_file=args.ca_file,
            credentials=_credentials(args),
            override=override,
            progress=_progress(args),
            log=None if args.quiet or args.json else (lambda msg: print(escape(msg), file=sys.stderr)),
        )
    except AirgapError as exc:
        _audit_refusal(args, "import", obj, exc)
        report = getattr(exc, "report", None)
        if args.json:  # the check list always, whatever failed and wherever
            print(json.dumps(record_names(_import_failure(args, exc, report)), indent=2, sort_keys=True))
            print(f"airgap: {escape(str(exc))}", file=sys.stderr)
            return exc.exit_code
        if report is not None and report.error is exc:  # verification refused it: the checks say where
            _print_report(args, report, exc)
            return exc.exit_code
        raise
    except Exception as exc:
        _audit_refusal(args, "import", obj, exc)
        raise
    # The import wrote its overrides and acceptance to STATE/audit.log before the state they stamp.
    _emit(args, {**result.to_dict(), **_checks_of(result.verify_report)}, importer.format_result(result))
    return 0


def _checks_of(report) -> dict[str, Any]:
    """What import --json says about verification: the checks (all skipped when it never ran) and the media index."""
    from airgap import verify

    if report is None:
        return {"checks": [verify.Check(name, "skipped", "not reached").to_dict() for name in verify.CHECK_NAMES],
                "media": None}
    return {"checks": [c.to_dict() for c in report.checks], "media": report.media}


def _import_failure(args, exc: AirgapError, report) -> dict[str, Any]:
    """import --json when it did not import: a rejection is verify's report, any other failure the error and the checks."""
    if report is not None and report.error is exc:
        return {**report.to_dict(), "registry": args.registry}
    return {"result": "error", **exc.to_dict(), "bundle": args.bundle, "registry": args.registry, **_checks_of(report)}


def cmd_split(args) -> int:
    from airgap import split

    key = _load_key(args, args.key) if args.key else None
    index = split.split(args.bundle, args.output, args.size, signing_key=key, force=args.force)
    data = index.to_dict()
    lines = [f"split {args.bundle} into {plural(len(index.parts), 'part')} in {args.output}"]
    lines += [f"  {p.name}  {plural(p.size, 'byte')}  sha256:{p.sha256}" for p in index.parts]
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_join(args) -> int:
    from airgap import split

    check_output(args.output, force=args.force)  # before the parts are read
    verified, code = _verified(args, "join", hash_content=False)
    if verified is None:
        return code
    with verified:
        m = verified.manifest
        obj = {"bundle": args.bundle, "name": m.name, "version": m.version, "manifest": m.digest, "output": args.output}
        try:
            digest = split.join(verified, args.output, force=args.force)
        except AirgapError as exc:
            _audit_refusal(args, "join", obj, exc)
            raise
        _audit(args, "join", obj, "accepted", detail={"sha256": digest})
    _emit(args, {"result": "accepted", "bundle": args.output, "sha256": digest, "name": m.name, "version": m.version,
                 "manifest_digest": m.digest},
          f"joined {m.name} {m.version} (manifest {m.digest}) into {display(args.output)} (sha256:{digest}); "
          "every member checked against the verified manifest as it was written")
    return 0


def cmd_transfer(args) -> int:
    from airgap import transfer

    bar = {}

    def progress(name: str, done: int, total: int) -> None:
        if not _progress(args):
            return
        from tqdm import tqdm

        b = bar.get(name)
        if b is None:
            b = bar[name] = tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False)
        b.update(done - b.n)

    results = transfer.transfer(
        args.source,
        args.destination,
        identity=args.identity,
        known_hosts=args.known_hosts,
        accept_new_host_key=args.accept_new_host_key,
        progress=progress,
        force=args.force,
    )
    for b in bar.values():
        b.close()
    data = {"destination": args.destination, "files": [r.__dict__ for r in results]}
    lines = [f"{'skipped' if r.skipped else 'sent'} {r.name} ({plural(r.size, 'byte')}, sha256:{r.sha256}, "
             f"remote check: {r.hash_method}" + (f", resumed at {r.resumed_from}" if r.resumed_from else "") + ")"
             for r in results]
    skipped = sum(r.skipped for r in results)
    summary = (f"{plural(len(results), 'file')} at {args.destination}, each checked by sha256"
               + (f" ({skipped} already there)" if skipped else ""))
    _emit(args, data, "\n".join(lines), summary)
    return 0


def _audit_log_path(args) -> Path:
    if args.log:
        return Path(args.log)
    if args.state:
        return Path(args.state) / "audit.log"
    raise UsageError("give --log FILE or --state DIR")


def cmd_audit_verify(args) -> int:
    from airgap.anchored import FIRST_USE
    from airgap.audit import AuditLog, parse_head

    path = _audit_log_path(args)
    anchor = parse_head(args.expect_head) if args.expect_head else None
    if anchor is None and not path.exists():
        raise InputError(f"{path}: no such audit log")
    log = AuditLog(path)
    count = log.verify(expect_head=anchor)
    data = {"log": str(path), "entries": count, "result": "intact"}
    human = f"INTACT: {path}: {plural(count, 'entry')}, hash chain unbroken"
    if anchor is not None:
        data["expected_head"] = f"{anchor[0]}:{anchor[1]}"
        human += f", entry {anchor[0]} is the anchored head"
    # A first use pins a policy with no history behind it: always shown, so a wiped
    # state directory that started over cannot pass for an old one.
    first = [e for e in log.entries() if e.action == FIRST_USE]
    data["first_use"] = [{"seq": e.seq, "time": e.time, **e.object} for e in first]
    for e in first:
        human += (f"\nfirst use: trust policy version {e.object.get('version')} (sha256 {e.object.get('sha256')}) "
                  f"pinned at entry {e.seq}, {e.time}, by {e.actor.user}@{e.actor.host}")
    _emit(args, data, human)
    return 0


def cmd_audit_head(args) -> int:
    from airgap.audit import AuditLog, format_head

    path = _audit_log_path(args)
    if not path.exists():
        raise InputError(f"{path}: no such audit log")
    seq, digest = AuditLog(path).head()
    _emit(args, {"log": str(path), "seq": seq, "head": digest}, format_head((seq, digest)))
    return 0


def cmd_audit_show(args) -> int:
    from airgap.audit import AuditLog, entries_by_key, format_entry

    path = _audit_log_path(args)
    if not path.exists():
        raise InputError(f"{path}: no such audit log")
    entries = list(AuditLog(path).entries())
    shown = entries_by_key(entries, args.keyid, str(path)) if args.keyid else entries
    if args.json:
        print(json.dumps([e.to_dict() if hasattr(e, "to_dict") else e.__dict__ for e in shown], indent=2, sort_keys=True, default=str))
    elif args.quiet:
        print(f"{plural(len(shown), 'entry')} of {len(entries)} in {escape(str(path))}, hash chain unbroken")
    else:
        for e in shown:
            print(escape(format_entry(e)))
    return 0


def cmd_inventory(args) -> int:
    from airgap import inventory
    from airgap.registry import RegistryClient

    check_output(args.output, force=args.force)
    with RegistryClient(args.registry, plain_http=args.plain_http, ca_file=args.ca_file, credentials=_credentials(args),
                        auth_file=args.auth_file, limits=_limits(args)) as client:
        doc = inventory.collect(client)
    digest = inventory.write(doc, args.output, force=args.force)
    _emit(args, {"inventory": args.output, "digest": digest, "repositories": len(doc["repositories"]), "blobs": len(doc["blobs"])},
          f"wrote {args.output}: {plural(len(doc['repositories']), 'repository')}, {plural(len(doc['blobs']), 'blob')} ({digest})")
    return 0


def cmd_manifests_render(args) -> int:
    from airgap import render

    result = render.render_bundle(args.bundle, trust_path=args.trust, registry=args.registry, out=args.output,
                                  state_dir=args.state, now=_now(), force=args.force)
    _emit(args, result.to_dict(), "" if args.quiet else result.to_text())
    return 0


def cmd_packages_export(args) -> int:
    from airgap import debs

    result = debs.export(args.bundle, trust_path=args.trust, out=args.output, state_dir=args.state, now=_now(),
                         force=args.force)
    human = (f"{result['output']}: the apt repository of {result['bundle']} ({plural(len(result['packages']), 'package')}, "
             f"{plural(len(result['written']), 'file')} written)\n  apt source: {result['sources_line']}")
    _emit(args, result, "" if args.quiet else human)
    return 0


def cmd_lab(args) -> int:
    from airgap.lab import DEFAULT_INVENTORY, DEFAULT_NAME, DEFAULT_WORKDIR, Lab

    lab = Lab(args.dir or DEFAULT_WORKDIR, name=getattr(args, "name", None) or DEFAULT_NAME,
              inventory=getattr(args, "inventory", None) or DEFAULT_INVENTORY)
    if args.lab_command == "up":
        info = lab.up(nodes=args.nodes)
        _emit(args, info.to_dict(), info.to_text())
    elif args.lab_command == "down":
        did = lab.down()
        _emit(args, {"result": "down", "removed": did}, "lab is down" if did else "no lab was up")
    else:
        st = lab.status()
        _emit(args, st.to_dict(), st.to_text())
        return 0 if st.up else 1
    return 0


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document for automation")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only the result line: no progress bars, no listing, no notes (errors still go to stderr)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)


_DEBUG_HELP = ("log registry requests, redirects and token realms (and where credentials go) to stderr, "
               "and show the traceback of an internal error (also AIRGAP_DEBUG=1)")


def _force(p: argparse.ArgumentParser, what: str = "an existing output") -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what} (without --force: refused, exit 2)")


def _exit_codes(done: str, rejected: str | None, usage: str = "") -> str:
    """The epilog every verb carries; tests hold each verb to the codes it names."""
    codes = [f"0 {done}"] + ([f"1 {rejected}"] if rejected else [])
    codes.append("2 usage or input error" + (f" ({usage})" if usage else ""))
    return "Exit codes: " + "; ".join(codes) + "."


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--auth-file", metavar="FILE",
                   help="registry credentials (auths.<host[:port]>, as podman/skopeo/docker write them); default: "
                        "$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, "
                        "~/.docker/config.json")
    p.add_argument("--min-rate", metavar="RATE",
                   help="abandon a transfer slower than this (default 100KiB/s; every request gets at least 30 s)")


def _registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true", help="allow HTTP (no TLS) to the registries of this run (loopback tests)")
    p.add_argument("--ca-file", help="CA certificate bundle for registry TLS")


def _login_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", help="registry user (with --password-file)")
    p.add_argument("--password-file", metavar="FILE", help="file holding the registry password (never on the command line)")


def _override_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-expired", action="store_true",
                   help="officer override: accept an expired bundle or trust policy (needs --reason and --override-key; audited)")
    p.add_argument("--reason", help="the officer's written reason for the override (goes to the audit log)")
    _key_flags(p, "--override-key", help="the officer's private key that signs the override: key file or pkcs11: URI")


def _review_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--against", metavar="PREVIOUS", help="compare with this bundle (file or media parts) instead of "
                                                          "the history")
    p.add_argument("--history", metavar="DIR", help="the officer's record of signed bundles (default: review-history/ "
                                                    "next to --trust); sign keeps each bundle it signs there")


class _KeyArg(argparse.Action):
    """A private key argument (file or pkcs11: URI); remembers its position so that
    the --passphrase-file / --pin-file after it belong to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.default == []:  # repeatable
            setattr(namespace, self.dest, [*getattr(namespace, self.dest), values])
        else:
            setattr(namespace, self.dest, values)
        namespace._key_seq = [*(getattr(namespace, "_key_seq", None) or []), ("key", values)]


class _UnlockArg(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace._key_seq = [*(getattr(namespace, "_key_seq", None) or []), (self.dest, values)]


def _key_flags(p: argparse.ArgumentParser, flag: str = "--key", *, required: bool = False, repeat: bool = False,
               help: str = "private key: a key file or a pkcs11: URI (RFC 7512)") -> None:
    p.add_argument(flag, action=_KeyArg, required=required, default=[] if repeat else None,
                   metavar="KEY", help=help + (" (repeat)" if repeat else ""))
    _unlock_flags(p)


def _unlock_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", action=_UnlockArg, metavar="FILE",
                   help="file whose first line is the passphrase of the key argument before it")
    p.add_argument("--pin-file", action=_UnlockArg, metavar="FILE",
                   help=f"file whose first line is the token PIN for the pkcs11: key argument before it")
    p.add_argument("--pkcs11-module", metavar="PATH",
                   help="PKCS#11 module of the token (default $AIRGAP_PKCS11_MODULE or the URI's module-path)")


def _role_flags(p: argparse.ArgumentParser, required: bool) -> None:
    for role in ("root", "builder", "officer"):
        if required:
            key_help = f"public key file of {article(role)} key (repeat for each key; at least one)"
        else:
            key_help = (f"the {role} keys of the new version: public key files, or keyids (8+ hex digits) of keys the "
                        f"current version lists (repeat; replaces the {role} keys; default: unchanged)")
        p.add_argument(f"--{role}", action="append", default=[], metavar="PUB", help=key_help)
        p.add_argument(f"--{role}-threshold", type=_positive_int, default=None if not required else 1, metavar="N",
                       help=f"how many distinct {role} keys must sign" + (" (default 1)" if required else " (default: unchanged)"))
    p.add_argument("--toolkit", action="append", default=[], metavar="PUB",
                   help="public key file of a toolkit key (repeat): who may sign toolkit releases; disjoint from "
                        "the builder keys. Without it the policy accepts no toolkit release")
    p.add_argument("--toolkit-threshold", type=_positive_int, default=None, metavar="N",
                   help="how many distinct toolkit keys must sign a release (default 1)")
    p.add_argument("--bundle", action="append", default=[], metavar="NAME", dest="bundles",
                   help="a bundle name the target accepts (repeat; verify refuses other names). Without it any "
                        "name is accepted" + ("" if required else "; on rotate it replaces the list"))


def _all_verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(verb words, its parser) for every verb, e.g. (("trust", "init"), parser): what tests walk."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _all_verbs(sub, (*prefix, name))
                else:
                    yield (*prefix, name), sub


def _verified_output(p: argparse.ArgumentParser, force_help: str) -> None:
    """A verb that verifies BUNDLE, then writes what it carries into a directory."""
    p.add_argument("bundle", help="bundle tar, parts index or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("-o", "--output", required=True, help="directory to write (must not exist, unless --force)")
    p.add_argument("--state", help="state directory: also refuse a rollback")
    p.add_argument("--force", action="store_true", help=force_help)
    _common(p)


class _Unused:
    """Stands in for the sub-parser of a verb that is not being run (nothing is added to it)."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self


class _OneVerb:
    """``add_subparsers()`` that builds only the verb being run: start-up time, not every verb's options."""

    def __init__(self, sub, verb: str):
        self._sub, self._verb, self.found = sub, verb, False

    def add_parser(self, name: str, **kwargs):
        if name != self._verb:
            return _Unused()
        self.found = True
        return self._sub.add_parser(name, **kwargs)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (*verb*) one with only that verb's options (see :func:`main`)."""
    parser = _Parser(prog="airgap", description="Signed offline bundles for isolated networks.",
                     epilog="Every verb exits 0 when done or accepted, 1 when rejected or when an operation failed "
                            "(disk, network), 2 on a usage or input error. 'airgap VERB --help' names its cases.")
    parser.add_argument("--version", action="version", version=f"airgap {__version__}", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    if verb is not None:
        sub = parser.one_verb = _OneVerb(sub, verb)  # type: ignore[attr-defined]

    p = sub.add_parser("keygen", help="create an Ed25519 key pair (encrypted private key, or on a PKCS#11 token)",
                       epilog=_exit_codes("written", None, "NAME.key or NAME.pub exists without --force, a bad name, "
                                          "passphrases that differ, an unusable token"))
    p.add_argument("name", help="key name: letters, digits, '.', '_', '-' (becomes NAME.key and NAME.pub)")
    p.add_argument("--dir", default=".", help="where to write NAME.key and NAME.pub (made if missing)")
    p.add_argument("--no-passphrase", action="store_true", help="write the private key unencrypted (says so in the file)")
    p.add_argument("--passphrase-file", metavar="FILE", help="file whose first line is the new key's passphrase")
    p.add_argument("--pkcs11", metavar="URI", help="generate the pair on this token (pkcs11:token=...;object=...); "
                   "the private key never leaves it; writes only NAME.pub")
    p.add_argument("--pin-file", metavar="FILE", help="file whose first line is the token's user PIN")
    p.add_argument("--pkcs11-module", metavar="PATH", help="PKCS#11 module (default $AIRGAP_PKCS11_MODULE)")
    _force(p, "an existing NAME.key and NAME.pub, losing the old key")
    _common(p)
    p.set_defaults(func=cmd_keygen)

    key_p = sub.add_parser("key", help="work with keys: export a public key file")
    ksub = key_p.add_subparsers(dest="key_command", metavar="ACTION", parser_class=_Parser)
    ksub.required = True
    p = ksub.add_parser("export", help="write the .pub file of a private key (key file or pkcs11: URI)",
                        epilog=_exit_codes("written", None, "an existing output without --force, a public key "
                                           "given as the key, a wrong passphrase or PIN"))
    p.add_argument("key", action=_KeyArg, help="key file or pkcs11: URI")
    p.add_argument("-o", "--output", required=True, help="public key file to write")
    p.add_argument("--name", help="name recorded in the .pub file (default: the key's name or token label)")
    _force(p)
    _unlock_flags(p)
    _common(p)
    p.set_defaults(func=cmd_key_export)

    p = sub.add_parser("build", help="build and sign a bundle from a spec",
                       epilog=_exit_codes("built", "a source registry failed or served something refused "
                                          "(digest mismatch, sovereignty)", "an invalid spec (FILE:LINE: field: problem), "
                                          "an existing output without --force, an unusable key"))
    p.add_argument("spec", help="the bundle spec (YAML, see docs/spec-reference.md)")
    p.add_argument("-o", "--output", required=True, help="the bundle file to write (.tar)")
    _key_flags(p, required=True, help="builder's private key: key file or pkcs11: URI")
    p.add_argument("--created", help="creation time (RFC 3339 UTC); default SOURCE_DATE_EPOCH or now")
    p.add_argument("--since", help="inventory or manifest of what the receiving side has: build a differential bundle")
    p.add_argument("-j", "--jobs", type=_positive_int, default=4, help="blobs downloaded in parallel (default 4)")
    p.add_argument("--apt-sources", help="apt sources file to resolve packages: with (instead of the spec's)")
    p.add_argument("--apt-baseline", help="dpkg status of the target's base system (instead of the spec's)")
    _force(p)
    _registry_flags(p)
    _source_flags(p)
    _common(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("inspect", help="show what a bundle contains (and who signed it, with --trust)",
                       epilog=_exit_codes("shown", "the bundle is malformed, or the policy's root signatures do not "
                                          "verify", "a missing file, a --trust file that is no trust policy"))
    p.add_argument("bundle", help="bundle tar, parts index (*.parts.json) or directory of parts")
    p.add_argument("--trust", help="trust policy: show roles, thresholds met and missing")
    _review_flags(p)
    p.add_argument("--sbom", action="store_true", help="list every image's packages (from the bundle's CycloneDX SBOMs)")
    _common(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("diff", help="images, files and packages added, removed, changed between two bundles",
                       epilog=_exit_codes("compared (whether or not they differ)", "a bundle is malformed",
                                          "a missing file"))
    p.add_argument("a", help="the older bundle (tar, parts index or directory of parts)")
    p.add_argument("b", help="the newer bundle")
    _common(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser(
        "sign", help="countersign a bundle in place (give --trust so the key's role is checked)",
        description="Add an officer's signature to a bundle in place (milliseconds for any size). "
                    "Give --trust: the policy is verified and a key that is not one of its officer keys "
                    "(a builder, root-only, revoked or unknown key) is refused before anything is written: "
                    "its signature would be no officer's approval, or would make every verify reject the "
                    "bundle. Without --trust the "
                    "key cannot be checked: sign warns and needs --yes or a typed 'yes'. "
                    "First it shows the review plan: what changed since the last bundle of the same name "
                    "signed under the policy (the history next to --trust, or --against PREVIOUS), code first; "
                    "added or changed code needs its own typed 'yes'. "
                    "Sign the bundle file before 'airgap split': media parts cannot be signed.",
        epilog="Exit codes: 0 signed; 1 not signed (declined at the prompt, or the policy or bundle was "
               "rejected: bad root signatures, expired policy, another target); 2 usage or input error, "
               "including media parts instead of the bundle file and a key that cannot sign this bundle "
               "(wrong role, revoked, not in the policy, or it already signed): the key is the caller's input, "
               "and nothing was written. A stray signature is removed with 'airgap unsign'.")
    p.add_argument("bundle", help="the bundle file (not its media parts)")
    _key_flags(p, required=True, help="the officer's private key: key file or pkcs11: URI")
    p.add_argument("--trust", help="trust policy: check that --key is one of its officer keys (recommended)")
    _review_flags(p)
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation (neither for the code nor for the signature)")
    _common(p)
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser(
        "unsign", help="remove one signature from a bundle in place",
        description="Remove the signature whose keyid is given (full, or a unique prefix of 8 or more hex "
                    "digits, as messages show it). Shows every signature and asks first. Like sign, only "
                    "the envelope at the end of the archive is rewritten.",
        epilog="Exit codes: 0 removed; 1 not removed (declined, or the bundle was rejected); 2 usage or "
               "input error (unknown or ambiguous keyid, media parts instead of the bundle file).")
    p.add_argument("bundle", help="the bundle file (not its media parts)")
    p.add_argument("--keyid", required=True, help="keyid of the signature to remove (8+ hex digits suffice if unique)")
    p.add_argument("--trust", help="trust policy: show who made each signature and the thresholds after removal")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _common(p)
    p.set_defaults(func=cmd_unsign)

    p = sub.add_parser("verify", help="verify a bundle against the trust policy; exit 0 only if accepted",
                       epilog=_exit_codes("accepted (VERIFIED)", "rejected: the report names the artifact and why",
                                          "a missing file, a --trust file that is no trust policy, --record "
                                          "without --state, an override without a reason"))
    p.add_argument("bundle", help="bundle tar, parts index (*.parts.json) or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--state", help="state directory (rollback state, trusted policy, audit log)")
    p.add_argument("--record", action="store_true", help="record the accepted version in --state (verify-only sites)")
    p.add_argument("--audit-log", help="audit log (default STATE/audit.log)")
    _override_flags(p)
    _common(p)
    p.set_defaults(func=cmd_verify)

    trust_p = sub.add_parser("trust", help="create, rotate and show trust policies")
    tsub = trust_p.add_subparsers(dest="trust_command", metavar="ACTION", parser_class=_Parser)
    tsub.required = True
    p = tsub.add_parser("init", help="create trust policy version 1",
                        epilog=_exit_codes("written", None, "a role without keys, a threshold above its key count, "
                                           "an --expires that is neither 365d nor an RFC 3339 time, a private key "
                                           "given as --root, a --key that is not a root key, an existing output "
                                           "without --force"))
    p.add_argument("--target", required=True, help="the enclave this policy is for (bundles name it; others are refused)")
    p.add_argument("--expires", required=True, help="duration (365d, 8w, 12h) or RFC 3339 UTC time")
    _role_flags(p, required=True)
    _key_flags(p, repeat=True, help="root private key to sign with, key file or pkcs11: URI; "
                                    "a key that is not one of --root is refused (exit 2)")
    p.add_argument("-o", "--output", required=True, help="the policy file to write (trust.json)")
    _force(p)
    _common(p)
    p.set_defaults(func=cmd_trust_init)
    p = tsub.add_parser("rotate", help="make the next version, signed by old and new root thresholds",
                        epilog=_exit_codes("written (possibly INCOMPLETE: then 'trust sign' adds root signatures)",
                                           "the current version's root signatures do not verify",
                                           "a threshold above its key count, an unknown or ambiguous keyid, an "
                                           "existing output without --force"))
    p.add_argument("policy", help="the current trust policy")
    p.add_argument("--expires", help="new expiry: duration (365d) or RFC 3339 UTC time (default: unchanged)")
    _role_flags(p, required=False)
    p.add_argument("--revoke", action="append", default=[], metavar="KEYID|PUB",
                   help="revoke a key: keyid (8+ hex digits suffice if unique) or public key file (repeat)")
    _key_flags(p, repeat=True, help="private key to sign with, key file or pkcs11: URI: a root key of the new or "
                                    "the current version (both root thresholds must be met); any other key is "
                                    "refused (exit 2)")
    p.add_argument("-o", "--output", required=True, help="the new version's file (the current one is kept)")
    _force(p)
    _common(p)
    p.set_defaults(func=cmd_trust_rotate)
    p = tsub.add_parser("sign", help="add a root signature to a policy (each root officer in turn)",
                        epilog=_exit_codes("signed", "the policy (or --successor-of) is malformed or its signatures "
                                           "do not verify", "a key that is not a root key, or that already signed"))
    p.add_argument("policy", help="the policy file to add a signature to (rewritten in place)")
    _key_flags(p, required=True, help="a root private key of the policy (or of --successor-of), key file or "
                                      "pkcs11: URI; others are refused (exit 2)")
    p.add_argument("--successor-of", metavar="PREVIOUS", help="for a rotation: the previous version, whose root keys also sign")
    _common(p)
    p.set_defaults(func=cmd_trust_sign)
    p = tsub.add_parser("show", help="print a trust policy after verifying its root signatures",
                        epilog=_exit_codes("shown", "root signatures below threshold, or expired (see --ignore-expiry)",
                                           "a missing file, a file that is no trust policy, an unknown keyid"))
    p.add_argument("policy", help="the trust policy file")
    p.add_argument("--ignore-expiry", action="store_true", help="show an expired policy (signatures are still checked)")
    p.add_argument("--keyid", help="show only this key: its name, roles and whether it is revoked (8+ hex digits)")
    _common(p)
    p.set_defaults(func=cmd_trust_show)

    toolkit_p = sub.add_parser(
        "toolkit", help="toolkit releases: the wheels the toolkit role allows to install airgap",
        description="A toolkit release lists the wheels (file, size, sha256) of airgap and its dependencies, "
                    "its version and source commit, signed by the trust policy's toolkit role. Isolated hosts "
                    "install only wheels a valid release lists. See docs/trust-model.md, 'The toolkit role'.")
    ksub = toolkit_p.add_subparsers(dest="toolkit_command", metavar="ACTION", parser_class=_Parser)
    ksub.required = True
    p = ksub.add_parser("release", help="write a release statement for a directory of wheels (and sign it)",
                        epilog="Exit codes: 0 written (INCOMPLETE says how many signatures are missing); 2 usage or "
                               "input error, including a key that is not a toolkit key of --trust.")
    p.add_argument("--wheels", required=True, metavar="DIR", help="the wheels of the release (scripts/build-wheel.sh output)")
    p.add_argument("--version", required=True, help="the toolkit's version; DIR must hold its airgap wheel")
    p.add_argument("--commit", required=True, help="the source commit the wheels were built from (git rev-parse TAG^{commit})")
    _key_flags(p, repeat=True, help="a toolkit private key to sign with, key file or pkcs11: URI; needs --trust")
    p.add_argument("--trust", help="trust policy: the keys must be toolkit keys of it")
    p.add_argument("-o", "--output", required=True, help="the release statement to write (toolkit-release.json)")
    _force(p)
    _common(p)
    p.set_defaults(func=cmd_toolkit_release)
    p = ksub.add_parser("sign", help="add one toolkit key's signature to a release statement (each holder in turn)",
                        epilog=_exit_codes("signed (INCOMPLETE says how many signatures are missing)",
                                           "the statement or the policy is malformed or does not verify",
                                           "a key that is not a toolkit key of --trust, or that already signed"))
    p.add_argument("release", help="the release statement to add a signature to (rewritten in place)")
    _key_flags(p, required=True, help="a toolkit private key of --trust, key file or pkcs11: URI; others are "
                                      "refused (exit 2)")
    p.add_argument("--trust", required=True, help="trust policy whose toolkit role the key must hold")
    _common(p)
    p.set_defaults(func=cmd_toolkit_sign)
    p = ksub.add_parser("verify", help="check a release's toolkit signatures (and a directory of wheels against it)",
                        epilog="Exit codes: 0 verified; 1 rejected (threshold, revoked or wrong-role key, a wheel not "
                               "listed or with another digest); 2 usage or input error.")
    p.add_argument("release", help="the release statement (toolkit-release.json)")
    p.add_argument("--trust", required=True, help="trust policy whose toolkit role must have signed")
    p.add_argument("--wheels", metavar="DIR", help="also check that DIR holds exactly the listed wheels")
    _common(p)
    p.set_defaults(func=cmd_toolkit_verify)
    p = ksub.add_parser(
        "wheels", help="write the wheels a host may install: a bundle's, if a valid toolkit release covers them",
        description="Verify the bundle (or, with --release, a toolkit release directory) with this toolkit and "
                    "write into OUTPUT exactly the wheels a valid toolkit release lists, the statement and a "
                    "requirements.txt for 'pip install --no-index --require-hashes'. Anything not covered: "
                    "nothing is written and every wheel is named with what is missing.",
        epilog="Exit codes: 0 written; 1 refused (bundle rejected, a wheel not covered, statement missing or "
               "not meeting the toolkit threshold); 2 usage or input error.")
    p.add_argument("bundle", nargs="?", help="bundle file, parts index or directory of parts")
    p.add_argument("--release", metavar="DIR", help="a toolkit release directory instead of a bundle (first install)")
    p.add_argument("--trust", required=True, help="trust policy: verifies the bundle and the toolkit release")
    p.add_argument("--state", help="state directory for the bundle's verification (rollback, trusted policy)")
    p.add_argument("-o", "--output", required=True, help="directory to write")
    _force(p, "an existing output directory as a whole")
    _common(p)
    p.set_defaults(func=cmd_toolkit_wheels)

    p = sub.add_parser("import", help="verify, then push images into the internal registry and unpack files",
                       epilog=_exit_codes("imported (or already present)", "rejected by verify, or the registry "
                                          "failed", "a missing file, a --trust file that is no trust policy, "
                                          "--username without --password-file"))
    p.add_argument("bundle", help="bundle tar, parts index or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--registry", required=True, help="internal registry host:port")
    p.add_argument("--state", required=True, help="state directory (rollback state, trusted policy, audit log)")
    p.add_argument("--files-dir", help="where the bundle's files/ are unpacked (versions/ + current link)")
    _login_flags(p)
    p.add_argument("--audit-log", help="audit log (default STATE/audit.log)")
    _override_flags(p)
    _registry_flags(p)
    _common(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("split", help="cut a signed bundle into media-sized parts with a part index",
                       description="Cut a bundle into parts of at most --size bytes plus a part index "
                                   "(BUNDLE.parts.json). Split after every signature is on the bundle: "
                                   "parts cannot be signed.",
                       epilog=_exit_codes("split", None, "a bad --size, a missing bundle, parts of this bundle "
                                          "already in the directory without --force"))
    p.add_argument("bundle", help="the bundle file, signed by builder and officer")
    p.add_argument("--size", required=True, help="part size: bytes or K/M/G/T (binary), e.g. 4480M")
    p.add_argument("-o", "--output", required=True, help="directory for the parts (made if missing)")
    _key_flags(p, help="sign the part index with this private key: key file or pkcs11: URI")
    _force(p, "parts and the index of the same bundle already in the directory")
    _common(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("join", help="verify the media parts, then write the bundle from what was verified",
                       epilog=_exit_codes("joined", "the bundle or a part is rejected (missing, damaged, badly signed, "
                                          "not the one the index names)",
                                          "no single index in the directory, an existing output without --force"))
    p.add_argument("bundle", metavar="parts", help="parts index (*.parts.json) or its directory")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--state", help="state directory: check rollback against it, audit the join (nothing else is recorded)")
    p.add_argument("-o", "--output", required=True, help="the bundle file to write")
    _force(p)
    _common(p)
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("extract", help="verify a bundle, then write members from what was verified (no other tar)",
                       epilog=_exit_codes("every member asked for was written", "the bundle is rejected, or a member "
                                          "did not hash as the manifest says (nothing of it is left)",
                                          "a --member prefix no member has, an existing directory without --force"))
    p.add_argument("bundle", help="bundle tar, parts index or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--state", help="state directory: check rollback against it, audit the extraction (nothing else is recorded)")
    p.add_argument("--audit-log", help="audit log (default STATE/audit.log)")
    p.add_argument("--member", action="append", default=[], metavar="PREFIX",
                   help="extract the members whose path starts with PREFIX (repeat; default: every member)")
    p.add_argument("-o", "--output", required=True, help="directory to create (must not exist, unless --force)")
    _force(p, "files of the same name in an existing directory (the directory is written into)")
    _common(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("transfer", help="resumable SFTP upload with a remote sha256 check",
                       epilog=_exit_codes("every file is at the destination with the same sha256",
                                          "the connection kept failing (rerun to resume), the host key was refused, "
                                          "or the remote copy hashed differently",
                                          "a missing source, an ssh:// destination without --identity and "
                                          "--known-hosts, a destination file with other content without --force"))
    p.add_argument("source", help="bundle file or directory of parts")
    p.add_argument("destination", help="ssh://user@host:port/dir or a local directory")
    p.add_argument("--identity", help="private key for SSH")
    p.add_argument("--known-hosts", help="known_hosts file; unknown host keys are refused")
    p.add_argument("--accept-new-host-key", action="store_true", help="trust an unknown host key and record it")
    _force(p, "a destination file that holds other content")
    _common(p)
    p.set_defaults(func=cmd_transfer)

    audit_p = sub.add_parser("audit", help="show or verify the audit log")
    asub = audit_p.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=_Parser)
    asub.required = True
    for name, func, help_, done in (
            ("verify", cmd_audit_verify, "check the hash chain; names the first broken entry", "intact"),
            ("show", cmd_audit_show, "print the entries (after checking the chain)", "shown"),
            ("head", cmd_audit_head, "print SEQ:HASH of the last entry, to keep outside the box", "printed")):
        rejected = "the hash chain is broken" + (", or the log no longer holds --expect-head" if name == "verify" else "")
        p = asub.add_parser(name, help=help_, epilog=_exit_codes(done, rejected, "no --log or --state, no log there"))
        p.add_argument("--log", help="audit log file")
        p.add_argument("--state", help="state directory (log at STATE/audit.log)")
        if name == "verify":
            p.add_argument("--expect-head", metavar="SEQ:HASH",
                           help="a head printed earlier by 'airgap audit head' and kept elsewhere: exit 1 unless "
                                "the log still holds exactly that entry (not cut, deleted or forked)")
        if name == "show":
            p.add_argument("--keyid", help="only the entries made with this key (8+ hex digits suffice if unique)")
        _common(p)
        p.set_defaults(func=func)

    p = sub.add_parser("inventory", help="export what the internal registry holds (input for build --since)",
                       epilog=_exit_codes("written", "the registry failed or answered something unusable",
                                          "an existing output without --force, --username without --password-file"))
    p.add_argument("--registry", required=True, help="the internal registry host:port")
    p.add_argument("-o", "--output", required=True, help="the inventory file to write (JSON)")
    _login_flags(p)
    _force(p)
    _registry_flags(p)
    _source_flags(p)
    _common(p)
    p.set_defaults(func=cmd_inventory)

    man_p = sub.add_parser("manifests", help="the Kubernetes workloads a bundle carries")
    msub = man_p.add_subparsers(dest="manifests_command", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    p = msub.add_parser(
        "render", help="verify, then write the workloads with every image pinned to the internal registry by digest",
        description="Verify the bundle, then write each workload it carries as DIR/<workload>.yaml: the Kubernetes "
                    "objects as signed, every image reference (containers, init and ephemeral containers, image "
                    "volumes) replaced by REGISTRY/<internal repository>@sha256:... of the bundle image it was "
                    "resolved to at build. Same bundle and registry, same bytes. Apply the files with the "
                    "cluster's own tooling (kubectl apply -f DIR) or run them with podman kube play.",
        epilog="Exit codes: 0 written; 1 the bundle was rejected, or its workload files differ from what its "
               "manifest records; 2 usage or input error (existing DIR without --force, bad --registry, "
               "a bundle without workloads).")
    p.add_argument("--registry", required=True, help="internal registry host:port the images were imported into")
    _verified_output(p, "write into an existing directory (files replaced atomically)")
    p.set_defaults(func=cmd_manifests_render)

    pkg_p = sub.add_parser("packages", help="the OS packages a bundle carries")
    psub = pkg_p.add_subparsers(dest="packages_command", metavar="ACTION", parser_class=_Parser)
    psub.required = True
    p = psub.add_parser(
        "export", help="verify, then write the bundle's apt repository (the .deb files, Packages, Release)",
        description="Verify the bundle, then write its files/packages/ into DIR, each file hashed against the "
                    "signed manifest as it is written: a flat apt repository for 'deb [trusted=yes] file:DIR ./' "
                    "(its trust is the bundle's signatures).",
        epilog="Exit codes: 0 written; 1 the bundle was rejected; 2 usage or input error (existing DIR without "
               "--force, a bundle without packages).")
    _verified_output(p, "update an existing directory (unchanged files are kept)")
    p.set_defaults(func=cmd_packages_export)

    lab_p = sub.add_parser("lab", help="a rehearsal of the isolated site in Linux namespaces")
    lsub = lab_p.add_subparsers(dest="lab_command", metavar="ACTION", parser_class=_Parser)
    lsub.required = True
    for name, help_, codes in (
            ("up", "bring the lab up", _exit_codes("up (or already up)", None, "a bad --nodes, --name or --dir")),
            ("down", "remove everything the lab made", _exit_codes("down (or nothing was up)", None, "a bad --dir")),
            ("status", "show the nodes", _exit_codes("up", "not up, or degraded", "a bad --dir"))):
        p = lsub.add_parser(name, help=help_, epilog=codes)
        p.add_argument("--dir", help="lab work directory (default /var/lib/airgap-lab)")
        if name == "up":
            p.add_argument("--nodes", type=int, default=3, help="number of nodes: one registry host, the rest container hosts")
            p.add_argument("--inventory", help="where to write the inventory (default inventories/lab/hosts.yml)")
            p.add_argument("--name", help="network namespace name (default airgap-lab; kept in the work directory)")
        _common(p)
        p.set_defaults(func=cmd_lab)
    return parser


def report_error(args, exc: AirgapError) -> int:
    """Say what failed (as JSON too with --json) and return the verb's exit code."""
    if getattr(args, "json", False):
        print(json.dumps({"result": "error", **exc.to_dict()}, indent=2, sort_keys=True))
    print(f"airgap: {escape(str(exc))}", file=sys.stderr)
    return exc.exit_code


def _verb(args) -> str:
    sub = getattr(args, "trust_command", None) or getattr(args, "audit_command", None) or getattr(args, "lab_command", None)
    return f"{args.command} {sub}" if sub else args.command


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb)
    if verb is None or not parser.one_verb.found:  # help, --version, a mistyped verb: the whole parser says it
        parser = build_parser()
    args = parser.parse_args(argv)
    debug_log = _debug_log(args.debug)
    # --debug (or AIRGAP_DEBUG=1) also shows the traceback of an internal error.
    debug = args.debug or os.environ.get("AIRGAP_DEBUG", "") not in ("", "0")
    if hasattr(sys.stdout, "reconfigure"):
        # A name that is not UTF-8 (a surrogate escape) is printed escaped, never a crash.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        _key_options(args)  # a misplaced --passphrase-file / --pin-file is a usage error before any work
        return int(args.func(args) or 0)
    except AirgapError as exc:
        return report_error(args, exc)
    except KeyboardInterrupt:
        print("airgap: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        # The library turns the OSErrors it expects into AirgapErrors (a test holds it
        # to that); anything else still gets the same codes: a path to fix (2) or a
        # failed operation such as a full disk (1).
        if debug:
            import traceback

            traceback.print_exc()
        return report_error(args, os_error(exc))
    except Exception as exc:  # noqa: BLE001 - no traceback reaches a user
        if debug:
            import traceback

            traceback.print_exc()
        print(f"airgap {_verb(args)}: internal error ({type(exc).__name__}: {exc}); nothing more was done. "
              "Rerun with --debug (or AIRGAP_DEBUG=1) to see where, and report it.", file=sys.stderr)
        return 1
    finally:
        _close_keys()
        if debug_log is not None:
            import logging

            logger = logging.getLogger("airgap")
            logger.removeHandler(debug_log)
            logger.setLevel(logging.NOTSET)


def _debug_log(on: bool) -> logging.Handler | None:
    """``--debug``: the library's debug log (``airgap.*`` loggers) on stderr, for this run only."""
    if not on:
        return None
    import logging  # only with --debug: it costs every other run start-up time

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("airgap: debug: %(message)s"))
    logger = logging.getLogger("airgap")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return handler
