"""Keys on a real PKCS#11 token (SoftHSM2): keygen on the token, export, sign, verify, refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import nacl.signing
import pytest

from airgap import pkcs11 as p11mod
from airgap.exceptions import InputError
from airgap.keys import KDF_MIN, SigningKey, keygen, load_public
from airgap.pkcs11 import Pkcs11URI
from tests.fixtures.keys import POLICY_EXPIRES, TARGET, make_policy
from tests.helpers import REPO, airgap

URI = "pkcs11:token=officer-1;object=airgap-officer"


# --- RFC 7512 URIs ------------------------------------------------------------------


def test_uri_parse():
    u = Pkcs11URI.parse("pkcs11:token=The%20Token;object=my%2Dkey;id=%01%ff;type=private?module-path=/usr/lib/x.so")
    assert u.attrs == {"token": "The Token", "object": "my-key", "id": b"\x01\xff", "type": "private"}
    assert u.query == {"module-path": "/usr/lib/x.so"}
    assert Pkcs11URI.parse("pkcs11:").attrs == {}
    assert Pkcs11URI.build("officer 1", "k;1", b"\x0a") == "pkcs11:token=officer%201;object=k%3B1;id=%0a"
    assert Pkcs11URI.parse(Pkcs11URI.build("officer 1", "k;1", b"\x0a")).attrs == {"token": "officer 1", "object": "k;1", "id": b"\n"}


@pytest.mark.parametrize("text, message", [
    ("pkcs11:token=a;token=b", "given twice"),
    ("pkcs11:color=red", "unknown path attribute 'color'"),
    ("pkcs11:token", "has no '='"),
    ("pkcs11:type=banana", "type='banana'"),
    ("pkcs11:token=a?pin-value=1234", "never goes on the command line"),
    ("pkcs11:token=a?pin-source=file:/p", "never goes on the command line"),
    ("pkcs11:token=a?module-name=softhsm2", "not supported"),
    ("keys/officer.key", "not a pkcs11: URI"),
])
def test_uri_refusals(text, message):
    with pytest.raises(InputError, match=message):
        Pkcs11URI.parse(text)


def test_without_the_extra_everything_else_works(tmp_path, keyring, signed_bundle):
    """python-pkcs11 is optional: with it unimportable, file keys sign and a URI says how to get it."""
    b = signed_bundle.copy(tmp_path)
    code = (
        "import sys; sys.modules['pkcs11'] = None\n"
        "from airgap.cli import main\n"
        f"rc = main(['sign', {str(b)!r}, '--key', {str(keyring.key_path('officer-2'))!r}, '--yes', '-q'])\n"
        "assert rc == 0, rc\n"
        f"sys.exit(main(['sign', {str(b)!r}, '--key', 'pkcs11:token=x;object=y', '--yes']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"AIRGAP_PASSPHRASE": "test", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    assert "pip install 'airgap[pkcs11]'" in r.stderr


# --- the token ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_key(softhsm, tmp_path_factory):
    """An officer key generated on the token by ``airgap keygen --pkcs11``."""
    d = tmp_path_factory.mktemp("token-key")
    r = airgap("keygen", "officer-t", "--dir", d, "--pkcs11", URI, "--pkcs11-module", softhsm.module,
               "--pin-file", softhsm.pin_file, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["on_token"] is True and out["private_key"].startswith(URI + ";id=")
    assert not (d / "officer-t.key").exists()
    return d / "officer-t.pub", out


def test_keygen_on_token_private_key_not_extractable(softhsm, token_key):
    import pkcs11

    lib = pkcs11.lib(softhsm.module)
    token = lib.get_token(token_label="officer-1")
    with token.open(user_pin=softhsm.pin) as s:
        priv = s.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="airgap-officer")
        assert priv[pkcs11.Attribute.EXTRACTABLE] is False
        assert priv[pkcs11.Attribute.SENSITIVE] is True
        assert priv[pkcs11.Attribute.TOKEN] is True
        with pytest.raises(pkcs11.PKCS11Error):
            priv[pkcs11.Attribute.VALUE]  # the secret cannot be read out
    pub = load_public(token_key[0])
    assert pub.keyid == token_key[1]["keyid"] and pub.name == "officer-t"


def test_keygen_refuses_a_second_key_under_the_same_label(softhsm, token_key, tmp_path):
    r = airgap("keygen", "again", "--dir", tmp_path, "--pkcs11", URI, "--pkcs11-module", softhsm.module,
               "--pin-file", softhsm.pin_file)
    assert r.code == 2 and "already holds an object labelled 'airgap-officer'" in r.err


def test_export_gives_the_same_public_key_file(softhsm, token_key, tmp_path):
    r = airgap("key", "export", URI, "-o", tmp_path / "x.pub", "--name", "officer-t", "--pkcs11-module", softhsm.module)
    assert r.code == 0, r.err
    assert (tmp_path / "x.pub").read_bytes() == token_key[0].read_bytes()
    r = airgap("key", "export", URI + ";type=private", "-o", tmp_path / "y.pub", "--name", "officer-t",
               env={"AIRGAP_PKCS11_MODULE": softhsm.module, "AIRGAP_PKCS11_PIN": softhsm.pin})
    assert r.code == 0, r.err
    assert (tmp_path / "y.pub").read_bytes() == token_key[0].read_bytes()


def test_imported_key_signs_exactly_like_the_file_key(softhsm, tmp_path, keyring, signed_bundle):
    """The same Ed25519 key in a file and on the token: same keyid, byte-identical signatures."""
    import pkcs11
    from pkcs11 import Attribute as A

    keygen("twin", tmp_path, "test", kdf_limits=KDF_MIN)
    file_key = SigningKey.load(tmp_path / "twin.key", lambda: "test")
    raw_seed = bytes(file_key._key)  # what a key ceremony would import onto the token
    lib = pkcs11.lib(softhsm.module)
    with lib.get_token(token_label="officer-1").open(user_pin=softhsm.pin, rw=True) as s:
        common = {A.TOKEN: True, A.LABEL: "twin", A.ID: b"twin", A.KEY_TYPE: pkcs11.KeyType.EC_EDWARDS,
                  A.EC_PARAMS: bytes.fromhex("06032b6570")}
        s.create_object({**common, A.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, A.VALUE: raw_seed, A.SIGN: True,
                         A.SENSITIVE: True, A.EXTRACTABLE: False, A.PRIVATE: True})
        s.create_object({**common, A.CLASS: pkcs11.ObjectClass.PUBLIC_KEY, A.VERIFY: True,
                         A.EC_POINT: b"\x04\x20" + file_key.public_key.public})
    uri = "pkcs11:token=officer-1;object=twin"
    r = airgap("key", "export", uri, "-o", tmp_path / "twin-token.pub", "--pkcs11-module", softhsm.module)
    assert r.code == 0, r.err
    assert (tmp_path / "twin-token.pub").read_bytes() == (tmp_path / "twin.pub").read_bytes()

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ba, bb = signed_bundle.copy(a, builder_only=True), signed_bundle.copy(b, builder_only=True)
    assert airgap("sign", ba, "--key", tmp_path / "twin.key", "--yes", "-q").code == 0
    r = airgap("sign", bb, "--key", uri, "--pin-file", softhsm.pin_file, "--pkcs11-module", softhsm.module, "--yes", "-q")
    assert r.code == 0, r.err
    assert ba.read_bytes() == bb.read_bytes()


def _officer_policy(tmp_path, keyring, token_pub, *more_officers):
    officers = [a for pub in (token_pub, *more_officers) for a in ("--officer", pub)]
    r = airgap("trust", "init", "--target", TARGET, "--expires", POLICY_EXPIRES,
               "--root", keyring.pub_path("root-1"), "--root-threshold", "1",
               "--builder", keyring.pub_path("builder-1"), *officers, "--officer-threshold", "1",
               "--key", keyring.key_path("root-1"), "-o", tmp_path / "trust.json")
    assert r.code == 0, r.err
    return tmp_path / "trust.json"


def test_officer_on_token_signs_and_verify_accepts(softhsm, token_key, tmp_path, keyring, signed_bundle):
    trust = _officer_policy(tmp_path, keyring, token_key[0])
    b = signed_bundle.copy(tmp_path, builder_only=True)
    r = airgap("verify", b, "--trust", trust)
    assert r.code == 1 and "officer" in r.err
    r = airgap("sign", b, "--key", URI, "--yes", env={"AIRGAP_PKCS11_MODULE": softhsm.module, "AIRGAP_PKCS11_PIN": softhsm.pin})
    assert r.code == 0, r.err
    assert "signing key airgap-officer" in r.out  # the plan names the token key by its label
    r = airgap("verify", b, "--trust", trust, "--json")
    assert r.code == 0, r.err
    assert r.json()["result"] == "accepted"
    env = json.loads(subprocess.run(["tar", "-xOf", b, "signatures.json"], capture_output=True, check=True).stdout)
    keyids = {s["keyid"] for s in env["signatures"]}
    assert token_key[1]["keyid"] in keyids


def test_wrong_pin(softhsm, token_key, tmp_path, signed_bundle):
    bad = tmp_path / "bad-pin"
    bad.write_text("9999\n")
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    r = airgap("sign", b, "--key", URI, "--pin-file", bad, "--pkcs11-module", softhsm.module, "--yes")
    assert r.code == 1
    assert "wrong PIN for token 'officer-1'" in r.err and "not retried" in r.err
    assert URI in r.err
    assert b.read_bytes() == before
    # One failed login, not a loop: the right PIN still works afterwards.
    r = airgap("sign", b, "--key", URI, "--pin-file", softhsm.pin_file, "--pkcs11-module", softhsm.module, "--yes", "-q")
    assert r.code == 0, r.err


def test_token_absent_names_the_uri(softhsm, tmp_path, signed_bundle):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    uri = "pkcs11:token=officer-2;object=airgap-officer"
    r = airgap("sign", b, "--key", uri, "--pin-file", softhsm.pin_file, "--pkcs11-module", softhsm.module, "--yes")
    assert r.code == 1
    assert f"{uri}: no token matches (tokens present: 'officer-1'" in r.err


def test_not_ed25519_is_refused(softhsm, token_key, tmp_path, signed_bundle):
    softhsm.pkcs11_tool("--token-label", "officer-1", "--login", "--pin", softhsm.pin, "--keypairgen",
                        "--key-type", "EC:prime256v1", "--label", "p256", "--id", "0256")
    b = signed_bundle.copy(tmp_path, builder_only=True)
    r = airgap("sign", b, "--key", "pkcs11:token=officer-1;object=p256", "--pin-file", softhsm.pin_file,
               "--pkcs11-module", softhsm.module, "--yes")
    assert r.code == 2
    assert "pkcs11:token=officer-1;object=p256: the key object is EC, not Ed25519" in r.err
    r = airgap("key", "export", "pkcs11:token=officer-1;object=p256", "-o", tmp_path / "p.pub", "--pkcs11-module", softhsm.module)
    assert r.code == 2 and "not Ed25519" in r.err


def test_module_and_pin_sources(softhsm, token_key, tmp_path, monkeypatch):
    monkeypatch.delenv("AIRGAP_PKCS11_MODULE", raising=False)
    monkeypatch.delenv("AIRGAP_PKCS11_PIN", raising=False)
    with pytest.raises(InputError, match="no PKCS#11 module: give --pkcs11-module"):
        p11mod.open_key(URI)
    with pytest.raises(InputError, match="does not exist"):
        p11mod.open_key(URI, module="/nonexistent/lib.so")
    monkeypatch.setattr(p11mod.sys, "stdin", open("/dev/null"))
    with pytest.raises(InputError, match="a PIN is needed: give --pin-file"):
        p11mod.open_key(URI, module=softhsm.module)
    key = p11mod.open_key(URI + f"?module-path={softhsm.module}", pin_file=str(softhsm.pin_file))
    try:
        sig = key.sign(b"data")
        nacl.signing.VerifyKey(key.public_key.public).verify(b"data", sig)
        assert key.keyid == token_key[1]["keyid"]
    finally:
        key.close()


def test_split_index_signed_on_token(softhsm, token_key, tmp_path, keyring, signed_bundle):
    trust = _officer_policy(tmp_path, keyring, token_key[0], keyring.pub_path("officer-1"))
    b = signed_bundle.copy(tmp_path)
    r = airgap("split", b, "--size", "64K", "-o", tmp_path / "media", "--key", URI, "--pin-file", softhsm.pin_file,
               "--pkcs11-module", softhsm.module, "-q")
    assert r.code == 0, r.err
    r = airgap("verify", tmp_path / "media", "--trust", trust, "--json")
    assert r.code == 0, r.out
    assert r.json()["media"].endswith(f"index signed by officer-t {token_key[1]['keyid'][:8]}…")


def test_demo_officer_token(tmp_path, keyring, signed_bundle):
    """``scripts/demo.sh --officer-token``: the demo officer's key is made on a SoftHSM2 token and signs from there."""
    from airgap.lab.demo import Demo

    lines: list[str] = []
    demo = Demo(tmp_path / "demo", repo=REPO, officer_token=True, log=lines.append)
    demo.make_keys()
    demo.make_trust()
    assert not (demo.keys / "officer-token.key").exists()
    assert any(f"throw-away passphrase is in {demo.passphrase_file}" in line for line in lines)
    policy = json.loads(demo.trust.read_text())
    officer = policy["signed"]["roles"]["officer"]["keyids"]
    assert officer == [load_public(demo.officer_pub).keyid]
    b = signed_bundle.copy(tmp_path, builder_only=True)
    demo.airgap("sign", b, *demo.officer_key_args(), "--yes", "-q")
    trust = _officer_policy(tmp_path, keyring, demo.officer_pub)
    r = airgap("verify", b, "--trust", trust)
    assert r.code == 0, r.out + r.err


