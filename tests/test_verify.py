"""Every attack in docs/architecture.md's list, one test each: a real bundle, tampered in one
way, run through ``airgap verify`` as a user would; exit 1 and the reason.

Modelled on python-tuf's tests/test_updater_top_level_update.py: start from a
good state, change one thing, assert the precise refusal.
"""

from __future__ import annotations

import json
import os

import pytest

from airgap._internal.jsonutil import canonical_bytes
from tests import bundlekit as kit
from tests.fixtures.keys import make_policy
from tests.helpers import airgap


def verify(bundle, trust, *extra):
    return airgap("verify", bundle, "--trust", trust, *extra)


def rejected(r, *needles):
    assert r.code == 1, f"expected rejection, got {r.code}\n{r.out}\n{r.err}"
    text = r.out + r.err
    for n in needles:
        assert n in text, f"{n!r} not in output:\n{text}"


def _policy_file(tmp_path, keyring, *, target="geheim-pilot", builder_threshold=1):
    """A policy like the sample's, with another target or builder threshold, signed by root-1 and root-2."""
    from airgap.trust import TrustPolicy

    policy = TrustPolicy.create(
        target, "2099-01-01T00:00:00Z",
        keyring.pubs("root-1", "root-2", "root-3"), 2,
        keyring.pubs("builder-1", "builder-2"), builder_threshold,
        keyring.pubs("officer-1", "officer-2"), 1,
    )
    policy.sign(keyring["root-1"])
    policy.sign(keyring["root-2"])
    path = tmp_path / f"trust-{target}-{builder_threshold}.json"
    path.write_bytes(policy.to_bytes())
    return path


@pytest.fixture
def good(tmp_path, signed_bundle):
    return signed_bundle.copy(tmp_path)


@pytest.fixture
def trust(signed_bundle):
    return signed_bundle.trust


@pytest.fixture
def keys(keyring):
    return [keyring["builder-1"], keyring["officer-1"]]


def test_good_bundle_is_verified(good, trust):
    r = verify(good, trust)
    assert r.code == 0, r.err
    assert "VERIFIED: geheim-pilot 1.0.0" in r.out


def test_json_report_lists_every_check(good, trust):
    r = verify(good, trust, "--json")
    assert r.code == 0
    doc = r.json()
    assert doc["result"] == "accepted"
    assert {c["check"]: c["status"] for c in doc["checks"]} == {
        "archive": "pass", "manifest": "pass", "trust-policy": "pass", "signatures": "pass", "target": "pass",
        "expiry": "pass", "rollback": "skipped", "members": "pass", "oci-layout": "pass", "content": "pass",
    }


# --- a changed byte anywhere -------------------------------------------------


@pytest.mark.parametrize("member", ["index.json", "oci-layout", "files/configs/pilot.conf"])
def test_changed_byte_in_member(good, trust, member):
    off, size = kit.member_offset(good, member)
    kit.flip_byte(good, off + size // 2)
    rejected(verify(good, trust), member, "sha256 mismatch")


def test_changed_byte_in_layer_blob(good, trust, signed_bundle):
    entries = kit.read_entries(good)
    blob = max((e for e in entries if e.name.startswith("blobs/")), key=lambda e: len(e.data))
    off, size = kit.member_offset(good, blob.name)
    kit.flip_byte(good, off + size - 1)
    rejected(verify(good, trust), blob.name, "sha256 mismatch")


def test_changed_byte_in_manifest(good, trust):
    off, size = kit.member_offset(good, "manifest.json")
    data = open(good, "rb").read()[off:off + size]
    pos = data.index(b'"version":"1.0.0"') + len('"version":"1.0.')
    kit.flip_byte(good, off + pos)  # 1.0.0 -> 1.0.1
    rejected(verify(good, trust), "signatures.json", "not the bundle's manifest")


def test_changed_byte_in_signature(good, trust):
    off, size = kit.member_offset(good, "signatures.json")
    data = open(good, "rb").read()[off:off + size]
    pos = data.index(b'"sig":"') + 12
    kit.flip_byte(good, off + pos)
    r = verify(good, trust)
    assert r.code == 1
    assert "signatures.json" in r.err or "signature" in r.err


def test_changed_byte_in_tar_header(good, trust):
    header = kit.member_offset(good, "oci-layout")[0] - 512
    kit.flip_byte(good, header + 3)  # inside the second header's name
    r = verify(good, trust)
    rejected(r, "checksum")


# --- missing, extra, duplicated, renamed members, trailing data ---------------


def test_missing_member(good, trust, tmp_path):
    entries = [e for e in kit.read_entries(good) if e.name != "files/configs/pilot.conf"]
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "files/configs/pilot.conf", "absent")


