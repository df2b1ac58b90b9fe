"""Rollback state: semver precedence, equal versions with other content, atomic records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airgap.exceptions import FormatError, RollbackError
from airgap.state import PolicyRef, SemVer, State, StateStore, compare_versions

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


def _manifest(name="geheim-pilot", version="1.0.0", digest=D1, created="2025-01-01T00:00:00Z", tags=(), files=()):
    """The fields of a BundleManifest that rollback reads."""
    images = [SimpleNamespace(destination=repo, tag=tag, digest=content) for repo, tag, content in tags]
    members = [SimpleNamespace(path=path, sha256=sha) for path, sha in files]
    return SimpleNamespace(name=name, version=version, digest=digest, created=created, images=images, members=members)


def _state() -> State:
    return State((1, "a" * 64), PolicyRef(1, "b" * 64))


def test_first_acceptance_and_reimport() -> None:
    s0 = _state()
    s0.check(_manifest())  # nothing recorded: fine
    s1 = s0.accept(_manifest(), time="2025-02-01T00:00:00Z")
    rec = s1.bundles["geheim-pilot"]
    assert (rec.version, rec.manifest_digest, rec.created, rec.time) == ("1.0.0", D1, "2025-01-01T00:00:00Z",
                                                                         "2025-02-01T00:00:00Z")
    s1.check(_manifest())  # re-import of the same content
    assert s1.accept(_manifest(), time="2030-01-01T00:00:00Z").bundles["geheim-pilot"] == rec  # time unchanged
    assert s0.bundles == {}  # accept() returns a new state


def test_lower_version_is_rollback() -> None:
    s = _state().accept(_manifest(version="1.1.0"))
    with pytest.raises(RollbackError) as err:
        s.check(_manifest(version="1.0.0", digest=D2))
    assert err.value.artifact == "bundle geheim-pilot 1.0.0"
    assert err.value.reason == "older than accepted version 1.1.0"
    with pytest.raises(RollbackError):
        s.check(_manifest(version="1.1.0-rc.1", digest=D2))
    with pytest.raises(RollbackError):
        s.accept(_manifest(version="1.0.9", digest=D2))


def test_equal_version_other_content_is_rejected() -> None:
    s = _state().accept(_manifest())
    with pytest.raises(RollbackError) as err:
        s.check(_manifest(digest=D2))
    assert err.value.reason == f"version 1.0.0 was already accepted with different content {D1}"
    # Build metadata does not make a new version.
    with pytest.raises(RollbackError, match="different content"):
        s.check(_manifest(version="1.0.0+rebuild", digest=D2))
    s.check(_manifest(version="1.0.0+rebuild"))


def test_higher_version_moves_forward_and_names_are_independent() -> None:
    s = _state().accept(_manifest(version="1.0.0-rc.1"))
    s = s.accept(_manifest(version="1.0.0", digest=D2))
    s = s.accept(_manifest(name="other", version="0.1.0"))
    assert s.bundles["geheim-pilot"].version == "1.0.0"
    assert sorted(s.bundles) == ["geheim-pilot", "other"]


def test_malformed_inputs_are_refused() -> None:
    with pytest.raises(FormatError):
        _state().check(_manifest(version="1.0"))
    with pytest.raises(FormatError):
        _state().check(_manifest(digest="sha256:" + "A" * 64))


T1, T2, T3 = "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"
TAG = ("registry.example/pilot/status", "1.0")
IMG1, IMG2 = "sha256:" + "c" * 64, "sha256:" + "d" * 64


@pytest.mark.parametrize("first,second,ok", [
    (("pilot", "1.1.0", T2), ("hotfix", "1.0.0", T1), False),  # another name, built earlier: refused
    (("pilot", "1.1.0", T2), ("hotfix", "1.0.0", T3), True),  # another name, built later: moves forward
    (("pilot", "1.0.0", T2), ("pilot", "1.0.1", T1), True),  # the same name moving forward (a backport)
    (("pilot", "1.1.0", T2), ("hotfix", "1.0.0", T2), True),  # built at the same time: not earlier
])
def test_a_tag_moves_only_forward_across_names(first, second, ok) -> None:
    (n1, v1, c1), (n2, v2, c2) = first, second
    s = _state().accept(_manifest(n1, v1, D1, c1, tags=[(*TAG, IMG1)]))
    newer = _manifest(n2, v2, D2, c2, tags=[(*TAG, IMG2)])
    if ok:
        assert s.accept(newer).destinations[f"tag {TAG[0]}:{TAG[1]}"].name == n2
        return
    with pytest.raises(RollbackError) as err:
        s.check(newer)
    assert err.value.artifact == f"tag {TAG[0]}:{TAG[1]}"
    for text in (f"{n1} {v1}", c1, f"{n2} {v2}", c2, IMG2):
        assert text in err.value.reason


def test_same_content_is_not_a_move_and_keeps_the_newer_setter() -> None:
    s = _state().accept(_manifest("pilot", "1.1.0", D1, T2, tags=[(*TAG, IMG1)], files=[("files/a.conf", "e" * 64)]))
    older = _manifest("hotfix", "1.0.0", D2, T1, tags=[(*TAG, IMG1)], files=[("files/a.conf", "e" * 64)])
    with pytest.raises(RollbackError) as err:  # same tag and file content, but files/current would move back
        s.check(older)
    assert err.value.artifact == "files/current"
    tags_only = _manifest("hotfix", "1.0.0", D2, T1, tags=[(*TAG, IMG1)])
    after = s.accept(tags_only)
    assert after.destinations[f"tag {TAG[0]}:{TAG[1]}"].name == "pilot"  # still set by the newer build


@pytest.mark.parametrize("path", ["files/configs/pilot.conf", "files/wheels/airgap-0.1.0-py3-none-any.whl"])
def test_a_file_moves_only_forward_across_three_names(path) -> None:
    s = _state().accept(_manifest("pilot", "1.0.0", D1, T1, files=[(path, "1" * 64)]))
    s = s.accept(_manifest("extra", "2.0.0", D2, T3, files=[(path, "2" * 64)]))
    third = _manifest("hotfix", "1.0.0", "sha256:" + "3" * 64, T2, files=[(path, "3" * 64)])
    with pytest.raises(RollbackError) as err:
        s.check(third)
    assert err.value.artifact in (f"file {path}", "files/current")
    assert "extra 2.0.0" in err.value.reason and T3 in err.value.reason and T2 in err.value.reason


def test_state_file_round_trips_and_is_parsed_strictly(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    s = _state().accept(_manifest(tags=[(*TAG, IMG1)], files=[("files/x", "f" * 64)]))
    store.write(s)
    assert store.load() == s
    text = store.path.read_text()
    store.path.write_text(text.replace('"version":2', '"version":2,"version":2'))
    with pytest.raises(FormatError, match="duplicate"):
        store.load()
    store.path.write_text(text.replace("1.0.0", "1.0"))
    with pytest.raises(FormatError):
        store.load()
    store.path.write_text(text.replace('"version":2', '"version":1'))
    with pytest.raises(FormatError, match="without anchored state"):
        store.load()
    store.path.write_text("")
    with pytest.raises(FormatError):
        store.load()


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    s = _state()
    for i in range(5):
        s = s.accept(_manifest(version=f"1.0.{i}", digest="sha256:" + str(i) * 64))
        store.write(s)
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    doc = json.loads(store.path.read_text())
    assert doc["_type"] == "airgap-state" and doc["bundles"]["geheim-pilot"]["version"] == "1.0.4"
    assert doc["audit"] == {"seq": 1, "head": "a" * 64}


def test_reader_does_not_create_state_dir(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "missing")
    with store.lock(shared=True):
        assert store.load() is None
    assert not (tmp_path / "missing").exists()
