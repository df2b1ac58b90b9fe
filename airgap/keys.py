"""Ed25519 keys in TUF/securesystemslib wire format, and private key files.

Public keys are TUF key objects::

    {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "<64 hex>"}}

and a keyid is the sha256 of the canonical JSON of exactly that object, so keyids
computed here match python-tuf and securesystemslib byte for byte.

Private key files are JSON, mode 0600, and by default encrypted with a key
derived by Argon2id from a passphrase and sealed with SecretBox
(XSalsa20-Poly1305).  The KDF limits are recorded in the file so they can be
raised later without breaking old files.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.signing
import nacl.utils

from airgap._internal import digest as _digest
from airgap._internal.fsutil import atomic_write, check_output, check_output_dir, read_capped
from airgap._internal.jsonutil import canonical_bytes, loads_strict, pretty_bytes
from airgap.exceptions import FormatError, InputError, InvalidValueError, KeyFileError, OutputExistsError, SignatureError

__all__ = [
    "KDF_MIN",
    "KDF_MODERATE",
    "KDF_SENSITIVE",
    "KEYTYPE",
    "KeyOptions",
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV_PREFIX",
    "PRIVATE_KEY_TYPE",
    "PROMPT_TRIES",
    "PUBLIC_KEY_TYPE",
    "PassphraseSource",
    "PublicKey",
    "SCHEME",
    "SIGNATURE_SIZE",
    "SigningKey",
    "UNENCRYPTED_WARNING",
    "is_pkcs11_uri",
    "key_env_name",
    "keygen",
    "keygen_check_name",
    "load_public",
    "load_signing_key",
    "passphrase_from_env_or_tty",
    "public_file_bytes",
    "read_secret_file",
    "short_keyid",
    "write_public",
]

KEYTYPE = "ed25519"
SCHEME = "ed25519"
SIGNATURE_SIZE = 64

PRIVATE_KEY_TYPE = "airgap-private-key"
PUBLIC_KEY_TYPE = "airgap-public-key"

# Argon2id's limits straight from libsodium (the values nacl.pwhash.argon2id
# re-exports): start-up, verifying never derives a key, so nacl.pwhash is
# imported only in _derive.
_OPSLIMIT_MIN: int = nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_MIN
_MEMLIMIT_MIN: int = nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_MIN
_SALTBYTES: int = nacl.bindings.crypto_pwhash_SALTBYTES

KDF_MODERATE = (nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_MODERATE, nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_MODERATE)
KDF_SENSITIVE = (nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_SENSITIVE,
                 nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_SENSITIVE)
# Only for tests: keeps a test suite full of encrypted keys fast.
KDF_MIN = (_OPSLIMIT_MIN, _MEMLIMIT_MIN)

# A key file is untrusted input until decrypted: without an upper bound a
# crafted file could ask for terabytes of memory or hours of work.
_MAX_OPSLIMIT = KDF_SENSITIVE[0] * 4
_MAX_MEMLIMIT = KDF_SENSITIVE[1] * 4
_MAX_KEY_FILE = 64 * 1024

UNENCRYPTED_WARNING = (
    "this private key is stored WITHOUT encryption; anyone who can read this file can sign"
)

PASSPHRASE_ENV = "AIRGAP_PASSPHRASE"

_HEX = re.compile(r"(?:[0-9a-f]{2})+\Z")


def short_keyid(keyid: str) -> str:
    """The abbreviated keyid shown to people (``3f2a1b2c…``)."""
    return f"{keyid[:8]}…"


def _keyid(keyval_hex: str) -> str:
    return hashlib.sha256(
        canonical_bytes({"keytype": KEYTYPE, "scheme": SCHEME, "keyval": {"public": keyval_hex}})
    ).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key.  ``name`` is a label for people, never part of identity."""

    public: bytes
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.public, bytes) or len(self.public) != 32:
            raise InvalidValueError("an ed25519 public key is 32 bytes")

    keytype = KEYTYPE
    scheme = SCHEME

    @property
    def keyval(self) -> dict[str, str]:
        return {"public": self.public.hex()}

    @property
    def keyid(self) -> str:
        """sha256 hex of the canonical key object (the TUF/securesystemslib default keyid)."""
        return _keyid(self.public.hex())

    @property
    def label(self) -> str:
        """``builder-1 3f2a1b2c…`` or just ``3f2a1b2c…``: how messages name this key."""
        short = short_keyid(self.keyid)
        return f"{self.name} {short}" if self.name else short

    def with_name(self, name: str | None) -> PublicKey:
        return PublicKey(self.public, name)

    def to_dict(self) -> dict[str, Any]:
        return {"keytype": KEYTYPE, "scheme": SCHEME, "keyval": self.keyval}

    @classmethod
    def from_dict(cls, d: Any, artifact: str) -> PublicKey:
        """Parse a key object strictly: exactly the TUF fields, ed25519 only, lower-case hex."""
        if not isinstance(d, dict) or set(d) != {"keytype", "scheme", "keyval"}:
            raise FormatError(
                artifact, "a key must be an object with exactly keytype, scheme and keyval"
            )
        if d["keytype"] != KEYTYPE or d["scheme"] != SCHEME:
            raise FormatError(
                artifact,
                f"unsupported key type {d['keytype']!r}/{d['scheme']!r} (only ed25519/ed25519)",
            )
        keyval = d["keyval"]
        if not isinstance(keyval, dict) or set(keyval) != {"public"}:
            raise FormatError(artifact, "keyval must be an object with exactly 'public'")
        public = keyval["public"]
        if not _digest.is_hex(public):
            raise FormatError(artifact, "keyval.public must be 64 lower-case hex characters")
        raw = bytes.fromhex(public)
        # Low-order or non-canonical points would let a forger produce
        # signatures that "verify" for any message under some libraries.
        if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
            raise FormatError(artifact, f"key {short_keyid(_keyid(public))} is not a valid ed25519 point")
        return cls(raw)

    def verify(self, signature: bytes, data: bytes, *, artifact: str = "signature") -> None:
        """Raise :class:`SignatureError` unless *signature* is this key's signature of *data*."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            raise SignatureError(
                artifact, f"signature by key {self.label} is malformed (not {SIGNATURE_SIZE} bytes)"
            )
        try:
            nacl.signing.VerifyKey(self.public).verify(data, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            raise SignatureError(artifact, f"signature by key {self.label} is invalid") from None


def load_public(path: str | os.PathLike) -> PublicKey:
    """Read a ``.pub`` file written by :func:`keygen`; the keyid in it must match the key."""
    artifact = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{artifact}: cannot read public key: {exc.strerror}") from None
    # A public key file is the caller's input, like a private one: what is wrong
    # with it is an input error (exit 2) that says which file to give instead.
    hint = "give the .pub file 'airgap keygen' wrote"
    try:
        doc = loads_strict(data, artifact, max_size=_MAX_KEY_FILE)
    except FormatError as exc:
        raise KeyFileError(f"{artifact}: not a public key file ({exc.reason}); {hint}") from None
    if isinstance(doc, dict) and doc.get("_type") == PRIVATE_KEY_TYPE:
        raise KeyFileError(f"{artifact} is a private key file; a public key is expected here "
                           "(the .pub file 'airgap keygen' wrote next to it)")
    if not _is_public_doc(doc):
        raise KeyFileError(f"{artifact}: not a public key file (it has exactly keyid, key and name); {hint}")
    if not isinstance(doc["name"], str) or not doc["name"]:
        raise KeyFileError(f"{artifact}: name must be a non-empty string")
    try:
        key = PublicKey.from_dict(doc["key"], artifact).with_name(doc["name"])
    except FormatError as exc:
        raise KeyFileError(f"{artifact}: {exc.reason}") from None
    if doc["keyid"] != key.keyid:
        raise KeyFileError(f"{artifact}: keyid {doc['keyid']!r} does not match the key ({key.keyid}); the file was edited")
    return key


def public_file_bytes(key: PublicKey) -> bytes:
    """The content of a ``.pub`` file for *key* (which must have a name)."""
    if not key.name:
        raise InvalidValueError("a public key file needs a name")
    return pretty_bytes({"keyid": key.keyid, "key": key.to_dict(), "name": key.name})


class SigningKey:
    """An Ed25519 private key.  Never printed, never written unencrypted unless asked."""

    def __init__(self, seed: bytes, name: str | None = None):
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise InvalidValueError("an ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.name = name

    def __repr__(self) -> str:
        return f"SigningKey({self.public_key.label!r})"

    @classmethod
    def generate(cls, name: str | None = None) -> SigningKey:
        return cls(nacl.utils.random(32), name)

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(bytes(self._key.verify_key), self.name)

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of *data*."""
        return self._key.sign(data).signature

    # --- key files ---------------------------------------------------------

    def to_file_bytes(
        self, passphrase: str | None, *, kdf_limits: tuple[int, int] = KDF_MODERATE
    ) -> bytes:
        doc: dict[str, Any] = {
            "_type": PRIVATE_KEY_TYPE,
            "version": 1,
            "keytype": KEYTYPE,
            "scheme": SCHEME,
            "keyid": self.keyid,
            "public": self.public_key.public.hex(),
        }
        if self.name:
            doc["name"] = self.name
        seed = bytes(self._key)
        if passphrase is None:
            doc["encrypted"] = False
            doc["warning"] = UNENCRYPTED_WARNING
            doc["seed"] = seed.hex()
        else:
            if not isinstance(passphrase, str) or passphrase == "":
                raise InputError("an empty passphrase is not allowed; use --no-passphrase deliberately")
            opslimit, memlimit = kdf_limits
            salt = nacl.utils.random(_SALTBYTES)
            box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
            nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
            doc["encrypted"] = True
            doc["kdf"] = {
                "name": "argon2id",
                "opslimit": opslimit,
                "memlimit": memlimit,
                "salt": salt.hex(),
            }
            doc["cipher"] = "xsalsa20-poly1305"
            doc["nonce"] = nonce.hex()
            doc["ciphertext"] = box.encrypt(seed, nonce).ciphertext.hex()
        return pretty_bytes(doc)

    def save(
        self,
        path: str | os.PathLike,
        passphrase: str | None,
        *,
        kdf_limits: tuple[int, int] = KDF_MODERATE,
        overwrite: bool = False,
    ) -> None:
        """Write the key file, mode 0600 from its first byte; ``passphrase=None`` stores it unencrypted."""
        path = Path(path)
        if not overwrite and (path.exists() or path.is_symlink()):
            raise OutputExistsError(str(path))
        _write_private(path, self.to_file_bytes(passphrase, kdf_limits=kdf_limits), overwrite=overwrite)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        passphrase_provider: Callable[[], str] | None = None,
        *,
        tries: int = 1,
    ) -> SigningKey:
        """Read a key file; *passphrase_provider* is called only if the file is encrypted.

        With ``tries`` > 1 (a person at a terminal) a wrong passphrase asks again;
        a passphrase from a file or the environment gets one try, since asking the
        same source again gives the same answer.
        """
        artifact = str(path)
        data = _read_private(artifact)
        try:
            doc = loads_strict(data, artifact, max_size=_MAX_KEY_FILE)
        except FormatError as exc:
            raise KeyFileError(f"{artifact}: not a private key file ({exc.reason})") from None
        return cls._from_doc(doc, artifact, passphrase_provider, tries)

    @classmethod
    def _from_doc(cls, doc: Any, artifact: str, passphrase_provider, tries: int = 1) -> SigningKey:
        def bad(reason: str) -> KeyFileError:
            return KeyFileError(f"{artifact}: {reason}")

        if _is_public_doc(doc):
            raise _public_given(artifact)
        if not isinstance(doc, dict) or doc.get("_type") != PRIVATE_KEY_TYPE:
            raise bad(f"not a private key file (expected _type {PRIVATE_KEY_TYPE!r})")
        if doc.get("version") != 1:
            raise bad(f"unsupported key file version {doc.get('version')!r}")
        if doc.get("keytype") != KEYTYPE or doc.get("scheme") != SCHEME:
            raise bad("only ed25519 keys are supported")
        name = doc.get("name")
        if name is not None and not isinstance(name, str):
            raise bad("name must be a string")
        common = {"_type", "version", "keytype", "scheme", "keyid", "public", "encrypted"}
        if name is not None:
            common.add("name")
        encrypted = doc.get("encrypted")
        if encrypted is False:
            if set(doc) != common | {"warning", "seed"}:
                raise bad("unexpected or missing fields in an unencrypted key file")
            seed = _hex_field(doc, "seed", 32, bad)
        elif encrypted is True:
            if set(doc) != common | {"kdf", "cipher", "nonce", "ciphertext"}:
                raise bad("unexpected or missing fields in an encrypted key file")
            kdf = doc["kdf"]
            if not isinstance(kdf, dict) or set(kdf) != {"name", "opslimit", "memlimit", "salt"}:
                raise bad("kdf must have exactly name, opslimit, memlimit and salt")
            if kdf["name"] != "argon2id" or doc["cipher"] != "xsalsa20-poly1305":
                raise bad("unsupported kdf or cipher (expected argon2id, xsalsa20-poly1305)")
            opslimit, memlimit = kdf["opslimit"], kdf["memlimit"]
            if (
                type(opslimit) is not int
                or type(memlimit) is not int
                or not _OPSLIMIT_MIN <= opslimit <= _MAX_OPSLIMIT
                or not _MEMLIMIT_MIN <= memlimit <= _MAX_MEMLIMIT
            ):
                raise bad("kdf limits are out of the accepted range")
            salt = _hex_field(kdf, "salt", _SALTBYTES, bad)
            nonce = _hex_field(doc, "nonce", nacl.secret.SecretBox.NONCE_SIZE, bad)
            ciphertext = _hex_field(doc, "ciphertext", 32 + nacl.secret.SecretBox.MACBYTES, bad)
            if passphrase_provider is None:
                raise bad("the key is encrypted and no passphrase was provided")
            opened: bytes | None = None
            for _ in range(max(1, tries)):
                passphrase = passphrase_provider()
                if not isinstance(passphrase, str):
                    raise bad("the passphrase provider did not return a string")
                try:
                    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
                    opened = box.decrypt(ciphertext, nonce)
                    break
                except nacl.exceptions.CryptoError:
                    continue
            if opened is None:
                source = getattr(passphrase_provider, "source", None)
                raise bad("wrong passphrase" + (f" ({source})" if source else "") + " or corrupted key file")
            seed = opened
        else:
            raise bad("'encrypted' must be true or false")
        key = cls(seed, name)
        # The public half and keyid are stored in clear for people and tools;
        # a file whose clear fields disagree with its secret has been edited.
        if doc["public"] != key.public_key.public.hex() or doc["keyid"] != key.keyid:
            raise bad("public key or keyid does not match the private key (corrupted key file)")
        return key


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    import nacl.pwhash.argon2id as argon2id  # start-up: only encrypting or decrypting a key needs it

    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase.encode("utf-8"),
        salt,
        opslimit=opslimit,
        memlimit=memlimit,
    )


