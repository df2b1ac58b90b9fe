"""Signing that cannot spoil a bundle: `airgap sign` refuses keys of the wrong role
before anything is written, `airgap unsign` takes a signature off again, and a
kill -9 during either leaves the old or the new envelope.  Real CLI runs on the
real sample bundle."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from airgap.keys import KDF_MIN, keygen
from airgap.trust import TrustPolicy
from tests.fixtures.keys import POLICY_EXPIRES, TARGET, make_policy
from tests.helpers import PASSPHRASE, REPO, airgap, airgap_proc
from tests.keytwins import COMMON_PREFIX, key_file, twin_key

JOURNAL = ".sign-journal"


def _policy(tmp_path: Path, keyring, name: str, *, officer_threshold=1, expires=POLICY_EXPIRES, edit=None) -> Path:
    policy = TrustPolicy.create(
        TARGET, expires,
        keyring.pubs("root-1", "root-2", "root-3"), 2,
        keyring.pubs("builder-1", "builder-2"), 1,
        keyring.pubs("officer-1", "officer-2"), officer_threshold,
    )
    if edit:
        policy = edit(policy)
    policy.sign(keyring["root-1"])
    policy.sign(keyring["root-2"])
    path = tmp_path / name
    path.write_bytes(policy.to_bytes())
    return path


@pytest.fixture(scope="module")
def stranger(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stranger")
    key, _ = keygen("stranger", d, PASSPHRASE, kdf_limits=KDF_MIN)
    return key


def _untouched(bundle: Path, before: bytes) -> None:
    assert bundle.read_bytes() == before
    assert not bundle.with_name(bundle.name + JOURNAL).exists()


def _sig_keyids(bundle: Path) -> list[str]:
    r = airgap("inspect", bundle, "--json")
    assert r.code == 0, r.err
    return [s["keyid"] for s in r.json()["signatures"]]


# --------------------------------------------------------------------------- sign: key roles


@pytest.mark.parametrize("name,text", [
    ("builder-2", "is a builder key of the policy ({trust}, version 1); an officer key is needed"),
    ("root-3", "is a root key of the policy ({trust}, version 1); an officer key is needed"),
])
def test_sign_refuses_a_key_of_another_role(tmp_path, signed_bundle, keyring, name, text):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    r = airgap("sign", b, "--key", keyring.key_path(name), "--trust", signed_bundle.trust, "--yes")
    assert r.code == 2, r.err
    assert f"{keyring.key_path(name)} " + text.format(trust=signed_bundle.trust) in r.err
    assert "officer-1" in r.err and "officer-2" in r.err  # the keys that would do
    _untouched(b, before)


def test_sign_refuses_a_key_not_in_the_policy(tmp_path, signed_bundle, stranger):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    r = airgap("sign", b, "--key", stranger, "--trust", signed_bundle.trust, "--yes", "--json")
    assert r.code == 2
    assert f"{stranger} (keyid " in r.err and "is not in the trust policy" in r.err and "at all" in r.err
    assert r.json()["error"] == "KeyRoleError"
    _untouched(b, before)


def test_sign_refuses_a_revoked_key(tmp_path, signed_bundle, keyring):
    trust = _policy(tmp_path, keyring, "trust-v2.json", edit=lambda v1: v1.rotate(revoke=[keyring.pub("officer-2").keyid]))
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    r = airgap("sign", b, "--key", keyring.key_path("officer-2"), "--trust", trust, "--yes")
    assert r.code == 2 and f"{keyring.key_path('officer-2')} is revoked in the trust policy ({trust}, version 2)" in r.err
    _untouched(b, before)


def test_sign_refuses_a_key_that_already_signed(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path)  # builder-1 + officer-1
    before = b.read_bytes()
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--trust", signed_bundle.trust, "--yes")
    assert r.code == 2 and f"{keyring.key_path('officer-1')} already signed {b} (signature 2 of 2)" in r.err
    _untouched(b, before)


def test_sign_refuses_under_an_expired_or_foreign_policy(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    expired = _policy(tmp_path, keyring, "expired.json", expires="2020-01-01T00:00:00Z")
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--trust", expired, "--yes")
    assert r.code == 1 and "expired" in r.err
    bad_roots = tmp_path / "unsigned.json"
    bad_roots.write_bytes(make_policy(keyring, sign_with=("root-1",)).to_bytes())
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--trust", bad_roots, "--yes")
    assert r.code == 1 and "root: 1 of 2" in r.err
    _untouched(b, before)


def test_sign_with_trust_shows_who_signed_and_the_thresholds(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--trust", signed_bundle.trust, "--yes")
    assert r.code == 0, r.err
    assert "1. builder-1" in r.out and "counts as builder" in r.out
    assert "an officer key of" in r.out and "warning" not in r.err
    assert "builder 1 of 1, officer 1 of 1" in r.out
    assert airgap("verify", b, "--trust", signed_bundle.trust, "--quiet").code == 0


def test_sign_without_trust_warns_and_needs_yes(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    r = airgap_proc("sign", b, "--key", keyring.key_path("officer-1"), stdin=subprocess.DEVNULL)
    assert r.code == 2
    assert "warning: no --trust given" in r.err and "cannot be checked" in r.err
    assert "Give --trust TRUST.json" in r.err and "--yes" in r.err
    _untouched(b, before)
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--yes")
    assert r.code == 0 and "warning: no --trust given" in r.err
    assert "its role was NOT checked" in r.out


def _on_terminal(*args: str | os.PathLike, answer: bytes) -> tuple[int, str]:
    """Run airgap with a pseudo-terminal as stdin and type *answer*."""
    master, slave = pty.openpty()
    env = {**os.environ, "AIRGAP_PASSPHRASE": PASSPHRASE}
    proc = subprocess.Popen([sys.executable, "-m", "airgap", *map(str, args)], cwd=REPO, env=env, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    os.write(master, answer)
    out, err = proc.communicate(timeout=120)
    os.close(master)
    return proc.returncode, (out + err).decode()


def test_sign_without_trust_on_a_terminal_needs_a_typed_yes(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    before = b.read_bytes()
    code, text = _on_terminal("sign", b, "--key", keyring.key_path("officer-1"), answer=b"y\n")
    assert code == 1 and "Type 'yes'" in text and "not signed" in text
    _untouched(b, before)
    # The sample bundle carries an executable file: the code gets its own 'yes' first.
    code, text = _on_terminal("sign", b, "--key", keyring.key_path("officer-1"), answer=b"yes\nyes\n")
    assert code == 0, text
    assert text.index("to approve them:") < text.index("Type 'yes':")
    assert len(_sig_keyids(b)) == 2


def test_sign_and_unsign_refuse_media_parts(tmp_path, signed_bundle, keyring):
    parts = tmp_path / "parts"
    assert airgap("split", signed_bundle.path, "--size", "64K", "-o", parts).code == 0
    index = next(parts.glob("*.parts.json"))
    for target in (parts, index):
        r = airgap("sign", target, "--key", keyring.key_path("officer-2"), "--trust", signed_bundle.trust, "--yes")
        assert r.code == 2 and "is a set of media parts" in r.err
        r = airgap("unsign", target, "--keyid", keyring.pub("officer-1").keyid[:8], "--yes")
        assert r.code == 2 and "is a set of media parts" in r.err


# --------------------------------------------------------------------------- unsign


def test_unsign_one_of_two_officers_then_sign_again(tmp_path, signed_bundle, keyring):
    trust = _policy(tmp_path, keyring, "two-officers.json", officer_threshold=2)
    b = signed_bundle.copy(tmp_path)  # builder-1 + officer-1
    assert airgap("sign", b, "--key", keyring.key_path("officer-2"), "--trust", trust, "--yes").code == 0
    assert airgap("verify", b, "--trust", trust, "--quiet").code == 0
    signed = b.read_bytes()
    envelope_at = signed.rfind(b"signatures.json")

    officer2 = keyring.pub("officer-2").keyid
    r = airgap("unsign", b, "--keyid", officer2[:8], "--trust", trust, "--yes")
    assert r.code == 0, r.err
    assert "-> 3. officer-2" in r.out and "after removal: builder 1 of 1, officer 1 of 2" in r.out
    assert "2 left" in r.out
    assert _sig_keyids(b) == [keyring.pub("builder-1").keyid, keyring.pub("officer-1").keyid]
    assert b.read_bytes()[:envelope_at] == signed[:envelope_at]  # only the envelope changed
    r = airgap("verify", b, "--trust", trust)
    assert r.code == 1 and "officer: 1 of 2" in r.err

    assert airgap("sign", b, "--key", keyring.key_path("officer-2"), "--trust", trust, "--yes").code == 0
    assert airgap("verify", b, "--trust", trust, "--quiet").code == 0
    assert b.read_bytes() == signed  # Ed25519 is deterministic: the very same bundle again


def test_unsign_removes_a_stray_signature_that_spoiled_the_bundle(tmp_path, signed_bundle, keyring, stranger):
    b = signed_bundle.copy(tmp_path)
    assert airgap("sign", b, "--key", stranger, "--yes").code == 0  # unchecked: the old way to spoil a bundle
    r = airgap("verify", b, "--trust", signed_bundle.trust)
    assert r.code == 1 and "not in the trust policy" in r.err
    # inspect-like listing with --trust names the culprit and the fix.
    stray = _sig_keyids(b)[-1]
    r = airgap("unsign", b, "--keyid", stray.upper()[:12], "--trust", signed_bundle.trust, "--yes")
    assert r.code == 0, r.err
    assert "DOES NOT COUNT" in r.out and f"airgap unsign {b} --keyid {stray[:8]}" in r.out
    assert airgap("verify", b, "--trust", signed_bundle.trust, "--quiet").code == 0
    assert b.read_bytes() == signed_bundle.path.read_bytes()


def test_unsign_keyid_forms(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path)
    twins = [key_file(tmp_path, twin_key(i)) for i in (0, 1)]
    for t in twins:
        assert airgap("sign", b, "--key", t, "--yes").code == 0
    before = b.read_bytes()
    ids = _sig_keyids(b)
    # Ambiguous: both twins start with the same 9 digits; the message names both.
    r = airgap("unsign", b, "--keyid", COMMON_PREFIX, "--yes")
    assert r.code == 2 and "is ambiguous: 2 keys" in r.err
    assert ids[2][:16] in r.err and ids[3][:16] in r.err and "give more hex digits" in r.err
    # Unknown: names every signature that is there.
    r = airgap("unsign", b, "--keyid", "deadbeef", "--yes")
    assert r.code == 2 and "no key in the signatures of" in r.err
    assert all(i[:16] in r.err for i in ids)
    # Too short, not hex.
    for bad in ("9aa356b", "officer-1", ""):
        r = airgap("unsign", b, "--keyid", bad, "--yes")
        assert r.code == 2 and "is not a keyid" in r.err, (bad, r.err)
    _untouched(b, before)
    # Ten digits tell the twins apart; the short form as printed ("…") and the full keyid work too.
    assert airgap("unsign", b, "--keyid", ids[3][:10], "--yes").code == 0
    assert _sig_keyids(b) == ids[:3]
    assert airgap("unsign", b, "--keyid", ids[2][:8] + "…", "--yes").code == 0  # unique now that its twin is gone
    assert airgap("unsign", b, "--keyid", ids[1], "--yes").code == 0
    assert _sig_keyids(b) == ids[:1]


def test_unsign_asks_first(tmp_path, signed_bundle, keyring):
    b = signed_bundle.copy(tmp_path)
    before = b.read_bytes()
    r = airgap_proc("unsign", b, "--keyid", keyring.pub("officer-1").keyid, stdin=subprocess.DEVNULL)
    assert r.code == 2 and "--yes" in r.err
    assert "removing a signature from the manifest of geheim-pilot 1.0.0" in r.out
    code, text = _on_terminal("unsign", b, "--keyid", keyring.pub("officer-1").keyid, answer=b"n\n")
    assert code == 1 and "nothing removed" in text
    _untouched(b, before)


# --------------------------------------------------------------------------- kill -9


# Runs the real CLI in a child that SIGKILLs itself at a chosen point of
# bundle.replace_signatures: no hook in the product, the real write path.
_KILLER = r"""
import os, signal, sys
import airgap.bundle as bundle

