"""Property: flip, insert or delete random bytes anywhere in a valid bundle; the
verifier either rejects the mutant or everything the manifest covers is
byte-identical to the original.

The default suite runs 2,000 mutants; ``AIRGAP_MUTANTS=N`` (the separate job,
``pytest -m mutants``) runs more.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap import verify as verify_mod
from airgap.exceptions import AirgapError

MUTANTS = int(os.environ.get("AIRGAP_MUTANTS", "2000"))
NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


def covered(path) -> dict[str, str]:
    """sha256 of every member the manifest covers (and the manifest itself)."""
    out = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            if m.name != "signatures.json":
                out[m.name] = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def original(signed_bundle):
    data = signed_bundle.path.read_bytes()
    return data, covered(signed_bundle.path), signed_bundle.trust


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 600)),
)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for kind, where, arg in ops:
        pos = int(where * len(buf)) if buf else 0
        if kind == "flip" and buf:
            buf[min(pos, len(buf) - 1)] ^= arg
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "delete" and buf:
            del buf[pos:pos + arg]
    return bytes(buf)


@settings(max_examples=MUTANTS, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_every_mutant_is_rejected_or_equivalent(original, tmp_path_factory, ops):
    data, want, trust = original
    mutant = mutate(data, ops)
    if mutant == data:
        return
    path = tmp_path_factory.getbasetemp() / "mutant.tar"
    path.write_bytes(mutant)
    try:
        verify_mod.verify(path, trust_path=trust, now=NOW, workers=1)
    except AirgapError as exc:
        assert exc.exit_code in (1, 2)
        assert str(exc)
        return
    # Accepted: then everything signed is exactly the original.
    assert covered(path) == want