def _hex_field(doc: dict, name: str, size: int, bad) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.match(value):
        raise bad(f"{name} must be {2 * size} lower-case hex characters")
    return bytes.fromhex(value)


def _is_public_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and set(doc) == {"keyid", "key", "name"}


def _public_given(artifact: str) -> KeyFileError:
    private = f"the private key file ({Path(artifact).with_suffix('.key')})" if artifact.endswith(".pub") else "the private key file"
    return KeyFileError(f"{artifact} is a public key: give {private} or a pkcs11: URI")


def _peek_json(fd: int) -> Any:
    # Only to tell "a .pub given as --key" from "a secret with loose permissions";
    # the content is used for nothing else.
    try:
        return loads_strict(os.pread(fd, _MAX_KEY_FILE, 0), "key file", max_size=_MAX_KEY_FILE)
    except (FormatError, OSError):
        return None


def _write_private(path: Path, data: bytes, *, overwrite: bool) -> None:
    # Created with mode 0600 from the first byte: the secret is never readable
    # by others, not even between create and chmod.
    atomic_write(path, data, 0o600, overwrite=overwrite)


def _read_private(artifact: str) -> bytes:
    try:
        fd = os.open(artifact, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"{artifact}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{artifact}: cannot open key file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{artifact}: not a regular file")
        # Same rule as ssh: a secret others can read may already be copied.
        if st.st_mode & 0o077:
            if _is_public_doc(_peek_json(fd)):
                raise _public_given(artifact)
            mode = stat.S_IMODE(st.st_mode)
            raise KeyFileError(
                f"{artifact}: permissions {mode:04o} are too open; a private key must not be "
                f"accessible by group or others (run: chmod 600 {artifact})"
            )
        if st.st_size > _MAX_KEY_FILE:
            raise KeyFileError(f"{artifact}: too large to be a key file")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > _MAX_KEY_FILE:
                raise KeyFileError(f"{artifact}: too large to be a key file")
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_keygen(name: str, directory: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path]:
    """The key and public key paths keygen would write, after refusing a bad name or existing files."""
    keygen_check_name(name)
    directory = check_output_dir(directory)
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for p in (key_path, pub_path):
        check_output(p, force=force)
    return key_path, pub_path


