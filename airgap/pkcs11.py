"""Ed25519 keys on PKCS#11 tokens (smartcards, HSMs, SoftHSM2), named by RFC 7512 URIs.

Wherever airgap takes a private key it also takes ``pkcs11:token=officer-1;object=airgap-officer``.
The key never leaves the token: signing is ``CKM_EDDSA`` (pure Ed25519) on the
token, and the public half is read from the token's public key object, so the
keyid is computed exactly as for a key file and the DSSE signatures cannot be
told apart from file-key signatures.

Where things come from:

* the module (the vendor's ``.so``): ``--pkcs11-module``, else ``AIRGAP_PKCS11_MODULE``,
  else the URI's ``module-path`` query attribute;
* the PIN: ``--pin-file`` for that key argument, else ``AIRGAP_PKCS11_PIN``, else the
  token's own PIN pad (protected authentication path), else one terminal prompt.
  Never from the command line: a URI with ``pin-value`` or ``pin-source`` is refused.
  A wrong PIN is never retried: tokens lock after a few failures.

The binding is python-pkcs11 (optional extra ``airgap[pkcs11]``); nothing else in
airgap imports it.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

from airgap._internal.text import plural
from airgap.exceptions import InputError, SignatureError, TokenError
from airgap.keys import PublicKey, read_secret_file

MODULE_ENV = "AIRGAP_PKCS11_MODULE"
PIN_ENV = "AIRGAP_PKCS11_PIN"
SCHEME = "pkcs11:"

__all__ = ["Pkcs11URI", "TokenError", "TokenKey", "open_key", "export_public", "generate"]

_PATH_ATTRS = (
    "token", "manufacturer", "serial", "model", "library-manufacturer", "library-description",
    "library-version", "object", "type", "id", "slot-manufacturer", "slot-description", "slot-id",
)
_TYPES = ("public", "private", "cert", "secret-key", "data")
# DER of the two spellings PKCS#11 3.0 allows for Ed25519's CKA_EC_PARAMS:
# the RFC 8410 OID 1.3.101.112 and the PrintableString "edwards25519".
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")


@dataclass(frozen=True)
class Pkcs11URI:
    """A parsed RFC 7512 URI: path attributes identify token and object, query the module."""

    text: str
    attrs: dict[str, Any] = field(default_factory=dict)  # "id" is bytes, the rest str
    query: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> Pkcs11URI:
        if not isinstance(text, str) or not text.startswith(SCHEME):
            raise InputError(f"{text!r} is not a pkcs11: URI (RFC 7512)")
        path, _, query = text[len(SCHEME):].partition("?")
        attrs: dict[str, Any] = {}
        for part in filter(None, path.split(";")):
            name, eq, value = part.partition("=")
            if not eq:
                raise InputError(f"{text}: path attribute {part!r} has no '='")
            if name not in _PATH_ATTRS:
                raise InputError(f"{text}: unknown path attribute {name!r} (known: {', '.join(_PATH_ATTRS)})")
            if name in attrs:
                raise InputError(f"{text}: path attribute {name!r} given twice")
            attrs[name] = unquote_to_bytes(value) if name == "id" else unquote(value, errors="strict")
        if "type" in attrs and attrs["type"] not in _TYPES:
            raise InputError(f"{text}: type={attrs['type']!r} is not one of {', '.join(_TYPES)}")
        if "slot-id" in attrs and not attrs["slot-id"].isdigit():
            raise InputError(f"{text}: slot-id must be a decimal number")
        q: dict[str, str] = {}
        for part in filter(None, query.split("&")):
            name, _, value = part.partition("=")
            if name in ("pin-value", "pin-source"):
                raise InputError(f"{text}: {name} is refused: a PIN never goes on the command line "
                                 f"(use --pin-file, {PIN_ENV} or the terminal prompt)")
            if name != "module-path":
                raise InputError(f"{text}: query attribute {name!r} is not supported (give the module with --pkcs11-module)")
            q[name] = unquote(value, errors="strict")
        return cls(text, attrs, q)

    @staticmethod
    def build(token: str, label: str, key_id: bytes | None = None) -> str:
        """The URI of a key airgap generated: token label, object label and id."""
        text = f"{SCHEME}token={_pct(token)};object={_pct(label)}"
        if key_id:
            text += ";id=" + "".join(f"%{b:02x}" for b in key_id)
        return text


def _pct(value: str) -> str:
    return quote(value, safe="-._~!$'()*+,:@")


# --------------------------------------------------------------------------- the binding


def _binding():
    try:
        import pkcs11  # noqa: PLC0415 - optional extra, imported only when a token is used
    except ImportError:
        raise InputError(
            "PKCS#11 support is not installed: install the extra with "
            "pip install 'airgap[pkcs11]' (python-pkcs11), or give a key file"
        ) from None
    return pkcs11


def _module_path(uri: Pkcs11URI, module: str | None) -> str:
    path = module or os.environ.get(MODULE_ENV) or uri.query.get("module-path")
    if not path:
        raise InputError(f"{uri}: no PKCS#11 module: give --pkcs11-module PATH (e.g. "
                         f"/usr/lib/softhsm/libsofthsm2.so) or set {MODULE_ENV}")
    if not Path(path).is_file():
        raise InputError(f"{uri}: PKCS#11 module {path} does not exist")
    return path


def _lib(uri: Pkcs11URI, module: str | None):
    p11 = _binding()
    path = _module_path(uri, module)
    try:
        return p11, p11.lib(path)
    except p11.PKCS11Error as exc:
        raise InputError(f"{uri}: cannot load PKCS#11 module {path}: {exc or type(exc).__name__}") from None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value).strip()


def _find_token(p11, lib, uri: Pkcs11URI):
    """The one token the URI's token and slot attributes select; TokenError if none is present."""
    a = uri.attrs
    for name, want in (("library-manufacturer", lib.manufacturer_id), ("library-description", lib.library_description),
                       ("library-version", ".".join(map(str, lib.library_version)))):
        if name in a and a[name] != want:
            raise TokenError(f"{uri}: {name} is {want!r}, the URI asks for {a[name]!r} (wrong module?)")
    seen, found = [], []
    for slot in lib.get_slots(token_present=True):
        try:
            token = slot.get_token()
        except p11.PKCS11Error:
            continue
        if not token.flags & p11.TokenFlag.TOKEN_INITIALIZED:
            continue
        facts = {
            "token": _text(token.label), "manufacturer": _text(token.manufacturer_id), "serial": _text(token.serial),
            "model": _text(token.model), "slot-id": str(slot.slot_id),
            "slot-description": _text(slot.slot_description), "slot-manufacturer": _text(slot.manufacturer_id),
        }
        seen.append(f"{facts['token']!r} (serial {facts['serial']})")
        if all(facts[k] == v for k, v in a.items() if k in facts):
            found.append((slot, token))
    if not found:
        present = ", ".join(seen) or "none"
        raise TokenError(f"{uri}: no token matches (tokens present: {present}); is the token inserted, "
                         f"and is the module the token's own?")
    if len(found) > 1:
        raise InputError(f"{uri}: matches {len(found)} tokens; add token=, serial= or slot-id= to the URI")
    return found[0][1]


