"""Resumable upload of a bundle (or a directory of parts) over SFTP, or to a local directory.

Each file goes to ``<name>.partial`` and is renamed to ``<name>`` only after the
sha256 of the whole remote file equals the local one, so a file under its final
name is always complete.  A dropped connection is retried a few times; each
retry (and each later rerun) resumes from the remote ``.partial`` after
comparing the sha256 of the already-uploaded prefix on both sides, so a prefix
damaged in flight is re-sent instead of being built upon.

Remote hashing (``remote_hash``):

``"exec"``  run ``head -c N -- FILE | sha256sum`` on the server.  No data
            crosses the link again, but it needs a shell and coreutils there.
``"sftp"``  read the file back over SFTP and hash it locally.  Works with an
            SFTP-only account (``ForceCommand internal-sftp``) at the cost of a
            second pass over the link.
``"auto"``  (default) try ``exec`` once per connection; if the server refuses
            or answers something unusable, use ``sftp`` from then on.  The
            method used is reported in :attr:`TransferResult.hash_method`.

Host keys: only the given known_hosts file is consulted; an unknown key is
refused (RejectedError naming host and SHA256 fingerprint) unless
``accept_new_host_key`` is set, and a *changed* key is always refused.  Only
the given identity is offered: no agent, no ~/.ssh lookups.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import shlex
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, Protocol
from urllib.parse import unquote, urlsplit

import paramiko

from airgap._internal.fsutil import fsync_dir
from airgap._internal.text import plural
from airgap.exceptions import (
    InputError,
    IntegrityError,
    KeyFileError,
    OutputExistsError,
    RejectedError,
    TransferError,
    UsageError,
)

__all__ = [
    "CHUNK",
    "Destination",
    "HashMethod",
    "PARTIAL_SUFFIX",
    "Progress",
    "TransferResult",
    "fingerprint",
    "parse_destination",
    "transfer",
]

PARTIAL_SUFFIX = ".partial"
CHUNK = 256 * 1024
Progress = Callable[[str, int, int], None]
HashMethod = Literal["auto", "exec", "sftp"]


@dataclass(frozen=True)
class Destination:
    """Where files go: an SSH server's directory, or a local directory (``host`` is None)."""

    path: str
    host: str | None = None
    port: int = 22
    user: str | None = None

    def __str__(self) -> str:
        if self.host is None:
            return self.path
        return f"ssh://{self.user}@{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class TransferResult:
    """What happened to one file."""

    name: str
    size: int
    sha256: str
    resumed_from: int  # bytes already present and verified on the remote side
    skipped: bool  # the final file was already there with the same sha256
    hash_method: str  # "exec", "sftp" or "local"


