"""Reproducible toolkit wheels: the same commit gives the same bytes, wherever and however built.

Two builds of HEAD, in different temporary directories under different
umasks, must be byte-identical, and the wheel must be well formed (RECORD
hashes match, fixed entry order, times and modes), so that anyone holding a
release tag can rebuild the wheel and compare its sha256 with the toolkit
release statement.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import time
import zipfile
from pathlib import Path

from airgap import wheels
from tests.helpers import REPO


def _build(out: Path, umask: int) -> bytes:
    old = os.umask(umask)
    try:
        commit, epoch = wheels.commit_of(REPO, "HEAD")
        wheel = wheels.build_toolkit_wheel(REPO, out, ref=commit, epoch=epoch)
    finally:
        os.umask(old)
    return wheel.read_bytes()


def _script(out: Path, umask: int, ref: str = "HEAD") -> subprocess.CompletedProcess:
    """scripts/build-wheel.sh, the way an officer rebuilds a release."""
    return subprocess.run(["bash", str(REPO / "scripts/build-wheel.sh"), ref, "-o", str(out)], capture_output=True,
                          text=True, timeout=600, preexec_fn=lambda: os.umask(umask))


def test_two_builds_of_a_commit_are_byte_identical(tmp_path_factory):
    a = _build(tmp_path_factory.mktemp("build-a"), 0o022)
    out_b = tmp_path_factory.mktemp("elsewhere-b") / "deeper"
    proc = _script(out_b, 0o077)
    assert proc.returncode == 0, proc.stderr
    b = (out_b / "airgap-0.1.0-py3-none-any.whl").read_bytes()
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert a == b
    assert f"sha256 {hashlib.sha256(b).hexdigest()}" in proc.stdout

    _, epoch = wheels.commit_of(REPO, "HEAD")
    with zipfile.ZipFile(io.BytesIO(a)) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        # One fixed form: package files sorted, dist-info after them, RECORD last.
        assert names[-1] == "airgap-0.1.0.dist-info/RECORD"
        body = [n for n in names if ".dist-info/" not in n]
        assert body == sorted(body) and names[:len(body)] == body
        assert {i.date_time for i in infos} == {time.gmtime(epoch // 2 * 2)[:6]}  # zip: two-second steps
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        # The contents are untouched by the normalisation: RECORD still holds for every file.
        record = list(csv.reader(io.StringIO(z.read(names[-1]).decode())))
        assert {row[0] for row in record} == set(names)
        for path, digest, size in record:
            if path == names[-1]:
                continue
            data = z.read(path)
            algo, _, want = digest.partition("=")
            got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
            assert (got, len(data)) == (want, int(size)), path
        assert "Generator: setuptools (84.0.0)" in z.read("airgap-0.1.0.dist-info/WHEEL").decode()


def test_the_script_names_a_ref_it_cannot_build(tmp_path):
    proc = _script(tmp_path / "x", 0o022, "no-such-tag")
    assert proc.returncode == 2 and "no-such-tag" in proc.stderr and "git rev-parse" in proc.stderr
    assert not (tmp_path / "x").exists()
