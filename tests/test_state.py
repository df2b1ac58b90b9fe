"""Rollback state: semver precedence, equal versions with other content, atomic records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airgap.exceptions import FormatError, RollbackError
from airgap.state import SemVer, StateStore, compare_versions

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


# semver.org §11's example, in ascending order.
SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
    "10.0.0",
]


def test_spec_precedence_order() -> None:
    for lower, higher in zip(SPEC_ORDER, SPEC_ORDER[1:]):
        assert compare_versions(lower, higher) == -1, (lower, higher)
        assert compare_versions(higher, lower) == 1
    assert sorted(SPEC_ORDER[::-1], key=SemVer.parse) == SPEC_ORDER


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0.0+build.1", "1.0.0+build.2", 0),  # build metadata has no precedence
        ("1.0.0+x", "1.0.0", 0),
        ("1.0.0-2", "1.0.0-10", -1),  # numeric identifiers compare as numbers
        ("1.0.0-10", "1.0.0-a", -1),  # numeric below alphanumeric
        ("1.0.0-a", "1.0.0-a.0", -1),  # a longer list wins on an equal prefix
        ("1.0.0-Z", "1.0.0-a", -1),  # ASCII order: upper before lower case
        ("1.0.0-alpha-1", "1.0.0-alpha.1", 1),  # "alpha-1" is one identifier, above "alpha"
        ("1.9.0", "1.10.0", -1),
        ("0.0.0", "0.0.1-0", -1),
    ],
)
def test_precedence_edge_cases(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


@pytest.mark.parametrize(
    "bad", ["1.0", "1.0.0.0", "01.0.0", "1.0.0-01", "1.0.0-", "1.0.0+", "v1.0.0", "1.0.0-a..b", " 1.0.0", "1.0.0\n", ""]
)
def test_invalid_versions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        SemVer.parse(bad)


_ident = st.one_of(st.integers(0, 30).map(str), st.text("abcZ-", min_size=1, max_size=3).filter(lambda s: not s.isdigit()))
_version = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + ("-" + ".".join(pre) if pre else ""),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(_ident, max_size=3),
)


@given(_version, _version, _version)
def test_precedence_is_a_total_order(a: str, b: str, c: str) -> None:
    va, vb, vc = SemVer.parse(a), SemVer.parse(b), SemVer.parse(c)
    assert (va < vb) + (va == vb) + (va > vb) == 1
    if va <= vb and vb <= vc:
        assert va <= vc
    assert str(va) == a


def test_first_acceptance_and_reimport(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.get("geheim-pilot") is None
    store.check("geheim-pilot", "1.0.0", D1)  # nothing recorded: fine
    rec = store.record("geheim-pilot", "1.0.0", D1)
    assert store.get("geheim-pilot") == rec
    assert rec.version == "1.0.0" and rec.manifest_digest == D1 and rec.time.endswith("Z")
    store.check("geheim-pilot", "1.0.0", D1)  # re-import of the same content
    assert store.record("geheim-pilot", "1.0.0", D1) == rec


def test_lower_version_is_rollback(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record("geheim-pilot", "1.1.0", D1)
    with pytest.raises(RollbackError) as err:
        store.check("geheim-pilot", "1.0.0", D2)
    assert err.value.artifact == "bundle geheim-pilot 1.0.0"
    assert err.value.reason == "older than accepted version 1.1.0"
    with pytest.raises(RollbackError):
        store.check("geheim-pilot", "1.1.0-rc.1", D2)
    with pytest.raises(RollbackError):
        store.record("geheim-pilot", "1.0.9", D2)
    assert store.get("geheim-pilot").version == "1.1.0"


def test_equal_version_other_content_is_rejected(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record("geheim-pilot", "1.0.0", D1)
    with pytest.raises(RollbackError) as err:
        store.check("geheim-pilot", "1.0.0", D2)
    assert err.value.reason == f"version 1.0.0 was already accepted with different content {D1}"
    # Build metadata does not make a new version.
    with pytest.raises(RollbackError, match="different content"):
        store.check("geheim-pilot", "1.0.0+rebuild", D2)
    store.check("geheim-pilot", "1.0.0+rebuild", D1)


def test_higher_version_moves_forward_and_names_are_independent(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record("geheim-pilot", "1.0.0-rc.1", D1)
    store.record("geheim-pilot", "1.0.0", D2)
    store.record("other", "0.1.0", D1)
    assert store.get("geheim-pilot").version == "1.0.0"
    assert [a.name for a in store.all()] == ["geheim-pilot", "other"]
    # Survives a new store object (i.e. a new process).
    assert StateStore(tmp_path).get("other").manifest_digest == D1


def test_malformed_inputs_are_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(FormatError):
        store.check("x", "1.0", D1)
    with pytest.raises(FormatError):
        store.check("x", "1.0.0", "sha256:" + "A" * 64)
    with pytest.raises(FormatError):
        store.record("x", "1.0.0", "md5:abc")


def test_state_file_is_parsed_strictly(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record("geheim-pilot", "1.0.0", D1)
    text = store.path.read_text()
    store.path.write_text(text.replace('"version":1', '"version":1,"version":1'))
    with pytest.raises(FormatError, match="duplicate"):
        store.get("geheim-pilot")
    store.path.write_text(text.replace("1.0.0", "1.0"))
    with pytest.raises(FormatError):
        store.check("geheim-pilot", "2.0.0", D1)
    store.path.write_text("")
    with pytest.raises(FormatError):
        store.get("geheim-pilot")


def test_record_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for i in range(5):
        store.record("geheim-pilot", f"1.0.{i}", D1)
    names = sorted(os.listdir(tmp_path))
    assert names == ["state.json", "state.lock"]
    doc = json.loads(store.path.read_text())
    assert doc["_type"] == "airgap-state" and doc["bundles"]["geheim-pilot"]["version"] == "1.0.4"


def test_reader_does_not_create_state_dir(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "missing")
    assert store.get("x") is None
    store.check("x", "1.0.0", D1)
    assert not (tmp_path / "missing").exists()