def _pin(p11, token, uri: Pkcs11URI, pin_file: str | None):
    if pin_file:
        return read_secret_file(pin_file, "PIN")
    env = os.environ.get(PIN_ENV)
    if env is not None:
        if not env:
            raise InputError(f"{PIN_ENV} is set but empty")
        return env
    if token.flags & p11.TokenFlag.PROTECTED_AUTHENTICATION_PATH:
        print(f"Enter the PIN on the PIN pad of token {_text(token.label)!r}.", file=sys.stderr)
        return p11.PROTECTED_AUTH
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise InputError(f"{uri}: a PIN is needed: give --pin-file after the key argument, set {PIN_ENV}, "
                         f"or run on a terminal")
    pin = getpass.getpass(f"PIN for token {_text(token.label)!r} ({uri}): ")
    if not pin:
        raise InputError("an empty PIN is not allowed")
    return pin


def _login(p11, token, uri: Pkcs11URI, pin_file: str | None, *, rw: bool = False):
    """An open, logged-in session.  A wrong PIN is reported, never retried."""
    label = _text(token.label)
    if token.flags & p11.TokenFlag.USER_PIN_LOCKED:
        raise TokenError(f"{uri}: the user PIN of token {label!r} is locked; its security officer must "
                         f"reset it (e.g. pkcs11-tool --init-pin --login --login-type so)")
    pin = _pin(p11, token, uri, pin_file)
    try:
        return token.open(user_pin=pin, rw=rw)
    except p11.UserAlreadyLoggedIn:
        # Login is per process and token: a second key on the same token in one
        # command shares the first key's login.
        return token.open(rw=rw)
    except p11.PinIncorrect:
        flags = token.flags
        left = ("; the next wrong PIN locks it" if flags & p11.TokenFlag.USER_PIN_FINAL_TRY
                else "; few tries are left" if flags & p11.TokenFlag.USER_PIN_COUNT_LOW else "")
        raise TokenError(f"{uri}: wrong PIN for token {label!r} (not retried: tokens lock after repeated "
                         f"wrong PINs{left})") from None
    except p11.PinLocked:
        raise TokenError(f"{uri}: the user PIN of token {label!r} is locked; its security officer must reset it") from None
    except (p11.PinInvalid, p11.PinLenRange):
        raise TokenError(f"{uri}: the token refused the PIN's format (length or characters)") from None
    except (p11.TokenNotPresent, p11.DeviceRemoved):
        raise TokenError(f"{uri}: the token was removed") from None
    except p11.PKCS11Error as exc:
        raise TokenError(f"{uri}: login to token {label!r} failed: {type(exc).__name__} {exc}".rstrip()) from None


