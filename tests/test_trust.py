"""Trust policy: structure, self-signature, rotation, four-eyes threshold evaluation, state."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Signature as SSlibSignature
from securesystemslib.signer import SSlibKey

from airgap._internal.timefmt import format_time
from airgap.dsse import PAYLOAD_TYPE, Envelope, Signature, pae
from airgap.exceptions import (
    ExpiredError,
    FormatError,
    RollbackError,
    SignatureError,
    TargetError,
)
from airgap.keys import SigningKey
from airgap.trust import (
    DUPLICATE,
    INVALID,
    REVOKED,
    UNKNOWN_KEY,
    VALID,
    WRONG_ROLE,
    TrustPolicy,
    TrustStore,
    evaluate,
)
from tests.fixtures.keys import NOW, POLICY_EXPIRES, TARGET, make_policy

MANIFEST = b'{"bundle":"pilot","version":7}'

# In-memory keys for the rotation table (no files: fast and independent).
K = [SigningKey.generate(f"k{i}") for i in range(10)]


def _resign(doc: dict, keys) -> bytes:
    """Re-sign an edited policy document, so a test reaches the semantic checks."""
    from airgap._internal.jsonutil import canonical_bytes

    data = canonical_bytes(doc["signed"])
    doc["signatures"] = [{"keyid": k.keyid, "sig": k.sign(data).hex()} for k in keys]
    return json.dumps(doc).encode()


def _policy_doc(keyring) -> dict:
    return json.loads(make_policy(keyring).to_bytes())


def _envelope(keyring, *names) -> Envelope:
    env = Envelope(MANIFEST)
    for n in names:
        env.add_signature(keyring[n])
    return env


def _eval(policy, env, **kw):
    return evaluate(policy, env.payload_type, env.payload, env.signatures, artifact="manifest.dsse", **kw)


# --- structure --------------------------------------------------------------


def test_fixture_policy(trust_policy_file, keyring):
    policy = TrustPolicy.load(trust_policy_file, now=NOW)
    assert policy.target == TARGET
    assert policy.version == 1
    assert policy.roles["root"].threshold == 2
    assert policy.roles["builder"].threshold == 1
    assert policy.roles["officer"].threshold == 1
    assert policy.keys[keyring["builder-1"].keyid].name == "builder-1"
    assert policy.artifact == str(trust_policy_file)


def test_wire_shape(trust_policy, keyring):
    doc = json.loads(trust_policy.to_bytes())
    assert set(doc) == {"signed", "signatures"}
    s = doc["signed"]
    assert s["_type"] == "airgap-trust" and s["spec_version"] == "1.0"
    assert s["expires"] == POLICY_EXPIRES
    assert set(s["roles"]) == {"root", "builder", "officer"}
    assert s["revoked"] == []
    for keyid, keyobj in s["keys"].items():
        assert SSlibKey.from_dict(keyid, dict(keyobj)).keyid == keyid
        assert SSlibKey.from_crypto(
            __import__(
                "cryptography.hazmat.primitives.asymmetric.ed25519", fromlist=["x"]
            ).Ed25519PublicKey.from_public_bytes(bytes.fromhex(keyobj["keyval"]["public"]))
        ).keyid == keyid
    assert trust_policy.to_bytes() == TrustPolicy.from_bytes(trust_policy.to_bytes()).to_bytes()


def test_root_signatures_verify_with_securesystemslib(trust_policy):
    """TUF convention: signatures are over the canonical JSON of ``signed``."""
    data = encode_canonical(trust_policy.signed).encode()
    assert data == trust_policy.signed_bytes()
    for s in trust_policy.signatures:
        key = SSlibKey.from_dict(s.keyid, trust_policy.keys[s.keyid].to_dict())
        key.verify_signature(SSlibSignature(s.keyid, s.sig.hex()), data)


def _mut_keyid_mismatch(doc):
    s = doc["signed"]
    a, b = list(s["keys"])[:2]
    s["keys"][a], s["keys"][b] = s["keys"][b], s["keys"][a]


def _mut_role_key_missing(doc):
    s = doc["signed"]
    del s["keys"][s["roles"]["officer"]["keyids"][0]]
    s.pop("names", None)


def _mut_overlap(doc):
    s = doc["signed"]
    s["roles"]["officer"]["keyids"].append(s["roles"]["builder"]["keyids"][0])


def _mut_revoked_in_role(doc):
    s = doc["signed"]
    s["revoked"] = [s["roles"]["builder"]["keyids"][0]]


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda d: d["signed"]["roles"]["builder"].update(threshold=0), "threshold"),
        (lambda d: d["signed"]["roles"]["builder"].update(threshold=3), "threshold 3 is not between 1 and its 2"),
        (lambda d: d["signed"]["roles"]["builder"].update(threshold=True), "threshold"),
        (lambda d: d["signed"]["roles"]["builder"].update(threshold="1"), "threshold"),
        (lambda d: d["signed"]["roles"]["builder"].update(keyids=[]), "keyids"),
        (lambda d: d["signed"].update(version=0), "version"),
        (lambda d: d["signed"].update(version="2"), "version"),
        (lambda d: d["signed"].update(version=False), "version"),
        (lambda d: d["signed"].update(expires="2099-01-01T00:00:00+00:00"), "expires"),
        (lambda d: d["signed"].update(expires="2099-01-01T00:00:00.5Z"), "expires"),
        (lambda d: d["signed"].update(expires="2099-01-01 00:00:00Z"), "expires"),
        (lambda d: d["signed"].update(expires="2099-02-30T00:00:00Z"), "not a valid date"),
        (lambda d: d["signed"].update(expires="2099-01-01T00:00:00Z\n"), "expires"),
        (lambda d: d["signed"].update(_type="root"), "_type"),
        (lambda d: d["signed"].update(spec_version="1.0.31"), "spec_version"),
        (lambda d: d["signed"].update(target="../x"), "target"),
        (lambda d: d["signed"].update(target="geheim-pilot\n"), "target"),
        (lambda d: d["signed"].update(extra=1), "extra"),
        (lambda d: d["signed"]["roles"].update(timestamp={"keyids": [], "threshold": 1}), "timestamp"),
        (lambda d: d["signed"]["roles"].pop("officer"), "officer"),
        (lambda d: d["signed"].pop("revoked"), "revoked"),
        (lambda d: d["signed"].update(revoked=["AB" * 32]), "revoked"),
        (_mut_keyid_mismatch, "does not match its key"),
        (_mut_role_key_missing, "not in keys"),
        (_mut_overlap, "both builder and officer"),
        (_mut_revoked_in_role, "revoked and may not hold a role"),
        (lambda d: d.update(extra=[]), "extra"),
    ],
)
def test_malformed_policy(keyring, mutate, reason):
    doc = _policy_doc(keyring)
    mutate(doc)
    data = _resign(doc, [keyring["root-1"], keyring["root-2"]])
    with pytest.raises(FormatError, match=reason) as exc:
        TrustPolicy.load(data, now=NOW)
    assert str(exc.value).startswith("trust.json: ")


def test_float_threshold_refused(keyring):
    data = make_policy(keyring).to_bytes().replace(b'"threshold": 1', b'"threshold": 1.0', 1)
    with pytest.raises(FormatError, match="non-integer number"):
        TrustPolicy.load(data, now=NOW)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e0"])
def test_nan_and_exponent_refused(keyring, literal):
    data = make_policy(keyring).to_bytes().replace(b'"version": 1', b'"version": ' + literal, 1)
    with pytest.raises(FormatError):
        TrustPolicy.load(data, now=NOW)


def test_duplicate_json_keys_refused(keyring):
    data = make_policy(keyring).to_bytes().replace(
        b'"version": 1', b'"version": 1, "version": 2', 1
    )
    with pytest.raises(FormatError, match="duplicate JSON key 'version'"):
        TrustPolicy.load(data, now=NOW)


def test_signature_hex_strict(keyring):
    doc = _policy_doc(keyring)
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"].upper()
    with pytest.raises(FormatError, match="signatures"):
        TrustPolicy.load(json.dumps(doc).encode(), now=NOW)


def test_create_rejects_overlap(keyring):
    with pytest.raises(FormatError, match="four eyes"):
        TrustPolicy.create(
            TARGET, POLICY_EXPIRES, keyring.pubs("root-1"), 1,
            keyring.pubs("builder-1", "officer-1"), 1, keyring.pubs("officer-1"), 1,
        )


def test_size_cap(tmp_path):
    path = tmp_path / "trust.json"
    path.write_bytes(b" " * (1024 * 1024 + 1))
    with pytest.raises(FormatError, match="cap"):
        TrustPolicy.load(path, now=NOW)


# --- self-signature and expiry ----------------------------------------------


def test_root_threshold_not_met(keyring):
    policy = make_policy(keyring, sign_with=("root-1",))
    with pytest.raises(SignatureError) as exc:
        TrustPolicy.load(policy.to_bytes(), now=NOW)
    assert str(exc.value).startswith("trust.json: root: 1 of 2 required signatures (present: root-1 ")


def test_root_signature_invalid(keyring):
    doc = _policy_doc(keyring)
    doc["signed"]["roles"]["builder"]["threshold"] = 2  # changed after signing
    with pytest.raises(SignatureError) as exc:
        TrustPolicy.load(json.dumps(doc).encode(), now=NOW)
    assert "root: 0 of 2" in str(exc.value)
    # with enough valid signatures, a bad extra one still rejects
    policy = make_policy(keyring, sign_with=("root-1", "root-2"))
    bad = bytearray(policy.signatures[0].sig)
    bad[5] ^= 1
    policy.signatures.append(Signature(keyring["root-3"].keyid, bytes(bad)))
    with pytest.raises(SignatureError, match=r"trust.json: signature by key root-3 [0-9a-f]{8}… is invalid"):
        TrustPolicy.load(policy.to_bytes(), now=NOW)


def test_non_root_key_cannot_sign_policy(keyring):
    policy = make_policy(keyring, sign_with=("root-1", "root-2", "officer-1"))
    with pytest.raises(SignatureError, match="officer-1 .* holds officer, not a required role"):
        TrustPolicy.load(policy.to_bytes(), now=NOW)


def test_builder_keys_cannot_stand_in_for_root(keyring):
    policy = make_policy(keyring, sign_with=("builder-1", "builder-2"))
    with pytest.raises(SignatureError, match="root: 0 of 2"):
        TrustPolicy.load(policy.to_bytes(), now=NOW)


def test_same_root_key_twice(keyring):
    policy = make_policy(keyring, sign_with=("root-1",))
    with pytest.raises(SignatureError, match="already signed"):
        policy.sign(keyring["root-1"])
    policy.signatures.append(Signature("ab" * 32, policy.signatures[0].sig))
    with pytest.raises(SignatureError, match="root: 1 of 2"):
        TrustPolicy.load(policy.to_bytes(), now=NOW)


def test_unknown_signatures_ignored_in_policy(keyring):
    """TUF's "unused signatures": a key the policy does not know cannot count, or harm."""
    policy = make_policy(keyring, sign_with=("root-1", "root-2"))
    stranger = SigningKey.generate()
    policy.sign(stranger)
    loaded = TrustPolicy.load(policy.to_bytes(), now=NOW)
    report = loaded.root_report()
    assert report.ok
    assert {k.keyid for k in report.roles["root"].keys} == {keyring["root-1"].public_key.keyid,
                                                           keyring["root-2"].public_key.keyid}
    by_hint = {s.keyid_hint: s.status for s in report.signatures}
    assert by_hint[stranger.public_key.keyid] == UNKNOWN_KEY  # seen, named, and not counted


