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


# --- header bytes verify used to ignore and other readers use (issue 8, finding 2) ---------


def _patched(bundle: Path, member: str, offset: int, data: bytes) -> bytes:
    """Overwrite bytes of *member*'s header and recompute its checksum (so that field is the only
    defect); returns the original header."""
    import tarfile

    with tarfile.open(bundle) as tf:
        header_at = tf.getmember(member).offset
    with open(bundle, "r+b") as f:
        f.seek(header_at)
        block = bytearray(f.read(512))
        original = bytes(block)
        block[offset:offset + len(data)] = data
        block[148:156] = b" " * 8
        block[148:156] = format(sum(block), "06o").encode() + b"\0 "
        f.seek(header_at)
        f.write(bytes(block))
    return original


HEADER_ATTACKS = {
    # field: (offset in the header, bytes, what the refusal names)
    "size-gnu-base64": (124, b"+0000000014\0", "field size"),
    "size-plus-octal": (124, b"+0000000001\0", "field size"),
    "size-0o": (124, b"0o000000001\0", "field size"),
    "size-negative-base256": (124, b"\xff" * 12, "field size"),
    "mode-underscore": (100, b"0_00644\0", "field mode"),
    "uid": (108, b"0001750\0", "field uid"),
    "gid-no-nul": (116, b"00000000", "field gid"),
    "mtime": (136, b"14712345670\0", "field mtime"),
    "uname": (265, b"root", "field uname"),
    "gname": (297, b"wheel", "field gname"),
    "devmajor": (329, b"0000010\0", "field devmajor"),
    "name-after-nul": (99, b"X", "field name"),
    "prefix-after-nul": (346, b"evil", "field prefix"),
    "pad": (500, b"hidden", "field pad"),
}


@pytest.mark.parametrize("case", sorted(HEADER_ATTACKS))
def test_header_bytes_other_readers_use_are_refused(tmp_path, signed_bundle, case):
    offset, data, needle = HEADER_ATTACKS[case]
    bundle = signed_bundle.copy(tmp_path)
    member = "files/configs/pilot.conf"
    _patched(bundle, member, offset, data)
    r = airgap("verify", bundle, "--trust", signed_bundle.trust)
    assert r.code == 1, (case, r.out, r.err)
    assert member in r.err and needle in r.err, (case, r.err)


def test_gnu_base64_size_is_a_real_differential_and_is_refused(tmp_path, signed_bundle):
    """The finding's attack: a '+' size that tarfile reads as octal and GNU tar as base-64."""
    import subprocess
    import tarfile

    bundle = signed_bundle.copy(tmp_path)
    member = "files/configs/pilot.conf"
    with tarfile.open(bundle) as tf:
        size = tf.getmember(member).size
    _patched(bundle, member, 124, b"+" + format(size, "010o").encode() + b"\0")
    with tarfile.open(bundle) as tf:
        assert tf.getmember(member).size == size  # tarfile: int(x, 8), the old reader's view
    gnu = subprocess.run(["tar", "-tvf", str(bundle)], capture_output=True, text=True, timeout=60)
    assert "base-64" in gnu.stderr  # GNU tar reads another size
    r = airgap("verify", bundle, "--trust", signed_bundle.trust)
    assert r.code == 1 and member in r.err and "field size" in r.err, r.err


# --- names that lie on a terminal (issue 8, finding 8) ----------------------------------


UNPRINTABLE = {
    "escape": "\x1b[2J",
    "c1-csi": "\x9b31m",
    "rlo": "\u202e",
    "lri": "\u2066",
    "rlm": "\u200f",
    "alm": "\u061c",
    "line-separator": "\u2028",
}


@pytest.mark.parametrize("case", sorted(UNPRINTABLE))
def test_unprintable_member_name_is_refused(tmp_path, signed_bundle, case):
    bundle = kit.evil_tar(tmp_path / "evil.tar", [MANIFEST, (f"files/report{UNPRINTABLE[case]}gnp.exe", b"x", 0o644, b"0", b"")])
    r = airgap("verify", bundle, "--trust", signed_bundle.trust)
    assert r.code == 1, (case, r.err)
    assert "member name" in r.err and ("control" in r.err or "separator" in r.err), r.err
    assert UNPRINTABLE[case] not in r.err + r.out  # the refusal itself shows it escaped


