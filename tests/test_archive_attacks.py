"""A corpus of malicious tars: each is refused with the member named, and nothing
is written anywhere (verify reads; it never extracts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import bundlekit as kit
from tests.helpers import airgap

MANIFEST = ("manifest.json", b"{}", 0o644, b"0", b"")


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


CORPUS = {
    "absolute-path": ([MANIFEST, ("/tmp/airgap-escape", b"x", 0o644, b"0", b"")], "absolute path"),
    "dot-dot": ([MANIFEST, ("files/../../escape", b"x", 0o644, b"0", b"")], "normalised"),
    "dot-segment": ([MANIFEST, ("files/./a", b"x", 0o644, b"0", b"")], "normalised"),
    "symlink": ([MANIFEST, ("files/link", b"", 0o777, b"2", b"/etc/passwd")], "symbolic link"),
    "symlink-then-write": ([MANIFEST, ("files/d", b"", 0o777, b"2", b"/tmp"), ("files/d/escape", b"x", 0o644, b"0", b"")], "symbolic link"),
    "hardlink": ([MANIFEST, ("files/h", b"", 0o644, b"1", b"/etc/shadow")], "hard link"),
    "char-device": ([MANIFEST, ("files/null", b"", 0o666, b"3", b"")], "character device"),
    "block-device": ([MANIFEST, ("files/sda", b"", 0o666, b"4", b"")], "block device"),
    "fifo": ([MANIFEST, ("files/fifo", b"", 0o644, b"6", b"")], "FIFO"),
    "directory": ([MANIFEST, ("files/dir", b"", 0o755, b"5", b"")], "directory"),
    "pax-header": ([MANIFEST, ("PaxHeader", b"30 path=/etc/cron.d/escape\n", 0o644, b"x", b"")], "PAX"),
    "gnu-longname": ([MANIFEST, ("././@LongLink", b"../../escape\0", 0o644, b"L", b"")], "GNU long name"),
    "setuid": ([MANIFEST, ("files/su", b"#!/bin/sh\n", 0o4755, b"0", b"")], "setuid"),
    "setgid": ([MANIFEST, ("files/sg", b"#!/bin/sh\n", 0o2755, b"0", b"")], "setuid/setgid"),
    "duplicate": ([MANIFEST, ("files/a", b"1", 0o644, b"0", b""), ("files/a", b"2", 0o644, b"0", b"")], "duplicate"),
    "case-collision": ([MANIFEST, ("files/Config", b"1", 0o644, b"0", b""), ("files/config", b"2", 0o644, b"0", b"")], "collides"),
    "unicode-collision": ([MANIFEST, ("files/\ufb01le", b"1", 0o644, b"0", b""), ("files/file", b"2", 0o644, b"0", b"")], "collides"),
    "not-nfc": ([MANIFEST, ("files/A\u030angstrom", b"1", 0o644, b"0", b"")], "NFC"),
    "file-then-dir": ([MANIFEST, ("files/a", b"1", 0o644, b"0", b""), ("files/a/b", b"2", 0o644, b"0", b"")], "runs through"),
    "backslash": ([MANIFEST, ("files\\..\\escape", b"x", 0o644, b"0", b"")], "backslash"),
    "control-chars": ([MANIFEST, ("files/a\nb", b"x", 0o644, b"0", b"")], "control"),
    "first-not-manifest": ([("files/a", b"1", 0o644, b"0", b""), MANIFEST], "first member"),
    "no-signatures": ([MANIFEST, ("files/a", b"1", 0o644, b"0", b"")], "last member"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_malicious_tar_is_rejected_and_writes_nothing(tmp_path, signed_bundle, case):
    members, reason = CORPUS[case]
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    bundle = kit.evil_tar(quarantine / "evil.tar", members)
    before = snapshot(tmp_path)
    cwd = os.getcwd()
    os.chdir(quarantine)
    try:
        r = airgap("verify", bundle, "--trust", signed_bundle.trust, "--json")
    finally:
        os.chdir(cwd)
    assert r.code == 1, (case, r.out, r.err)
    assert reason in r.err or reason in r.out, (case, r.err)
    assert snapshot(tmp_path) == before
    # import: the same refusal, before any file is unpacked; only its own state
    # (lock, audit entry of the refusal) appears, inside the quarantine directory.
    os.chdir(quarantine)
    try:
        r = airgap("import", bundle, "--trust", signed_bundle.trust, "--registry", "127.0.0.1:9", "--plain-http",
                   "--state", quarantine / "state", "--files-dir", quarantine / "files")
    finally:
        os.chdir(cwd)
    assert r.code == 1, (case, r.err)
    assert reason in r.err, (case, r.err)
    outside = {p for p in snapshot(tmp_path) if not p.startswith("quarantine/state")}
    assert outside == before
    assert not Path("/tmp/airgap-escape").exists()


def test_huge_member_count_is_refused_early(tmp_path, signed_bundle):
    path = tmp_path / "many.tar"
    header_only = [kit.raw_header(f"files/{i:06d}", 0, 0o644) for i in range(100_000)]
    with open(path, "wb") as f:
        f.write(kit.raw_header("manifest.json", 2, 0o644) + b"{}" + b"\0" * 510)
        f.write(b"".join(header_only))
        f.write(b"\0" * 1024)
    r = airgap("verify", path, "--trust", signed_bundle.trust)
    assert r.code == 1
    assert "more than" in r.err and "members" in r.err


def test_endless_manifest_is_capped(tmp_path, signed_bundle):
    path = tmp_path / "endless.tar"
    size = 64 * 1024 * 1024
    with open(path, "wb") as f:
        f.write(kit.raw_header("manifest.json", size, 0o644))
        f.seek(512 + size)
        f.write(kit.raw_header("signatures.json", 0, 0o644) + b"\0" * 1024)
    r = airgap("verify", path, "--trust", signed_bundle.trust)
    assert r.code == 1
    assert "manifest.json" in r.err and "cap" in r.err


def test_size_field_past_end_of_file(tmp_path, signed_bundle):
    path = tmp_path / "short.tar"
    with open(path, "wb") as f:
        f.write(kit.raw_header("manifest.json", 10**9, 0o644) + b"\0" * 1024)
    r = airgap("verify", path, "--trust", signed_bundle.trust)
    assert r.code == 1 and "truncated" in r.err


def test_python_tarfile_archive_with_directories_is_refused(tmp_path, signed_bundle):
    """A bundle re-packed with a general-purpose tar (directory entries, owners) is not ours."""
    import tarfile

    src = tmp_path / "x"
    kit_dir = src / "files"
    kit_dir.mkdir(parents=True)
    (kit_dir / "a").write_text("1")
    (src / "manifest.json").write_text("{}")
    path = tmp_path / "gnu.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(src / "manifest.json", "manifest.json")
        tf.add(kit_dir, "files")
    r = airgap("verify", path, "--trust", signed_bundle.trust)
    assert r.code == 1