def test_expired_policy(keyring):
    policy = make_policy(keyring, expires="2026-01-01T00:00:00Z")
    with pytest.raises(ExpiredError) as exc:
        TrustPolicy.load(policy.to_bytes(), now=NOW)
    assert str(exc.value) == "trust.json: expired at 2026-01-01T00:00:00Z"
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ExpiredError):
        TrustPolicy.load(policy.to_bytes(), now=at)
    TrustPolicy.load(policy.to_bytes(), now=at - timedelta(seconds=1))


def test_naive_now_refused(trust_policy):
    with pytest.raises(TypeError):
        TrustPolicy.load(trust_policy.to_bytes(), now=datetime(2026, 1, 1))


def test_expires_from_datetime(keyring):
    when = datetime(2027, 11, 23, 1, 0, 0, 999, tzinfo=timezone(timedelta(hours=1)))
    p = TrustPolicy.create(TARGET, when, keyring.pubs("root-1"), 1, keyring.pubs("builder-1"), 1,
                           keyring.pubs("officer-1"), 1)
    assert p.signed["expires"] == "2027-11-23T00:00:00Z"


# --- four eyes: evaluate ----------------------------------------------------


def test_builder_and_officer_accepted(trust_policy, keyring):
    report = _eval(trust_policy, _envelope(keyring, "builder-1", "officer-2"))
    report.raise_for_status()
    assert report.ok
    assert [r.status for r in report.signatures] == [VALID, VALID]
    assert [r.role for r in report.signatures] == ["builder", "officer"]
    assert report.roles["officer"].missing == 0