def keygen(
    name: str,
    directory: str | os.PathLike,
    passphrase: str | None,
    *,
    kdf_limits: tuple[int, int] = KDF_MODERATE,
    force: bool = False,
) -> tuple[Path, Path]:
    """Create ``<name>.key`` (0600) and ``<name>.pub`` in *directory*; replaces them only with *force*."""
    key_path, pub_path = check_keygen(name, directory, force=force)
    key = SigningKey.generate(name)
    key.save(key_path, passphrase, kdf_limits=kdf_limits, overwrite=force)
    write_public(pub_path, key.public_key, overwrite=force)
    return key_path, pub_path


def keygen_check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name or ""):
        raise InputError(f"key name {name!r}: use letters, digits, '.', '_' and '-' (max 64)")


def write_public(path: str | os.PathLike, key: PublicKey, *, overwrite: bool = False) -> None:
    """Write a ``.pub`` file for *key* (named); refuses an existing file unless *overwrite*."""
    path = Path(path)
    if overwrite:
        if path.is_symlink():
            raise KeyFileError(f"{path}: is a symbolic link; refusing to write through it")
        atomic_write(path, public_file_bytes(key), 0o644)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_file_bytes(key))
    except FileExistsError:
        raise OutputExistsError(str(path)) from None


# --------------------------------------------------------------------------- unlocking
#
# Where a key file's passphrase comes from, first match wins:
#   1. --passphrase-file given for that key argument;
#   2. AIRGAP_PASSPHRASE_FILE_<KEYNAME>, KEYNAME the file's stem upper-cased with
#      every other character than A-Z and 0-9 as "_" (keys/root-1.key: ROOT_1);
#   3. AIRGAP_PASSPHRASE (one passphrase for every key, as before);
#   4. a terminal prompt naming the key, three tries.
# Files and variables get one try: asking the same source again gives the same answer.