def parse_destination(url: str) -> Destination:
    """Parse ``ssh://user@host:port/dir`` (or ``file:///dir`` / a plain path) into a Destination."""
    if url.startswith("ssh://"):
        parts = urlsplit(url)
        if not parts.hostname:
            raise UsageError(f"{url}: no host in destination URL")
        if parts.password is not None or parts.query or parts.fragment:
            raise UsageError(f"{url}: passwords, queries and fragments are not supported")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise UsageError(f"{url}: the remote directory must be an absolute path")
        try:
            port = parts.port or 22
        except ValueError:
            raise UsageError(f"{url}: invalid port") from None
        user = unquote(parts.username) if parts.username else _local_user()
        return Destination(path=str(PurePosixPath(path)), host=parts.hostname, port=port, user=user)
    if url.startswith("file://"):
        return Destination(path=unquote(urlsplit(url).path))
    if "://" in url:
        raise UsageError(f"{url}: only ssh:// and local paths are supported")
    return Destination(path=url)


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:…`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


# --- targets: the two kinds of destination behind one small interface --------


class _Sink(Protocol):
    """What the copy loop needs of a remote file: the SFTP file and _FsyncOnClose both fit."""

    def write(self, data: bytes, /) -> object: ...
    def close(self) -> None: ...


class _Target(Protocol):
    hash_method: str

    def size(self, name: str) -> int | None: ...
    def open_write(self, name: str, offset: int) -> _Sink: ...
    def sha256(self, name: str, length: int) -> str: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, name: str) -> None: ...
    def close(self) -> None: ...


class _Dropped(Exception):
    """The connection broke; retrying may help."""


def _hash_stream(fh: IO[bytes], length: int) -> str:
    digest = hashlib.sha256()
    left = length
    while left > 0:
        chunk = fh.read(min(CHUNK * 4, left))
        if not chunk:
            break  # shorter than asked: the digest cannot match, which is the point
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


class _LocalTarget:
    hash_method = "local"

    def __init__(self, directory: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self.dir / name).st_size
        except FileNotFoundError:
            return None

    def open_write(self, name: str, offset: int) -> _Sink:
        path = self.dir / name
        fh = open(path, "r+b" if offset else "wb")
        fh.truncate(offset)
        fh.seek(offset)
        return _FsyncOnClose(fh)

    def sha256(self, name: str, length: int) -> str:
        with open(self.dir / name, "rb") as fh:
            return _hash_stream(fh, length)

    def rename(self, src: str, dst: str) -> None:
        os.replace(self.dir / src, self.dir / dst)
        fsync_dir(self.dir)

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.dir / name)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        pass


class _FsyncOnClose:
    """A file whose close() also fsyncs: removable media lie about writes otherwise."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh

    def write(self, data: bytes) -> int:
        return self._fh.write(data)

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> _FsyncOnClose:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._fh.close()


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, accept_new: bool, known_hosts: Path, artifact: str):
        self.accept_new = accept_new
        self.known_hosts = known_hosts
        self.artifact = artifact

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise RejectedError(
                self.artifact,
                f"unknown host key {key.get_name()} {fingerprint(key)}; not in {self.known_hosts}",
            )
        # Trust on first use, recorded by appending one line: paramiko's own
        # save_host_keys rewrites the whole file, which can lose entries.
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n".encode("ascii")
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        client.get_host_keys().add(hostname, key.get_name(), key)


class _SFTPTarget:
    def __init__(
        self,
        dest: Destination,
        *,
        identity: Path,
        passphrase: str | None,
        known_hosts: Path,
        accept_new_host_key: bool,
        remote_hash: HashMethod,
        timeout: float,
    ):
        self.dest = dest
        self.artifact = f"{dest.host}:{dest.port}"
        self.mode = remote_hash
        self.hash_method = "exec" if remote_hash in ("auto", "exec") else "sftp"
        self._timeout = timeout
        try:
            pkey = paramiko.PKey.from_path(identity, passphrase)
        except paramiko.PasswordRequiredException:
            raise KeyFileError(f"{identity}: identity is encrypted; a passphrase is needed") from None
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise KeyFileError(f"{identity}: cannot load identity: {exc}") from None
        client = paramiko.SSHClient()
        if known_hosts.exists():
            try:
                client.load_host_keys(str(known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise InputError(f"{known_hosts}: cannot read known_hosts: {exc}") from None
        client.set_missing_host_key_policy(_HostKeyPolicy(accept_new_host_key, known_hosts, self.artifact))
        try:
            client.connect(
                hostname=dest.host,
                port=dest.port,
                username=dest.user,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise RejectedError(
                self.artifact,
                f"host key {exc.key.get_name()} {fingerprint(exc.key)} does not match {known_hosts} "
                f"(expected {fingerprint(exc.expected_key)}); possible man-in-the-middle",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransferError(f"{self.artifact}: {dest.user} refused with identity {identity}") from None
        except RejectedError:
            client.close()
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise _Dropped(f"cannot connect to {self.artifact}: {exc}") from None
        self.client = client
        try:
            self.sftp = client.open_sftp()
            self.sftp.get_channel().settimeout(timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise _Dropped(f"{self.artifact}: cannot start SFTP: {exc}") from None
        try:
            self._mkdirs(dest.path)
        except BaseException:
            client.close()
            raise

    def _path(self, name: str) -> str:
        return str(PurePosixPath(self.dest.path) / name)

    def _mkdirs(self, path: str) -> None:
        current = PurePosixPath("/")
        for part in PurePosixPath(path).parts[1:]:
            current = current / part
            try:
                st = self.sftp.stat(str(current))
            except FileNotFoundError:
                self.sftp.mkdir(str(current), 0o755)
                continue
            if not stat.S_ISDIR(st.st_mode or 0):
                raise TransferError(f"{self.dest}: {current} exists and is not a directory")

    def size(self, name: str) -> int | None:
        try:
            return self.sftp.stat(self._path(name)).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return None
            raise

    def open_write(self, name: str, offset: int) -> _Sink:
        path = self._path(name)
        fh = self.sftp.open(path, "r+b" if offset else "wb")
        if offset:
            fh.truncate(offset)
            fh.seek(offset)
        # Without pipelining every 32 KiB write waits a round trip; errors
        # still surface at close(), before the file is hashed and renamed.
        fh.set_pipelined(True)
        return fh

    def sha256(self, name: str, length: int) -> str:
        if self.mode != "sftp" and self.hash_method == "exec":
            digest = self._exec_sha256(name, length)
            if digest is not None:
                return digest
            if self.mode == "exec":
                raise TransferError(f"{self.artifact}: remote sha256sum failed and remote_hash='exec' was asked for")
            self.hash_method = "sftp"
        with self.sftp.open(self._path(name), "rb") as fh:
            fh.prefetch(length)
            return _hash_stream(fh, length)

    def _exec_sha256(self, name: str, length: int) -> str | None:
        cmd = f"head -c {int(length)} -- {shlex.quote(self._path(name))} | sha256sum"
        transport = self.client.get_transport()
        try:
            stdin, stdout, _stderr = self.client.exec_command(cmd)
            # An SFTP-only account (ForceCommand internal-sftp) runs an SFTP
            # server instead of our command; EOF on its stdin makes it exit
            # instead of waiting for us forever.
            stdin.channel.shutdown_write()
            # Hashing takes time on the far side; allow for a slow disk
            # (20 MiB/s) but never wait unboundedly on a dead link.
            stdout.channel.settimeout(self._timeout + length / (20 * 1024 * 1024))
            out = stdout.read(4096)
            status = stdout.channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if transport is not None and transport.is_active() and not isinstance(exc, (OSError, EOFError)):
                return None  # the server refused the exec request itself
            raise _Dropped(f"{self.artifact}: connection lost while hashing: {exc}") from None
        fields = out.split()
        if status != 0 or not fields or len(fields[0]) != 64:
            return None
        try:
            text = fields[0].decode("ascii")
            int(text, 16)
        except (UnicodeDecodeError, ValueError):
            return None
        return text.lower()

    def rename(self, src: str, dst: str) -> None:
        try:
            self.sftp.posix_rename(self._path(src), self._path(dst))
        except OSError as exc:
            if "posix-rename" not in str(exc) and "Operation unsupported" not in str(exc):
                raise
            self.sftp.rename(self._path(src), self._path(dst))

    def remove(self, name: str) -> None:
        try:
            self.sftp.remove(self._path(name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.client.close()


# --- the algorithm ----------------------------------------------------------

_NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException, socket.timeout)
# Errors the server reports about the file system, not the link: retrying
# cannot fix a full disk or a missing permission.
_FATAL_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR})


def _send_one(target: _Target, src: Path, dest: Destination, progress: Progress | None,
              force: bool = False) -> TransferResult:
    name = src.name
    partial = name + PARTIAL_SUFFIX
    try:
        fh = open(src, "rb")
    except OSError as exc:
        raise InputError(f"{src}: cannot read: {exc.strerror}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size

        existing = target.size(name)
        if existing is not None:
            local = _hash_stream(fh, size)
            if existing == size and target.sha256(name, size) == local:
                if progress:
                    progress(name, size, size)
                return TransferResult(name, size, local, size, True, target.hash_method)
            if not force:
                raise OutputExistsError(f"{dest}/{name}", "with different content")
            fh.seek(0)  # hashed above; sent from the start below

        offset = target.size(partial) or 0
        digest = hashlib.sha256()
        if offset > size:
            offset = 0  # the partial belongs to some other, larger file
        if offset:
            left = offset
            while left:
                chunk = fh.read(min(CHUNK * 4, left))
                if not chunk:
                    raise InputError(f"{src}: file shrank while being read")
                digest.update(chunk)
                left -= len(chunk)
            if target.sha256(partial, offset) != digest.hexdigest():
                # The prefix on the remote side is not ours (or was damaged):
                # start over rather than append to it.
                offset = 0
                digest = hashlib.sha256()
                fh.seek(0)
        resumed_from = offset

        out = target.open_write(partial, offset)
        try:
            done = offset
            if progress:
                progress(name, done, size)
            while chunk := fh.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(name, done, size)
        finally:
            out.close()
        if done != size:
            raise InputError(f"{src}: file changed size while being sent")

    local = digest.hexdigest()
    remote_size = target.size(partial)
    if remote_size is None:
        raise _Dropped(f"{dest}/{partial}: missing after upload, expected {plural(size, 'byte')}")
    if remote_size != size:
        raise _Dropped(f"{dest}/{partial}: {plural(remote_size, 'byte')} after upload, expected {size}")
    remote = target.sha256(partial, size)
    if remote != local:
        target.remove(partial)
        raise IntegrityError(f"{dest}/{name}", f"remote sha256 {remote} does not match local {local}; removed")
    target.rename(partial, name)
    return TransferResult(name, size, local, resumed_from, False, target.hash_method)


def _sources(local_path: Path) -> list[Path]:
    if local_path.is_dir():
        files = [
            p
            for p in local_path.iterdir()
            if not p.name.startswith(".") and not p.is_symlink() and p.is_file()
        ]
        if not files:
            raise InputError(f"{local_path}: no files to transfer")
        # Part indexes and signatures go last: their arrival tells the other
        # side that the parts they describe are complete.
        return sorted(files, key=lambda p: (".parts.json" in p.name, p.name))
    if local_path.is_file():
        return [local_path]
    raise InputError(f"{local_path}: no such file or directory")


def transfer(
    local_path: str | os.PathLike[str],
    url: str,
    *,
    identity: str | os.PathLike[str] | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    accept_new_host_key: bool = False,
    progress: Progress | None = None,
    passphrase: str | None = None,
    remote_hash: HashMethod = "auto",
    retries: int = 3,
    retry_delay: float = 2.0,
    timeout: float = 30.0,
    force: bool = False,
) -> list[TransferResult]:
    """Send a file, or every file of a directory, to *url*; resume and verify by sha256.

    *progress* is called as ``progress(name, bytes_done, bytes_total)``.
    A file already at the destination with the same sha256 is skipped; one with
    other content is replaced only with *force*.
    Raises RejectedError for host key problems, TransferError when the
    connection keeps failing (a rerun resumes), IntegrityError when the remote
    copy does not hash to the local one.
    """
    src = Path(local_path)
    dest = parse_destination(url)
    files = _sources(src)
    if remote_hash not in ("auto", "exec", "sftp"):
        raise UsageError(f"remote_hash must be auto, exec or sftp, not {remote_hash!r}")

    def connect() -> _Target:
        if dest.host is None:
            return _LocalTarget(dest.path)
        if identity is None or known_hosts is None:
            raise UsageError("an ssh:// destination needs an identity and a known_hosts file")
        return _SFTPTarget(
            dest,
            identity=Path(identity),
            passphrase=passphrase,
            known_hosts=Path(known_hosts),
            accept_new_host_key=accept_new_host_key,
            remote_hash=remote_hash,
            timeout=timeout,
        )

    results: list[TransferResult] = []
    target: _Target | None = None
    try:
        for path in files:
            failures = 0
            while True:
                try:
                    if target is None:
                        target = connect()
                    results.append(_send_one(target, path, dest, progress, force))
                    break
                except (_Dropped, *_NETWORK_ERRORS) as exc:
                    if isinstance(exc, OSError) and exc.errno in _FATAL_ERRNOS:
                        raise TransferError(f"{dest}/{path.name}: {exc}") from None
                    if target is not None:
                        _close_quietly(target)
                        target = None
                    failures += 1
                    if failures > retries:
                        raise TransferError(
                            f"{dest}/{path.name}: connection lost {failures} times ({exc}); "
                            "rerun to resume from the remote .partial"
                        ) from None
                    time.sleep(retry_delay * failures)
    finally:
        if target is not None:
            _close_quietly(target)
    return results


def _close_quietly(target: _Target) -> None:
    try:
        target.close()
    except Exception:  # the connection is already gone; nothing left to release
        pass
