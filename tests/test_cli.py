"""The command line as officers and engineers use it: keygen, trust init/rotate/show,
sign's confirmation, inspect and diff output, exit codes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from airgap.keys import KDF_MIN, keygen
from tests.helpers import PASSPHRASE, airgap, airgap_proc
from tests.keytwins import pub_file as _pub_file
from tests.keytwins import twin_key


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
    assert r.code == 0 and "INCOMPLETE: 1 more by its own root keys (1 of 2) and 1 more by the root keys of version 2" in r.out
    assert f"airgap trust sign {v3} --successor-of {v2} --key <root key>" in r.out
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
    assert airgap("sign", b, "--key", keyring.key_path("officer-1"), "--trust", signed_bundle.trust, "--yes").code == 0
    after = b.read_bytes()
    sig_at = after.rfind(b"signatures.json")
    assert after[:sig_at] == before[:sig_at]  # nothing before the envelope changed
    # The same key twice is the caller's mistake (exit 2), refused before anything is written.
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--yes")
    assert r.code == 2 and "already signed" in r.err and b.read_bytes() == after


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


# --------------------------------------------------------------------------- key roles for policies


def _init(k, out, *keys, extra=()):
    return airgap("trust", "init", "--target", "geheim-pilot", "--expires", "365d",
                  "--root", k.pub_path("root-1"), "--root", k.pub_path("root-2"), "--root", k.pub_path("root-3"),
                  "--root-threshold", "2", "--builder", k.pub_path("builder-1"), "--officer", k.pub_path("officer-1"),
                  *extra, *[a for key in keys for a in ("--key", key)], "-o", out)


@pytest.fixture(scope="module")
def outsiders(tmp_path_factory):
    """Keys no policy of the keyring lists: a stranger and a fourth root for rotations."""
    d = tmp_path_factory.mktemp("outsiders")
    for name in ("stranger", "root-4"):
        keygen(name, d, PASSPHRASE, kdf_limits=KDF_MIN)
    return d


@pytest.mark.parametrize("name,role", [
    ("builder-1", "is a builder key of this policy, not a root key"),
    ("officer-1", "is an officer key of this policy, not a root key"),
])
def test_trust_init_refuses_a_key_of_another_role(tmp_path, keyring, name, role):
    out = tmp_path / "trust.json"
    r = _init(keyring, out, keyring.key_path("root-1"), keyring.key_path(name))
    assert r.code == 2, r.err
    assert f"{keyring.key_path(name)} {role}" in r.err
    assert "root-1" in r.err and "root-3" in r.err  # names the keys that may sign
    assert not out.exists()


def test_trust_init_refuses_an_unknown_key(tmp_path, keyring, outsiders):
    out = tmp_path / "trust.json"
    r = _init(keyring, out, outsiders / "stranger.key")
    assert r.code == 2 and f"{outsiders / 'stranger.key'} is not in the policy at all" in r.err
    assert not out.exists()


def test_trust_init_the_same_key_twice(tmp_path, keyring):
    r = _init(keyring, tmp_path / "t.json", keyring.key_path("root-1"), keyring.key_path("root-1"))
    assert r.code == 2 and "are the same key" in r.err


def test_public_and_private_key_files_swapped(tmp_path, keyring):
    out = tmp_path / "trust.json"
    # A .pub (mode 0644) given as --key: said so, not "permissions too open".
    r = _init(keyring, out, keyring.pub_path("root-1"))
    assert r.code == 2 and (f"{keyring.pub_path('root-1')} is a public key: give the private key file "
                            f"({keyring.key_path('root-1')}) or a pkcs11: URI") in r.err
    assert "permissions" not in r.err
    # The same with a 0600 copy of the .pub.
    pub600 = tmp_path / "root-1.pub"
    pub600.write_bytes(keyring.pub_path("root-1").read_bytes())
    os.chmod(pub600, 0o600)
    r = _init(keyring, out, pub600)
    assert r.code == 2 and "is a public key: give the private key file" in r.err
    # A private key given as --root (a public key is expected).
    r = airgap("trust", "init", "--target", "geheim-pilot", "--expires", "365d", "--root", keyring.key_path("root-1"),
               "--builder", keyring.pub_path("builder-1"), "--officer", keyring.pub_path("officer-1"), "-o", out)
    assert r.code == 2 and f"{keyring.key_path('root-1')} is a private key file; a public key is expected" in r.err
    # A real permission problem still says so.
    loose = tmp_path / "loose.key"
    loose.write_bytes(keyring.key_path("root-1").read_bytes())
    os.chmod(loose, 0o644)
    r = _init(keyring, out, loose)
    assert r.code == 2 and "permissions 0644 are too open" in r.err
    assert not out.exists()


def _v1(tmp_path, k) -> Path:
    v1 = tmp_path / "v1.json"
    assert _init(k, v1, k.key_path("root-1"), k.key_path("root-2")).code == 0
    return v1


def test_trust_rotate_refuses_a_root_key_of_neither_version(tmp_path, keyring):
    v1, v2 = _v1(tmp_path, keyring), tmp_path / "v2.json"
    r = airgap("trust", "rotate", v1, "--key", keyring.key_path("root-1"), "--key", keyring.key_path("builder-1"), "-o", v2)
    assert r.code == 2
    assert f"{keyring.key_path('builder-1')} is a builder key of version 2 and a builder key of version 1, a root key of neither" in r.err
    assert not v2.exists()


def test_trust_rotate_counts_each_key_for_the_threshold_it_belongs_to(tmp_path, keyring, outsiders, signed_bundle):
    """Roots 1,2,3 (2 of 3) become 2,3,4 (2 of 3).  root-4 is root only in the new version,
    root-1 only in the old one: each is accepted and counts only for its own version's threshold."""
    k = keyring
    v1, v2 = _v1(tmp_path, k), tmp_path / "v2.json"
    r = airgap("trust", "rotate", v1, "--root", k.pub_path("root-2"), "--root", k.pub_path("root-3"),
               "--root", outsiders / "root-4.pub", "--key", outsiders / "root-4.key", "-o", v2, "--json")
    assert r.code == 0, r.err
    assert (r.json()["root_signatures"], r.json()["previous_root_signatures"]) == (1, 0)
    assert r.json()["complete"] is False
    # root-1 is not a root key of version 2: without the previous version it is refused...
    r = airgap("trust", "sign", v2, "--key", k.key_path("root-1"))
    assert r.code == 2 and "is not in the policy at all" in r.err and "--successor-of" in r.err
    # ...with it, it counts for version 1's threshold only.
    r = airgap("trust", "sign", v2, "--key", k.key_path("root-1"), "--successor-of", v1, "--json")
    assert r.code == 0, r.err
    assert (r.json()["root_signatures"], r.json()["previous_root_signatures"], r.json()["complete"]) == (1, 1, False)
    # root-2 is root in both: both thresholds are met.
    r = airgap("trust", "sign", v2, "--key", k.key_path("root-2"), "--successor-of", v1, "--json")
    assert r.code == 0 and r.json()["complete"] is True and r.json()["previous_root_threshold"] == 2
    # And the isolated side really takes the rotation: first use of v1, then v2 chains onto it.
    state = tmp_path / "state"
    assert airgap("verify", signed_bundle.path, "--trust", v1, "--state", state, "--record", "--quiet").code == 0
    r = airgap("verify", signed_bundle.path, "--trust", v2, "--state", state, "--quiet")
    assert r.code == 0, r.err