PASSPHRASE_FILE_ENV_PREFIX = "AIRGAP_PASSPHRASE_FILE_"
PROMPT_TRIES = 3
_MAX_SECRET_FILE = 4096


def key_env_name(path: str | os.PathLike) -> str:
    """``AIRGAP_PASSPHRASE_FILE_<KEYNAME>`` for a key file (``keys/root-1.key``: ``..._ROOT_1``)."""
    return PASSPHRASE_FILE_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", Path(path).stem.upper())


def read_secret_file(path: str | os.PathLike, what: str) -> str:
    """A passphrase or PIN from a file: the first line, without its line ending; never empty."""
    data = read_capped(path, _MAX_SECRET_FILE, f"the {what} file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the {what} file is not UTF-8") from None
    line = text.split("\n", 1)[0].removesuffix("\r")
    if not line:
        raise InputError(f"{path}: the {what} file is empty (its first line is the {what})")
    return line


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


class PassphraseSource:
    """Where one key's passphrase comes from; callable as a ``passphrase_provider``.

    ``source`` names it in messages (never the passphrase itself); ``tries`` is 3
    for a terminal prompt and 1 otherwise.
    """

    def __init__(self, label: str, *, file: str | os.PathLike | None = None, env_file: str | None = None,
                 value: str | None = None, source: str | None = None, confirm: bool = False):
        self.label = label
        self._file, self._env_file, self._value, self._confirm = file, env_file, value, confirm
        self.source = source
        self.tries = PROMPT_TRIES if source is None else 1
        self._asked = 0

    @classmethod
    def for_key(cls, path: str | os.PathLike, passphrase_file: str | os.PathLike | None = None, *,
                label: str | None = None, confirm: bool = False) -> PassphraseSource:
        label = label or str(path)
        if passphrase_file is not None:
            return cls(label, file=passphrase_file, source=f"from --passphrase-file {passphrase_file}", confirm=confirm)
        env = key_env_name(path)
        if os.environ.get(env) is not None:
            value = os.environ[env]
            if not value:
                raise InputError(f"{env} is set but empty (it names a file holding the passphrase of {label})")
            return cls(label, env_file=value, source=f"from {env}={value}", confirm=confirm)
        if os.environ.get(PASSPHRASE_ENV) is not None:
            if not os.environ[PASSPHRASE_ENV]:
                raise InputError(f"{PASSPHRASE_ENV} is set but empty")
            return cls(label, value=os.environ[PASSPHRASE_ENV], source=f"from {PASSPHRASE_ENV}", confirm=confirm)
        return cls(label, confirm=confirm)

    def __call__(self) -> str:
        if self._file is not None:
            return read_secret_file(self._file, "passphrase")
        if self._env_file is not None:
            return read_secret_file(self._env_file, "passphrase")
        if self._value is not None:
            return self._value
        if not _interactive():
            raise InputError(
                f"{self.label}: a passphrase is needed: give --passphrase-file after the key argument, "
                f"set {PASSPHRASE_FILE_ENV_PREFIX}<KEYNAME> or {PASSPHRASE_ENV}, or run on a terminal"
            )
        self._asked += 1
        if self._asked > 1:
            print(f"Wrong passphrase for {self.label} (try {self._asked} of {self.tries}).", file=sys.stderr)
        first = getpass.getpass(f"Passphrase for {self.label}: ")
        if first == "":
            raise InputError("an empty passphrase is not allowed")
        if self._confirm and getpass.getpass("Repeat passphrase: ") != first:
            raise InputError("the passphrases do not match")
        return first