def _resigned_manifest(signed_bundle, tmp_path, edit, *, signers=("builder-1", "officer-1")) -> Path:
    entries = kit.read_entries(signed_bundle.path)
    keys = [signed_bundle.keyring[k] for k in signers]
    return kit.write_entries(tmp_path / "x.tar", kit.refresh_manifest(entries, keys, edit=edit))


_LIES = "can show one thing and mean another"
# C0 controls cannot even be written: canonical JSON does not escape them, and raw they are not JSON.
_RAW_C0 = "invalid JSON: Invalid control character"
METADATA = {
    "description-rlo": (lambda d: d.update(description="approved \u202egnp.exe"), f"description approved \\u202egnp.exe {''}"),
    "description-del-c1": (lambda d: d.update(description="ok\x7f\x9b2J"), "manifest.json: description"),
    "description-escape": (lambda d: d.update(description="ok\x1b]0;pwned\x07"), _RAW_C0),
    "ref-bidi": (lambda d: d["images"][0].update(ref=d["images"][0]["ref"] + "\u2067"), "manifest.json: images[0].ref"),
    "ref-c1": (lambda d: d["images"][1].update(ref="\x85" + d["images"][1]["ref"]), "manifest.json: images[1].ref"),
    "repository": (lambda d: d["images"][0].update(repository="pilot/\u202estatus"), "manifest.json: images[0].repository"),
    "layout-ref-isolate": (lambda d: d["images"][2].update(layout_ref=d["images"][2]["layout_ref"] + "\u2069"),
                           "manifest.json: images[2].layout_ref"),
    "spec-name": (lambda d: d["spec"].update(name="bundle\r.yaml"), _RAW_C0),
}


@pytest.mark.parametrize("case", sorted(METADATA))
def test_unprintable_metadata_is_refused_at_verify_and_inspect(tmp_path, signed_bundle, case):
    edit, needle = METADATA[case]
    bundle = _resigned_manifest(signed_bundle, tmp_path, edit)
    for r in (airgap("verify", bundle, "--trust", signed_bundle.trust), airgap("inspect", bundle)):
        assert r.code == 1, (case, r.out, r.err)
        assert "manifest.json" in r.err and needle.strip() in r.err, r.err
        assert needle == _RAW_C0 or _LIES in r.err, r.err


@pytest.mark.parametrize("field,value", [
    ("ref", "127.0.0.1:5000/pilot/status:1.0\u202e"),
    ("ref", "127.0.0.1:5000/pilot/\x1bstatus:1.0"),
    ("description", "pilot \u2066bundle"),
    ("description", "pilot\x9bbundle"),
])
def test_unprintable_spec_text_is_refused_at_build(tmp_path, keyring, field, value):
    from tests.helpers import write_spec

    if field == "ref":
        spec = write_spec(tmp_path / "spec", images=[value], files=None)
    else:
        spec = write_spec(tmp_path / "spec", images=[], extra={})
        import yaml

        doc = yaml.safe_load(spec.read_text())
        doc["metadata"]["description"] = value
        spec.write_text(yaml.safe_dump(doc, allow_unicode=True))
    r = airgap("build", spec, "-o", tmp_path / "b.tar", "--key", keyring.key_path("builder-1"))
    assert r.code == 2, r.err
    assert ("images[0].ref" if field == "ref" else "metadata.description") in r.err
    assert value not in r.err and not (tmp_path / "b.tar").exists()