def test_trust_sign_refusals(tmp_path, keyring, outsiders):
    k = keyring
    v1 = tmp_path / "v1.json"
    assert _init(k, v1, k.key_path("root-1")).code == 0
    before = v1.read_bytes()
    for key, text in ((k.key_path("builder-1"), "is a builder key of this policy, not a root key"),
                      (k.key_path("officer-1"), "is an officer key of this policy, not a root key"),
                      (outsiders / "stranger.key", "is not in the policy at all"),
                      (k.key_path("root-1"), "already signed")):
        r = airgap("trust", "sign", v1, "--key", key)
        assert r.code == 2 and f"{key} {text}" in r.err, (key, r.err)
        assert v1.read_bytes() == before
    assert airgap("trust", "sign", v1, "--key", k.key_path("root-2")).code == 0
    # A "previous" version that is not the one before: an input error too.
    r = airgap("trust", "sign", v1, "--key", k.key_path("root-3"), "--successor-of", v1)
    assert r.code == 2 and "is not the version before" in r.err


def test_revoke_by_short_keyid(tmp_path, keyring):
    k = keyring
    v1, v2 = _v1(tmp_path, k), tmp_path / "v2.json"
    short = k.pub("officer-1").keyid[:8]
    r = airgap("trust", "rotate", v1, "--officer", k.pub_path("officer-2"), "--revoke", short + "…",
               "--key", k.key_path("root-1"), "--key", k.key_path("root-2"), "-o", v2)
    assert r.code == 0, r.err
    assert json.loads(v2.read_text())["signed"]["revoked"] == [k.pub("officer-1").keyid]
    for bad, text in (("0123456", "neither a keyid"), ("fffffffff0", "no key in"), ("not-a-key", "neither a keyid")):
        r = airgap("trust", "rotate", v1, "--revoke", bad, "--key", k.key_path("root-1"), "-o", tmp_path / "x.json")
        assert r.code == 2, (bad, r.err)
        assert text in r.err, (bad, r.err)


def test_revoke_ambiguous_short_keyid(tmp_path, keyring):
    k = keyring
    twins = [twin_key(i) for i in (0, 1)]
    v1 = tmp_path / "v1.json"
    pubs = []
    for key in twins:
        pubs += ["--officer", _pub_file(tmp_path, key)]
    assert _init(k, v1, k.key_path("root-1"), k.key_path("root-2"), extra=pubs
                 ).code == 0
    common = twins[0].keyid[:9]
    r = airgap("trust", "rotate", v1, "--revoke", common, "--key", k.key_path("root-1"), "-o", tmp_path / "v2.json")
    assert r.code == 2 and "is ambiguous: 2 keys" in r.err
    assert twins[0].keyid[:16] in r.err and twins[1].keyid[:16] in r.err
    r = airgap("trust", "rotate", v1, "--revoke", twins[1].keyid[:10], "--key", k.key_path("root-1"),
               "--key", k.key_path("root-2"), "-o", tmp_path / "v2.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "v2.json").read_text())["signed"]["revoked"] == [twins[1].keyid]