def test_extra_member(good, trust, tmp_path):
    entries = kit.read_entries(good)
    entries.insert(-1, kit.Entry("files/configs/extra.conf", b"smuggled\n"))
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "files/configs/extra.conf", "not listed")


def test_duplicated_member(good, trust, tmp_path):
    entries = kit.read_entries(good)
    dup = next(e for e in entries if e.name == "files/configs/pilot.conf")
    entries.insert(-1, kit.Entry(dup.name, b"second copy\n"))
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "files/configs/pilot.conf", "duplicate")


def test_renamed_member(good, trust, tmp_path):
    entries = kit.read_entries(good)
    for e in entries:
        if e.name == "files/configs/pilot.conf":
            e.name = "files/configs/pilot.conf.bak"
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "pilot.conf")


def test_reordered_members(good, trust, tmp_path):
    entries = kit.read_entries(good)
    entries[1], entries[2] = entries[2], entries[1]
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "out of order")


def test_trailing_data(good, trust):
    with open(good, "ab") as f:
        f.write(b"\0" * 512 + b"EXTRA" + b"\0" * 507)
    rejected(verify(good, trust), "trailing data")


def test_trailing_zero_blocks_too(good, trust):
    with open(good, "ab") as f:
        f.write(b"\0" * 1024)
    rejected(verify(good, trust), "trailing data")


def test_truncated_bundle(good, trust):
    size = os.path.getsize(good)
    with open(good, "r+b") as f:
        f.truncate(size - 2048)
    rejected(verify(good, trust))


# --- signatures --------------------------------------------------------------


def test_too_few_signatures(signed_bundle, tmp_path, trust):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    rejected(verify(b, trust), "officer: 0 of 1")


def test_signature_from_wrong_role(signed_bundle, tmp_path, trust, keyring):
    b = signed_bundle.copy(tmp_path, builder_only=True)
    assert airgap("sign", b, "--key", keyring.key_path("builder-2"), "--yes").code == 0
    rejected(verify(b, trust), "officer: 0 of 1")


def test_same_key_twice_counts_once(good, tmp_path, keyring):
    # A policy that wants two builders; builder-1's signature duplicated under another keyid hint.
    trust = _policy_file(tmp_path, keyring, builder_threshold=2)
    entries = kit.read_entries(good)
    env = json.loads(entries[-1].data)
    builder_sig = next(s for s in env["signatures"] if s["keyid"] == keyring.pub("builder-1").keyid)
    env["signatures"].append({"keyid": keyring.pub("builder-2").keyid, "sig": builder_sig["sig"]})
    entries[-1] = kit.Entry("signatures.json", canonical_bytes(env))
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "builder: 1 of 2")


def test_revoked_key(good, tmp_path, keyring):

    v1 = make_policy(keyring)
    v2 = v1.rotate(revoke=[keyring.pub("officer-1").keyid])
    v2.sign(keyring["root-1"])
    v2.sign(keyring["root-2"])
    trust = tmp_path / "trust-v2.json"
    trust.write_bytes(v2.to_bytes())
    rejected(verify(good, trust), "officer", "revoked")


def test_unknown_key(signed_bundle, tmp_path, trust):
    from airgap.keys import SigningKey

    b = signed_bundle.copy(tmp_path, builder_only=True)
    stranger = SigningKey.generate("stranger")
    stranger.save(tmp_path / "stranger.key", None)
    assert airgap("sign", b, "--key", tmp_path / "stranger.key", "--yes").code == 0
    rejected(verify(b, trust), "officer: 0 of 1", "unknown")