def test_unusual_but_allowed_text_is_escaped_when_printed(tmp_path, signed_bundle):
    """Format characters that are not bidi controls (zero-width space, soft hyphen) pass in
    text and file names, and every verb shows them escaped, never raw.  (Image refs cannot
    carry them: a ref must be a valid reference, and import writes the name it says.)"""
    entries = kit.read_entries(signed_bundle.path)
    for e in entries:
        if e.name == "files/configs/pilot.conf":
            e.name = "files/configs/pi\u200blot.conf"
    keys = [signed_bundle.keyring["builder-1"]]
    bundle = kit.write_entries(tmp_path / "x.tar", kit.refresh_manifest(
        entries, keys, edit=lambda d: d.update(description="approved\u00adbundle\u200b")))
    r = airgap("inspect", bundle)
    assert r.code == 0, r.err
    assert "About     approved\\xadbundle\\u200b" in r.out
    assert "configs/pi\\u200blot.conf" in r.out and "\u200b" not in r.out and "\u00ad" not in r.out
    r = airgap("sign", bundle, "--key", signed_bundle.keyring.key_path("officer-1"), "--yes")
    assert r.code == 0, r.err
    assert "\u200b" not in r.out and "\u00ad" not in r.out
    r = airgap("diff", signed_bundle.path, bundle)
    assert "\u200b" not in r.out and "+ file  configs/pi\\u200blot.conf" in r.out, r.out


def test_verify_and_audit_show_escape_what_they_print(tmp_path, signed_bundle):
    """A bundle file named with a bidi override: accepted (a file name is not bundle content),
    but verify's report and the audit log show the name escaped."""
    bundle = tmp_path / "pilot-\u202erat.exe"
    bundle.write_bytes(signed_bundle.path.read_bytes())
    state = tmp_path / "state"
    r = airgap("verify", bundle, "--trust", signed_bundle.trust, "--state", state)
    assert r.code == 0, r.err
    evil = kit.evil_tar(tmp_path / "evil-\u202e.tar", [MANIFEST, ("files/\u202etxt.exe", b"x", 0o644, b"0", b"")])
    r = airgap("verify", evil, "--trust", signed_bundle.trust, "--state", state)
    assert r.code == 1 and "files/\\u202etxt.exe" in r.err and "\u202e" not in r.out + r.err, r.err
    r = airgap("audit", "show", "--state", state)
    assert r.code == 0 and "\u202e" not in r.out and "\\u202e" in r.out, r.out


@pytest.mark.parametrize("member", ["manifest.json", "files/configs/pilot.conf", "signatures.json"])
def test_non_zero_padding_is_refused(tmp_path, signed_bundle, member):
    """Padding is outside every hash: a byte there is data a reader of another dialect might use."""
    import tarfile

    bundle = signed_bundle.copy(tmp_path)
    with tarfile.open(bundle) as tf:
        m = tf.getmember(member)
    assert m.size % 512, "needs a member with padding"
    with open(bundle, "r+b") as f:
        f.seek(m.offset_data + m.size + (512 - m.size % 512) - 1)
        f.write(b"\x01")
    r = airgap("verify", bundle, "--trust", signed_bundle.trust)
    assert r.code == 1 and f"{member}: non-zero bytes in the padding" in r.err, r.err


def test_one_escape_for_everything_printed():
    from airgap._internal.text import check_printable, escape, refusal
    from airgap.exceptions import FormatError

    assert escape("pilot/status:1.0 caf\u00e9 \u4e2d") == "pilot/status:1.0 caf\u00e9 \u4e2d"
    assert escape("a\u202eb\x1b[2J\n\t\x9b\u200b\U000e0001") == "a\\u202eb\\x1b[2J\\n\\t\\x9b\\u200b\\U000e0001"
    for bad in ("\x00", "\x1f", "\x7f", "\x80", "\x9f", "\u061c", "\u200e", "\u200f", "\u2028", "\u2029",
                "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"):
        assert refusal(f"x{bad}y") is not None, hex(ord(bad))
        with pytest.raises(FormatError, match="position 1"):
            check_printable(f"x{bad}y", "manifest.json", "description")
    for good in ("\u200b", "\u00ad", "\u00a0", "\u00e9", "\u05d0"):  # escaped when printed, not refused
        assert refusal(f"x{good}y") is None
