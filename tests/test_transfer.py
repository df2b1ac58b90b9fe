"""Resumable SFTP transfer against a real sshd on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from airgap.exceptions import KeyFileError, OutputExistsError, RejectedError, TransferError, UsageError
from airgap.media import open_bundle
from airgap.split import split
from airgap.transfer import parse_destination, transfer

SIZE = 6 * 1024 * 1024 + 12345


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
def bundle(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "geheim-pilot-1.0.0.tar"
    path.write_bytes(payload)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _send(sshd, src, remote, **kw):
    kw.setdefault("retry_delay", 0.05)
    return transfer(src, sshd.url(remote), identity=sshd.identity, known_hosts=sshd.known_hosts, **kw)


def test_parse_destination() -> None:
    d = parse_destination("ssh://op@127.0.0.1:2222/srv/in%20box")
    assert (d.user, d.host, d.port, d.path) == ("op", "127.0.0.1", 2222, "/srv/in box")
    assert parse_destination("ssh://op@host/srv/").port == 22
    assert parse_destination("/mnt/usb").host is None
    assert parse_destination("file:///mnt/usb").path == "/mnt/usb"
    for bad in ("ssh://op@host", "ssh://op:pw@host/x", "http://host/x", "ssh:///x"):
        with pytest.raises(UsageError):
            parse_destination(bad)


def test_end_to_end(sshd, bundle: Path, payload: bytes, tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "inbox"  # created on the server side
    seen: list[tuple[str, int, int]] = []
    [result] = _send(sshd, bundle, remote, progress=lambda *a: seen.append(a))
    assert (remote / bundle.name).read_bytes() == payload
    assert not (remote / f"{bundle.name}.partial").exists()
    assert result.sha256 == _sha(payload) and result.size == SIZE
    assert result.resumed_from == 0 and not result.skipped and result.hash_method == "exec"
    assert seen[0] == (bundle.name, 0, SIZE) and seen[-1] == (bundle.name, SIZE, SIZE)

    # A second run finds the complete file and sends nothing.
    [again] = _send(sshd, bundle, remote, remote_hash="sftp")
    assert again.skipped and again.hash_method == "sftp"


def test_sftp_readback_hashing(sshd, bundle: Path, payload: bytes, tmp_path: Path) -> None:
    [result] = _send(sshd, bundle, tmp_path / "r", remote_hash="sftp")
    assert result.hash_method == "sftp"
    assert (tmp_path / "r" / bundle.name).read_bytes() == payload


def test_sftp_only_server_falls_back_to_readback(sshd_sftp_only, bundle: Path, payload: bytes, tmp_path: Path) -> None:
    [result] = _send(sshd_sftp_only, bundle, tmp_path / "r")
    assert result.hash_method == "sftp"
    assert (tmp_path / "r" / bundle.name).read_bytes() == payload
    os.unlink(tmp_path / "r" / bundle.name)
    with pytest.raises(TransferError, match="remote_hash='exec'"):
        _send(sshd_sftp_only, bundle, tmp_path / "r", remote_hash="exec")


def test_refuses_to_overwrite_different_content(sshd, bundle: Path, tmp_path: Path) -> None:
    remote = tmp_path / "r"
    remote.mkdir()
    (remote / bundle.name).write_bytes(b"something else")
    with pytest.raises(OutputExistsError, match="exists with different content: add --force to overwrite"):
        _send(sshd, bundle, remote)
    assert (remote / bundle.name).read_bytes() == b"something else"
    [result] = _send(sshd, bundle, remote, force=True)
    assert (remote / bundle.name).read_bytes() == bundle.read_bytes() and not result.skipped


def test_directory_of_parts(sshd, bundle: Path, payload: bytes, tmp_path: Path) -> None:
    media = tmp_path / "media"
    index = split(bundle, media, "2M")
    order: list[str] = []
    results = _send(sshd, media, tmp_path / "r", progress=lambda n, d, t: order.append(n) if d == 0 else None)
    assert [r.name for r in results] == [p.name for p in index.parts] + [f"{bundle.name}.parts.json"]
    assert order[-1].endswith(".parts.json")  # the index arrives last
    with open_bundle(tmp_path / "r") as reader:
        assert reader.read() == payload


def test_unknown_host_key_is_refused(sshd, bundle: Path, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    expected = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(sshd.host_key_pub)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    with pytest.raises(RejectedError) as err:
        transfer(bundle, sshd.url(tmp_path / "r"), identity=sshd.identity, known_hosts=empty)
    assert err.value.artifact == f"127.0.0.1:{sshd.port}"
    assert expected in err.value.reason and "unknown host key" in err.value.reason
    assert not (tmp_path / "r").exists()
    assert empty.read_text() == ""


def test_accept_new_host_key_records_it(sshd, bundle: Path, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    transfer(bundle, sshd.url(tmp_path / "r"), identity=sshd.identity, known_hosts=kh, accept_new_host_key=True)
    assert kh.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    # From now on the key is known; no acceptance needed.
    [r] = transfer(bundle, sshd.url(tmp_path / "r"), identity=sshd.identity, known_hosts=kh)
    assert r.skipped


def test_changed_host_key_is_refused_even_with_accept_new(sshd, bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    with pytest.raises(RejectedError, match="does not match"):
        transfer(bundle, sshd.url(tmp_path / "r"), identity=sshd.identity, known_hosts=kh, accept_new_host_key=True)


def test_only_the_given_identity_is_used(sshd, bundle: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(TransferError, match="refused with identity"):
        transfer(bundle, sshd.url(tmp_path / "r"), identity=stranger, known_hosts=sshd.known_hosts, retry_delay=0.05)
    with pytest.raises(KeyFileError):
        transfer(bundle, sshd.url(tmp_path / "r"), identity=tmp_path / "nope", known_hosts=sshd.known_hosts)


def _stop_once(action, at: int = 3 * 1024 * 1024):
    fired = []

    def progress(name: str, done: int, total: int) -> None:
        if done >= at and not fired:
            fired.append(done)
            action()

    return progress


def test_sshd_stopped_mid_transfer_then_rerun_resumes(sshd, bundle: Path, payload: bytes, tmp_path: Path) -> None:
    remote = tmp_path / "r"
    with pytest.raises(TransferError, match="rerun to resume"):
        _send(sshd, bundle, remote, progress=_stop_once(sshd.stop), retries=2)
    partial = remote / f"{bundle.name}.partial"
    kept = partial.stat().st_size
    assert 0 < kept < SIZE
    assert not (remote / bundle.name).exists()

    sshd.start()
    [result] = _send(sshd, bundle, remote)
    assert result.resumed_from == kept
    assert result.sha256 == _sha(payload)
    assert _sha((remote / bundle.name).read_bytes()) == _sha(payload)
    assert not partial.exists()


def test_dropped_connection_is_retried_within_one_call(sshd, bundle: Path, payload: bytes, tmp_path: Path) -> None:
    remote = tmp_path / "r"
    [result] = _send(sshd, bundle, remote, progress=_stop_once(sshd.drop_connections))
    assert 0 < result.resumed_from < SIZE
    assert (remote / bundle.name).read_bytes() == payload
    assert not (remote / f"{bundle.name}.partial").exists()


def test_damaged_partial_prefix_is_resent(sshd, bundle: Path, payload: bytes, tmp_path: Path) -> None:
    remote = tmp_path / "r"
    remote.mkdir()
    damaged = bytearray(payload[: 2 * 1024 * 1024])
    damaged[1000] ^= 0xFF
    (remote / f"{bundle.name}.partial").write_bytes(bytes(damaged))
    for method in ("exec", "sftp"):
        [result] = _send(sshd, bundle, remote, remote_hash=method)
        assert result.resumed_from == 0
        assert (remote / bundle.name).read_bytes() == payload
        os.unlink(remote / bundle.name)
        (remote / f"{bundle.name}.partial").write_bytes(bytes(damaged))


def test_local_destination_resumes(bundle: Path, payload: bytes, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / f"{bundle.name}.partial").write_bytes(payload[:1_000_000])
    [result] = transfer(bundle, str(usb))
    assert result.resumed_from == 1_000_000 and result.hash_method == "local"
    assert (usb / bundle.name).read_bytes() == payload
    assert sorted(os.listdir(usb)) == [bundle.name]


def test_partial_gone_after_upload_is_named_missing(bundle: Path, payload: bytes, tmp_path: Path) -> None:
    """The .partial vanishing between the last write and the size check (media pulled, another
    process) is a dropped transfer; the message says it is missing, not "None bytes"."""
    usb = tmp_path / "usb"
    usb.mkdir()
    partial = usb / f"{bundle.name}.partial"

    def progress(name: str, done: int, total: int) -> None:
        if done == total and partial.exists():
            partial.unlink()

    with pytest.raises(TransferError) as exc:
        transfer(bundle, str(usb), progress=progress, retries=0, retry_delay=0)
    assert f"{bundle.name}.partial: missing after upload, expected {len(payload)} bytes" in str(exc.value)
    assert "None" not in str(exc.value)
