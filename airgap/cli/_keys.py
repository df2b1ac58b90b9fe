"""keygen and key export."""

from __future__ import annotations

from pathlib import Path

from airgap._internal.fsutil import check_output
from airgap.cli._base import (
    KeyArg,
    common_flags,
    emit,
    exit_codes,
    force_flag,
    group,
    key_options,
    load_key,
    unlock_flags,
)
from airgap.exceptions import UsageError


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
    emit(args, data, human)
    return 0


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
    emit(args, data, f"generated an Ed25519 key pair on the token (private key sensitive, not extractable)\n"
                      f"wrote {pub_path}\nkeyid {pub.keyid}\nsign with: --key '{uri}'")
    return 0


def cmd_key_export(args) -> int:
    from airgap import pkcs11
    from airgap.keys import is_pkcs11_uri, write_public

    out = check_output(args.output, force=args.force)
    if is_pkcs11_uri(args.key):
        opts = key_options(args).get(args.key, {})
        if "passphrase_file" in opts:
            raise UsageError("--passphrase-file is for key files; a token key takes --pin-file")
        pub = pkcs11.export_public(args.key, module=args.pkcs11_module, pin_file=opts.get("pin_file"), name=args.name)
    else:
        key = load_key(args, args.key)
        pub = key.public_key.with_name(args.name or key.name or Path(args.key).stem)
    write_public(out, pub, overwrite=args.force)
    emit(args, {"public_key": str(out), "keyid": pub.keyid, "name": pub.name}, f"wrote {out} ({pub.name})\nkeyid {pub.keyid}")
    return 0


def add_keygen(sub) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 key pair (encrypted private key, or on a PKCS#11 token)",
                       epilog=exit_codes("written", None, "NAME.key or NAME.pub exists without --force, a bad name, "
                                          "passphrases that differ, an unusable token"))
    p.add_argument("name", help="key name: letters, digits, '.', '_', '-' (becomes NAME.key and NAME.pub)")
    p.add_argument("--dir", default=".", help="where to write NAME.key and NAME.pub (made if missing)")
    p.add_argument("--no-passphrase", action="store_true", help="write the private key unencrypted (says so in the file)")
    p.add_argument("--passphrase-file", metavar="FILE", help="file whose first line is the new key's passphrase")
    p.add_argument("--pkcs11", metavar="URI", help="generate the pair on this token (pkcs11:token=...;object=...); "
                   "the private key never leaves it; writes only NAME.pub")
    p.add_argument("--pin-file", metavar="FILE", help="file whose first line is the token's user PIN")
    p.add_argument("--pkcs11-module", metavar="PATH", help="PKCS#11 module (default $AIRGAP_PKCS11_MODULE)")
    force_flag(p, "an existing NAME.key and NAME.pub, losing the old key")
    common_flags(p)
    p.set_defaults(func=cmd_keygen)


def add_key(top) -> None:
    sub = group(top, "key", "key_command", help="work with keys: export a public key file")
    add_key_export(sub)


def add_key_export(sub) -> None:
    p = sub.add_parser("export", help="write the .pub file of a private key (key file or pkcs11: URI)",
                        epilog=exit_codes("written", None, "an existing output without --force, a public key "
                                           "given as the key, a wrong passphrase or PIN"))
    p.add_argument("key", action=KeyArg, help="key file or pkcs11: URI")
    p.add_argument("-o", "--output", required=True, help="public key file to write")
    p.add_argument("--name", help="name recorded in the .pub file (default: the key's name or token label)")
    force_flag(p)
    unlock_flags(p)
    common_flags(p)
    p.set_defaults(func=cmd_key_export)
