"""The toolkit role and toolkit releases: which wheels may install airgap on isolated hosts.

Policy rules (role optional, disjoint from builder keys, rotation, revocation),
the release statement (strict parsing, threshold, wrong-role and revoked keys),
the CLI verbs, and a bundle's wheels judged against the statement it carries,
including the trojan wheel: same name and version, builder- and
officer-signed, not what the toolkit role released.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from airgap import toolkit
from airgap.bundle import Bundle
from airgap.dsse import Envelope
from airgap.exceptions import FormatError, InputError, KeyRoleError, SignatureError
from airgap.keyroles import Signer
from airgap.trust import TrustPolicy
from tests import bundlekit
from tests.fixtures.keys import NOW, make_policy
from tests.helpers import airgap, audited, write_spec

COMMIT = "0123456789abcdef0123456789abcdef01234567"
WHEELS = {
    "airgap-0.1.0-py3-none-any.whl": b"the toolkit itself\n" * 50,
    "pynacl-1.6.2-cp38-abi3-manylinux_2_34_x86_64.whl": b"a dependency with native code\n" * 40,
    "tqdm-4.70.1-py3-none-any.whl": b"a pure dependency\n" * 30,
}


def signer(keyring, name: str) -> Signer:
    return Signer(keyring[name], f"keys/{name}.key")


@pytest.fixture
def wheel_dir(tmp_path) -> Path:
    d = tmp_path / "wheels"
    d.mkdir()
    for name, data in WHEELS.items():
        (d / name).write_bytes(data)
    return d


@pytest.fixture
def policy(keyring) -> TrustPolicy:
    """Toolkit role 2 of 2 (toolkit-1, toolkit-2)."""
    return make_policy(keyring, toolkit=("toolkit-1", "toolkit-2"), toolkit_threshold=2)


def statement(wheel_dir: Path, policy: TrustPolicy, keyring, *names: str) -> toolkit.ReleaseStatement:
    st = toolkit.ReleaseStatement.unsigned(toolkit.make_release(wheel_dir, "0.1.0", COMMIT))
    for n in names:
        st.sign(policy, signer(keyring, n))
    return st


# --------------------------------------------------------------------------- the role in the policy


def test_toolkit_role_round_trips_and_is_shown(policy):
    again = TrustPolicy.from_bytes(policy.to_bytes())
    again.root_report().raise_for_status()
    assert again.roles["toolkit"].threshold == 2
    assert again.roles_of(policy.roles["toolkit"].keyids[0]) == ["toolkit"]
    assert "toolkit: 2 of 2 (toolkit-1" in again.describe()


def test_policy_without_toolkit_role_is_valid_and_accepts_no_release(keyring, wheel_dir):
    plain = make_policy(keyring)
    assert not plain.has_role("toolkit")
    assert "toolkit" not in plain.signed["roles"]
    assert "toolkit: none (no toolkit release is accepted)" in plain.describe()
    with_role = make_policy(keyring, toolkit=("toolkit-1",))
    st = statement(wheel_dir, with_role, keyring, "toolkit-1")
    with pytest.raises(SignatureError, match="has no toolkit role, so it accepts no toolkit release"):
        st.verify(plain)
    with pytest.raises(KeyRoleError, match="has no toolkit role"):
        st.sign(plain, signer(keyring, "toolkit-2"))


def test_builder_key_in_toolkit_role_is_refused(keyring):
    with pytest.raises(FormatError, match=r"builder-1 .* holds both builder and toolkit roles; a builder must not "
                                          r"approve the toolkit that verifies its bundles"):
        make_policy(keyring, toolkit=("toolkit-1", "builder-1"))
    # The same policy arriving as a file (signed by root keys) is refused on reading.
    good = make_policy(keyring, toolkit=("toolkit-1",))
    doc = json.loads(good.to_bytes())
    doc["signed"]["roles"]["toolkit"]["keyids"].append(keyring["builder-1"].keyid)
    signed = TrustPolicy.__new__(TrustPolicy)  # bypass the constructor to sign the bad document
    signed.signed, signed.signatures, signed.artifact = doc["signed"], [], "trust.json"
    for name in ("root-1", "root-2"):
        signed.sign(keyring[name])
    doc["signatures"] = [{"keyid": s.keyid, "sig": s.sig.hex()} for s in signed.signatures]
    with pytest.raises(FormatError, match="holds both builder and toolkit roles"):
        TrustPolicy.from_bytes(json.dumps(doc).encode())


def test_toolkit_and_officer_may_share_a_key(keyring):
    # Only the builder is excluded: an officer who also approves releases is still a second pair of eyes.
    p = make_policy(keyring, toolkit=("officer-1",))
    assert p.roles_of(keyring["officer-1"].keyid) == ["officer", "toolkit"]


def test_rotation_adds_and_revokes_toolkit_keys(keyring):
    plain = make_policy(keyring)
    v2 = plain.rotate(toolkit=keyring.pubs("toolkit-1", "toolkit-2"), toolkit_threshold=1)
    assert v2.roles["toolkit"].keyids == (keyring["toolkit-1"].keyid, keyring["toolkit-2"].keyid)
    v3 = v2.rotate(revoke=[keyring["toolkit-1"].keyid])
    assert v3.roles["toolkit"].keyids == (keyring["toolkit-2"].keyid,)
    assert keyring["toolkit-1"].keyid in v3.revoked
    with pytest.raises(InputError, match="leaves the toolkit role without keys; give its new keys too"):
        v3.rotate(revoke=[keyring["toolkit-2"].keyid])
    with pytest.raises(InputError, match="a toolkit threshold needs toolkit keys"):
        plain.rotate(toolkit_threshold=1)
    with pytest.raises(FormatError, match="builder and toolkit"):
        v2.rotate(toolkit=keyring.pubs("builder-2"))


def test_cli_trust_init_and_rotate_take_toolkit_keys(tmp_path, keyring):
    k = keyring.pub_path
    out = tmp_path / "trust.json"
    r = airgap("trust", "init", "--target", "geheim-pilot", "--expires", "30d",
               "--root", k("root-1"), "--builder", k("builder-1"), "--officer", k("officer-1"),
               "--toolkit", k("toolkit-1"), "--toolkit", k("toolkit-2"), "--toolkit-threshold", "2",
               "--key", keyring.key_path("root-1"), "-o", out)
    assert r.code == 0, r.err
    assert "toolkit: 2 of 2" in r.out
    assert TrustPolicy.load(out, now=None).roles["toolkit"].threshold == 2
    r = airgap("trust", "rotate", out, "--revoke", keyring["toolkit-2"].keyid[:10], "--toolkit-threshold", "1",
               "--key", keyring.key_path("root-1"), "-o", tmp_path / "trust-v2.json")
    assert r.code == 0, r.err
    assert "toolkit: 1 of 1 (toolkit-1" in r.out
    r = airgap("trust", "init", "--target", "geheim-pilot", "--expires", "30d",
               "--root", k("root-1"), "--builder", k("builder-1"), "--officer", k("officer-1"),
               "--toolkit", k("builder-1"), "--key", keyring.key_path("root-1"), "-o", tmp_path / "bad.json")
    assert r.code == 2 and "holds both builder and toolkit roles" in r.err  # the caller's arguments: a usage error
    assert not (tmp_path / "bad.json").exists()


# --------------------------------------------------------------------------- the release statement


def test_threshold_of_toolkit_keys(policy, keyring, wheel_dir):
    one = statement(wheel_dir, policy, keyring, "toolkit-1")
    with pytest.raises(SignatureError, match=r"toolkit: 1 of 2 required signatures"):
        one.verify(policy)
    assert one.status(policy).startswith("toolkit 1 of 2 (toolkit-1")
    both = toolkit.ReleaseStatement.from_bytes(one.to_bytes())
    both.sign(policy, signer(keyring, "toolkit-2"))
    assert both.verify(policy).ok
    with pytest.raises(KeyRoleError, match="already signed"):
        both.sign(policy, signer(keyring, "toolkit-2"))


def test_revoked_toolkit_key_does_not_count(policy, keyring, wheel_dir):
    st = statement(wheel_dir, policy, keyring, "toolkit-1", "toolkit-2")
    assert st.verify(policy).ok
    v2 = policy.rotate(revoke=[keyring["toolkit-1"].keyid], toolkit_threshold=1)
    for name in ("root-1", "root-2"):
        v2.sign(keyring[name])
    # Strict, as for bundles: a revoked key's signature rejects even when the threshold is met.
    with pytest.raises(SignatureError, match="signature by revoked key toolkit-1"):
        st.verify(v2)
    with pytest.raises(KeyRoleError, match="is revoked in the trust policy"):
        statement(wheel_dir, v2, keyring, "toolkit-1")


def test_builder_or_officer_key_cannot_sign_a_release(policy, keyring, wheel_dir):
    st = statement(wheel_dir, policy, keyring)
    with pytest.raises(KeyRoleError, match=r"builder-1.key is a builder key of the policy .* a toolkit key is needed"):
        st.sign(policy, signer(keyring, "builder-1"))
    # A builder who writes its signature into the envelope by hand gains nothing.
    st.envelope.add_signature(keyring["builder-1"])
    st.sign(policy, signer(keyring, "toolkit-1"))
    st.sign(policy, signer(keyring, "toolkit-2"))
    with pytest.raises(SignatureError, match="does not count: the key holds builder, not a required role"):
        st.verify(policy)


def test_release_is_parsed_strictly(wheel_dir, keyring, policy):
    release = toolkit.make_release(wheel_dir, "0.1.0", COMMIT)
    assert [w.file for w in release.wheels] == sorted(WHEELS)
    airgap_wheel = release.wheel("airgap-0.1.0-py3-none-any.whl")
    assert airgap_wheel.sha256 == hashlib.sha256(WHEELS["airgap-0.1.0-py3-none-any.whl"]).hexdigest()
    with pytest.raises(InputError, match="lists no airgap 0.2.0 wheel"):
        toolkit.make_release(wheel_dir, "0.2.0", COMMIT)
    with pytest.raises(InputError, match="source.commit"):
        toolkit.make_release(wheel_dir, "0.1.0", "main")
    (wheel_dir / "tqdm-4.71.0-py3-none-any.whl").write_bytes(b"another tqdm")
    with pytest.raises(InputError, match="more than one wheel of tqdm"):
        toolkit.make_release(wheel_dir, "0.1.0", COMMIT)
    # A bundle's signed manifest is not a release, however well signed.
    env = Envelope(b"{}")
    env.add_signature(keyring["toolkit-1"])
    with pytest.raises(FormatError, match="is not a toolkit release"):
        toolkit.ReleaseStatement.from_bytes(env.to_bytes(), "release.json")
    # Only the canonical form is accepted.
    doc = release.to_dict()
    with pytest.raises(FormatError, match="canonical"):
        toolkit.ToolkitRelease.from_bytes(json.dumps(doc, indent=1).encode())


def test_symlinked_wheel_is_refused(wheel_dir, tmp_path):
    (tmp_path / "elsewhere.whl").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere.whl", wheel_dir / "evil-1.0-py3-none-any.whl")
    with pytest.raises(InputError, match="not a regular file"):
        toolkit.make_release(wheel_dir, "0.1.0", COMMIT)


def test_cli_release_sign_verify(tmp_path, keyring, policy, wheel_dir):
    trust = tmp_path / "trust.json"
    policy.write(trust)
    rel = tmp_path / "toolkit-release.json"
    r = airgap("toolkit", "release", "--wheels", wheel_dir, "--version", "0.1.0", "--commit", COMMIT,
               "--key", keyring.key_path("toolkit-1"), "--trust", trust, "-o", rel)
    assert r.code == 0, r.err
    assert "INCOMPLETE: 1 more toolkit signature needed" in r.out
    r = airgap("toolkit", "verify", rel, "--trust", trust)
    assert r.code == 1 and "toolkit: 1 of 2 required signatures" in r.err
    r = airgap("toolkit", "sign", rel, "--key", keyring.key_path("officer-1"), "--trust", trust)
    assert r.code == 2 and "an officer key of the policy" in r.err and "a toolkit key is needed" in r.err
    r = airgap("toolkit", "sign", rel, "--key", keyring.key_path("toolkit-2"), "--trust", trust, "--json")
    assert r.code == 0, r.err
    assert r.json()["complete"] is True
    r = airgap("toolkit", "verify", rel, "--trust", trust, "--wheels", wheel_dir)
    assert r.code == 0, r.err
    assert "VERIFIED: toolkit release 0.1.0" in r.out
    (wheel_dir / "tqdm-4.70.1-py3-none-any.whl").write_bytes(b"rebuilt differently")
    (wheel_dir / "extra-1.0-py3-none-any.whl").write_bytes(b"not released")
    r = airgap("toolkit", "verify", rel, "--trust", trust, "--wheels", wheel_dir)
    assert r.code == 1
    assert "tqdm-4.70.1-py3-none-any.whl: sha256" in r.err
    assert "extra-1.0-py3-none-any.whl: not listed in the toolkit release" in r.err
    r = airgap("toolkit", "release", "--wheels", wheel_dir, "--version", "0.1.0", "--commit", COMMIT,
               "--key", keyring.key_path("toolkit-1"), "-o", tmp_path / "x.json")
    assert r.code == 2 and "--key needs --trust" in r.err


# --------------------------------------------------------------------------- a bundle's wheels


class _Verified:
    """The parts of a verified bundle :func:`toolkit.installable` uses, over verify()'s report."""

    def __init__(self, path: Path, report):
        self.path, self.manifest, self.policy = path, report.manifest, report.policy

    def read(self, name: str, cap: int) -> bytes:
        with Bundle.open(self.path) as b:
            return toolkit.read_member_checked(b, self.manifest, name, cap)


