"""The connected side's verbs: build, inspect, diff, sign, unsign, split, transfer, inventory."""

from __future__ import annotations

import sys
from typing import Any

from airgap._internal.fsutil import check_output
from airgap._internal.text import plural
from airgap.cli._base import (
    common_flags,
    confirm,
    emit,
    exit_codes,
    force_flag,
    history_dir,
    key_flags,
    load_key,
    login_credentials,
    login_flags,
    positive_int,
    registry_flags,
    review_flags,
    show_plan,
    show_progress,
    source_flags,
    source_limits,
    utc_now,
)
from airgap.exceptions import AirgapError, UsageError


def cmd_build(args) -> int:
    from airgap import build

    limits = source_limits(args)
    key = load_key(args, args.key)
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
        progress=show_progress(args),
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
    emit(args, data, "\n".join(lines))
    return 0


def cmd_inspect(args) -> int:
    from airgap import inspect

    if args.sbom:
        if args.trust:
            raise UsageError("--sbom shows packages; give --trust without --sbom to see signatures")
        d = inspect.sbom_summary(args.bundle)
        emit(args, d, inspect.format_sbom(d))
        return 0
    s = inspect.summary(args.bundle, trust_path=args.trust, against=args.against, history_dir=history_dir(args))
    emit(args, s, inspect.format_summary(s))
    return 0


def cmd_diff(args) -> int:
    from airgap import inspect

    d = inspect.diff(args.a, args.b)
    emit(args, d, inspect.format_diff(d), inspect.diff_summary(d))
    return 0


UNCHECKED_KEY = ("airgap: warning: no --trust given, so {key} cannot be checked: a signature by a key that is not "
                 "an officer key of the trust policy is no officer's approval, and one by an unknown, revoked or "
                 "root-only key makes every verify reject the bundle until 'airgap unsign' removes it. "
                 "Give --trust TRUST.json to check the key first.")


def _approve_signing(args, plan, key) -> bool:
    """The code first (its own typed yes), then the signature; --yes answers both."""
    name = f"{plan.manifest.name} {plan.manifest.version}"
    if not args.trust:
        print(UNCHECKED_KEY.format(key=args.key), file=sys.stderr)
    code = plan.code_to_approve
    if code and not confirm(args, f"{plural(len(code), 'item')} marked CODE above will run as code on the isolated "
                                   f"hosts ({', '.join(i.name for i in code[:3])}{', …' if len(code) > 3 else ''}). "
                                   "Type 'yes' to approve them: ",
                             "refusing to sign: the bundle adds or changes code that runs on the isolated hosts "
                             "(marked CODE in the plan); approve it on a terminal or pass --yes", typed_yes=True):
        print("not signed: the code was not approved", file=sys.stderr)
        return False
    if args.trust:
        ok = confirm(args, f"Sign {name} with {key.public_key.label}? [y/N] ",
                      "refusing to sign without confirmation: run on a terminal or pass --yes")
    else:
        ok = confirm(args, f"Sign {name} with the unchecked key {key.public_key.label}? Type 'yes': ",
                      "refusing to sign with a key whose role was not checked: give --trust TRUST.json "
                      "(or --yes to sign unchecked)", typed_yes=True)
    if not ok:
        print("not signed", file=sys.stderr)
    return ok


def cmd_sign(args) -> int:
    from airgap import sign

    sign.check_bundle_file(args.bundle, "sign")  # media parts are refused before a passphrase is asked
    key = load_key(args, args.key)
    plan = sign.prepare(args.bundle, key, key_source=args.key, trust_path=args.trust, now=utc_now(),
                        against=args.against, history_dir=history_dir(args))
    show_plan(args, plan)
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
            "review": plan.review.to_dict() if plan.review is not None else None, "history_record": str(kept) if kept else None}
    human = f"signed: {plural(plan.signature_count, 'signature')} on {args.bundle}" + (f" ({status})" if status else "")
    if kept:
        human += f"\nkept for the next review: {kept}"
    emit(args, data, human)
    return 0