def test_malformed_signature(good, trust, tmp_path):
    entries = kit.read_entries(good)
    env = json.loads(entries[-1].data)
    env["signatures"][0]["sig"] = env["signatures"][0]["sig"][:-4]
    entries[-1] = kit.Entry("signatures.json", canonical_bytes(env))
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "signatures.json")


def test_wrong_payload_type(good, trust, tmp_path, keys):
    entries = kit.read_entries(good)
    from airgap import dsse

    env = dsse.Envelope(entries[0].data, "application/json")
    for k in keys:
        env.add_signature(k)
    entries[-1] = kit.Entry("signatures.json", env.to_bytes())
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "payloadType")


# --- time, rollback, target ----------------------------------------------------


def test_expired_bundle(tmp_path, seeded_registry, keyring, trust):
    from tests.fixtures.bundles import build_sample

    _, b, _ = build_sample(tmp_path, seeded_registry, keyring, expires="2026-11-02T00:00:00Z")
    rejected(verify(b, trust), "expired at 2026-11-02T00:00:00Z")


def test_expired_bundle_officer_override_is_recorded(tmp_path, seeded_registry, keyring, trust):
    from tests.fixtures.bundles import build_sample

    _, b, _ = build_sample(tmp_path, seeded_registry, keyring, expires="2026-11-02T00:00:00Z")
    state = tmp_path / "state"
    r = verify(b, trust, "--state", state, "--allow-expired", "--reason", "disc delayed in transit; approved by CISO",
               "--override-key", keyring.key_path("officer-2"))
    assert r.code == 0, r.err
    assert "OVERRIDE" in r.out
    log = (state / "audit.log").read_text()
    assert "disc delayed in transit" in log and keyring.pub("officer-2").keyid in log
    # A builder key cannot override.
    r = verify(b, trust, "--allow-expired", "--reason", "x", "--override-key", keyring.key_path("builder-1"))
    rejected(r, "not an officer key")
    # No reason, no override.
    r = verify(b, trust, "--allow-expired", "--override-key", keyring.key_path("officer-2"))
    assert r.code == 2


def test_expired_policy(good, tmp_path, keyring):
    policy = make_policy(keyring, expires="2026-01-01T00:00:00Z")
    trust = tmp_path / "old.json"
    trust.write_bytes(policy.to_bytes())
    rejected(verify(good, trust), "expired")


def test_rollback_rejected(tmp_path, seeded_registry, keyring, trust):
    from tests.fixtures.bundles import build_sample

    state = tmp_path / "state"
    _, b11, _ = build_sample(tmp_path, seeded_registry, keyring, version="1.1.0")
    _, b10, _ = build_sample(tmp_path, seeded_registry, keyring, version="1.0.0")
    assert verify(b11, trust, "--state", state, "--record").code == 0
    rejected(verify(b10, trust, "--state", state), "1.0.0", "1.1.0")
    # The same bundle again is fine (re-import after a crash).
    assert verify(b11, trust, "--state", state).code == 0


def test_equal_version_other_content_rejected(tmp_path, seeded_registry, keyring, trust):
    from tests.fixtures.bundles import build_sample

    state = tmp_path / "state"
    _, a, _ = build_sample(tmp_path / "a", seeded_registry, keyring)
    _, b, _ = build_sample(tmp_path / "b", seeded_registry, keyring, images=[seeded_registry.ref("pilot/status")])
    assert verify(a, trust, "--state", state, "--record").code == 0
    rejected(verify(b, trust, "--state", state), "1.0.0", "different content")


def test_wrong_target(tmp_path, good, keyring):
    trust = _policy_file(tmp_path, keyring, target="other-enclave")
    rejected(verify(good, trust), "geheim-pilot", "other-enclave")


# --- JSON and OCI document attacks (re-signed, so only the defect remains) -----


def _resigned(good, tmp_path, keys, *, edit=None, raw=None, entries=None):
    entries = entries or kit.read_entries(good)
    entries = kit.refresh_manifest(entries, keys, edit=edit, raw=raw)
    return kit.write_entries(tmp_path / "x.tar", entries)


def test_manifest_duplicate_keys(good, tmp_path, keys, trust):
    entries = kit.read_entries(good)
    raw = entries[0].data.replace(b'{"_type"', b'{"version":"9.9.9","_type"', 1)
    b = kit.write_entries(tmp_path / "x.tar", kit.resign(entries, raw, keys))
    rejected(verify(b, trust), "manifest.json", "duplicate JSON key")


