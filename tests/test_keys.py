"""Keys: TUF/securesystemslib-compatible key objects and keyids, key files at rest."""

from __future__ import annotations

import inspect
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Signature as SSlibSignature
from securesystemslib.signer import SSlibKey

from airgap import keys as keys_mod
from airgap.exceptions import FormatError, InputError, KeyFileError, OutputExistsError, SignatureError
from airgap.keys import (
    KDF_MIN,
    KDF_MODERATE,
    PublicKey,
    SigningKey,
    keygen,
    load_public,
    passphrase_from_env_or_tty,
)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("alice")


def _write_min(key: SigningKey, path, passphrase="pw", **kw):
    key.save(path, passphrase, kdf_limits=KDF_MIN, **kw)


# --- key objects and keyids -------------------------------------------------


def test_keyid_matches_securesystemslib(key):
    pub = key.public_key
    sslib = SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(pub.public))
    assert sslib.keyid == pub.keyid
    assert sslib.keytype == pub.to_dict()["keytype"] == "ed25519"
    assert sslib.scheme == pub.to_dict()["scheme"] == "ed25519"
    assert sslib.keyval == pub.to_dict()["keyval"]
    assert SSlibKey.from_dict(pub.keyid, pub.to_dict()).to_dict() == pub.to_dict()


def test_signature_verifies_with_securesystemslib(key):
    data = b"airgap interop"
    pub = key.public_key
    sslib = SSlibKey.from_dict(pub.keyid, pub.to_dict())
    sig = key.sign(data)
    assert sslib.verify_signature(SSlibSignature(pub.keyid, sig.hex()), data) is None
    # The same check refuses a changed message: it verifies, it does not just run.
    with pytest.raises(UnverifiedSignatureError):
        sslib.verify_signature(SSlibSignature(pub.keyid, sig.hex()), data + b"!")


def test_known_keyid():
    # RFC 8032 test 1 public key; keyid = sha256 of the canonical key object.
    import hashlib

    hexkey = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    canonical = (
        '{"keytype":"ed25519","keyval":{"public":"' + hexkey + '"},"scheme":"ed25519"}'
    ).encode()
    assert PublicKey(bytes.fromhex(hexkey)).keyid == hashlib.sha256(canonical).hexdigest()


def test_name_is_not_identity(key):
    pub = key.public_key
    assert pub == pub.with_name("someone-else")
    assert pub.with_name(None).keyid == pub.keyid
    assert "name" not in pub.to_dict()


def test_from_dict_roundtrip(key):
    pub = key.public_key
    assert PublicKey.from_dict(pub.to_dict(), "k") == pub


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(extra=1),
        lambda d: d.pop("scheme"),
        lambda d: d.update(keytype="rsa"),
        lambda d: d.update(scheme="ed25519-sha512"),
        lambda d: d["keyval"].update(private="00" * 32),
        lambda d: d["keyval"].update(public=d["keyval"]["public"].upper()),
        lambda d: d["keyval"].update(public=d["keyval"]["public"][:-2]),
        lambda d: d["keyval"].update(public=d["keyval"]["public"] + "\n"),
        lambda d: d["keyval"].update(public=1),
        lambda d: d.update(keyval="abc"),
        # a low-order point: would "verify" forged signatures in lax libraries
        lambda d: d["keyval"].update(public="01" + "00" * 31),
    ],
)
def test_from_dict_strict(key, mutate):
    d = json.loads(json.dumps(key.public_key.to_dict()))
    mutate(d)
    with pytest.raises(FormatError) as exc:
        PublicKey.from_dict(d, "trust.json")
    assert str(exc.value).startswith("trust.json: ")


def test_from_dict_not_a_dict():
    with pytest.raises(FormatError):
        PublicKey.from_dict(["ed25519"], "x")


def test_verify(key):
    pub = key.public_key
    sig = key.sign(b"data")
    pub.verify(sig, b"data")
    with pytest.raises(SignatureError, match="is invalid"):
        pub.verify(sig, b"Data")
    with pytest.raises(SignatureError, match="is invalid"):
        SigningKey.generate().public_key.verify(sig, b"data")
    with pytest.raises(SignatureError, match="malformed"):
        pub.verify(sig[:-1], b"data")
    with pytest.raises(SignatureError, match=r"bundle: signature by key alice [0-9a-f]{8}… is invalid"):
        pub.verify(bytes(64), b"data", artifact="bundle")


# --- key files --------------------------------------------------------------


