"""trust init/rotate/sign/show and toolkit release/sign/verify/wheels."""

from __future__ import annotations

import argparse
from typing import Any

from airgap._internal.fsutil import check_output
from airgap._internal.text import article, plural
from airgap.cli._base import (
    common_flags,
    emit,
    exit_codes,
    force_flag,
    group,
    key_flags,
    positive_int,
    show_progress,
    signers,
    utc_now,
)
from airgap.exceptions import UsageError


def _role_args(args) -> dict[str, Any]:
    return {
        "roots": args.root, "root_threshold": args.root_threshold,
        "builders": args.builder, "builder_threshold": args.builder_threshold,
        "officers": args.officer, "officer_threshold": args.officer_threshold,
        "toolkit": args.toolkit, "toolkit_threshold": args.toolkit_threshold,
        "bundles": args.bundles,
    }


def _policy_written(args, policy, path: str, done: str, previous=None, previous_path: str | None = None) -> None:
    from airgap.keyroles import RootStatus

    status = RootStatus.of(policy, previous)
    hint = status.hint(path, previous_path)
    emit(args, {"trust": path, "version": policy.version, "target": policy.target, **status.to_dict()},
          f"{done}: trust policy version {policy.version} for {policy.target}\n{policy.describe()}"
          + (f"\n{hint}" if hint else ""))


def cmd_trust_init(args) -> int:
    from airgap import trust

    check_output(args.output, force=args.force)
    policy = trust.init_policy(
        target=args.target,
        expires=args.expires,
        **_role_args(args),
        signing_keys=signers(args, args.key),
        now=utc_now(),
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
        signing_keys=signers(args, args.key),
        now=utc_now(),
    )
    new.write(args.output, overwrite=args.force)
    _policy_written(args, new, args.output, f"wrote {args.output}", old, args.policy)
    return 0


def cmd_trust_sign(args) -> int:
    """A root officer adds a signature to a policy (offline keys sign one at a time)."""
    from airgap import trust

    policy = trust.TrustPolicy.from_file(args.policy)
    previous = trust.TrustPolicy.load(args.successor_of, now=None) if args.successor_of else None
    signer = signers(args, [args.key])[0]
    trust.sign_policy(policy, signer, previous=previous)
    policy.write(args.policy)
    _policy_written(args, policy, args.policy, f"signed {args.policy} with {signer.public_key.label}",
                    previous, args.successor_of)
    return 0


def cmd_trust_show(args) -> int:
    from airgap import trust

    policy = trust.TrustPolicy.load(args.policy, now=utc_now() if not args.ignore_expiry else None)
    if args.keyid:
        key = trust.describe_key(policy, args.keyid)
        emit(args, key, trust.format_key(key))
        return 0
    emit(args, policy.to_dict(), policy.describe())
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
    policy = trust.TrustPolicy.load(args.trust, now=utc_now()) if args.trust else None
    return _sign_statement(args, statement, policy, signers(args, args.key), args.output, f"wrote {args.output}",
                           overwrite=args.force)


def _sign_statement(args, statement, policy, signers: list, path: str, done: str, *, overwrite: bool = True) -> int:
    """Every signer is checked before anything is written (a refusal leaves the file as it was)."""
    for signer in signers:
        statement.sign(policy, signer)
    statement.write(path, overwrite=overwrite)
    data, lines = _statement_lines(statement, policy, path)
    emit(args, data, "\n".join([done, *lines]))
    return 0


def cmd_toolkit_sign(args) -> int:
    from airgap import toolkit, trust

    statement = toolkit.ReleaseStatement.from_file(args.release)
    policy = trust.TrustPolicy.load(args.trust, now=utc_now())
    signer = signers(args, [args.key])[0]
    return _sign_statement(args, statement, policy, [signer], args.release,
                           f"signed {args.release} with {signer.public_key.label}")


def cmd_toolkit_verify(args) -> int:
    from airgap import toolkit, trust

    statement = toolkit.ReleaseStatement.from_file(args.release)
    policy = trust.TrustPolicy.load(args.trust, now=utc_now())
    statement.verify(policy)
    data, lines = _statement_lines(statement, policy, args.release)
    if args.wheels:
        problems = toolkit.check_wheels_dir(statement.release, args.wheels)
        if problems:
            raise toolkit.ToolkitRefused(args.wheels, problems)
        lines.append(f"  every wheel in {args.wheels} is listed with its size and sha256, and every listed wheel is there")
    data["result"] = "verified"
    emit(args, data, "\n".join([*lines, f"VERIFIED: toolkit release {statement.release.version} ({args.release})"]))
    return 0