def test_officer_missing(trust_policy, keyring):
    report = _eval(trust_policy, _envelope(keyring, "builder-1"))
    assert not report.ok
    assert report.roles["officer"].missing == 1
    with pytest.raises(SignatureError) as exc:
        report.raise_for_status()
    msg = str(exc.value)
    assert msg.startswith("manifest.dsse: officer: 0 of 1 required signatures (present: builder-1 ")
    assert exc.value.artifact == "manifest.dsse"


def test_builder_missing(trust_policy, keyring):
    with pytest.raises(SignatureError, match="builder: 0 of 1 required signatures"):
        _eval(trust_policy, _envelope(keyring, "officer-1")).raise_for_status()


def test_no_signatures(trust_policy):
    with pytest.raises(SignatureError, match=r"builder: 0 of 1 required signatures \(no signatures\)"):
        _eval(trust_policy, Envelope(MANIFEST)).raise_for_status()


def test_two_officers_do_not_replace_builder(trust_policy, keyring):
    with pytest.raises(SignatureError, match="builder: 0 of 1"):
        _eval(trust_policy, _envelope(keyring, "officer-1", "officer-2")).raise_for_status()


def test_wrong_role_key(trust_policy, keyring):
    report = _eval(trust_policy, _envelope(keyring, "builder-1", "officer-1", "root-1"))
    assert report.signatures[2].status == WRONG_ROLE
    with pytest.raises(SignatureError, match="root-1 .* holds root, not a required role"):
        report.raise_for_status()
    # non-strict judges thresholds only
    _eval(trust_policy, _envelope(keyring, "builder-1", "officer-1", "root-1"), strict=False).raise_for_status()


def test_same_key_twice_counts_once(keyring):
    policy = TrustPolicy.create(
        TARGET, POLICY_EXPIRES, keyring.pubs("root-1"), 1,
        keyring.pubs("builder-1", "builder-2"), 2, keyring.pubs("officer-1"), 1,
    )
    env = _envelope(keyring, "builder-1", "officer-1")
    sig = env.signatures[0]
    # same key, second signature under a different keyid hint
    env.signatures.append(Signature(keyring["builder-2"].keyid, sig.sig))
    report = _eval(policy, env, strict=False)
    assert len(report.roles["builder"].keys) == 1
    assert report.signatures[2].status == DUPLICATE
    with pytest.raises(SignatureError, match="builder: 1 of 2 required signatures"):
        report.raise_for_status()


def test_duplicate_rejected_even_when_thresholds_met(trust_policy, keyring):
    env = _envelope(keyring, "builder-1", "officer-1")
    env.signatures.append(env.signatures[1])
    report = _eval(trust_policy, env)
    assert report.signatures[2].status == DUPLICATE
    with pytest.raises(SignatureError, match="officer-1 .* signed more than once"):
        report.raise_for_status()


def test_revoked_key(trust_policy, keyring):
    revoked = keyring["officer-2"]
    p2 = trust_policy.rotate(revoke=[revoked.keyid])
    assert revoked.keyid in p2.revoked
    assert revoked.keyid in p2.keys  # kept so its signatures are named, not "unknown"
    assert revoked.keyid not in p2.roles["officer"].keyids
    report = _eval(p2, _envelope(keyring, "builder-1", "officer-2"))
    assert report.signatures[1].status == REVOKED
    with pytest.raises(SignatureError, match="officer: 0 of 1"):
        report.raise_for_status()
    # revoked signatures reject even when the thresholds are met by others
    with pytest.raises(SignatureError, match="signature by revoked key officer-2"):
        _eval(p2, _envelope(keyring, "builder-1", "officer-1", "officer-2")).raise_for_status()


def test_unknown_key(trust_policy, keyring):
    stranger = SigningKey.generate("mallory")
    env = _envelope(keyring, "builder-1", "officer-1")
    env.add_signature(stranger)
    report = _eval(trust_policy, env)
    assert report.signatures[2].status == UNKNOWN_KEY
    with pytest.raises(SignatureError, match="by a key not in the trust policy"):
        report.raise_for_status()
    # an unknown key claiming to be an officer is simply invalid
    env = _envelope(keyring, "builder-1")
    env.signatures.append(Signature(keyring["officer-1"].keyid, stranger.sign(env.pae())))
    with pytest.raises(SignatureError, match="officer: 0 of 1"):
        _eval(trust_policy, env).raise_for_status()


def test_malformed_signature(trust_policy, keyring):
    env = _envelope(keyring, "builder-1", "officer-1")
    bad = bytearray(env.signatures[1].sig)
    bad[0] ^= 0x80
    env.signatures[1] = Signature(env.signatures[1].keyid, bytes(bad))
    report = _eval(trust_policy, env)
    assert report.signatures[1].status == INVALID
    with pytest.raises(SignatureError, match=r"officer: 0 of 1 required signatures \(present: builder-1 .*; invalid: officer-1"):
        report.raise_for_status()


def test_keyid_hint_is_only_a_hint(trust_policy, keyring):
    """A valid officer signature filed under the builder's keyid: the key decides, and
    the wrong hint is reported (a changed byte in an envelope never goes unnoticed)."""
    env = _envelope(keyring, "builder-1")
    env.signatures.append(Signature(keyring["builder-1"].keyid, keyring["officer-1"].sign(env.pae())))
    report = _eval(trust_policy, env)
    assert report.signatures[1].status == VALID
    assert report.signatures[1].role == "officer"
    assert report.signatures[1].hint_mismatch
    assert report.roles["officer"].satisfied
    with pytest.raises(SignatureError, match="names key .* but was made by officer-1"):
        report.raise_for_status()
    _eval(trust_policy, env, strict=False).raise_for_status()


def test_payload_type_is_signed(trust_policy, keyring):
    env = _envelope(keyring, "builder-1", "officer-1")
    report = evaluate(trust_policy, "application/vnd.other+json", env.payload, env.signatures)
    assert {r.status for r in report.signatures} == {INVALID}
    with pytest.raises(SignatureError):
        report.raise_for_status()


def test_changed_payload(trust_policy, keyring):
    env = _envelope(keyring, "builder-1", "officer-1")
    with pytest.raises(SignatureError, match="builder: 0 of 1"):
        evaluate(trust_policy, PAYLOAD_TYPE, MANIFEST + b" ", env.signatures).raise_for_status()