def test_officer_on_token_signs_an_override(softhsm, token_key, tmp_path, keyring, signed_bundle):
    """An expired policy accepted with the override key on the token: the token signs the audited override."""
    from airgap.audit import AuditLog
    from airgap.trust import TrustPolicy

    policy = TrustPolicy.create(TARGET, "2026-01-01T00:00:00Z", keyring.pubs("root-1", "root-2"), 1,
                                keyring.pubs("builder-1", "builder-2"), 1,
                                [*keyring.pubs("officer-1", "officer-2"), load_public(token_key[0])], 1)
    policy.sign(keyring["root-1"])
    trust = tmp_path / "expired.json"
    trust.write_bytes(policy.to_bytes())
    state = tmp_path / "state"
    env = {"AIRGAP_PKCS11_MODULE": softhsm.module, "AIRGAP_PKCS11_PIN": softhsm.pin}
    r = airgap("verify", signed_bundle.path, "--trust", trust, "--state", state, "--record", "--allow-expired",
               "--reason", "renewal delayed; ticket 7", "--override-key", URI, env=env)
    assert r.code == 0, r.err
    (entry,) = [e for e in AuditLog(state / "audit.log").entries() if e.action == "override"]
    assert entry.actor.keyid == entry.detail["keyid"] == token_key[1]["keyid"]
    r = airgap("audit", "verify", "--state", state, "--trust", trust, "--json")
    assert r.code == 0, r.err
    assert r.json()["overrides_checked"] == [entry.seq]
    # The same log judged by a policy in which the token key is no officer: refused, naming the entry.
    other = tmp_path / "other.json"
    other.write_bytes(make_policy(keyring).to_bytes())
    r = airgap("audit", "verify", "--state", state, "--trust", other)
    assert r.code == 1 and f"override entry {entry.seq}" in r.err and "no role" in r.err, r.err
