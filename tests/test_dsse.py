"""DSSE v1: PAE, envelope round trip, strict parsing, countersigning."""

from __future__ import annotations

import base64
import json

import pytest
from securesystemslib.dsse import Envelope as SSlibEnvelope

from airgap.dsse import PAYLOAD_TYPE, Envelope, Signature, pae
from airgap.exceptions import FormatError, SignatureError
from airgap.keys import PublicKey, SigningKey

# From secure-systems-lab/dsse testvectors/vectors.json: RFC 8032 test keys.
VECTOR_KEYS = {
    "A": ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
          "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
    "B": ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
          "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"),
}
STATEMENT = base64.b64decode("eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==")
SIG_A = "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
SIG_B = "c1+67/aT0yqEpwx8PsVY3MLHsj9D0CZ014/Fv/QlG59P+9CobUZ7xECJ/V3USG0Ob9CiE5LjReEZUzNF2l7eBw=="
# (id, payloadType, payload, sig, pae hex prefix check, expect valid)
VECTORS = [
    ("single-signature", "application/vnd.in-toto+json", STATEMENT, SIG_A,
     "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203433207b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d",
     True),
    ("url-safe-base64", "application/vnd.in-toto+json", bytes.fromhex("fbffbf3e3f"),
     "P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW886DbWNWcCmX5twLrAw==",
     "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203520fbffbf3e3f",
     True),
    ("payload-type-swapped", "application/vnd.example.other+json", STATEMENT, SIG_A, None, False),
    ("non-ascii-payload-type", "application/vnd.exämple+json", STATEMENT,
     "xmSk/ug66ysT7ayhkCIjhAq42zgZXSsEWuzUaNL7w2eGAdF/NU6/fRXPtmfN+5DNSAs5/i2lUnHjbbjPsu0tAw==",
     "445353457631203239206170706c69636174696f6e2f766e642e6578c3a46d706c652b6a736f6e203433207b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d",
     True),
    ("empty-payload", "application/vnd.in-toto+json", b"",
     "gSggCAaTLTYyRH6FIDBem6meyIynsYy8RTHVzwx9tnTb7Bg/1jMWnuVgI/gffqmbsC2VX5/jHfkkDqsj7CDbDg==",
     "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203020",
     True),
]


def _vector_key(name: str) -> PublicKey:
    return PublicKey(bytes.fromhex(VECTOR_KEYS[name][1]))


def test_pae_spec_example():
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_utf8_bytes_not_characters():
    assert pae("é", b"") == "DSSEv1 2 é 0 ".encode()


@pytest.mark.parametrize("vid,ptype,payload,sig,pae_hex,valid", VECTORS, ids=[v[0] for v in VECTORS])
def test_dsse_vectors(vid, ptype, payload, sig, pae_hex, valid):
    if pae_hex is not None:
        assert pae(ptype, payload).hex() == pae_hex
    raw_sig = base64.urlsafe_b64decode(sig) if "-" in sig or "_" in sig else base64.b64decode(sig)
    key = _vector_key("A")
    if valid:
        key.verify(raw_sig, pae(ptype, payload))
    else:
        with pytest.raises(SignatureError):
            key.verify(raw_sig, pae(ptype, payload))


def test_vector_seed_reproduces_signature():
    # Ed25519 is deterministic: our signer must produce the vector's bytes.
    key = SigningKey(bytes.fromhex(VECTOR_KEYS["A"][0]))
    assert key.public_key.public.hex() == VECTOR_KEYS["A"][1]
    assert base64.b64encode(key.sign(pae("application/vnd.in-toto+json", STATEMENT))).decode() == SIG_A
    key_b = SigningKey(bytes.fromhex(VECTOR_KEYS["B"][0]))
    assert base64.b64encode(key_b.sign(pae("application/vnd.in-toto+json", STATEMENT))).decode() == SIG_B


def test_url_safe_vector_envelope_rejected():
    """Deliberate deviation from DSSE (which lets verifiers accept URL-safe base64):
    airgap accepts exactly one encoding of an envelope."""
    key = SigningKey(bytes.fromhex(VECTOR_KEYS["A"][0]))
    doc = {
        "payload": "-_-_Pj8=",
        "payloadType": "application/vnd.in-toto+json",
        "signatures": [{"keyid": key.keyid, "sig": VECTORS[1][3]}],
    }
    with pytest.raises(FormatError, match="payload is not standard padded base64"):
        Envelope.from_bytes(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), "m.dsse")


def test_pae_matches_securesystemslib():
    for ptype, payload in [(PAYLOAD_TYPE, b'{"a":1}'), ("x", b""), ("ü/ä", b"\x00\xff")]:
        assert pae(ptype, payload) == SSlibEnvelope(payload, ptype, {}).pae()


def test_roundtrip_and_canonical():
    k1, k2 = SigningKey.generate("b"), SigningKey.generate("o")
    env = Envelope(b'{"name":"pilot"}')
    env.add_signature(k1)
    env.add_signature(k2)
    data = env.to_bytes()
    assert b" " not in data and b"\n" not in data
    back = Envelope.from_bytes(data, "manifest.dsse")
    assert back.payload == env.payload
    assert back.payload_type == PAYLOAD_TYPE
    assert back.signatures == env.signatures
    assert back.to_bytes() == data
    for s, k in zip(back.signatures, (k1, k2)):
        k.public_key.verify(s.sig, back.pae())


