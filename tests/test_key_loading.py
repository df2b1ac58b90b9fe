"""One key-loading entry point for every verb: passphrases per key, prompts, wrong kinds of key."""

from __future__ import annotations

import os

import pytest

from airgap import keys as keys_mod
from airgap.exceptions import InputError, KeyFileError, UsageError
from airgap.keys import KDF_MIN, KeyOptions, PassphraseSource, SigningKey, key_env_name, keygen, load_signing_key
from tests.helpers import airgap


@pytest.fixture
def two_keys(tmp_path):
    """root-1 and root-2 with different passphrases, and a file holding each."""
    d = tmp_path / "keys"
    d.mkdir()
    keygen("root-1", d, "first secret", kdf_limits=KDF_MIN)
    keygen("root-2", d, "second secret", kdf_limits=KDF_MIN)
    (tmp_path / "pw1").write_text("first secret\n")
    (tmp_path / "pw2").write_text("second secret\r\n")
    return d, tmp_path / "pw1", tmp_path / "pw2"


@pytest.fixture
def no_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AIRGAP_PASSPHRASE"):
            monkeypatch.delenv(name)


def test_key_env_name():
    assert key_env_name("keys/root-1.key") == "AIRGAP_PASSPHRASE_FILE_ROOT_1"
    assert key_env_name("/x/officer.a b.key") == "AIRGAP_PASSPHRASE_FILE_OFFICER_A_B"


def test_passphrase_file_per_key(two_keys, no_env):
    d, pw1, pw2 = two_keys
    k1 = load_signing_key(d / "root-1.key", KeyOptions(passphrase_file=str(pw1)))
    k2 = load_signing_key(d / "root-2.key", KeyOptions(passphrase_file=str(pw2)))
    assert (k1.name, k2.name) == ("root-1", "root-2")


def test_env_file_per_key_and_precedence(two_keys, no_env, monkeypatch, tmp_path):
    d, pw1, pw2 = two_keys
    monkeypatch.setenv("AIRGAP_PASSPHRASE_FILE_ROOT_1", str(pw1))
    monkeypatch.setenv("AIRGAP_PASSPHRASE_FILE_ROOT_2", str(pw2))
    monkeypatch.setenv("AIRGAP_PASSPHRASE", "neither")
    assert load_signing_key(d / "root-1.key").name == "root-1"
    assert load_signing_key(d / "root-2.key").name == "root-2"
    # --passphrase-file beats the per-key variable, which beats AIRGAP_PASSPHRASE.
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    with pytest.raises(KeyFileError, match=r"wrong passphrase \(from --passphrase-file .*wrong\)"):
        load_signing_key(d / "root-1.key", KeyOptions(passphrase_file=str(wrong)))
    monkeypatch.delenv("AIRGAP_PASSPHRASE_FILE_ROOT_2")
    with pytest.raises(KeyFileError, match=r"root-2.key: wrong passphrase \(from AIRGAP_PASSPHRASE\)"):
        load_signing_key(d / "root-2.key")


def test_old_single_passphrase_still_works(two_keys, no_env, monkeypatch):
    d, _, _ = two_keys
    monkeypatch.setenv("AIRGAP_PASSPHRASE", "first secret")
    assert load_signing_key(d / "root-1.key").name == "root-1"


def test_empty_or_missing_passphrase_file(two_keys, no_env, tmp_path, monkeypatch):
    d, _, _ = two_keys
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        load_signing_key(d / "root-1.key", KeyOptions(passphrase_file=str(empty)))
    with pytest.raises(InputError, match="cannot read the passphrase file"):
        load_signing_key(d / "root-1.key", KeyOptions(passphrase_file=str(tmp_path / "absent")))
    monkeypatch.setenv("AIRGAP_PASSPHRASE_FILE_ROOT_1", "")
    with pytest.raises(InputError, match="AIRGAP_PASSPHRASE_FILE_ROOT_1 is set but empty"):
        load_signing_key(d / "root-1.key")


class _Tty:
    def isatty(self):
        return True


def test_prompt_names_the_key_and_allows_three_tries(two_keys, no_env, monkeypatch, capsys):
    d, _, _ = two_keys
    monkeypatch.setattr(keys_mod.sys, "stdin", _Tty())
    prompts = []
    answers = iter(["bad", "worse", "first secret"])

    def getpass(prompt):
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(keys_mod.getpass, "getpass", getpass)
    monkeypatch.setattr(keys_mod, "_interactive", lambda: True)
    key = load_signing_key(d / "root-1.key")
    assert key.name == "root-1"
    assert prompts == [f"Passphrase for {d / 'root-1.key'}: "] * 3
    assert "Wrong passphrase" in capsys.readouterr().err

    answers = iter(["a", "b", "c", "never asked"])
    prompts.clear()
    with pytest.raises(KeyFileError, match="wrong passphrase or corrupted key file"):
        load_signing_key(d / "root-1.key")
    assert len(prompts) == 3


def test_no_terminal_says_how(two_keys, no_env, monkeypatch):
    d, _, _ = two_keys
    monkeypatch.setattr(keys_mod, "_interactive", lambda: False)
    with pytest.raises(InputError, match="--passphrase-file .* AIRGAP_PASSPHRASE_FILE_<KEYNAME>"):
        load_signing_key(d / "root-1.key")