def cmd_toolkit_wheels(args) -> int:
    from airgap import toolkit_wheels, trust

    if (args.bundle is None) == (args.release is None):
        raise UsageError("give a bundle or --release DIR (one of them)")
    check_output(args.output, force=args.force, directory=True)
    if args.release:
        policy = trust.TrustPolicy.load(args.trust, now=utc_now())
        result = toolkit_wheels.from_release_dir(args.release, policy, args.output)
    else:
        result = toolkit_wheels.from_bundle(args.bundle, trust_path=args.trust, state_dir=args.state, now=utc_now(),
                                            out=args.output, progress=show_progress(args))
    r = result.release
    emit(args, {"result": "written", **result.to_dict()},
          f"wrote the {plural(len(result.wheels), 'wheel')} of toolkit release {r.version} (commit {r.commit[:12]}) from "
          f"{result.source} to {result.output}, with {toolkit_wheels.REQUIREMENTS} for pip --require-hashes\n"
          f"  signed: {result.signers}")
    return 0


def _role_flags(p: argparse.ArgumentParser, required: bool) -> None:
    for role in ("root", "builder", "officer"):
        if required:
            key_help = f"public key file of {article(role)} key (repeat for each key; at least one)"
        else:
            key_help = (f"the {role} keys of the new version: public key files, or keyids (8+ hex digits) of keys the "
                        f"current version lists (repeat; replaces the {role} keys; default: unchanged)")
        p.add_argument(f"--{role}", action="append", default=[], metavar="PUB", help=key_help)
        p.add_argument(f"--{role}-threshold", type=positive_int, default=None if not required else 1, metavar="N",
                       help=f"how many distinct {role} keys must sign" + (" (default 1)" if required else " (default: unchanged)"))
    p.add_argument("--toolkit", action="append", default=[], metavar="PUB",
                   help="public key file of a toolkit key (repeat): who may sign toolkit releases; disjoint from "
                        "the builder keys. Without it the policy accepts no toolkit release")
    p.add_argument("--toolkit-threshold", type=positive_int, default=None, metavar="N",
                   help="how many distinct toolkit keys must sign a release (default 1)")
    p.add_argument("--bundle", action="append", default=[], metavar="NAME", dest="bundles",
                   help="a bundle name the target accepts (repeat; verify refuses other names). Without it any "
                        "name is accepted" + ("" if required else "; on rotate it replaces the list"))


def add_trust(top) -> None:
    sub = group(top, "trust", "trust_command", help="create, rotate and show trust policies")
    add_trust_init(sub)
    add_trust_rotate(sub)
    add_trust_sign(sub)
    add_trust_show(sub)


def add_trust_init(sub) -> None:
    p = sub.add_parser("init", help="create trust policy version 1",
                        epilog=exit_codes("written", None, "a role without keys, a threshold above its key count, "
                                           "an --expires that is neither 365d nor an RFC 3339 time, a private key "
                                           "given as --root, a --key that is not a root key, an existing output "
                                           "without --force"))
    p.add_argument("--target", required=True, help="the enclave this policy is for (bundles name it; others are refused)")
    p.add_argument("--expires", required=True, help="duration (365d, 8w, 12h) or RFC 3339 UTC time")
    _role_flags(p, required=True)
    key_flags(p, repeat=True, help="root private key to sign with, key file or pkcs11: URI; "
                                    "a key that is not one of --root is refused (exit 2)")
    p.add_argument("-o", "--output", required=True, help="the policy file to write (trust.json)")
    force_flag(p)
    common_flags(p)
    p.set_defaults(func=cmd_trust_init)


def add_trust_rotate(sub) -> None:
    p = sub.add_parser("rotate", help="make the next version, signed by old and new root thresholds",
                        epilog=exit_codes("written (possibly INCOMPLETE: then 'trust sign' adds root signatures)",
                                           "the current version's root signatures do not verify",
                                           "a threshold above its key count, an unknown or ambiguous keyid, an "
                                           "existing output without --force"))
    p.add_argument("policy", help="the current trust policy")
    p.add_argument("--expires", help="new expiry: duration (365d) or RFC 3339 UTC time (default: unchanged)")
    _role_flags(p, required=False)
    p.add_argument("--revoke", action="append", default=[], metavar="KEYID|PUB",
                   help="revoke a key: keyid (8+ hex digits suffice if unique) or public key file (repeat)")
    key_flags(p, repeat=True, help="private key to sign with, key file or pkcs11: URI: a root key of the new or "
                                    "the current version (both root thresholds must be met); any other key is "
                                    "refused (exit 2)")
    p.add_argument("-o", "--output", required=True, help="the new version's file (the current one is kept)")
    force_flag(p)
    common_flags(p)
    p.set_defaults(func=cmd_trust_rotate)


