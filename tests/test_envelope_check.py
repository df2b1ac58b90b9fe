"""One envelope check (airgap.trust.verify_envelope) behind every caller: verify, inspect,
sign and the media part index each refuse an envelope over other bytes, of another
payloadType, or carrying a signature by a key the policy does not know.

The messages asserted here are written only by ``verify_envelope``; a caller with
its own check would word them differently (or not check at all, as inspect did).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from airgap import dsse, media, split
from airgap.exceptions import SignatureError
from airgap.keys import SigningKey
from tests import bundlekit as kit

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OTHER_BYTES = "the signed payload is not the bundle's manifest.json"
OTHER_TYPE = "payloadType 'application/vnd.airgap.parts+json' is not the expected 'application/vnd.airgap.manifest.v1+json'"
STRANGER = "is by a key not in the trust policy"


def _tampered(tmp_path, signed_bundle, keyring, how: str):
    entries = kit.read_entries(signed_bundle.copy(tmp_path))
    manifest = entries[0].data
    if how == "other-bytes":
        env = dsse.Envelope(manifest + b" ")
    elif how == "other-type":
        env = dsse.Envelope(manifest, media.PAYLOAD_TYPE)
    else:
        env = dsse.Envelope(manifest)
    for name in ("builder-1", "officer-1"):
        env.add_signature(keyring[name])
    if how == "stranger":
        env.add_signature(SigningKey.generate("stranger"))
    entries[-1] = kit.Entry("signatures.json", env.to_bytes())
    return kit.write_entries(tmp_path / f"{how}.tar", entries)


@pytest.mark.parametrize("how,message", [("other-bytes", OTHER_BYTES), ("other-type", OTHER_TYPE),
                                         ("stranger", STRANGER)])
def test_verify_refuses(tmp_path, signed_bundle, keyring, how, message):
    from airgap.verify import verify

    bundle = _tampered(tmp_path, signed_bundle, keyring, how)
    with pytest.raises(SignatureError, match=re.escape(message)) as exc:
        verify(bundle, trust_path=signed_bundle.trust, now=NOW)
    assert exc.value.artifact == "signatures.json"
    assert {c.name: c.status for c in exc.value.report.checks}["signatures"] == "fail"


@pytest.mark.parametrize("how,message", [("other-bytes", OTHER_BYTES), ("other-type", OTHER_TYPE)])
def test_inspect_refuses_an_envelope_that_does_not_sign_the_manifest(tmp_path, signed_bundle, keyring, how, message):
    from airgap import inspect

    bundle = _tampered(tmp_path, signed_bundle, keyring, how)
    for trust_path in (signed_bundle.trust, None):  # with or without a policy: what is shown must be what is signed
        with pytest.raises(SignatureError, match=re.escape(message)):
            inspect.summary(bundle, trust_path=trust_path)


def test_inspect_shows_a_strangers_signature_as_refused(tmp_path, signed_bundle, keyring):
    from airgap import inspect

    s = inspect.summary(_tampered(tmp_path, signed_bundle, keyring, "stranger"), trust_path=signed_bundle.trust)
    assert s["trust"]["ok"] is False and s["verified"] is False
    assert any(STRANGER in p for p in s["trust"]["problems"])
    assert [x["status"] for x in s["trust"]["signatures"]] == ["valid", "valid", "unknown-key"]


@pytest.mark.parametrize("how,message", [("other-bytes", OTHER_BYTES), ("other-type", OTHER_TYPE)])
def test_sign_refuses_before_writing(tmp_path, signed_bundle, keyring, how, message):
    from airgap import sign

    bundle = _tampered(tmp_path, signed_bundle, keyring, how)
    before = bundle.read_bytes()
    with pytest.raises(SignatureError, match=re.escape(message + "; refusing to sign")):
        sign.prepare(bundle, keyring["officer-2"], trust_path=signed_bundle.trust, now=NOW)
    with pytest.raises(SignatureError, match=re.escape(message + "; refusing to unsign")):
        sign.prepare_unsign(bundle, keyring["officer-1"].keyid[:8])
    assert bundle.read_bytes() == before


def test_sign_plan_marks_a_strangers_signature(tmp_path, signed_bundle, keyring):
    from airgap import sign

    plan = sign.prepare(_tampered(tmp_path, signed_bundle, keyring, "stranger"), keyring["officer-2"],
                        trust_path=signed_bundle.trust, now=NOW)
    report = plan.report()
    assert not report.ok and STRANGER in report.problems()[0]
    assert "DOES NOT COUNT (key not in the trust policy)" in plan.describe()


def _parts(tmp_path, signed_bundle, signing_key):
    out = tmp_path / "parts"
    split.split(signed_bundle.path, out, 1 << 20, signing_key=signing_key, force=True)
    return out, next(out.glob("*.parts.json"))


def test_part_index_refuses(tmp_path, signed_bundle, keyring):
    from airgap.trust import TrustPolicy
    from airgap.verify import verify

    policy = TrustPolicy.load(signed_bundle.trust, now=NOW)
    out, index = _parts(tmp_path, signed_bundle, keyring["officer-1"])
    with verify(out, trust_path=signed_bundle.trust, now=NOW) as verified:
        assert verified.report.media.endswith("index signed by " + keyring["officer-1"].public_key.label)
    sig = index.with_name(index.name + media.SIGNATURE_SUFFIX)
    signed = sig.read_bytes()
    other_type = dsse.Envelope(index.read_bytes())  # a manifest's payloadType over the index bytes
    other_type.add_signature(keyring["officer-1"])
    sig.write_bytes(other_type.to_bytes())
    with pytest.raises(SignatureError, match="payloadType 'application/vnd.airgap.manifest.v1\\+json' is not the expected"):
        verify(out, trust_path=signed_bundle.trust, now=NOW)
    sig.write_bytes(signed)
    with pytest.raises(SignatureError, match="the signed payload is not the part index"):
        media.verify_index_signature(index, index.read_bytes() + b" ", policy)
    out, index = _parts(tmp_path, signed_bundle, SigningKey.generate("stranger"))
    with pytest.raises(SignatureError, match="unknown: "):
        verify(out, trust_path=signed_bundle.trust, now=NOW)