def test_public_key_given_as_private_key(two_keys, no_env):
    d, _, _ = two_keys
    with pytest.raises(KeyFileError) as exc:
        load_signing_key(d / "root-1.pub")
    assert str(exc.value) == (f"{d / 'root-1.pub'} is a public key: give the private key file "
                              f"({d / 'root-1.key'}) or a pkcs11: URI")
    # The same when the .pub file happens to be 0600.
    os.chmod(d / "root-1.pub", 0o600)
    with pytest.raises(KeyFileError, match="is a public key"):
        load_signing_key(d / "root-1.pub")


def test_wrong_unlock_kind(two_keys, tmp_path):
    d, pw1, _ = two_keys
    with pytest.raises(InputError, match="--pin-file is for pkcs11: URIs"):
        load_signing_key(d / "root-1.key", KeyOptions(pin_file=str(pw1)))
    with pytest.raises(InputError, match="a token key takes --pin-file"):
        load_signing_key("pkcs11:token=x", KeyOptions(passphrase_file=str(pw1)))


# --- the command line: every verb goes through the same loader --------------------


def test_cli_passphrase_file_belongs_to_the_key_before_it(two_keys, tmp_path, keyring, no_env):
    d, pw1, pw2 = two_keys
    args = ["trust", "init", "--target", "t", "--expires", "30d",
            "--root", d / "root-1.pub", "--root", d / "root-2.pub", "--root-threshold", "2",
            "--builder", keyring.pub_path("builder-1"), "--officer", keyring.pub_path("officer-1"),
            "--key", d / "root-1.key", "--passphrase-file", pw1,
            "--key", d / "root-2.key", "--passphrase-file", pw2,
            "-o", tmp_path / "trust.json"]
    r = airgap(*args, env={"AIRGAP_PASSPHRASE": "neither"})
    assert r.code == 0, r.err
    assert "INCOMPLETE" not in r.out
    # Swapped files: the first key's passphrase file is the second's; the error names the key and the source.
    swapped = [str(a) for a in args]
    i, j = swapped.index(str(pw1)), swapped.index(str(pw2))
    swapped[i], swapped[j] = swapped[j], swapped[i]
    swapped[-1] = str(tmp_path / "trust2.json")
    r = airgap(*swapped, env={"AIRGAP_PASSPHRASE": "neither"})
    assert r.code == 2
    assert f"{d / 'root-1.key'}: wrong passphrase (from --passphrase-file {pw2})" in r.err


def test_cli_passphrase_file_twice_for_one_key(two_keys, keyring, signed_bundle, tmp_path):
    d, pw1, pw2 = two_keys
    b = signed_bundle.copy(tmp_path)
    r = airgap("sign", b, "--key", d / "root-1.key", "--passphrase-file", pw1, "--passphrase-file", pw2, "--yes")
    assert r.code == 2 and "given twice for key" in r.err
    r = airgap("sign", b, "--passphrase-file", pw1, "--key", keyring.key_path("officer-2"), "--yes")
    assert r.code == 2 and "wrong passphrase (from --passphrase-file" in r.err  # belongs to the first key


def test_cli_public_key_as_key(keyring, signed_bundle, tmp_path):
    b = signed_bundle.copy(tmp_path)
    r = airgap("sign", b, "--key", keyring.pub_path("officer-2"), "--yes")
    assert r.code == 2
    assert f"{keyring.pub_path('officer-2')} is a public key: give the private key file ({keyring.key_path('officer-2')}) or a pkcs11: URI" in r.err


def test_cli_keygen_passphrase_file_and_export(tmp_path, no_env):
    pw = tmp_path / "pw"
    pw.write_text("new key secret\n")
    r = airgap("keygen", "officer-9", "--dir", tmp_path, "--passphrase-file", pw)
    assert r.code == 0, r.err
    assert SigningKey.load(tmp_path / "officer-9.key", PassphraseSource.for_key(tmp_path / "officer-9.key", pw)).name == "officer-9"
    r = airgap("key", "export", tmp_path / "officer-9.key", "--passphrase-file", pw, "-o", tmp_path / "again.pub")
    assert r.code == 0, r.err
    assert (tmp_path / "again.pub").read_bytes() == (tmp_path / "officer-9.pub").read_bytes()
    r = airgap("key", "export", tmp_path / "officer-9.key", "--passphrase-file", pw, "-o", tmp_path / "again.pub")
    assert r.code == 2 and "--force" in r.err


def test_unlock_flags_without_key_is_usage_error(tmp_path):
    r = airgap("split", tmp_path / "x.tar", "--size", "1M", "-o", tmp_path / "m", "--passphrase-file", tmp_path / "pw")
    assert r.code == 2 and "no key argument" in r.err


def test_key_options_raise_usage_error():
    from airgap.cli import _key_options

    class A:
        _key_seq = [("passphrase_file", "a"), ("passphrase_file", "b")]

    with pytest.raises(UsageError, match="twice before the first key"):
        _key_options(A())
