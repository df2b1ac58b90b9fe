"""The receiving side's verbs: verify, import, join, extract, manifests render, packages export.

Each calls one library entry point (:mod:`airgap.receive`, :func:`airgap.importer.import_bundle`,
which write the audit entries) and prints what it returns.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from airgap._internal.fsutil import display, record_names
from airgap._internal.text import escape, plural
from airgap.cli._base import (
    common_flags,
    emit,
    exit_codes,
    force_flag,
    group,
    login_credentials,
    login_flags,
    override_flags,
    override_of,
    print_notes,
    print_report,
    refused,
    registry_flags,
    show_progress,
    utc_now,
    verified_output_flags,
)
from airgap.exceptions import AirgapError


def cmd_verify(args) -> int:
    from airgap import receive

    try:
        verified = receive.verify_bundle(args.bundle, trust_path=args.trust, state_dir=args.state,
                                         audit_log=args.audit_log, record=args.record, override=override_of(args),
                                         now=utc_now(), progress=show_progress(args))
    except AirgapError as exc:
        return refused(args, exc)
    with verified:
        print_report(args, verified.report, None)
    return 0


def cmd_extract(args) -> int:
    from airgap import receive

    try:
        result = receive.extract_bundle(args.bundle, args.output, trust_path=args.trust, state_dir=args.state,
                                        audit_log=args.audit_log, prefixes=args.member, force=args.force, now=utc_now(),
                                        progress=show_progress(args))
    except AirgapError as exc:
        return refused(args, exc)
    m, out = result.manifest, result.output
    data = {"result": "accepted", "bundle": args.bundle, "name": m.name, "version": m.version, "manifest_digest": m.digest,
            "output": args.output, "members": result.written}
    emit(args, data, f"EXTRACTED: {plural(len(result.written), 'member')} of {m.name} {m.version} (manifest {m.digest}) into {display(out)}, "
                      "each checked against the verified manifest as it was written")
    return 0


def cmd_import(args) -> int:
    from airgap import importer

    override = override_of(args)
    try:
        result = importer.import_bundle(
            args.bundle,
            trust_path=args.trust,
            registry=args.registry,
            state_dir=args.state,
            files_dir=args.files_dir,
            plain_http=args.plain_http,
            ca_file=args.ca_file,
            credentials=login_credentials(args),
            override=override,
            progress=show_progress(args),
            log=None if args.quiet or args.json else (lambda msg: print(escape(msg), file=sys.stderr)),
            audit_log=args.audit_log,
        )
    except AirgapError as exc:
        report = getattr(exc, "report", None)
        if args.json:  # the check list always, whatever failed and wherever
            print(json.dumps(record_names(_import_failure(args, exc, report)), indent=2, sort_keys=True))
            print(f"airgap: {escape(str(exc))}", file=sys.stderr)
            print_notes(exc)
            return exc.exit_code
        if report is not None and report.error is exc:  # verification refused it: the checks say where
            return refused(args, exc)
        raise
    # The import wrote its overrides and acceptance to STATE/audit.log before the state they stamp.
    emit(args, {**result.to_dict(), **_checks_of(result.verify_report)}, importer.format_result(result))
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


def cmd_join(args) -> int:
    from airgap import receive

    try:
        result = receive.join_parts(args.bundle, args.output, trust_path=args.trust, state_dir=args.state,
                                    force=args.force, now=utc_now(), progress=show_progress(args))
    except AirgapError as exc:
        return refused(args, exc)
    m = result.manifest
    emit(args, {"result": "accepted", "bundle": args.output, "sha256": result.sha256, "name": m.name,
                 "version": m.version, "manifest_digest": m.digest},
          f"joined {m.name} {m.version} (manifest {m.digest}) into {display(args.output)} (sha256:{result.sha256}); "
          "every member checked against the verified manifest as it was written")
    return 0


def cmd_manifests_render(args) -> int:
    from airgap import render

    result = render.render_bundle(args.bundle, trust_path=args.trust, registry=args.registry, out=args.output,
                                  state_dir=args.state, now=utc_now(), force=args.force)
    emit(args, result.to_dict(), "" if args.quiet else result.to_text())
    return 0


def cmd_packages_export(args) -> int:
    from airgap import debs

    result = debs.export(args.bundle, trust_path=args.trust, out=args.output, state_dir=args.state, now=utc_now(),
                         force=args.force)
    human = (f"{result['output']}: the apt repository of {result['bundle']} ({plural(len(result['packages']), 'package')}, "
             f"{plural(len(result['written']), 'file')} written)\n  apt source: {result['sources_line']}")
    emit(args, result, "" if args.quiet else human)
    return 0


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="verify a bundle against the trust policy; exit 0 only if accepted",
                       epilog=exit_codes("accepted (VERIFIED)", "rejected: the report names the artifact and why",
                                          "a missing file, a --trust file that is no trust policy, --record "
                                          "without --state, an override without a reason"))
    p.add_argument("bundle", help="bundle tar, parts index (*.parts.json) or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--state", help="state directory (rollback state, trusted policy, audit log)")
    p.add_argument("--record", action="store_true", help="record the accepted version in --state (verify-only sites)")
    p.add_argument("--audit-log", help="audit log (default STATE/audit.log)")
    override_flags(p)
    common_flags(p)
    p.set_defaults(func=cmd_verify)


def add_import(sub) -> None:
    p = sub.add_parser("import", help="verify, then push images into the internal registry and unpack files",
                       epilog=exit_codes("imported (or already present)", "rejected by verify, or the registry "
                                          "failed", "a missing file, a --trust file that is no trust policy, "
                                          "--username without --password-file"))
    p.add_argument("bundle", help="bundle tar, parts index or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--registry", required=True, help="internal registry host:port")
    p.add_argument("--state", required=True, help="state directory (rollback state, trusted policy, audit log)")
    p.add_argument("--files-dir", help="where the bundle's files/ are unpacked (versions/ + current link)")
    login_flags(p)
    p.add_argument("--audit-log", help="audit log (default STATE/audit.log)")
    override_flags(p)
    registry_flags(p)
    common_flags(p)
    p.set_defaults(func=cmd_import)


def add_join(sub) -> None:
    p = sub.add_parser("join", help="verify the media parts, then write the bundle from what was verified",
                       epilog=exit_codes("joined", "the bundle or a part is rejected (missing, damaged, badly signed, "
                                          "not the one the index names)",
                                          "no single index in the directory, an existing output without --force"))
    p.add_argument("bundle", metavar="parts", help="parts index (*.parts.json) or its directory")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--state", help="state directory: check rollback against it, audit the join (nothing else is recorded)")
    p.add_argument("-o", "--output", required=True, help="the bundle file to write")
    force_flag(p)
    common_flags(p)
    p.set_defaults(func=cmd_join)


def add_extract(sub) -> None:
    p = sub.add_parser("extract", help="verify a bundle, then write members from what was verified (no other tar)",
                       epilog=exit_codes("every member asked for was written", "the bundle is rejected, or a member "
                                          "did not hash as the manifest says (nothing of it is left)",
                                          "a --member prefix no member has, an existing directory without --force"))
    p.add_argument("bundle", help="bundle tar, parts index or directory of parts")
    p.add_argument("--trust", required=True, help="trust policy file")
    p.add_argument("--state", help="state directory: check rollback against it, audit the extraction (nothing else is recorded)")
    p.add_argument("--audit-log", help="audit log (default STATE/audit.log)")
    p.add_argument("--member", action="append", default=[], metavar="PREFIX",
                   help="extract the members whose path starts with PREFIX (repeat; default: every member)")
    p.add_argument("-o", "--output", required=True, help="directory to create (must not exist, unless --force)")
    force_flag(p, "files of the same name in an existing directory (the directory is written into)")
    common_flags(p)
    p.set_defaults(func=cmd_extract)


def add_manifests(top) -> None:
    sub = group(top, "manifests", "manifests_command", help="the Kubernetes workloads a bundle carries")
    add_manifests_render(sub)


def add_manifests_render(sub) -> None:
    p = sub.add_parser(
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
    verified_output_flags(p, "write into an existing directory (files replaced atomically)")
    p.set_defaults(func=cmd_manifests_render)


def add_packages(top) -> None:
    sub = group(top, "packages", "packages_command", help="the OS packages a bundle carries")
    add_packages_export(sub)


def add_packages_export(sub) -> None:
    p = sub.add_parser(
        "export", help="verify, then write the bundle's apt repository (the .deb files, Packages, Release)",
        description="Verify the bundle, then write its files/packages/ into DIR, each file hashed against the "
                    "signed manifest as it is written: a flat apt repository for 'deb [trusted=yes] file:DIR ./' "
                    "(its trust is the bundle's signatures).",
        epilog="Exit codes: 0 written; 1 the bundle was rejected; 2 usage or input error (existing DIR without "
               "--force, a bundle without packages).")
    verified_output_flags(p, "update an existing directory (unchanged files are kept)")
    p.set_defaults(func=cmd_packages_export)
