"""Trust before cost, and caps that agree (issue 8, finding 7).

An unsigned or untrusted bundle is refused on its signatures before its
manifest is parsed against the schema or a single member header is walked,
whatever the manifest holds.  Build and verify read their limits from
``airgap.caps``, so build refuses (with the reason) what verify would refuse,
and a manifest build can write can always be signed by every signer a policy
can count.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime

import pytest

from airgap import bundle as bundle_mod
from airgap import caps, dsse, manifest
from airgap import verify as verify_mod
from airgap._internal.jsonutil import canonical_bytes
from airgap.exceptions import SignatureError
from tests import bundlekit as kit
from tests.helpers import airgap, write_spec

NOW = datetime(2026, 11, 23, tzinfo=UTC)
EMPTY = hashlib.sha256(b"").hexdigest()


@pytest.fixture(scope="module")
def huge_manifest() -> bytes:
    """A schema-valid, canonical 15 MB manifest of 50,000 members."""
    # Long names (ustar prefix + name, each part within its field) make it 15 MB.
    members = [{"path": f"files/d{i // 1000:02d}-{'x' * 90}/{i:05d}-{'y' * 90}", "size": 0, "sha256": EMPTY, "mode": 0o644}
               for i in range(caps.MAX_MEMBERS - 2)]
    members[:0] = [{"path": "index.json", "size": 0, "sha256": EMPTY, "mode": 0o644},
                   {"path": "oci-layout", "size": 0, "sha256": EMPTY, "mode": 0o644}]
    doc = {
        "_type": "airgap-bundle-manifest", "format": 1, "name": "geheim-pilot", "version": "9.0.0",
        "target": "geheim-pilot", "created": "2026-11-01T00:00:00Z", "expires": "2036-11-01T00:00:00Z",
        "spec": {"name": "bundle.yaml", "sha256": EMPTY}, "toolkit": {"name": "airgap", "version": "0.1.0"},
        "base": None, "images": [], "members": members, "external_blobs": [],
    }
    data = canonical_bytes(doc)
    assert 15_000_000 <= len(data) <= caps.MAX_MANIFEST_BYTES
    assert not list(manifest._validator().iter_errors(json.loads(data)))  # schema-valid
    return data


def _huge_bundle(path, manifest_bytes: bytes, signers) -> None:
    env = dsse.Envelope(manifest_bytes)
    for key in signers:
        env.add_signature(key)
    entries = [kit.Entry("manifest.json", manifest_bytes)]
    entries += [kit.Entry(m["path"], b"", m["mode"]) for m in json.loads(manifest_bytes)["members"]]
    entries.append(kit.Entry("signatures.json", env.to_bytes()))
    kit.write_entries(path, entries)


@pytest.mark.parametrize("signers", ["unsigned", "stranger"])
def test_untrusted_huge_bundle_is_refused_on_signatures_before_any_parsing(tmp_path, huge_manifest, signed_bundle,
                                                                           monkeypatch, signers):
    from airgap.keys import SigningKey

    path = tmp_path / "huge.tar"
    _huge_bundle(path, huge_manifest, [] if signers == "unsigned" else [SigningKey.generate("stranger")])
    entered: list[str] = []

    def spy(module, name):
        original = getattr(module, name)

        def wrapped(*a, **k):
            entered.append(name)
            return original(*a, **k)

        monkeypatch.setattr(module, name, wrapped)

    spy(manifest, "_validator")  # the schema
    spy(manifest.BundleManifest, "from_bytes")  # any parsing of the manifest
    spy(verify_mod, "scan_members")  # the walk over every member header
    with pytest.raises(SignatureError) as err:
        verify_mod.verify(path, trust_path=signed_bundle.trust, now=NOW)
    assert err.value.artifact == "signatures.json"
    assert ("builder: 0 of 1" if signers == "unsigned" else "unknown") in str(err.value)
    assert entered == []
    checks = {c.name: c.status for c in err.value.report.checks}
    assert checks["signatures"] == "fail" and checks["manifest"] == "skipped"


@pytest.mark.slow  # walking and parsing 50,000 members: a few seconds
def test_huge_bundle_the_policy_trusts_is_walked_and_parsed(tmp_path, huge_manifest, signed_bundle, keyring):
    # The same bundle signed by the policy's keys gets past the signatures: the cost is
    # paid only for a bundle someone trusted vouched for (and then its content decides).
    path = tmp_path / "huge.tar"
    _huge_bundle(path, huge_manifest, [keyring["builder-1"], keyring["officer-1"]])
    r = airgap("verify", path, "--trust", signed_bundle.trust, "--json")
    assert r.code == 1
    checks = {c["check"]: c["status"] for c in r.json()["checks"]}
    assert checks["signatures"] == "pass" and checks["archive"] == "pass" and checks["manifest"] == "pass"


def test_signatures_cap_fits_the_largest_manifest_signed_by_every_signer():
    env = dsse.Envelope(b"m" * caps.MAX_MANIFEST_BYTES)
    env.signatures = [dsse.Signature(f"{i:064x}", bytes(64)) for i in range(caps.MAX_SIGNATURES)]
    assert len(env.to_bytes()) <= caps.MAX_SIGNATURES_BYTES
    assert dsse.MAX_SIGNATURES == caps.MAX_SIGNATURES


def test_the_manifest_schema_takes_its_limits_from_caps():
    props = manifest._validator().schema["properties"]
    assert (props["members"]["maxItems"], props["images"]["maxItems"], props["external_blobs"]["maxItems"]) == (
        caps.MAX_MEMBERS, caps.MAX_IMAGES, caps.MAX_EXTERNAL_BLOBS)


def _files_spec(tmp_path, n: int):
    spec_dir = tmp_path / "spec"
    files = spec_dir / "many"
    files.mkdir(parents=True)
    for i in range(n):
        (files / f"f{i:05d}.conf").write_bytes(b"%d\n" % i)
    return write_spec(spec_dir, images=[], files=[{"src": "many/", "dest": "many/"}])


def test_seven_thousand_small_files_build_and_verify(tmp_path, keyring, signed_bundle):
    spec = _files_spec(tmp_path, 7000)
    out = tmp_path / "many.tar"
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--quiet")
    assert r.code == 0, r.err
    assert airgap("sign", out, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
    with bundle_mod.Bundle.open(out) as b:
        assert len(b.signatures_bytes) > 1024 * 1024  # more than the old fixed cap, still within the derived one
    r = airgap("verify", out, "--trust", signed_bundle.trust)
    assert r.code == 0, r.out + r.err


def test_build_refuses_what_verify_would_refuse_with_the_reason(tmp_path, keyring, signed_bundle, monkeypatch):
    spec = _files_spec(tmp_path, 12)
    ok = tmp_path / "ok.tar"
    assert airgap("build", spec, "-o", ok, "--key", keyring.key_path("builder-1"), "--quiet").code == 0
    assert airgap("sign", ok, "--key", keyring.key_path("officer-1"), "--yes", "--quiet").code == 0
    # Lower the one cap both sides read: build refuses, naming the limit; verify refuses the same bundle.
    monkeypatch.setattr(caps, "MAX_MEMBERS", 10)
    r = airgap("build", spec, "-o", tmp_path / "no.tar", "--key", keyring.key_path("builder-1"), "--quiet")
    assert r.code == 2, r.out + r.err
    assert "14 members (12 files)" in r.err and "at most 10" in r.err
    assert not (tmp_path / "no.tar").exists()
    v = airgap("verify", ok, "--trust", signed_bundle.trust)
    assert v.code == 1 and "more than 12 members" in v.err, v.err


def test_a_manifest_over_its_cap_is_refused_before_signatures(tmp_path, signed_bundle):
    entries = kit.read_entries(signed_bundle.path)
    entries[0] = kit.Entry("manifest.json", b" " * (caps.MAX_MANIFEST_BYTES + 1))
    r = airgap("verify", kit.write_entries(tmp_path / "x.tar", entries), "--trust", signed_bundle.trust)
    assert r.code == 1 and "manifest.json" in r.err and "exceeds the cap" in r.err
    assert os.path.getsize(tmp_path / "x.tar") > caps.MAX_MANIFEST_BYTES