def test_evaluate_roundtrip_through_bytes(trust_policy, keyring):
    env = Envelope.from_bytes(_envelope(keyring, "builder-2", "officer-1").to_bytes(), "m")
    report = _eval(trust_policy, env)
    assert report.ok and report.problems() == []
    assert [k.name for k in report.roles["builder"].keys] == ["builder-2"]
    assert [k.name for k in report.roles["officer"].keys] == ["officer-1"]
    report.raise_for_status()


def test_root_key_may_also_be_officer(keyring):
    policy = TrustPolicy.create(
        TARGET, POLICY_EXPIRES, keyring.pubs("root-1", "officer-1"), 1,
        keyring.pubs("builder-1"), 1, keyring.pubs("officer-1"), 1,
    )
    report = _eval(policy, _envelope(keyring, "builder-1", "officer-1"))
    assert report.ok, report.problems()
    assert [k.name for k in report.roles["officer"].keys] == ["officer-1"]
    assert {s.status for s in report.signatures} == {VALID}


def test_thresholds_two_and_two(keyring):
    policy = TrustPolicy.create(
        TARGET, POLICY_EXPIRES, keyring.pubs("root-1"), 1,
        keyring.pubs("builder-1", "builder-2"), 2, keyring.pubs("officer-1", "officer-2"), 2,
    )
    _eval(policy, _envelope(keyring, "officer-2", "builder-1", "officer-1", "builder-2")).raise_for_status()
    with pytest.raises(SignatureError, match="officer: 1 of 2"):
        _eval(policy, _envelope(keyring, "builder-1", "builder-2", "officer-1")).raise_for_status()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(st.integers(min_value=0, max_value=6), max_size=8),
    bt=st.integers(min_value=1, max_value=2),
    ot=st.integers(min_value=1, max_value=2),
)
def test_property_accept_iff_distinct_thresholds(picks, bt, ot):
    """Non-strict: accepted exactly when enough DISTINCT builder and officer keys signed."""
    builders, officers, others = K[0:2], K[2:4], K[4:7]
    policy = TrustPolicy.create(
        TARGET, POLICY_EXPIRES, [k.public_key for k in others], 1,
        [k.public_key for k in builders], bt, [k.public_key for k in officers], ot,
    )
    data = pae(PAYLOAD_TYPE, MANIFEST)
    sigs = [Signature(K[i].keyid, K[i].sign(data)) for i in picks]
    report = evaluate(policy, PAYLOAD_TYPE, MANIFEST, sigs, strict=False)
    distinct = set(picks)
    expected = len(distinct & {0, 1}) >= bt and len(distinct & {2, 3}) >= ot
    assert report.ok == expected
    strict = evaluate(policy, PAYLOAD_TYPE, MANIFEST, sigs)
    strict_expected = expected and len(picks) == len(distinct) and distinct <= {0, 1, 2, 3}
    assert strict.ok == strict_expected


# --- rotation: the python-tuf key-rotation table ------------------------------


@dataclass
class MdVersion:
    keys: list[int]
    threshold: int
    sigs: list[int]
    res: type[Exception] | None = None


# fmt: off
ROTATION_CASES = {
    "1-of-1 key rotation": [
        MdVersion(keys=[1], threshold=1, sigs=[1]),
        MdVersion(keys=[2], threshold=1, sigs=[2, 1]),
        MdVersion(keys=[2], threshold=1, sigs=[2]),
    ],
    "1-of-1 key rotation, unused signatures": [
        MdVersion(keys=[1], threshold=1, sigs=[3, 1, 4]),
        MdVersion(keys=[2], threshold=1, sigs=[3, 2, 1, 4]),
        MdVersion(keys=[2], threshold=1, sigs=[3, 2, 4]),
    ],
    "1-of-1 key rotation fail: not signed with old key": [
        MdVersion(keys=[1], threshold=1, sigs=[1]),
        MdVersion(keys=[2], threshold=1, sigs=[2, 3, 4], res=SignatureError),
    ],
    "1-of-1 key rotation fail: not signed with new key": [
        MdVersion(keys=[1], threshold=1, sigs=[1]),
        MdVersion(keys=[2], threshold=1, sigs=[1, 3, 4], res=SignatureError),
    ],
    "3-of-5, sign with different keycombos": [
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 2, 4]),
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 4, 1]),
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 1, 3]),
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 1, 3]),
    ],
    "3-of-5, one key rotated": [
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 2, 4]),
        MdVersion(keys=[0, 1, 3, 4, 5], threshold=3, sigs=[0, 4, 1]),
    ],
    "3-of-5, one key rotate fails: not signed with 3 new keys": [
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 2, 4]),
        MdVersion(keys=[0, 1, 3, 4, 5], threshold=3, sigs=[0, 2, 4], res=SignatureError),
    ],
    "3-of-5, one key rotate fails: not signed with 3 old keys": [
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 2, 4]),
        MdVersion(keys=[0, 1, 3, 4, 5], threshold=3, sigs=[0, 4, 5], res=SignatureError),
    ],
    "3-of-5, one key rotated, with intermediate step": [
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 2, 4]),
        MdVersion(keys=[0, 1, 3, 4, 5], threshold=3, sigs=[0, 2, 4, 5]),
        MdVersion(keys=[0, 1, 3, 4, 5], threshold=3, sigs=[0, 4, 5]),
    ],
    "3-of-5, all keys rotated, with intermediate step": [
        MdVersion(keys=[0, 1, 2, 3, 4], threshold=3, sigs=[0, 2, 4]),
        MdVersion(keys=[5, 6, 7, 8, 9], threshold=3, sigs=[0, 2, 4, 5, 6, 7]),
        MdVersion(keys=[5, 6, 7, 8, 9], threshold=3, sigs=[5, 6, 7]),
    ],
    "1-of-3 threshold increase to 2-of-3": [
        MdVersion(keys=[1, 2, 3], threshold=1, sigs=[1]),
        MdVersion(keys=[1, 2, 3], threshold=2, sigs=[1, 2]),
    ],
    "1-of-3 threshold bump to 2-of-3 fails: new threshold not reached": [
        MdVersion(keys=[1, 2, 3], threshold=1, sigs=[1]),
        MdVersion(keys=[1, 2, 3], threshold=2, sigs=[2], res=SignatureError),
    ],
    "2-of-3 threshold decrease to 1-of-3": [
        MdVersion(keys=[1, 2, 3], threshold=2, sigs=[1, 2]),
        MdVersion(keys=[1, 2, 3], threshold=1, sigs=[1, 2]),
        MdVersion(keys=[1, 2, 3], threshold=1, sigs=[1]),
    ],
    "2-of-3 threshold decr. to 1-of-3 fails: old threshold not reached": [
        MdVersion(keys=[1, 2, 3], threshold=2, sigs=[1, 2]),
        MdVersion(keys=[1, 2, 3], threshold=1, sigs=[1], res=SignatureError),
    ],
    "1-of-2 threshold increase to 2-of-2": [
        MdVersion(keys=[1], threshold=1, sigs=[1]),
        MdVersion(keys=[1, 2], threshold=2, sigs=[1, 2]),
    ],
    # airgap additions to the table
    "same key twice does not make 2-of-3": [
        MdVersion(keys=[1, 2, 3], threshold=2, sigs=[1, 2]),
        MdVersion(keys=[1, 2, 3], threshold=2, sigs=[1, 1], res=SignatureError),
    ],
    "invalid signature by a new root key rejects": [
        MdVersion(keys=[1], threshold=1, sigs=[1]),
        MdVersion(keys=[1, 2], threshold=1, sigs=[1, -2], res=SignatureError),
    ],
}
# fmt: on