def test_save_load_encrypted(tmp_path, key):
    path = tmp_path / "alice.key"
    _write_min(key, path, "correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    doc = json.loads(text)
    assert doc["encrypted"] is True
    assert doc["kdf"]["name"] == "argon2id"
    assert (doc["kdf"]["opslimit"], doc["kdf"]["memlimit"]) == KDF_MIN
    assert doc["keyid"] == key.keyid
    assert bytes(key._key).hex() not in text
    loaded = SigningKey.load(path, lambda: "correct horse")
    assert loaded.public_key == key.public_key
    assert loaded.name == "alice"
    assert loaded.sign(b"x") == key.sign(b"x")


def test_default_kdf_is_moderate():
    default = inspect.signature(SigningKey.save).parameters["kdf_limits"].default
    assert default == KDF_MODERATE
    assert inspect.signature(keygen).parameters["kdf_limits"].default == KDF_MODERATE


def test_mode_0600_even_with_permissive_umask(tmp_path, key):
    old = os.umask(0)
    try:
        _write_min(key, tmp_path / "k.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]  # no temp file left


def test_wrong_passphrase(tmp_path, key):
    path = tmp_path / "x.key"
    _write_min(key, path, "right")
    with pytest.raises(KeyFileError) as exc:
        SigningKey.load(path, lambda: "wrong")
    assert str(exc.value) == f"{path}: wrong passphrase or corrupted key file"


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "salt"])
def test_corrupted_encrypted_fields(tmp_path, key, field):
    path = tmp_path / "x.key"
    _write_min(key, path)
    doc = json.loads(path.read_text())
    target = doc["kdf"] if field == "salt" else doc
    target[field] = ("0" if target[field][0] != "0" else "1") + target[field][1:]
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="wrong passphrase or corrupted key file"):
        SigningKey.load(path, lambda: "pw")


def test_changed_public_field_detected(tmp_path, key):
    path = tmp_path / "x.key"
    _write_min(key, path)
    doc = json.loads(path.read_text())
    other = SigningKey.generate()
    doc["public"] = other.public_key.public.hex()
    doc["keyid"] = other.keyid
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="does not match the private key"):
        SigningKey.load(path, lambda: "pw")


@pytest.mark.parametrize(
    "limits", [(0, KDF_MIN[1]), (KDF_MIN[0], 1024), (KDF_MIN[0], 2**50), (2**40, KDF_MIN[1])]
)
def test_kdf_limits_bounded(tmp_path, key, limits):
    path = tmp_path / "x.key"
    _write_min(key, path)
    doc = json.loads(path.read_text())
    doc["kdf"]["opslimit"], doc["kdf"]["memlimit"] = limits
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="out of the accepted range"):
        SigningKey.load(path, lambda: "pw")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_refuses_readable_by_others(tmp_path, key, mode):
    path = tmp_path / "x.key"
    _write_min(key, path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=r"permissions 06[0-9]{2} are too open.*chmod 600"):
        SigningKey.load(path, lambda: "pw")


def test_refuses_symlink(tmp_path, key):
    real = tmp_path / "real.key"
    _write_min(key, real)
    (tmp_path / "link.key").symlink_to(real)
    with pytest.raises(KeyFileError):
        SigningKey.load(tmp_path / "link.key", lambda: "pw")


def test_missing_file(tmp_path):
    with pytest.raises(KeyFileError, match="no such key file"):
        SigningKey.load(tmp_path / "nope.key", lambda: "pw")


def test_not_json(tmp_path):
    path = tmp_path / "x.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="not a private key file"):
        SigningKey.load(path, lambda: "pw")


def test_duplicate_json_keys_refused(tmp_path, key):
    path = tmp_path / "x.key"
    key.save(path, None)
    text = path.read_text().replace('"encrypted": false', '"encrypted": false, "encrypted": true')
    path.write_text(text)
    with pytest.raises(KeyFileError, match="duplicate JSON key"):
        SigningKey.load(path)


def test_unencrypted_key(tmp_path, key):
    path = tmp_path / "plain.key"
    key.save(path, None)
    doc = json.loads(path.read_text())
    assert doc["encrypted"] is False
    assert "WITHOUT encryption" in doc["warning"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def never():
        raise AssertionError("no passphrase needed")

    assert SigningKey.load(path, never).public_key == key.public_key


def test_encrypted_without_provider(tmp_path, key):
    _write_min(key, tmp_path / "x.key")
    with pytest.raises(KeyFileError, match="no passphrase"):
        SigningKey.load(tmp_path / "x.key")


def test_empty_passphrase_refused(tmp_path, key):
    with pytest.raises(InputError):
        key.save(tmp_path / "x.key", "", kdf_limits=KDF_MIN)
    assert not (tmp_path / "x.key").exists()


def test_save_refuses_overwrite(tmp_path, key):
    path = tmp_path / "x.key"
    _write_min(key, path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="exists: add --force to overwrite"):
        _write_min(SigningKey.generate(), path)
    assert path.read_bytes() == before
    _write_min(SigningKey.generate(), path, overwrite=True)
    assert path.read_bytes() != before


def test_unknown_field_refused(tmp_path, key):
    path = tmp_path / "x.key"
    key.save(path, None)
    doc = json.loads(path.read_text())
    doc["comment"] = "hi"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="unexpected or missing fields"):
        SigningKey.load(path)