def build_with_wheels(tmp_path: Path, keyring, wheelhouse: Path, name: str = "bundle.tar") -> Path:
    spec = write_spec(tmp_path / f"spec-{name}", extra={"wheels": True})
    out = tmp_path / name
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--quiet",
               env={"AIRGAP_WHEELHOUSE": str(wheelhouse)})
    assert r.code == 0, r.err
    r = airgap("sign", out, "--key", keyring.key_path("officer-1"), "--yes", "--quiet")
    assert r.code == 0, r.err
    return out


def with_trojan(tmp_path: Path, keyring, bundle: Path, data: bytes = b"planted\n") -> Path:
    """*bundle* with the toolkit's own wheel swapped for *data*, re-signed by builder and officer."""
    entries = bundlekit.read_entries(bundle)
    for e in entries:
        if e.name == "files/wheels/airgap-0.1.0-py3-none-any.whl":
            e.data = data
    return bundlekit.write_entries(tmp_path / "trojan.tar",
                                   bundlekit.refresh_manifest(entries, [keyring["builder-1"], keyring["officer-1"]]))


def verified(path: Path, trust: Path) -> _Verified:
    from airgap.verify import verify

    return _Verified(path, verify(path, trust_path=trust, now=NOW))


@pytest.fixture
def released(tmp_path, keyring, policy, wheel_dir):
    """A wheel directory with a complete release statement, and the policy file."""
    statement(wheel_dir, policy, keyring, "toolkit-1", "toolkit-2").write(wheel_dir / toolkit.RELEASE_FILE)
    trust = tmp_path / "trust.json"
    policy.write(trust)
    return wheel_dir, trust