def _rotation_policy(v: MdVersion, version: int, keyring) -> TrustPolicy:
    policy = TrustPolicy.create(
        TARGET, POLICY_EXPIRES, [K[i].public_key for i in v.keys], v.threshold,
        keyring.pubs("builder-1"), 1, keyring.pubs("officer-1"), 1, version=version,
    )
    data = policy.signed_bytes()
    for i in v.sigs:
        if i < 0:  # a corrupted signature by key -i
            policy.signatures.append(Signature(K[-i].keyid, bytes(64)))
        else:
            # appended directly: "same key twice" must reach the verifier
            policy.signatures.append(Signature(K[i].keyid, K[i].sign(data)))
    return policy


@pytest.mark.parametrize("mode", ["step-by-step", "with-intermediates"])
@pytest.mark.parametrize("case", list(ROTATION_CASES), ids=list(ROTATION_CASES))
def test_root_rotation(tmp_path, keyring, case, mode):
    versions = ROTATION_CASES[case]
    policies = [_rotation_policy(v, i + 1, keyring) for i, v in enumerate(versions)]
    store = TrustStore(tmp_path / "state")
    store.record(store.load_policy(policies[0].to_bytes(), NOW))
    expected = versions[-1].res
    if mode == "step-by-step":
        for p in policies[1:-1]:
            store.record(store.load_policy(p.to_bytes(), NOW))
        call = lambda: store.load_policy(policies[-1].to_bytes(), NOW)  # noqa: E731
    else:
        inter = tmp_path / "intermediate"
        inter.mkdir()
        for p in policies[1:-1]:
            (inter / f"{p.version}.trust.json").write_bytes(p.to_bytes())
        call = lambda: store.load_policy(policies[-1].to_bytes(), NOW, intermediates=inter)  # noqa: E731
    if expected is None:
        store.record(call())
        assert store.trusted().signed_bytes() == policies[-1].signed_bytes()
    else:
        with pytest.raises(expected):
            call()
        assert store.trusted().version == len(policies) - 1


def test_rotation_error_names_old_root(keyring):
    old = _rotation_policy(MdVersion([1], 1, [1]), 1, keyring)
    new = _rotation_policy(MdVersion([2], 1, [2]), 2, keyring)
    with pytest.raises(SignatureError, match=r"trust.json: root: 0 of 1 required signatures by the root keys of trusted version 1"):
        TrustPolicy.verify_successor(old, new, NOW)


def test_rotate_keeps_unchanged_and_carries_revocations(trust_policy, keyring):
    b2 = keyring["builder-2"].keyid
    p2 = trust_policy.rotate(revoke=[b2])
    assert p2.version == 2
    assert p2.target == TARGET
    assert p2.roles["root"] == trust_policy.roles["root"]
    assert p2.roles["officer"] == trust_policy.roles["officer"]
    assert p2.roles["builder"].keyids == (keyring["builder-1"].keyid,)
    p3 = p2.rotate(officers=keyring.pubs("officer-1"), expires="2098-01-01T00:00:00Z")
    assert p3.revoked == (b2,)
    assert p3.roles["officer"].keyids == (keyring["officer-1"].keyid,)
    assert p3.signed["expires"] == "2098-01-01T00:00:00Z"
    for p in (p2, p3):
        p.sign(keyring["root-1"])
        p.sign(keyring["root-3"])
    TrustPolicy.verify_successor(trust_policy, p2, NOW)
    TrustPolicy.verify_successor(p2, p3, NOW)
    with pytest.raises(TypeError):
        trust_policy.rotate(target="other-enclave")


def test_revoked_key_cannot_return(trust_policy, keyring):
    p2 = trust_policy.rotate(revoke=[keyring["builder-2"].keyid])
    with pytest.raises(FormatError, match="revoked and may not hold a role"):
        p2.rotate(builders=keyring.pubs("builder-1", "builder-2"))


def test_successor_may_not_drop_revocation(trust_policy, keyring):
    p2 = trust_policy.rotate(revoke=[keyring["builder-2"].keyid])
    p3 = TrustPolicy(dict(p2.rotate().signed, revoked=[]))
    p3.sign(keyring["root-1"])
    p3.sign(keyring["root-2"])
    with pytest.raises(RollbackError, match="revocations are permanent"):
        TrustPolicy.verify_successor(p2, p3, NOW)


def test_successor_target_fixed(trust_policy, keyring):
    other = TrustPolicy(dict(trust_policy.rotate().signed, target="other-enclave"))
    other.sign(keyring["root-1"])
    other.sign(keyring["root-2"])
    with pytest.raises(TargetError, match="another enclave needs its own trust anchor"):
        TrustPolicy.verify_successor(trust_policy, other, NOW)


def test_successor_version_rules(trust_policy, keyring):
    def signed(p):
        p.sign(keyring["root-1"])
        p.sign(keyring["root-2"])
        return p

    p3 = signed(TrustPolicy(dict(trust_policy.signed, version=3)))
    with pytest.raises(SignatureError, match="intermediate versions are needed"):
        TrustPolicy.verify_successor(trust_policy, p3, NOW)
    with pytest.raises(RollbackError, match="trust policy version 1 is older than trusted version 3"):
        TrustPolicy.verify_successor(p3, trust_policy, NOW)