def cmd_unsign(args) -> int:
    from airgap import sign

    plan = sign.prepare_unsign(args.bundle, args.keyid, trust_path=args.trust)
    show_plan(args, plan)
    removed = plan.removed
    if not confirm(args, f"Remove signature {plan.index + 1} (keyid {removed.keyid[:16]}…) from "
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
    emit(args, data, human)
    return 0


def cmd_split(args) -> int:
    from airgap import split

    key = load_key(args, args.key) if args.key else None
    index = split.split(args.bundle, args.output, args.size, signing_key=key, force=args.force)
    data = index.to_dict()
    lines = [f"split {args.bundle} into {plural(len(index.parts), 'part')} in {args.output}"]
    lines += [f"  {p.name}  {plural(p.size, 'byte')}  sha256:{p.sha256}" for p in index.parts]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_transfer(args) -> int:
    from airgap import transfer

    bar: dict[str, Any] = {}

    def progress(name: str, done: int, total: int) -> None:
        if not show_progress(args):
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
    emit(args, data, "\n".join(lines), summary)
    return 0


def cmd_inventory(args) -> int:
    from airgap import inventory
    from airgap.registry import RegistryClient

    check_output(args.output, force=args.force)
    with RegistryClient(args.registry, plain_http=args.plain_http, ca_file=args.ca_file, credentials=login_credentials(args),
                        auth_file=args.auth_file, limits=source_limits(args)) as client:
        doc = inventory.collect(client)
    digest = inventory.write(doc, args.output, force=args.force)
    emit(args, {"inventory": args.output, "digest": digest, "repositories": len(doc["repositories"]), "blobs": len(doc["blobs"])},
          f"wrote {args.output}: {plural(len(doc['repositories']), 'repository')}, {plural(len(doc['blobs']), 'blob')} ({digest})")
    return 0


def add_build(sub) -> None:
    p = sub.add_parser("build", help="build and sign a bundle from a spec",
                       epilog=exit_codes("built", "a source registry failed or served something refused "
                                          "(digest mismatch, sovereignty)", "an invalid spec (FILE:LINE: field: problem), "
                                          "an existing output without --force, an unusable key"))
    p.add_argument("spec", help="the bundle spec (YAML, see docs/spec-reference.md)")
    p.add_argument("-o", "--output", required=True, help="the bundle file to write (.tar)")
    key_flags(p, required=True, help="builder's private key: key file or pkcs11: URI")
    p.add_argument("--created", help="creation time (RFC 3339 UTC); default SOURCE_DATE_EPOCH or now")
    p.add_argument("--since", help="inventory or manifest of what the receiving side has: build a differential bundle")
    p.add_argument("-j", "--jobs", type=positive_int, default=4, help="blobs downloaded in parallel (default 4)")
    p.add_argument("--apt-sources", help="apt sources file to resolve packages: with (instead of the spec's)")
    p.add_argument("--apt-baseline", help="dpkg status of the target's base system (instead of the spec's)")
    force_flag(p)
    registry_flags(p)
    source_flags(p)
    common_flags(p)
    p.set_defaults(func=cmd_build)


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show what a bundle contains (and who signed it, with --trust)",
                       epilog=exit_codes("shown", "the bundle is malformed, or the policy's root signatures do not "
                                          "verify", "a missing file, a --trust file that is no trust policy"))
    p.add_argument("bundle", help="bundle tar, parts index (*.parts.json) or directory of parts")
    p.add_argument("--trust", help="trust policy: show roles, thresholds met and missing")
    review_flags(p)
    p.add_argument("--sbom", action="store_true", help="list every image's packages (from the bundle's CycloneDX SBOMs)")
    common_flags(p)
    p.set_defaults(func=cmd_inspect)


def add_diff(sub) -> None:
    p = sub.add_parser("diff", help="images, files and packages added, removed, changed between two bundles",
                       epilog=exit_codes("compared (whether or not they differ)", "a bundle is malformed",
                                          "a missing file"))
    p.add_argument("a", help="the older bundle (tar, parts index or directory of parts)")
    p.add_argument("b", help="the newer bundle")
    common_flags(p)
    p.set_defaults(func=cmd_diff)


def add_sign(sub) -> None:
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
    key_flags(p, required=True, help="the officer's private key: key file or pkcs11: URI")
    p.add_argument("--trust", help="trust policy: check that --key is one of its officer keys (recommended)")
    review_flags(p)
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation (neither for the code nor for the signature)")
    common_flags(p)
    p.set_defaults(func=cmd_sign)


def add_unsign(sub) -> None:
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
    common_flags(p)
    p.set_defaults(func=cmd_unsign)


def add_split(sub) -> None:
    p = sub.add_parser("split", help="cut a signed bundle into media-sized parts with a part index",
                       description="Cut a bundle into parts of at most --size bytes plus a part index "
                                   "(BUNDLE.parts.json). Split after every signature is on the bundle: "
                                   "parts cannot be signed.",
                       epilog=exit_codes("split", None, "a bad --size, a missing bundle, parts of this bundle "
                                          "already in the directory without --force"))
    p.add_argument("bundle", help="the bundle file, signed by builder and officer")
    p.add_argument("--size", required=True, help="part size: bytes or K/M/G/T (binary), e.g. 4480M")
    p.add_argument("-o", "--output", required=True, help="directory for the parts (made if missing)")
    key_flags(p, help="sign the part index with this private key: key file or pkcs11: URI")
    force_flag(p, "parts and the index of the same bundle already in the directory")
    common_flags(p)
    p.set_defaults(func=cmd_split)


def add_transfer(sub) -> None:
    p = sub.add_parser("transfer", help="resumable SFTP upload with a remote sha256 check",
                       epilog=exit_codes("every file is at the destination with the same sha256",
                                          "the connection kept failing (rerun to resume), the host key was refused, "
                                          "or the remote copy hashed differently",
                                          "a missing source, an ssh:// destination without --identity and "
                                          "--known-hosts, a destination file with other content without --force"))
    p.add_argument("source", help="bundle file or directory of parts")
    p.add_argument("destination", help="ssh://user@host:port/dir or a local directory")
    p.add_argument("--identity", help="private key for SSH")
    p.add_argument("--known-hosts", help="known_hosts file; unknown host keys are refused")
    p.add_argument("--accept-new-host-key", action="store_true", help="trust an unknown host key and record it")
    force_flag(p, "a destination file that holds other content")
    common_flags(p)
    p.set_defaults(func=cmd_transfer)


def add_inventory(sub) -> None:
    p = sub.add_parser("inventory", help="export what the internal registry holds (input for build --since)",
                       epilog=exit_codes("written", "the registry failed or answered something unusable",
                                          "an existing output without --force, --username without --password-file"))
    p.add_argument("--registry", required=True, help="the internal registry host:port")
    p.add_argument("-o", "--output", required=True, help="the inventory file to write (JSON)")
    login_flags(p)
    force_flag(p)
    registry_flags(p)
    source_flags(p)
    common_flags(p)
    p.set_defaults(func=cmd_inventory)