def _open(uri: Pkcs11URI, module: str | None):
    p11, lib = _lib(uri, module)
    try:
        return p11, _find_token(p11, lib, uri)
    except p11.PKCS11Error as exc:
        raise TokenError(f"{uri}: the module failed while listing tokens: {type(exc).__name__} {exc}".rstrip()) from None


def _template(p11, uri: Pkcs11URI, object_class) -> dict:
    t: dict = {p11.Attribute.CLASS: object_class}
    if "object" in uri.attrs:
        t[p11.Attribute.LABEL] = uri.attrs["object"]
    if "id" in uri.attrs:
        t[p11.Attribute.ID] = uri.attrs["id"]
    return t


def _one_object(p11, session, uri: Pkcs11URI, object_class, what: str):
    objects = list(session.get_objects(_template(p11, uri, object_class)))
    if not objects:
        raise InputError(f"{uri}: no {what} object matches on the token (check object= and id=, "
                         f"e.g. with: pkcs11-tool --module MODULE --list-objects)")
    if len(objects) > 1:
        raise InputError(f"{uri}: {len(objects)} {what} objects match; add object= or id= to the URI")
    return objects[0]


def _check_ed25519(p11, obj, uri: Pkcs11URI) -> None:
    key_type = obj[p11.Attribute.KEY_TYPE]
    if key_type != p11.KeyType.EC_EDWARDS:
        name = getattr(key_type, "name", str(key_type))
        raise InputError(f"{uri}: the key object is {name}, not Ed25519; airgap signs with Ed25519 only "
                         f"(CKK_EC_EDWARDS, curve edwards25519)")
    params = obj[p11.Attribute.EC_PARAMS]
    if bytes(params) not in _ED25519_PARAMS:
        raise InputError(f"{uri}: the key is on another Edwards curve (EC_PARAMS {bytes(params).hex()}), "
                         f"not edwards25519")