def test_successor_expired_final_vs_intermediate(trust_policy, keyring):
    p2 = trust_policy.rotate(expires="2026-01-01T00:00:00Z")
    p2.sign(keyring["root-1"])
    p2.sign(keyring["root-2"])
    with pytest.raises(ExpiredError, match="expired at 2026-01-01T00:00:00Z"):
        TrustPolicy.verify_successor(trust_policy, p2, NOW)
    TrustPolicy.verify_successor(trust_policy, p2, NOW, final=False)


def test_successor_signed_by_old_builder_rejected(trust_policy, keyring):
    p2 = trust_policy.rotate()
    for n in ("root-1", "root-2", "builder-1"):
        p2.sign(keyring[n])
    with pytest.raises(SignatureError, match="builder-1"):
        TrustPolicy.verify_successor(trust_policy, p2, NOW)


# --- trust store ------------------------------------------------------------


def _signed(p: TrustPolicy, keyring, names=("root-1", "root-2")) -> TrustPolicy:
    for n in names:
        p.sign(keyring[n])
    return p


def test_tofu_records_only_on_record(tmp_path, trust_policy_file):
    store = TrustStore(tmp_path / "state")
    assert store.trusted() is None and not store.has_trusted()
    accepted = store.load_policy(trust_policy_file, NOW)
    assert accepted.policy.version == 1 and accepted.overridden is None
    assert not store.path.exists()
    store.record(accepted)
    assert store.path.read_bytes() == accepted.policy.to_bytes()
    assert [p.name for p in store.state_dir.iterdir()] == ["trust.json"]


def test_tofu_still_requires_valid_self_signature(tmp_path, keyring):
    store = TrustStore(tmp_path)
    with pytest.raises(SignatureError, match="root: 1 of 2"):
        store.load_policy(make_policy(keyring, sign_with=("root-1",)).to_bytes(), NOW)
    with pytest.raises(ExpiredError):
        store.load_policy(make_policy(keyring, expires="2026-01-01T00:00:00Z").to_bytes(), NOW)


def test_same_version_must_be_identical(tmp_path, keyring, trust_policy):
    store = TrustStore(tmp_path)
    store.record(store.load_policy(trust_policy.to_bytes(), NOW))
    assert store.load_policy(trust_policy.to_bytes(), NOW).policy.version == 1
    other = make_policy(keyring, expires="2098-01-01T00:00:00Z")
    with pytest.raises(RollbackError, match="differs from the trusted policy of the same version"):
        store.load_policy(other.to_bytes(), NOW)


def test_same_version_expired(tmp_path, keyring, trust_policy):
    store = TrustStore(tmp_path)
    store.record(store.load_policy(trust_policy.to_bytes(), NOW))
    with pytest.raises(ExpiredError):
        store.load_policy(trust_policy.to_bytes(), datetime(2100, 1, 1, tzinfo=UTC))


def test_policy_rollback(tmp_path, keyring, trust_policy):
    store = TrustStore(tmp_path)
    store.record(store.load_policy(trust_policy.to_bytes(), NOW))
    p2 = _signed(trust_policy.rotate(), keyring)
    store.record(store.load_policy(p2.to_bytes(), NOW))
    with pytest.raises(RollbackError) as exc:
        store.load_policy(trust_policy.to_bytes(), NOW)
    assert str(exc.value) == "trust.json: trust policy version 1 is older than trusted version 2"


def test_jump_needs_intermediates(tmp_path, keyring, trust_policy):
    store = TrustStore(tmp_path / "state")
    store.record(store.load_policy(trust_policy.to_bytes(), NOW))
    p2 = _signed(trust_policy.rotate(), keyring)
    p3 = _signed(p2.rotate(revoke=[keyring["officer-2"].keyid]), keyring)
    with pytest.raises(SignatureError, match="intermediate version 2 is needed"):
        store.load_policy(p3.to_bytes(), NOW)
    # as a list of files
    f2 = tmp_path / "v2.json"
    f2.write_bytes(p2.to_bytes())
    accepted = store.load_policy(p3.to_bytes(), NOW, intermediates=[f2])
    store.record(accepted)
    assert store.trusted().version == 3


def test_conflicting_intermediates(tmp_path, keyring, trust_policy):
    store = TrustStore(tmp_path / "state")
    store.record(store.load_policy(trust_policy.to_bytes(), NOW))
    a = _signed(trust_policy.rotate(), keyring)
    b = _signed(trust_policy.rotate(expires="2098-01-01T00:00:00Z"), keyring)
    p3 = _signed(a.rotate(), keyring)
    with pytest.raises(RollbackError, match="two different intermediate policies claim version 2"):
        store.load_policy(p3.to_bytes(), NOW, intermediates=[a.to_bytes(), b.to_bytes()])


def test_corrupt_state_is_not_first_use(tmp_path, trust_policy, keyring):
    store = TrustStore(tmp_path)
    store.record(store.load_policy(trust_policy.to_bytes(), NOW))
    store.path.write_bytes(store.path.read_bytes().replace(b'"threshold": 2', b'"threshold": 1'))
    with pytest.raises(SignatureError):
        store.load_policy(trust_policy.to_bytes(), NOW)
    store.path.write_bytes(b"")
    with pytest.raises(FormatError):
        store.load_policy(trust_policy.to_bytes(), NOW)


def test_record_only_what_was_loaded(tmp_path, trust_policy):
    store = TrustStore(tmp_path)
    with pytest.raises(ValueError):
        store.record(trust_policy)
    assert not store.path.exists()


# --- override, envelope helper, API guards ----------------------------------