def test_bundle_wheels_covered_by_the_release_it_carries(tmp_path, keyring, released):
    wheel_dir, trust = released
    bundle = build_with_wheels(tmp_path, keyring, wheel_dir)
    names = [m.path for m in Bundle.open(bundle).manifest().members]
    assert toolkit.RELEASE_MEMBER in names
    result = toolkit.installable(verified(bundle, trust))
    assert result.ok
    assert result.covered == [f"files/wheels/{n}" for n in sorted(WHEELS)]
    assert result.signers.startswith("toolkit 2 of 2")


def test_trojan_wheel_same_name_and_version_is_refused(tmp_path, keyring, released):
    """The issue's attack: the builder swaps the toolkit's wheel for one of the same name and
    version and signs; the officer countersigns.  Every signature is valid, the wheel is not released."""
    wheel_dir, trust = released
    trojan = with_trojan(tmp_path, keyring, build_with_wheels(tmp_path, keyring, wheel_dir),
                         b"import os; os.system('planted')\n")
    v = verified(trojan, trust)  # the bundle itself verifies: builder and officer signed it
    with pytest.raises(toolkit.ToolkitRefused) as exc:
        toolkit.installable(v)
    message = str(exc.value)
    assert "files/wheels/airgap-0.1.0-py3-none-any.whl: sha256" in message
    assert "is not the" in message and "that toolkit release 0.1.0 lists for this file" in message
    assert exc.value.problems == ["files/wheels/airgap-0.1.0-py3-none-any.whl: " + toolkit.coverage(
        v.manifest, v.policy, v.read(toolkit.RELEASE_MEMBER, 1 << 20)).uncovered["files/wheels/airgap-0.1.0-py3-none-any.whl"]]