def add_trust_sign(sub) -> None:
    p = sub.add_parser("sign", help="add a root signature to a policy (each root officer in turn)",
                        epilog=exit_codes("signed", "the policy (or --successor-of) is malformed or its signatures "
                                           "do not verify", "a key that is not a root key, or that already signed"))
    p.add_argument("policy", help="the policy file to add a signature to (rewritten in place)")
    key_flags(p, required=True, help="a root private key of the policy (or of --successor-of), key file or "
                                      "pkcs11: URI; others are refused (exit 2)")
    p.add_argument("--successor-of", metavar="PREVIOUS", help="for a rotation: the previous version, whose root keys also sign")
    common_flags(p)
    p.set_defaults(func=cmd_trust_sign)


def add_trust_show(sub) -> None:
    p = sub.add_parser("show", help="print a trust policy after verifying its root signatures",
                        epilog=exit_codes("shown", "root signatures below threshold, or expired (see --ignore-expiry)",
                                           "a missing file, a file that is no trust policy, an unknown keyid"))
    p.add_argument("policy", help="the trust policy file")
    p.add_argument("--ignore-expiry", action="store_true", help="show an expired policy (signatures are still checked)")
    p.add_argument("--keyid", help="show only this key: its name, roles and whether it is revoked (8+ hex digits)")
    common_flags(p)
    p.set_defaults(func=cmd_trust_show)


def add_toolkit(top) -> None:
    sub = group(
        top, "toolkit", "toolkit_command", help="toolkit releases: the wheels the toolkit role allows to install airgap",
        description="A toolkit release lists the wheels (file, size, sha256) of airgap and its dependencies, "
                    "its version and source commit, signed by the trust policy's toolkit role. Isolated hosts "
                    "install only wheels a valid release lists. See docs/trust-model.md, 'The toolkit role'.")
    add_toolkit_release(sub)
    add_toolkit_sign(sub)
    add_toolkit_verify(sub)
    add_toolkit_wheels(sub)


def add_toolkit_release(sub) -> None:
    p = sub.add_parser("release", help="write a release statement for a directory of wheels (and sign it)",
                        epilog="Exit codes: 0 written (INCOMPLETE says how many signatures are missing); 2 usage or "
                               "input error, including a key that is not a toolkit key of --trust.")
    p.add_argument("--wheels", required=True, metavar="DIR", help="the wheels of the release (scripts/build-wheel.sh output)")
    p.add_argument("--version", required=True, help="the toolkit's version; DIR must hold its airgap wheel")
    p.add_argument("--commit", required=True, help="the source commit the wheels were built from (git rev-parse TAG^{commit})")
    key_flags(p, repeat=True, help="a toolkit private key to sign with, key file or pkcs11: URI; needs --trust")
    p.add_argument("--trust", help="trust policy: the keys must be toolkit keys of it")
    p.add_argument("-o", "--output", required=True, help="the release statement to write (toolkit-release.json)")
    force_flag(p)
    common_flags(p)
    p.set_defaults(func=cmd_toolkit_release)


def add_toolkit_sign(sub) -> None:
    p = sub.add_parser("sign", help="add one toolkit key's signature to a release statement (each holder in turn)",
                        epilog=exit_codes("signed (INCOMPLETE says how many signatures are missing)",
                                           "the statement or the policy is malformed or does not verify",
                                           "a key that is not a toolkit key of --trust, or that already signed"))
    p.add_argument("release", help="the release statement to add a signature to (rewritten in place)")
    key_flags(p, required=True, help="a toolkit private key of --trust, key file or pkcs11: URI; others are "
                                      "refused (exit 2)")
    p.add_argument("--trust", required=True, help="trust policy whose toolkit role the key must hold")
    common_flags(p)
    p.set_defaults(func=cmd_toolkit_sign)


def add_toolkit_verify(sub) -> None:
    p = sub.add_parser("verify", help="check a release's toolkit signatures (and a directory of wheels against it)",
                        epilog="Exit codes: 0 verified; 1 rejected (threshold, revoked or wrong-role key, a wheel not "
                               "listed or with another digest); 2 usage or input error.")
    p.add_argument("release", help="the release statement (toolkit-release.json)")
    p.add_argument("--trust", required=True, help="trust policy whose toolkit role must have signed")
    p.add_argument("--wheels", metavar="DIR", help="also check that DIR holds exactly the listed wheels")
    common_flags(p)
    p.set_defaults(func=cmd_toolkit_verify)


def add_toolkit_wheels(sub) -> None:
    p = sub.add_parser(
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
    p.add_argument("--state", help="state directory for the bundle's verification (rollback, trusted policy); "
                                   "audit the run in STATE/audit.log")
    p.add_argument("-o", "--output", required=True, help="directory to write")
    force_flag(p, "an existing output directory as a whole")
    common_flags(p)
    p.set_defaults(func=cmd_toolkit_wheels)