def _public_of(p11, obj, uri: Pkcs11URI, name: str | None) -> PublicKey:
    _check_ed25519(p11, obj, uri)
    point = bytes(obj[p11.Attribute.EC_POINT])
    # PKCS#11 3.0 says DER OCTET STRING; some tokens hand back the raw 32 bytes.
    raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
    if len(raw) != 32:
        raise InputError(f"{uri}: CKA_EC_POINT is {plural(len(point), 'byte')}, not an Ed25519 point")
    try:
        return PublicKey.from_dict({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": raw.hex()}},
                                   str(uri)).with_name(name)
    except Exception as exc:  # noqa: BLE001 - FormatError from a bad point: name the URI
        raise InputError(f"{uri}: the token's public key is not a valid Ed25519 point ({exc})") from None


def _public_companion(p11, session, private, uri: Pkcs11URI):
    """The public key object that belongs to *private*: same CKA_ID, else same label."""
    key_id = bytes(private[p11.Attribute.ID] or b"")
    label = private[p11.Attribute.LABEL]
    for attrs in ({p11.Attribute.ID: key_id} if key_id else None, {p11.Attribute.LABEL: label} if label else None):
        if attrs is None:
            continue
        found = list(session.get_objects({p11.Attribute.CLASS: p11.ObjectClass.PUBLIC_KEY, **attrs}))
        if len(found) == 1:
            return found[0]
    raise InputError(f"{uri}: no single public key object beside the private key (same id or label); "
                     f"airgap needs it for the keyid. Import the public key onto the token.")


class TokenKey:
    """A private key on a token, logged in: ``sign`` runs CKM_EDDSA on the token."""

    def __init__(self, uri: Pkcs11URI, session, private, public: PublicKey, p11):
        self.uri, self._session, self._private, self._p11 = uri, session, private, p11
        self._public = public
        self.name = public.name

    def __repr__(self) -> str:
        return f"TokenKey({self.uri.text!r}, {self._public.label!r})"

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def keyid(self) -> str:
        return self._public.keyid

    def sign(self, data: bytes) -> bytes:
        try:
            sig = bytes(self._private.sign(data, mechanism=self._p11.Mechanism.EDDSA))
        except self._p11.PKCS11Error as exc:
            raise TokenError(f"{self.uri}: the token failed to sign: {type(exc).__name__} {exc}".rstrip()) from None
        # Check before anyone relies on it: a token whose public object belongs to
        # another key, or that signs Ed25519ph, would give signatures no policy accepts.
        try:
            self._public.verify(sig, data, artifact=str(self.uri))
        except SignatureError:
            raise TokenError(f"{self.uri}: the token's signature does not verify under its public key object "
                             f"(public and private objects do not belong together, or not pure Ed25519)") from None
        return sig

    def close(self) -> None:
        try:
            self._session.close()
        except Exception:  # noqa: BLE001 - closing a session of a removed token is not an error
            pass


def open_key(uri_text: str, *, module: str | None = None, pin_file: str | None = None) -> TokenKey:
    """Log in to the token the URI names and return its Ed25519 signing key."""
    uri = Pkcs11URI.parse(uri_text)
    if uri.attrs.get("type", "private") != "private":
        raise InputError(f"{uri}: type={uri.attrs['type']} names no private key; signing needs type=private (or no type)")
    p11, token = _open(uri, module)
    session = _login(p11, token, uri, pin_file)
    try:
        private = _one_object(p11, session, uri, p11.ObjectClass.PRIVATE_KEY, "private key")
        _check_ed25519(p11, private, uri)
        if not private[p11.Attribute.SIGN]:
            raise InputError(f"{uri}: the key object may not sign (CKA_SIGN is false)")
        public_obj = _public_companion(p11, session, private, uri)
        name = uri.attrs.get("object") or _text(private[p11.Attribute.LABEL]) or None
        key = TokenKey(uri, session, private, _public_of(p11, public_obj, uri, name), p11)
        key.sign(b"airgap: does the key on the token match its public object?")
        return key
    except BaseException:
        session.close()
        raise


def export_public(uri_text: str, *, module: str | None = None, pin_file: str | None = None,
                  name: str | None = None) -> PublicKey:
    """The token's public key, named for a ``.pub`` file; logs in only if a PIN file or PIN is given."""
    uri = Pkcs11URI.parse(uri_text)
    p11, token = _open(uri, module)
    if pin_file or os.environ.get(PIN_ENV):
        session = _login(p11, token, uri, pin_file)
    else:
        session = token.open()
    with session:
        wanted = uri.attrs.get("type")
        if wanted == "private":
            public_obj = _public_companion(p11, session, _one_object(p11, session, uri, p11.ObjectClass.PRIVATE_KEY, "private key"), uri)
        elif wanted in (None, "public"):
            public_obj = _one_object(p11, session, uri, p11.ObjectClass.PUBLIC_KEY, "public key")
        else:
            raise InputError(f"{uri}: type={wanted} has no public key to export")
        label = name or uri.attrs.get("object") or _text(public_obj[p11.Attribute.LABEL])
        if not label:
            raise InputError(f"{uri}: the key has no label; give --name for the public key file")
        return _public_of(p11, public_obj, uri, label)


def generate(uri_text: str, name: str, *, module: str | None = None, pin_file: str | None = None) -> tuple[PublicKey, str]:
    """Generate an Ed25519 pair on the token; the private half is sensitive and never extractable.

    Returns the public key (named *name*) and the URI that selects the new key.
    """
    uri = Pkcs11URI.parse(uri_text)
    if uri.attrs.get("type") not in (None, "private"):
        raise InputError(f"{uri}: keygen makes a key pair; leave type= out")
    label = uri.attrs.get("object") or name
    p11, token = _open(uri, module)
    session = _login(p11, token, uri, pin_file, rw=True)
    with session:
        clash = [o for o in session.get_objects({p11.Attribute.LABEL: label})]
        if "id" in uri.attrs:
            clash += list(session.get_objects({p11.Attribute.ID: uri.attrs["id"]}))
        if clash:
            raise InputError(f"{uri}: the token already holds an object labelled {label!r} (or with that id); "
                             f"refusing to make a second key under the same name")
        key_id = uri.attrs.get("id") or os.urandom(8)
        a = p11.Attribute
        try:
            public, private = session.generate_keypair(
                p11.KeyType.EC_EDWARDS, store=True, label=label, id=key_id,
                capabilities=p11.MechanismFlag.SIGN | p11.MechanismFlag.VERIFY,
                public_template={a.EC_PARAMS: _ED25519_PARAMS[0], a.ENCRYPT: False, a.WRAP: False},
                private_template={a.SENSITIVE: True, a.EXTRACTABLE: False, a.PRIVATE: True,
                                  a.DECRYPT: False, a.UNWRAP: False, a.DERIVE: False},
            )
        except p11.PKCS11Error as exc:
            raise TokenError(f"{uri}: the token could not generate an Ed25519 key pair "
                             f"(does it support CKM_EC_EDWARDS_KEY_PAIR_GEN?): {type(exc).__name__} {exc}".rstrip()) from None
        # A token may ignore a template attribute; a key that could leave it is no token key.
        if private[a.EXTRACTABLE] or not private[a.SENSITIVE]:
            private.destroy()
            public.destroy()
            raise TokenError(f"{uri}: the token made an extractable key despite the template; it was destroyed")
        pub = _public_of(p11, public, uri, name)
        return pub, Pkcs11URI.build(_text(token.label), label, key_id)