def test_interop_with_securesystemslib():
    k = SigningKey.generate()
    env = Envelope(b"payload bytes")
    env.add_signature(k)
    theirs = SSlibEnvelope.from_dict(json.loads(env.to_bytes()))
    assert theirs.payload == env.payload and theirs.pae() == env.pae()
    assert theirs.signatures[k.keyid].signature == env.signatures[0].sig.hex()


def test_countersigning_leaves_payload_untouched():
    payload = b"x" * 10_000
    env = Envelope(payload)
    env.add_signature(SigningKey.generate())
    before = json.loads(env.to_bytes())
    env.add_signature(SigningKey.generate())
    after = json.loads(env.to_bytes())
    assert after["payload"] == before["payload"] and env.payload is payload
    assert after["signatures"][0] == before["signatures"][0]


def test_add_signature_refuses_same_key_twice():
    k = SigningKey.generate("officer-1")
    env = Envelope(b"m")
    env.add_signature(k)
    with pytest.raises(SignatureError, match="already signed by key officer-1"):
        env.add_signature(k)
    # also when the earlier signature was filed under another keyid hint
    env2 = Envelope(b"m", signatures=[Signature("ab" * 32, env.signatures[0].sig)])
    with pytest.raises(SignatureError, match="already signed"):
        env2.add_signature(k)
    assert len(env2.signatures) == 1


def _good_doc() -> dict:
    env = Envelope(b"hello")
    env.add_signature(SigningKey.generate())
    return json.loads(env.to_bytes())


def _canon(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda d: d.update(extra=1), "exactly payload, payloadType and signatures"),
        (lambda d: d.pop("signatures"), "exactly payload"),
        (lambda d: d.update(payloadType=""), "payloadType"),
        (lambda d: d.update(payloadType=5), "payloadType"),
        (lambda d: d.update(payload="aGVsbG8"), "base64"),  # missing padding
        (lambda d: d.update(payload="aGVsbG9="), "not canonical base64"),  # non-zero unused bits
        (lambda d: d.update(payload="aGVs bG8="), "base64"),
        (lambda d: d.update(payload="aGVsbG8=\n"), "base64"),
        (lambda d: d.update(payload="aGVs-G8="), "base64"),
        (lambda d: d.update(signatures={}), "signatures must be a list"),
        (lambda d: d["signatures"][0].update(keyid=d["signatures"][0]["keyid"].upper()), "keyid"),
        (lambda d: d["signatures"][0].update(keyid="abc"), "keyid"),
        (lambda d: d["signatures"][0].pop("keyid"), "exactly keyid and sig"),
        (lambda d: d["signatures"][0].update(extra="x"), "exactly keyid and sig"),
        (lambda d: d["signatures"][0].update(sig=base64.b64encode(bytes(63)).decode()), "63 bytes"),
        (lambda d: d["signatures"][0].update(sig=base64.b64encode(bytes(65)).decode()), "65 bytes"),
        (lambda d: d["signatures"][0].update(sig=1), "base64"),
        (lambda d: d.update(signatures=d["signatures"] * 65), "cap"),
    ],
)
def test_from_bytes_strict(mutate, reason):
    doc = _good_doc()
    mutate(doc)
    with pytest.raises(FormatError, match=reason) as exc:
        Envelope.from_bytes(_canon(doc), "bundle/manifest.dsse")
    assert str(exc.value).startswith("bundle/manifest.dsse: ")


@pytest.mark.parametrize(
    "render",
    [
        lambda d: json.dumps(d, sort_keys=True).encode(),  # whitespace
        lambda d: json.dumps(d, separators=(",", ":")).encode()[::1].replace(b"{", b"{ ", 1),
        lambda d: _canon(d) + b"\n",
        lambda d: json.dumps(dict(reversed(list(d.items()))), separators=(",", ":")).encode(),
        lambda d: _canon(d).replace(b"application/", b"application\\/"),
    ],
)
def test_from_bytes_requires_canonical_form(render):
    with pytest.raises(FormatError, match="canonical form"):
        Envelope.from_bytes(render(_good_doc()), "m.dsse")


def test_from_bytes_duplicate_keys_and_floats():
    data = _canon(_good_doc())
    with pytest.raises(FormatError, match="duplicate JSON key"):
        Envelope.from_bytes(data.replace(b'{"payload"', b'{"payload":"","payload"', 1), "m")
    with pytest.raises(FormatError):
        Envelope.from_bytes(b'{"payload":"","payloadType":"x","signatures":[1.5]}', "m")


def test_from_bytes_size_cap():
    with pytest.raises(FormatError, match="exceeds the cap"):
        Envelope.from_bytes(_canon(_good_doc()), "m", max_size=10)


def test_empty_envelope_roundtrip():
    env = Envelope(b"")
    assert Envelope.from_bytes(env.to_bytes(), "m").signatures == []