def test_expiry_override_is_explicit_and_narrow(tmp_path, keyring):
    from airgap.trust import Override

    expired = make_policy(keyring, expires="2026-01-01T00:00:00Z")
    override = Override("policy renewal delayed, ticket 4711", keyring["officer-1"])
    store = TrustStore(tmp_path)
    with pytest.raises(ExpiredError):
        store.load_policy(expired.to_bytes(), NOW)
    accepted = store.load_policy(expired.to_bytes(), NOW, override=override)
    # What the override lifted is returned, not stamped on the policy object.
    assert accepted.overridden.override == override and accepted.overridden.what == "policy-expiry"
    manifest = "sha256:" + "a" * 64
    detail = accepted.overridden.signed(manifest)
    assert {k: v for k, v in detail.items() if k not in ("key", "envelope")} == {
        "what": "policy-expiry", "reason": "policy renewal delayed, ticket 4711", "keyid": keyring["officer-1"].keyid,
        "error": "trust.json: expired at 2026-01-01T00:00:00Z", "manifest": manifest,
        "policy_sha256": hashlib.sha256(expired.signed_bytes()).hexdigest()}
    # signed by the officer's key, bound to that bundle, that policy and that time of use
    from airgap.trust.override import check_entry

    stmt = check_entry(1, {"manifest": manifest}, detail, keyring["officer-1"].keyid, "log:1", expired)
    assert stmt["time"] == format_time(NOW) and stmt["expired"] == "2026-01-01T00:00:00Z"
    assert not hasattr(accepted.policy, "expiry_override_used")
    # only an officer key of that policy may override
    with pytest.raises(ExpiredError, match="is not an officer key"):
        store.load_policy(expired.to_bytes(), NOW, override=Override("r", keyring["builder-1"]))
    # an override never lifts a signature check
    weak = make_policy(keyring, expires="2026-01-01T00:00:00Z", sign_with=("root-1",))
    with pytest.raises(SignatureError):
        TrustStore(tmp_path / "weak").load_policy(weak.to_bytes(), NOW, override=override)
    # an unexpired policy does not use an override
    assert make_policy(keyring).verify(NOW, override=override) is None
    assert TrustStore(tmp_path / "fresh").load_policy(make_policy(keyring).to_bytes(), NOW,
                                                      override=override).overridden is None
    with pytest.raises(ValueError, match="--reason"):
        Override(" ", keyring["officer-1"])
    with pytest.raises(TypeError):
        Override("a reason", "officer-1")


def test_verify_envelope(trust_policy, keyring):
    from airgap.trust import verify_envelope

    env = _envelope(keyring, "builder-1", "officer-1")
    report = verify_envelope(trust_policy, env, PAYLOAD_TYPE, MANIFEST, artifact="m")
    assert report.ok and [k.name for k in report.signers()] == ["builder-1", "officer-1"]
    other = Envelope(MANIFEST, "application/vnd.airgap.parts.v1+json")
    other.add_signature(keyring["builder-1"])
    other.add_signature(keyring["officer-1"])
    with pytest.raises(SignatureError, match="payloadType"):
        verify_envelope(trust_policy, other, PAYLOAD_TYPE, MANIFEST, artifact="m")
    with pytest.raises(SignatureError, match="the signed payload is not the manifest"):
        verify_envelope(trust_policy, env, PAYLOAD_TYPE, MANIFEST + b" ", artifact="m", payload_name="the manifest")
    with pytest.raises(SignatureError, match="officer: 0 of 1"):
        verify_envelope(trust_policy, _envelope(keyring, "builder-1"), PAYLOAD_TYPE, MANIFEST, artifact="m")
    # a stranger's signature rejects even when the thresholds are met; without enforce it is reported
    env.add_signature(SigningKey.generate("stranger"))
    with pytest.raises(SignatureError, match="not in the trust policy"):
        verify_envelope(trust_policy, env, PAYLOAD_TYPE, MANIFEST, artifact="m")
    shown = verify_envelope(trust_policy, env, PAYLOAD_TYPE, MANIFEST, artifact="m", enforce=False)
    assert not shown.ok and [s.status for s in shown.signatures] == [VALID, VALID, UNKNOWN_KEY]
    # without a policy only what it signs is checked
    assert verify_envelope(None, env, PAYLOAD_TYPE, MANIFEST, artifact="m") is None
    with pytest.raises(SignatureError, match="payloadType"):
        verify_envelope(None, other, PAYLOAD_TYPE, MANIFEST, artifact="m")


def test_verify_envelope_any_role(trust_policy, keyring):
    """The part index's rule: one signature by a key holding any role, nothing that does not count."""
    from airgap.trust import ANY_ROLE, verify_envelope

    for name in ("root-1", "builder-1", "officer-1"):
        env = _envelope(keyring, name)
        report = verify_envelope(trust_policy, env, PAYLOAD_TYPE, MANIFEST, artifact="m", roles=(ANY_ROLE,))
        assert [k.name for k in report.signers()] == [name]
    with pytest.raises(SignatureError, match="any role: 0 of 1"):
        verify_envelope(trust_policy, _envelope(keyring), PAYLOAD_TYPE, MANIFEST, artifact="m", roles=(ANY_ROLE,))
    stranger = Envelope(MANIFEST, PAYLOAD_TYPE)
    stranger.add_signature(SigningKey.generate("stranger"))
    with pytest.raises(SignatureError, match=r"any role: 0 of 1 required signatures \(unknown: "):
        verify_envelope(trust_policy, stranger, PAYLOAD_TYPE, MANIFEST, artifact="m", roles=(ANY_ROLE,))
    stranger.add_signature(keyring["officer-1"])  # a counting signature does not excuse a stranger's
    with pytest.raises(SignatureError, match="is by a key not in the trust policy"):
        verify_envelope(trust_policy, stranger, PAYLOAD_TYPE, MANIFEST, artifact="m", roles=(ANY_ROLE,))


def test_evaluate_requires_roles(trust_policy):
    with pytest.raises(ValueError):
        evaluate(trust_policy, PAYLOAD_TYPE, MANIFEST, [], roles=())
    with pytest.raises(ValueError):
        evaluate(trust_policy, PAYLOAD_TYPE, MANIFEST, [], roles=("admin",))


def test_policy_object_is_isolated_from_caller_dict(trust_policy, keyring):
    signed = json.loads(json.dumps(trust_policy.signed))
    p = TrustPolicy(signed)
    signed["roles"]["builder"]["threshold"] = 2
    assert p.signed["roles"]["builder"]["threshold"] == 1


# --- command-line helpers -----------------------------------------------------


def test_load_without_expiry_still_checks_signatures(keyring):
    expired = make_policy(keyring, expires="2026-01-01T00:00:00Z")
    assert TrustPolicy.load(expired.to_bytes(), now=None).version == 1
    with pytest.raises(SignatureError):
        TrustPolicy.load(make_policy(keyring, sign_with=("root-1",)).to_bytes(), now=None)