def test_manifest_float_where_integer(good, tmp_path, keys, trust):
    entries = kit.read_entries(good)
    raw = entries[0].data.replace(b'"format":1', b'"format":1.0', 1)
    b = kit.write_entries(tmp_path / "x.tar", kit.resign(entries, raw, keys))
    rejected(verify(b, trust), "manifest.json", "non-integer")


def test_manifest_nan(good, tmp_path, keys, trust):
    entries = kit.read_entries(good)
    raw = entries[0].data.replace(b'"format":1', b'"format":NaN', 1)
    b = kit.write_entries(tmp_path / "x.tar", kit.resign(entries, raw, keys))
    rejected(verify(b, trust), "manifest.json", "NaN")


def test_manifest_upper_case_hex(good, tmp_path, keys, trust):
    def edit(doc):
        doc["members"][0]["sha256"] = doc["members"][0]["sha256"].upper()

    rejected(verify(_resigned(good, tmp_path, keys, edit=edit), trust), "manifest.json", "members[0].sha256")


def test_unknown_digest_algorithm_in_oci_manifest(good, tmp_path, keys, trust):
    import hashlib

    entries = kit.read_entries(good)
    doc = kit.manifest_of(entries)
    status = next(i for i in doc["images"] if i["repository"] == "pilot/status")
    path = "blobs/sha256/" + status["digest"].split(":")[1]
    e = next(e for e in entries if e.name == path)
    e.data = e.data.replace(b'"digest":"sha256:', b'"digest":"sha512:', 1)
    new_digest = "sha256:" + hashlib.sha256(e.data).hexdigest()
    e.name = "blobs/sha256/" + new_digest.split(":")[1]
    entries = _retarget(entries, status, new_digest, len(e.data))
    b = _resigned(good, tmp_path, keys, entries=entries, edit=lambda d: _fix_image(d, status["ref"], new_digest, len(e.data)))
    rejected(verify(b, trust), "unsupported digest algorithm")


def test_oci_manifest_with_absent_blob(good, tmp_path, keys, trust):
    entries = kit.read_entries(good)
    doc = kit.manifest_of(entries)
    status = next(i for i in doc["images"] if i["repository"] == "pilot/status")
    blob = json.loads(next(e for e in entries if e.name.endswith(status["digest"].split(":")[1])).data)
    layer = "blobs/sha256/" + blob["layers"][2]["digest"].split(":")[1]
    entries = [e for e in entries if e.name != layer]
    rejected(verify(_resigned(good, tmp_path, keys, entries=entries), trust), "pilot/status", "does not carry")