point = sys.argv[1]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_fsync, real_replace, real_open = os.fsync, os.replace, open
count = [0]
if point in ("journal-synced", "tail-synced"):
    def fsync(fd):
        real_fsync(fd)
        count[0] += 1
        if count[0] == (1 if point == "journal-synced" else 2):
            die()
    os.fsync = fsync
elif point == "journal-in-place":
    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".sign-journal"):
            die()
    os.replace = replace
elif point == "tail-torn":
    class Torn:
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *exc): self.f.close()
        def __getattr__(self, name): return getattr(self.f, name)
        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            die()
    def opener(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Torn(f) if mode == "r+b" else f
    bundle.open = opener
from airgap.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _killed(point: str, *args) -> None:
    env = {**os.environ, "AIRGAP_PASSPHRASE": PASSPHRASE}
    proc = subprocess.run([sys.executable, "-c", _KILLER, point, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"never reached {point}: {proc.returncode} {proc.stderr}"


@pytest.mark.parametrize("point", ["journal-synced", "journal-in-place", "tail-torn", "tail-synced"])
@pytest.mark.parametrize("verb", ["unsign", "sign"])
def test_kill_9_leaves_the_old_or_the_new_envelope(tmp_path, signed_bundle, keyring, verb, point):
    if verb == "unsign":
        start = signed_bundle.path
        args = ("unsign", "--keyid", keyring.pub("officer-1").keyid[:8], "--trust", signed_bundle.trust, "--yes")
    else:
        start = signed_bundle.builder_only
        args = ("sign", "--key", keyring.key_path("officer-1"), "--trust", signed_bundle.trust, "--yes")
    old = start.read_bytes()
    ref = tmp_path / "ref" / "b.tar"  # the same change, not interrupted
    ref.parent.mkdir()
    ref.write_bytes(old)
    assert airgap(args[0], ref, *args[1:]).code == 0
    new = ref.read_bytes()

    b = tmp_path / "b.tar"
    b.write_bytes(old)
    _killed(point, args[0], b, *args[1:])
    journal = b.with_name(b.name + JOURNAL)
    after_kill = b.read_bytes()
    if not journal.exists():
        assert after_kill == old  # killed before the journal was in place: nothing touched
    elif point == "tail-torn":
        assert after_kill not in (old, new)  # really torn: the journal must repair it
        assert airgap("inspect", b).code != 0

    # The next run of either verb undoes the interrupted one first and says so, then does its own work.
    r = airgap(args[0], b, *args[1:])
    assert r.code == 0, r.err
    assert ("interrupted signing of this bundle was undone" in r.out) == (point != "journal-synced")
    assert b.read_bytes() == new and not journal.exists()
    assert airgap("verify", b, "--trust", signed_bundle.trust, "--quiet").code == (0 if verb == "sign" else 1)