def test_init_and_rotate_policy_helpers(tmp_path, keyring):
    from airgap.trust import init_policy, rotate_policy

    pub = keyring.pub_path
    p1 = init_policy(
        target=TARGET, expires="365d",
        roots=[pub("root-1"), pub("root-2"), pub("root-3")], root_threshold=2,
        builders=[pub("builder-1"), pub("builder-2")], builder_threshold=1,
        officers=[pub("officer-1")], officer_threshold=1,
        signing_keys=[keyring["root-1"], keyring["root-2"]], now=NOW,
    )
    assert p1.expires == NOW.replace(microsecond=0) + timedelta(days=365)
    path = tmp_path / "trust.json"
    p1.write(path)
    assert TrustPolicy.load(path, now=NOW).signed_bytes() == p1.signed_bytes()
    assert "signed by 2 of 2 required root keys" in p1.describe()
    assert "builder: 1 of 2 (builder-1 " in p1.describe()
    assert p1.has_role_key("officer", keyring.pub("officer-1"))
    assert not p1.has_role_key("officer", keyring.pub("builder-1"))

    p2 = rotate_policy(
        path, officers=[pub("officer-1"), pub("officer-2")], revoke=[pub("builder-2")],
        signing_keys=[keyring["root-2"], keyring["root-3"]], now=NOW,
    )
    TrustPolicy.verify_successor(p1, p2, NOW)
    assert p2.revoked == (keyring["builder-2"].keyid,)
    assert "revoked: builder-2 " in p2.describe()
    from airgap.exceptions import InputError

    with pytest.raises(InputError, match="not in the future"):
        init_policy(target=TARGET, expires="2020-01-01T00:00:00Z", roots=[pub("root-1")], root_threshold=1,
                    builders=[pub("builder-1")], builder_threshold=1, officers=[pub("officer-1")],
                    officer_threshold=1, now=NOW)


def test_record_path_verifies_first(tmp_path, keyring, trust_policy_file):
    store = TrustStore(tmp_path / "state")
    with pytest.raises(TypeError):
        store.record(trust_policy_file)
    store.record(trust_policy_file, now=NOW)
    assert store.trusted().version == 1
    bad = tmp_path / "bad.json"
    bad.write_bytes(make_policy(keyring, version=2, sign_with=("root-1",)).to_bytes())
    with pytest.raises(SignatureError):
        TrustStore(tmp_path / "state").record(bad, now=NOW)
    assert store.trusted().version == 1


def test_report_summary_and_dict(trust_policy, keyring):
    report = _eval(trust_policy, _envelope(keyring, "builder-1"))
    assert report.summary().startswith("builder 1 of 1, officer 0 of 1; officer: 0 of 1 required")
    d = report.to_dict()
    assert d["ok"] is False and d["roles"]["officer"]["missing"] == 1
    assert d["signatures"][0]["name"] == "builder-1"
    json.dumps(d)


def test_record_across_store_instances(tmp_path, trust_policy, keyring):
    a, b = TrustStore(tmp_path / "s"), TrustStore(tmp_path / "s")
    policy = a.load_policy(trust_policy.to_bytes(), NOW)
    b.record(policy)
    with pytest.raises(ValueError):
        b.record(policy.policy)  # a bare policy: nothing vetted it here
    assert b.trusted().version == 1
    with pytest.raises(ValueError):
        TrustStore(tmp_path / "elsewhere").record(policy)
    # the state moved on between load_policy() and record(): never step back
    v2 = _signed(trust_policy.rotate(), keyring)
    stale = a.load_policy(trust_policy.to_bytes(), NOW)
    b.record(b.load_policy(v2.to_bytes(), NOW))
    with pytest.raises(RollbackError):
        a.record(stale)


# --- key roles of the signing helpers (library level; the CLI runs are in test_cli.py) ---


def _init_kwargs(keyring):
    pub = keyring.pub
    return dict(target=TARGET, expires="365d", roots=keyring.pubs("root-1", "root-2", "root-3"), root_threshold=2,
                builders=[pub("builder-1")], builder_threshold=1, officers=[pub("officer-1")], officer_threshold=1,
                now=NOW)


@pytest.mark.parametrize("name,role", [("builder-1", "a builder key"), ("officer-1", "an officer key")])
def test_init_policy_refuses_non_root_signers_before_signing(keyring, name, role):
    from airgap.exceptions import KeyRoleError
    from airgap.keyroles import Signer
    from airgap.trust import init_policy

    with pytest.raises(KeyRoleError, match=f"^keys/{name}.key is {role} of this policy, not a root key"):
        init_policy(**_init_kwargs(keyring), signing_keys=[keyring["root-1"], Signer(keyring[name], f"keys/{name}.key")])


def test_rotate_policy_accepts_a_root_of_either_version_and_counts_it_there(keyring):
    from airgap.exceptions import KeyRoleError
    from airgap.keyroles import RootStatus
    from airgap.trust import rotate_policy

    v1 = make_policy(keyring)
    new_root = K[0]
    # root-1 leaves, K[0] joins: each signs, each counts for its own version only.
    v2 = rotate_policy(v1, roots=[keyring.pub("root-2"), keyring.pub("root-3"), new_root.public_key],
                       signing_keys=[keyring["root-1"], new_root], now=NOW)
    status = RootStatus.of(v2, v1)
    assert (status.signatures, status.previous_signatures, status.complete) == (1, 1, False)
    assert RootStatus.of(v2).to_dict() == {"root_signatures": 1, "root_threshold": 2, "complete": False}
    with pytest.raises(SignatureError):
        TrustPolicy.verify_successor(v1, v2, NOW)
    from airgap.trust import sign_policy

    sign_policy(v2, keyring["root-2"], previous=v1)
    assert RootStatus.of(v2, v1).complete
    TrustPolicy.verify_successor(v1, v2, NOW)
    with pytest.raises(KeyRoleError, match="a builder key of version 2 and a builder key of version 1, a root key of neither"):
        rotate_policy(v1, signing_keys=[keyring["builder-1"]], now=NOW)
    # trust sign without the previous version only knows this version's roots.
    with pytest.raises(KeyRoleError, match="not in the policy at all.*--successor-of"):
        sign_policy(v2, keyring["root-1"])
    with pytest.raises(KeyRoleError, match="already signed"):
        sign_policy(v2, keyring["root-2"], previous=v1)


def test_rotate_revoke_by_keyid_prefix(keyring):
    from airgap.exceptions import InputError
    from airgap.trust import rotate_policy

    v1 = make_policy(keyring)
    officer = keyring.pub("officer-1").keyid
    for form in (officer[:8], officer[:8].upper(), officer[:20] + "…", officer):
        v2 = rotate_policy(v1, revoke=[form], now=NOW)
        assert v2.revoked == (officer,), form
    with pytest.raises(InputError, match="no key in"):
        rotate_policy(v1, revoke=["00000000"], now=NOW)
    with pytest.raises(InputError, match="neither a keyid"):
        rotate_policy(v1, revoke=["1234567"], now=NOW)