@dataclass(frozen=True)
class KeyOptions:
    """How to unlock one private key argument: its passphrase file, or its token's module and PIN file."""

    passphrase_file: str | None = None
    pin_file: str | None = None
    pkcs11_module: str | None = None


def is_pkcs11_uri(ref: str | os.PathLike) -> bool:
    return isinstance(ref, str) and ref.startswith("pkcs11:")


def load_signing_key(ref: str | os.PathLike, options: KeyOptions | None = None):
    """The one way every verb loads a private key: a key file or a ``pkcs11:`` URI (RFC 7512).

    Both give an object with ``public_key``, ``keyid``, ``name`` and ``sign(data)``;
    signatures are the same either way (Ed25519, same keyid rule).
    """
    options = options or KeyOptions()
    if is_pkcs11_uri(ref):
        if options.passphrase_file:
            raise InputError(f"{ref}: --passphrase-file is for key files; a token key takes --pin-file")
        from airgap import pkcs11

        return pkcs11.open_key(str(ref), module=options.pkcs11_module, pin_file=options.pin_file)
    if options.pin_file:
        raise InputError(f"{ref}: --pin-file is for pkcs11: URIs; a key file takes --passphrase-file")
    source = PassphraseSource.for_key(ref, options.passphrase_file)
    return SigningKey.load(ref, source, tries=source.tries)


def passphrase_from_env_or_tty(prompt: str, confirm: bool = False) -> str:
    """``AIRGAP_PASSPHRASE`` if set, else ask on the terminal; never falls back to no passphrase."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if env == "":
            raise InputError(f"{PASSPHRASE_ENV} is set but empty")
        return env
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise InputError(
            f"a passphrase is needed: set {PASSPHRASE_ENV} or run on a terminal"
        )
    first = getpass.getpass(prompt)
    if first == "":
        raise InputError("an empty passphrase is not allowed")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise InputError("the passphrases do not match")
    return first