def test_repr_hides_secret(key):
    assert bytes(key._key).hex() not in repr(key)
    assert "alice" in repr(key)


# --- keygen and public key files ---------------------------------------------


def test_keygen(tmp_path):
    key_path, pub_path = keygen("builder-1", tmp_path, "pw", kdf_limits=KDF_MIN)
    assert key_path == tmp_path / "builder-1.key"
    assert pub_path == tmp_path / "builder-1.pub"
    doc = json.loads(pub_path.read_text())
    assert set(doc) == {"keyid", "key", "name"}
    assert doc["name"] == "builder-1"
    pub = load_public(pub_path)
    assert pub.keyid == doc["keyid"] and pub.name == "builder-1"
    assert SigningKey.load(key_path, lambda: "pw").public_key == pub
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_keygen_refuses_overwrite(tmp_path):
    (tmp_path / "k.pub").write_text("precious")
    with pytest.raises(OutputExistsError, match="exists: add --force to overwrite"):
        keygen("k", tmp_path, "pw", kdf_limits=KDF_MIN)
    assert not (tmp_path / "k.key").exists()
    assert (tmp_path / "k.pub").read_text() == "precious"
    key_path, pub_path = keygen("k", tmp_path, "pw", kdf_limits=KDF_MIN, force=True)
    assert load_public(pub_path).keyid == SigningKey.load(key_path, lambda: "pw").keyid


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 65])
def test_keygen_bad_name(tmp_path, name):
    with pytest.raises(InputError):
        keygen(name, tmp_path, "pw", kdf_limits=KDF_MIN)


def test_load_public_keyid_mismatch(tmp_path):
    _, pub_path = keygen("k", tmp_path, None)
    doc = json.loads(pub_path.read_text())
    doc["keyid"] = "0" * 64
    pub_path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="does not match"):
        load_public(pub_path)


def test_fixture_keyring(keyring):
    from tests.fixtures.keys import KEY_NAMES

    assert len({keyring.pub(n).keyid for n in keyring.keys}) == len(KEY_NAMES) == 9
    assert SigningKey.load(keyring.key_path("officer-1"), keyring.provider()).keyid == keyring[
        "officer-1"
    ].keyid


# --- passphrases ----------------------------------------------------------------


def test_passphrase_from_env(monkeypatch):
    monkeypatch.setenv("AIRGAP_PASSPHRASE", "s3cret")
    assert passphrase_from_env_or_tty("pw: ") == "s3cret"


def test_passphrase_env_empty(monkeypatch):
    monkeypatch.setenv("AIRGAP_PASSPHRASE", "")
    with pytest.raises(InputError, match="empty"):
        passphrase_from_env_or_tty("pw: ")


class _Tty:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


def test_passphrase_no_tty(monkeypatch):
    monkeypatch.delenv("AIRGAP_PASSPHRASE", raising=False)
    monkeypatch.setattr(keys_mod.sys, "stdin", _Tty(False))
    with pytest.raises(InputError, match="AIRGAP_PASSPHRASE"):
        passphrase_from_env_or_tty("pw: ")


def test_passphrase_tty_confirm(monkeypatch):
    monkeypatch.delenv("AIRGAP_PASSPHRASE", raising=False)
    monkeypatch.setattr(keys_mod.sys, "stdin", _Tty(True))
    monkeypatch.setattr(keys_mod.sys, "stderr", _Tty(True))
    answers = iter(["one", "one"])
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt: next(answers))
    assert passphrase_from_env_or_tty("pw: ", confirm=True) == "one"
    answers = iter(["one", "two"])
    with pytest.raises(InputError, match="do not match"):
        passphrase_from_env_or_tty("pw: ", confirm=True)


def test_the_kdf_limits_are_argon2ids():
    # keys.py reads them from nacl.bindings so a verify need not import nacl.pwhash; they must stay the same values.
    import nacl.pwhash.argon2id as argon2id

    assert keys_mod.KDF_MODERATE == (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
    assert keys_mod.KDF_SENSITIVE == (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)
    assert keys_mod.KDF_MIN == (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
    assert keys_mod._SALTBYTES == argon2id.SALTBYTES
