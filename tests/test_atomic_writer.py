"""fsutil.atomic_writer and read_capped: the one temp-then-rename write and the one capped read."""

from __future__ import annotations

import os

import pytest

from airgap._internal import fsutil
from airgap.exceptions import InputError, OutputExistsError, SpecError, UnsafePathError


def test_the_file_appears_only_when_the_block_ends(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with fsutil.atomic_writer(target, 0o640) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # nothing visible yet
        assert os.path.dirname(f.name) == str(tmp_path) and f.name != str(target)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_an_error_in_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fsutil.atomic_writer(target) as f:
        f.write(b"half")
        raise RuntimeError("a check failed")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_under_a_root_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError), fsutil.atomic_writer(tmp_path / "root" / "sub" / "x", root=tmp_path / "root") as f:
        f.write(b"x")
    assert os.listdir(tmp_path / "elsewhere") == []


@pytest.mark.parametrize("under_root", [False, True], ids=["path", "root"])
def test_without_overwrite_an_existing_file_is_kept(tmp_path, under_root):
    # --force's contract: an output nobody asked to replace is never lost, even
    # one that appeared after check_output looked (the file is linked into place).
    target = tmp_path / "sub" / "out.bin"
    target.parent.mkdir()
    root = tmp_path if under_root else None
    fsutil.atomic_write(target, b"first", root=root, overwrite=False)
    assert target.read_bytes() == b"first"
    with pytest.raises(OutputExistsError), fsutil.atomic_writer(target, root=root, overwrite=False) as f:
        f.write(b"second")
    assert target.read_bytes() == b"first"
    assert os.listdir(target.parent) == ["out.bin"]
    fsutil.atomic_write(target, b"third", root=root)  # overwrite is the default
    assert target.read_bytes() == b"third"


def test_read_capped(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    assert fsutil.read_capped(p, 10, "a thing") == b"x" * 10
    with pytest.raises(InputError, match=r"f: larger than 9 bytes, too large for a thing"):
        fsutil.read_capped(p, 9, "a thing")
    with pytest.raises(SpecError):
        fsutil.read_capped(p, 9, "a spec", too_large=lambda m: SpecError("", m))
    with pytest.raises(InputError, match="missing: cannot read a thing"):
        fsutil.read_capped(tmp_path / "missing", 9, "a thing")