def test_without_statement_every_wheel_is_named(tmp_path, keyring, policy, wheel_dir):
    trust = tmp_path / "trust.json"
    policy.write(trust)
    bundle = build_with_wheels(tmp_path, keyring, wheel_dir)
    with pytest.raises(toolkit.ToolkitRefused) as exc:
        toolkit.installable(verified(bundle, trust))
    problems = exc.value.problems
    assert problems[0] == ("the bundle carries no toolkit release statement "
                           "(files/wheels/toolkit-release.json)")
    assert problems[1:] == [f"files/wheels/{n}: no valid toolkit release lists it" for n in sorted(WHEELS)]


def test_wheel_not_listed_is_refused(tmp_path, keyring, released):
    wheel_dir, trust = released
    honest = build_with_wheels(tmp_path, keyring, wheel_dir)
    entries = bundlekit.read_entries(honest)
    at = next(i for i, e in enumerate(entries) if e.name == toolkit.RELEASE_MEMBER)
    entries.insert(at, bundlekit.Entry("files/wheels/requests-2.0.0-py3-none-any.whl", b"phones home"))
    extra = bundlekit.write_entries(tmp_path / "extra.tar",
                                    bundlekit.refresh_manifest(entries, [keyring["builder-1"], keyring["officer-1"]]))
    with pytest.raises(toolkit.ToolkitRefused) as exc:
        toolkit.installable(verified(extra, trust))
    assert exc.value.problems == ["files/wheels/requests-2.0.0-py3-none-any.whl: not listed in toolkit release 0.1.0"]


