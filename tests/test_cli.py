"""The command line as officers and engineers use it: keygen, trust init/rotate/show,
sign's confirmation, inspect and diff output, exit codes."""

from __future__ import annotations

import json
import os
import stat

from tests.helpers import airgap, airgap_proc


def test_keygen_writes_an_encrypted_0600_key(tmp_path):
    r = airgap("keygen", "officer-9", "--dir", tmp_path / "keys", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    key = tmp_path / "keys" / "officer-9.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    content = json.loads(key.read_text())
    assert content["encrypted"] is True and content["kdf"]["name"] == "argon2id"
    assert "seed" not in content
    pub = json.loads((tmp_path / "keys" / "officer-9.pub").read_text())
    assert pub["keyid"] == doc["keyid"]
    # Never overwrites.
    assert airgap("keygen", "officer-9", "--dir", tmp_path / "keys").code == 2


def test_keygen_without_passphrase_says_so(tmp_path):
    r = airgap("keygen", "ci", "--dir", tmp_path, "--no-passphrase")
    assert r.code == 0 and "NOT ENCRYPTED" in r.out
    assert json.loads((tmp_path / "ci.key").read_text())["encrypted"] is False


def test_wrong_passphrase_is_an_input_error(tmp_path, keyring, signed_bundle):
    b = signed_bundle.copy(tmp_path)
    r = airgap("sign", b, "--key", keyring.key_path("officer-2"), "--yes", env={"AIRGAP_PASSPHRASE": "wrong"})
    assert r.code == 2 and "wrong passphrase" in r.err


def test_trust_init_rotate_show(tmp_path, keyring):
    k = keyring
    trust = tmp_path / "trust.json"
    r = airgap("trust", "init", "--target", "geheim-pilot", "--expires", "365d",
               "--root", k.pub_path("root-1"), "--root", k.pub_path("root-2"), "--root", k.pub_path("root-3"), "--root-threshold", "2",
               "--builder", k.pub_path("builder-1"), "--builder-threshold", "1",
               "--officer", k.pub_path("officer-1"), "--officer-threshold", "1",
               "--key", k.key_path("root-1"), "--key", k.key_path("root-2"), "-o", trust)
    assert r.code == 0, r.err
    assert airgap("trust", "show", trust).code == 0
    # Rotation: add officer-2, revoke officer-1, signed by two roots.
    v2 = tmp_path / "trust-v2.json"
    r = airgap("trust", "rotate", trust, "--officer", k.pub_path("officer-2"), "--revoke", k.pub("officer-1").keyid,
               "--key", k.key_path("root-1"), "--key", k.key_path("root-3"), "-o", v2, "--json")
    assert r.code == 0, r.err
    assert json.loads(v2.read_text())["signed"]["version"] == 2
    # A rotation signed by one root only is incomplete: nobody trusts it until a
    # second root officer signs it with `trust sign`.
    v3 = tmp_path / "trust-v3.json"
    r = airgap("trust", "rotate", v2, "--key", k.key_path("root-1"), "-o", v3)
    assert r.code == 0 and "INCOMPLETE: 1 more root signature" in r.out
    assert airgap("trust", "show", v3).code == 1
    r = airgap("trust", "sign", v3, "--key", k.key_path("root-2"))
    assert r.code == 0, r.err
    assert airgap("trust", "show", v3).code == 0
    # A builder key cannot sign a policy.
    assert airgap("trust", "sign", v3, "--key", k.key_path("builder-1")).code == 2


def test_incomplete_policy_is_not_trusted(tmp_path, keyring, signed_bundle):
    k = keyring
    t = tmp_path / "t.json"
    r = airgap("trust", "init", "--target", "geheim-pilot", "--expires", "365d",
               "--root", k.pub_path("root-1"), "--root", k.pub_path("root-2"), "--root-threshold", "2",
               "--builder", k.pub_path("builder-1"), "--officer", k.pub_path("officer-1"),
               "--key", k.key_path("root-1"), "-o", t, "--json")
    assert r.code == 0 and r.json()["complete"] is False
    r = airgap("verify", signed_bundle.path, "--trust", t)
    assert r.code == 1 and "root: 1 of 2" in r.err


def test_sign_asks_and_refuses_without_a_terminal(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    r = airgap_proc("sign", b, "--key", keyring.key_path("officer-1"), stdin=open(os.devnull))
    assert r.code == 2 and "--yes" in r.err
    assert "You are signing the manifest of geheim-pilot 1.0.0" in r.out


def test_sign_is_in_place_and_keeps_the_payload(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    assert airgap("sign", b, "--key", keyring.key_path("officer-1"), "--yes").code == 0
    after = b.read_bytes()
    sig_at = after.rfind(b"signatures.json")
    assert after[:sig_at] == before[:sig_at]  # nothing before the envelope changed
    assert airgap("sign", b, "--key", keyring.key_path("officer-1"), "--yes").code == 1  # same key twice


def test_inspect_human_and_trust(signed_bundle):
    r = airgap("inspect", signed_bundle.path, "--trust", signed_bundle.trust)
    assert r.code == 0, r.err
    assert "geheim-pilot 1.0.0" in r.out and "pilot/status" in r.out
    assert "builder" in r.out and "officer" in r.out
    assert "Not verified" in r.out


def test_diff_between_versions(tmp_path, seeded_registry, keyring, signed_bundle):
    from tests.fixtures.bundles import build_sample

    _, b2, _ = build_sample(tmp_path, seeded_registry, keyring, version="1.1.0", images=[seeded_registry.ref("pilot/status")])
    r = airgap("diff", signed_bundle.path, b2, "--json")
    assert r.code == 0
    d = r.json()
    removed = {x["ref"].split("/", 1)[1] for x in d["images"]["removed"]}
    assert removed == {"pilot/notes:1.0", "pilot/multi:1.0"}
    assert d["blobs"]["new"] == 0


def test_usage_errors_exit_2(tmp_path):
    assert airgap("verify").code == 2
    assert airgap("nonsense").code == 2
    r = airgap("verify", tmp_path / "x.tar", "--trust", tmp_path / "t.json", "--record")
    assert r.code == 2 and "--record needs --state" in r.err