def test_oci_media_type_mismatch(good, tmp_path, keys, trust):
    import hashlib

    entries = kit.read_entries(good)
    doc = kit.manifest_of(entries)
    status = next(i for i in doc["images"] if i["repository"] == "pilot/status")
    path = "blobs/sha256/" + status["digest"].split(":")[1]
    e = next(e for e in entries if e.name == path)
    d = json.loads(e.data)
    d["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    e.data = json.dumps(d, separators=(",", ":")).encode()
    new_digest = "sha256:" + hashlib.sha256(e.data).hexdigest()
    e.name = "blobs/sha256/" + new_digest.split(":")[1]
    entries = _retarget(entries, status, new_digest, len(e.data))
    b = _resigned(good, tmp_path, keys, entries=entries, edit=lambda m: _fix_image(m, status["ref"], new_digest, len(e.data)))
    rejected(verify(b, trust), "descriptor says")


def _retarget(entries, image, digest, size):
    """Point index.json's entry for *image* at a new manifest digest (sorted blobs kept sorted)."""
    idx = next(e for e in entries if e.name == "index.json")
    d = json.loads(idx.data)
    for m in d["manifests"]:
        if m["digest"] == image["digest"]:
            m["digest"], m["size"] = digest, size
    idx.data = canonical_bytes(d)
    head = [e for e in entries if not e.name.startswith(("blobs/", "files/", "sbom/"))][:-1]
    blobs = sorted((e for e in entries if e.name.startswith("blobs/")), key=lambda e: e.name)
    files = [e for e in entries if e.name.startswith("files/")]
    sboms = [e for e in entries if e.name.startswith("sbom/")]
    for e in sboms:  # the image's SBOM follows it to its new digest
        e.name = e.name.replace(image["digest"].split(":")[1], digest.split(":")[1])
    return head + blobs + files + sorted(sboms, key=lambda e: e.name) + [entries[-1]]


def _fix_image(doc, ref, digest, size):
    for i in doc["images"]:
        if i["ref"] == ref:
            i["digest"], i["size"] = digest, size


def test_unreferenced_blob(good, tmp_path, keys, trust):
    entries = kit.read_entries(good)
    stray = kit.Entry("blobs/sha256/" + "0" * 64, b"")
    blobs = sorted([e for e in entries if e.name.startswith("blobs/")] + [stray], key=lambda e: e.name)
    entries = entries[:3] + blobs + [e for e in entries if e.name.startswith("files/")] + [entries[-1]]
    rejected(verify(_resigned(good, tmp_path, keys, entries=entries), trust), "0000000000", "not referenced")


def test_oversized_manifest(good, tmp_path, keys, trust):
    entries = kit.read_entries(good)
    entries[0] = kit.Entry("manifest.json", b" " * (16 * 1024 * 1024 + 1))
    rejected(verify(kit.write_entries(tmp_path / "x.tar", entries), trust), "manifest.json", "cap")


def test_oversized_index_json(good, tmp_path, keys, trust):
    entries = kit.read_entries(good)
    idx = next(e for e in entries if e.name == "index.json")
    idx.data = idx.data + b" " * (4 * 1024 * 1024)
    rejected(verify(_resigned(good, tmp_path, keys, entries=entries), trust), "index.json", "cap")


def test_verify_is_usage_error_for_missing_file(tmp_path, trust):
    r = verify(tmp_path / "nope.tar", trust)
    assert r.code == 2 and "nope.tar" in r.err


def test_nothing_in_bundle_is_used_before_acceptance(good, trust, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    kit.flip_byte(good, kit.member_offset(good, "files/configs/pilot.conf")[0])
    rejected(verify(good, trust))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_expired_policy_officer_override(good, tmp_path, keyring):
    policy = make_policy(keyring, expires="2026-01-01T00:00:00Z")
    trust = tmp_path / "old.json"
    trust.write_bytes(policy.to_bytes())
    state = tmp_path / "state"
    r = verify(good, trust, "--state", state, "--allow-expired", "--reason", "policy renewal delayed; ticket 4711",
               "--override-key", keyring.key_path("officer-1"), "--json")
    assert r.code == 0, r.err
    checks = {c["check"]: c["status"] for c in r.json()["checks"]}
    assert checks["trust-policy"] == "overridden"
    assert "ticket 4711" in (state / "audit.log").read_text()
    assert airgap("audit", "verify", "--state", state).code == 0


def test_media_parts_signed_index(good, trust, tmp_path, keyring):
    media = tmp_path / "media"
    assert airgap("split", good, "--size", "8K", "-o", media, "--key", keyring.key_path("builder-1")).code == 0
    r = verify(media, trust, "--json")
    assert r.code == 0, r.err
    assert "index signed by builder-1" in r.json()["media"]
    # The human report shows the same line --json reports (issue 11), and an unsigned index too.
    human = verify(media, trust)
    assert human.code == 0 and f"PASS     media-index   {r.json()['media']}" in human.out, human.out
    unsigned = tmp_path / "unsigned"
    assert airgap("split", good, "--size", "8K", "-o", unsigned).code == 0
    human = verify(unsigned, trust)
    assert human.code == 0 and "note     media-index   " in human.out and human.out.count("index unsigned") == 1
    assert "media-index" not in verify(good, trust).out  # a bundle file has no part index
    # An index signed by a key outside the policy is refused.
    from airgap.keys import SigningKey

    stranger = SigningKey.generate("stranger")
    stranger.save(tmp_path / "stranger.key", None)
    media2 = tmp_path / "media2"
    assert airgap("split", good, "--size", "8K", "-o", media2, "--key", tmp_path / "stranger.key").code == 0
    rejected(verify(media2, trust), ".parts.json.dsse")