def test_insufficient_statement_names_the_threshold(tmp_path, keyring, policy, wheel_dir):
    statement(wheel_dir, policy, keyring, "toolkit-1").write(wheel_dir / toolkit.RELEASE_FILE)
    trust = tmp_path / "trust.json"
    policy.write(trust)
    bundle = build_with_wheels(tmp_path, keyring, wheel_dir)
    with pytest.raises(toolkit.ToolkitRefused) as exc:
        toolkit.installable(verified(bundle, trust))
    assert exc.value.problems[0] == ("files/wheels/toolkit-release.json: toolkit: 1 of 2 required signatures "
                                     f"(present: toolkit-1 {keyring['toolkit-1'].keyid[:8]}… as toolkit)")
    assert all("whose statement does not count" in p for p in exc.value.problems[1:])


def test_build_refuses_a_statement_about_other_wheels(tmp_path, keyring, released):
    wheel_dir, _ = released
    (wheel_dir / "tqdm-4.70.1-py3-none-any.whl").write_bytes(b"swapped after the release")
    spec = write_spec(tmp_path / "spec", extra={"wheels": True})
    r = airgap("build", spec, "-o", tmp_path / "b.tar", "--key", keyring.key_path("builder-1"), "--quiet",
               env={"AIRGAP_WHEELHOUSE": str(wheel_dir)})
    assert r.code == 2
    assert "does not describe the wheels next to it: tqdm-4.70.1-py3-none-any.whl: sha256" in r.err


def test_build_without_statement_warns(tmp_path, keyring, wheel_dir):
    spec = write_spec(tmp_path / "spec", extra={"wheels": True})
    r = airgap("build", spec, "-o", tmp_path / "b.tar", "--key", keyring.key_path("builder-1"), "--quiet",
               env={"AIRGAP_WHEELHOUSE": str(wheel_dir)})
    assert r.code == 0, r.err
    assert "has no toolkit-release.json: the bundle carries 3 wheels that no toolkit release lists" in r.err


# --------------------------------------------------------------------------- the install set (toolkit wheels)


def test_toolkit_wheels_writes_exactly_the_released_set(tmp_path, keyring, released):
    wheel_dir, trust = released
    bundle = build_with_wheels(tmp_path, keyring, wheel_dir)
    out = tmp_path / "install"
    r = airgap("toolkit", "wheels", bundle, "--trust", trust, "-o", out, "--json")
    assert r.code == 0, r.err
    assert r.json()["wheels"] == sorted(WHEELS)
    assert sorted(p.name for p in out.iterdir()) == sorted([*WHEELS, "requirements.txt", "toolkit-release.json"])
    for name, data in WHEELS.items():
        assert (out / name).read_bytes() == data
    assert (out / "toolkit-release.json").read_bytes() == (wheel_dir / "toolkit-release.json").read_bytes()
    lines = (out / "requirements.txt").read_text().splitlines()
    assert lines[0] == ("airgap==0.1.0 --hash=sha256:"
                        + hashlib.sha256(WHEELS["airgap-0.1.0-py3-none-any.whl"]).hexdigest())
    assert len(lines) == 3
    # A second run replaces the set as a whole, asked to with --force.
    (out / "stray.whl").write_bytes(b"left over")
    r = airgap("toolkit", "wheels", bundle, "--trust", trust, "-o", out)
    assert r.code == 2 and f"{out} exists: add --force to overwrite" in r.err and (out / "stray.whl").exists()
    assert airgap("toolkit", "wheels", bundle, "--trust", trust, "-o", out, "--force").code == 0
    assert not (out / "stray.whl").exists()


def test_toolkit_wheels_refuses_a_trojan_and_writes_nothing(tmp_path, keyring, released):
    wheel_dir, trust = released
    trojan = with_trojan(tmp_path, keyring, build_with_wheels(tmp_path, keyring, wheel_dir))
    out = tmp_path / "install"
    r = airgap("toolkit", "wheels", trojan, "--trust", trust, "-o", out, "--json")
    assert r.code == 1
    problems = r.json()["problems"]
    assert problems[0].startswith("files/wheels/airgap-0.1.0-py3-none-any.whl: sha256 ")
    assert "that toolkit release 0.1.0 lists for this file" in problems[0]
    assert not out.exists() and not list(tmp_path.glob(".install.*"))


def test_toolkit_wheels_with_state_audits_what_it_wrote_and_what_it_refused(tmp_path, keyring, released):
    wheel_dir, trust = released
    bundle = build_with_wheels(tmp_path, keyring, wheel_dir)
    state, out = tmp_path / "state", tmp_path / "install"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert airgap("toolkit", "wheels", bundle, "--trust", trust, "-o", tmp_path / "plain").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "plain"])  # no --state: no audit log
    r = airgap("toolkit", "wheels", bundle, "--trust", trust, "-o", out, "--state", state, "--json")
    assert r.code == 0, r.err
    [(action, result, obj, detail)] = [e for e in audited(state) if e[0] != "first-use"]
    assert (action, result, obj["bundle"], obj["output"]) == ("toolkit-wheels", "accepted", str(bundle), str(out))
    assert detail["wheels"] == sorted(WHEELS) and detail["toolkit"] == "0.1.0"
    # A wheel no release covers: verified, then refused, and the refusal is on record.
    trojan = with_trojan(tmp_path, keyring, bundle)
    r = airgap("toolkit", "wheels", trojan, "--trust", trust, "-o", tmp_path / "no", "--state", state)
    assert r.code == 1 and not (tmp_path / "no").exists()
    action, result, obj, detail = audited(state)[-1]
    assert (action, result, obj["bundle"]) == ("toolkit-wheels", "rejected", str(trojan))
    assert "files/wheels/airgap-0.1.0-py3-none-any.whl" in detail["error"]


def test_toolkit_wheels_from_a_release_directory(tmp_path, keyring, released):
    wheel_dir, trust = released
    out = tmp_path / "first-install"
    r = airgap("toolkit", "wheels", "--release", wheel_dir, "--trust", trust, "-o", out)
    assert r.code == 0, r.err
    assert "wrote the 3 wheels of toolkit release 0.1.0" in r.out and "toolkit 2 of 2" in r.out
    assert (out / "requirements.txt").exists()
    (wheel_dir / "tqdm-4.70.1-py3-none-any.whl").write_bytes(b"swapped")
    r = airgap("toolkit", "wheels", "--release", wheel_dir, "--trust", trust, "-o", tmp_path / "again")
    assert r.code == 1 and "tqdm-4.70.1-py3-none-any.whl: sha256" in r.err
    assert not (tmp_path / "again").exists()
    r = airgap("toolkit", "wheels", "--trust", trust, "-o", tmp_path / "x")
    assert r.code == 2 and "give a bundle or --release DIR" in r.err
