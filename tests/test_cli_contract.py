"""One contract for every verb, held by a table.

* Exit codes: 0 done or accepted, 1 rejected or failed, 2 usage or input error.
  Every verb (listed from the parser, so a new verb without rows fails) has at
  least one row per code its ``--help`` epilog names, plus the cases a newcomer
  met: ``trust init`` without ``--root``, a threshold above the key count,
  ``--expires 1year``, a private key as ``--root``, ``inspect --trust`` given a
  tar, a missing input, an unreadable one, a bad flag value.
* Only :class:`AirgapError` leaves a verb's library call (argparse's SystemExit
  aside): the rows run ``args.func`` directly, so any other exception fails;
  and every file or directory a verb's accepted row reads is replaced by a
  missing path, a directory, an empty file and garbage, with the same rule.
* Each verb's parser is built alone (``main`` builds only the verb it runs) and
  equals that verb of the whole parser.
* ``--quiet`` leaves at most the result line; ``--force`` is needed to replace
  any output; every argument has help text.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airgap.cli import _all_verbs, build_parser, report_error
from airgap.exceptions import AirgapError
from tests.fixtures.keys import TARGET, make_policy
from tests.helpers import PASSPHRASE, REPO, Result, write_spec

# --------------------------------------------------------------------------- the world the rows act on


@dataclass
class World:
    k: object  # tests.fixtures.keys.Keyring
    dir: Path
    trust: Path  # root 2 of 3 (signed by root-1 and root-2), builder-1..2, officer-1..2
    spec: Path  # files only: no registry needed to build it
    bundle: Path  # builder-1 and officer-1 signed
    builder_only: Path
    registry: str  # a real registry (plain HTTP) for import and inventory
    half_signed: Path = field(init=False)  # root signed by 1 of 2
    other_target: Path = field(init=False)
    damaged_policy: Path = field(init=False)  # JSON policy with a schema violation
    a_tar: Path = field(init=False)  # a tar that is no bundle and no policy
    garbage: Path = field(init=False)
    log: Path = field(init=False)  # an intact audit log with two entries
    platform: Path = field(init=False)  # an image, a workload running it and an OS package; signed
    platform_builder_only: Path = field(init=False)
    toolkit_trust: Path = field(init=False)  # the same policy with a toolkit role (toolkit-1)
    wheels: Path = field(init=False)  # wheels with a complete toolkit release statement

    def key(self, name: str) -> Path:
        return self.k.key_path(name)

    def pub(self, name: str) -> Path:
        return self.k.pub_path(name)

    def keyid(self, name: str) -> str:
        return self.k.pub(name).keyid[:8]

    def copy(self, t: Path, src: Path, name: str | None = None) -> Path:
        dest = t / (name or src.name)
        shutil.copyfile(src, dest)
        return dest

    def media(self, t: Path) -> Path:
        from airgap.split import split

        split(self.bundle, t / "media", "8K")
        return t / "media"

    def init_args(self, out: Path, *extra: str | Path) -> list:
        return ["trust", "init", "--target", TARGET, "--expires", "365d",
                "--root", self.pub("root-1"), "--builder", self.pub("builder-1"), "--officer", self.pub("officer-1"),
                "--key", self.key("root-1"), "-o", out, *extra]


def _platform_bundle(d: Path, keyring, seeded) -> tuple[Path, Path]:
    """(signed, builder-only) bundle with pilot/status, a Pod that runs it and one OS package."""
    from tests.test_debs import make_deb

    repo = d / "upstream"
    repo.mkdir()
    make_deb(repo, "airgap-test-tool", "1.0-1", "")
    (repo / "Packages").write_bytes(subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo,
                                                   check=True, capture_output=True).stdout)
    spec_dir = d / "platform-spec"
    (spec_dir / "apt").mkdir(parents=True)
    (spec_dir / "apt/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    (spec_dir / "k8s").mkdir()
    (spec_dir / "k8s/status.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: status}\nspec:\n  containers:\n"
        f"    - name: status\n      image: {seeded.ref('pilot/status')}\n")
    spec = write_spec(spec_dir, images=[seeded.ref("pilot/status")], files=[], expires="3650d", extra={
        "workloads": [{"name": "status", "src": "k8s/status.yaml"}],
        "packages": {"release": "bookworm", "sources": "apt/sources.list", "names": ["airgap-test-tool"]}})
    builder_only = d / "platform.builder-only.tar"
    r = _run(["build", spec, "-o", builder_only, "--key", keyring.key_path("builder-1"), "--plain-http"])
    assert r.code == 0, r.err
    signed = d / "platform.tar"
    shutil.copyfile(builder_only, signed)
    assert _run(["sign", signed, "--key", keyring.key_path("officer-1"), "--yes"]).code == 0
    return signed, builder_only


@pytest.fixture(scope="module")
def world(tmp_path_factory, keyring, registry_session, seeded_registry) -> World:
    from airgap.trust import TrustPolicy

    d = tmp_path_factory.mktemp("contract")
    trust = d / "trust.json"
    trust.write_bytes(make_policy(keyring).to_bytes())
    spec = write_spec(d / "spec", images=[], expires="3650d")
    builder_only = d / "pilot.builder-only.tar"
    r = _run(["build", spec, "-o", builder_only, "--key", keyring.key_path("builder-1"), "--created", "2026-11-01T00:00:00Z"])
    assert r.code == 0, r.err
    bundle = d / "pilot.tar"
    shutil.copyfile(builder_only, bundle)
    r = _run(["sign", bundle, "--key", keyring.key_path("officer-1"), "--trust", trust, "--yes"])
    assert r.code == 0, r.err
    w = World(keyring, d, trust, spec, bundle, builder_only, registry_session.host)
    w.half_signed = d / "half-signed.json"
    w.half_signed.write_bytes(make_policy(keyring, sign_with=("root-1",)).to_bytes())
    other = TrustPolicy.create("elsewhere", "2099-01-01T00:00:00Z", keyring.pubs("root-1"), 1,
                               keyring.pubs("builder-1"), 1, keyring.pubs("officer-1"), 1)
    other.sign(keyring["root-1"])
    w.other_target = d / "elsewhere.json"
    w.other_target.write_bytes(other.to_bytes())
    doc = json.loads(trust.read_text())
    doc["signed"]["roles"]["builder"]["threshold"] = 0
    w.damaged_policy = d / "damaged.json"
    w.damaged_policy.write_text(json.dumps(doc))
    w.a_tar = d / "keys.tar"
    with tarfile.open(w.a_tar, "w") as tf:
        tf.add(keyring.pub_path("root-1"), arcname="root-1.pub")
    w.garbage = d / "garbage.tar"
    w.garbage.write_bytes(b"this is not a bundle\n" * 50)
    state = d / "state"
    for _ in range(2):
        r = _run(["verify", bundle, "--trust", trust, "--state", state])
        assert r.code == 0, r.err
    w.log = state / "audit.log"
    w.platform, w.platform_builder_only = _platform_bundle(d, keyring, seeded_registry)
    w.toolkit_trust = d / "toolkit-trust.json"
    policy = make_policy(keyring, toolkit=("toolkit-1",))
    w.toolkit_trust.write_bytes(policy.to_bytes())
    w.wheels = d / "wheels"
    w.wheels.mkdir()
    (w.wheels / "airgap-0.1.0-py3-none-any.whl").write_bytes(b"the toolkit\n" * 20)
    r = _run(["toolkit", "release", "--wheels", w.wheels, "--version", "0.1.0", "--commit", COMMIT,
              "--key", keyring.key_path("toolkit-1"), "--trust", w.toolkit_trust, "-o", d / "toolkit-release.json"])
    assert r.code == 0, r.err
    shutil.move(d / "toolkit-release.json", w.wheels / "toolkit-release.json")
    return w


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _unsigned_release(w: World, t: Path) -> Path:
    r = _run(["toolkit", "release", "--wheels", w.wheels, "--version", "0.1.0", "--commit", COMMIT, "-o", t / "rel.json"])
    assert r.code == 0, r.err
    return t / "rel.json"


def _swapped_wheels(w: World, t: Path) -> Path:
    shutil.copytree(w.wheels, t / "wheels")
    (t / "wheels" / "airgap-0.1.0-py3-none-any.whl").write_bytes(b"not the released wheel\n")
    return t / "wheels"


# --------------------------------------------------------------------------- running a row


def _run(argv: list, *, env: dict | None = None) -> Result:
    """Parse and call the verb the way ``airgap.cli.main`` does, except that only
    AirgapError is caught: anything else a verb lets out fails the test."""
    argv = [str(a) for a in argv]
    saved = dict(os.environ)
    os.environ.update({"AIRGAP_PASSPHRASE": PASSPHRASE, **(env or {})})
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:
                return Result(exc.code if isinstance(exc.code, int) else 2, out.getvalue(), err.getvalue())
            try:
                code = int(args.func(args) or 0)
            except AirgapError as exc:
                code = report_error(args, exc)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(code, out.getvalue(), err.getvalue())


def _run_unprivileged(argv: list) -> Result:
    """As root without the capabilities that bypass file permissions, so a mode-000
    file is unreadable as it would be for anyone else."""
    caps = "-dac_override,-dac_read_search"
    proc = subprocess.run(["setpriv", "--bounding-set", caps, "--inh-caps", caps, sys.executable, "-m", "airgap",
                           *map(str, argv)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "AIRGAP_PASSPHRASE": PASSPHRASE})
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _unreadable(t: Path, src: Path | None = None) -> Path:
    path = t / ("unreadable-" + (src.name if src else "file"))
    path.write_bytes(src.read_bytes() if src else b"{}")
    path.chmod(0)
    return path


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    code: int
    argv: Callable[..., list]  # (world, a fresh directory, **the fixtures in needs)
    says: str = ""  # a fragment the output (stdout + stderr) must hold
    unprivileged: bool = False  # run as a process without file-permission override
    needs: tuple[str, ...] = ()  # pytest fixtures the row's argv takes
    env: dict[str, str] = field(default_factory=dict)
    id: str = ""


W = World
TABLE: dict[tuple[str, ...], list[Row]] = {
    ("keygen",): [
        Row(0, lambda w, t: ["keygen", "k1", "--dir", t / "keys", "--no-passphrase"], "keyid"),
        Row(2, lambda w, t: ["keygen", "../evil", "--dir", t], "key name", id="bad name"),
        Row(2, lambda w, t: ["keygen", "k1", "--dir", w.garbage], "not a directory", id="dir is a file"),
    ],
    ("key", "export"): [
        Row(0, lambda w, t: ["key", "export", w.key("officer-1"), "-o", t / "officer-1.pub"], "keyid"),
        Row(2, lambda w, t: ["key", "export", w.pub("officer-1"), "-o", t / "x.pub"], "is a public key",
            id="public key given"),
        Row(2, lambda w, t: ["key", "export", w.key("officer-1"), "-o", t / "x.pub"], "wrong passphrase",
            env={"AIRGAP_PASSPHRASE": "wrong"}, id="wrong passphrase"),
    ],
    ("build",): [
        Row(0, lambda w, t: ["build", w.spec, "-o", t / "b.tar", "--key", w.key("builder-1")], "built"),
        Row(1, lambda w, t: ["build", write_spec(t / "s", images=["127.0.0.1:1/pilot/status:1.0"], files=[]), "-o",
                             t / "b.tar", "--key", w.key("builder-1"), "--plain-http"], "127.0.0.1:1",
            id="source registry refuses connections"),
        Row(2, lambda w, t: ["build", t / "missing.yaml", "-o", t / "b.tar", "--key", w.key("builder-1")],
            "missing.yaml", id="missing spec"),
        Row(2, lambda w, t: ["build", _unreadable(t, w.spec), "-o", t / "b.tar", "--key", w.key("builder-1")],
            "Permission denied", unprivileged=True, id="unreadable spec"),
        Row(2, lambda w, t: ["build", w.spec, "-o", t / "b.tar", "--key", w.key("builder-1"), "-j", "0"],
            "-j/--jobs", id="bad flag value"),
        Row(2, lambda w, t: ["build", w.spec, "-o", t / "b.tar", "--key", w.pub("builder-1")],
            "is a public key", id="public key as --key"),
    ],
    ("inspect",): [
        Row(0, lambda w, t: ["inspect", w.bundle, "--trust", w.trust], "officer"),
        Row(1, lambda w, t: ["inspect", w.garbage], "tar block", id="not a tar"),
        Row(2, lambda w, t: ["inspect", w.bundle, "--trust", w.a_tar], "not a trust policy", id="--trust given a tar"),
        Row(2, lambda w, t: ["inspect", t / "missing.tar"], "missing.tar", id="missing bundle"),
        Row(2, lambda w, t: ["inspect", _unreadable(t, w.bundle)], "Permission denied", unprivileged=True,
            id="unreadable bundle"),
    ],
    ("diff",): [
        Row(0, lambda w, t: ["diff", w.builder_only, w.bundle], "no image, file or package differs"),
        Row(1, lambda w, t: ["diff", w.bundle, w.garbage], "tar block", id="not a tar"),
        Row(2, lambda w, t: ["diff", w.bundle, t / "missing.tar"], "missing.tar", id="missing bundle"),
    ],
    ("sign",): [
        Row(0, lambda w, t: ["sign", w.copy(t, w.builder_only), "--key", w.key("officer-1"), "--trust", w.trust,
                             "--yes"], "signed: 2 signatures"),
        Row(1, lambda w, t: ["sign", w.copy(t, w.builder_only), "--key", w.key("officer-1"), "--trust",
                             w.other_target, "--yes"], "elsewhere", id="policy of another target"),
        Row(2, lambda w, t: ["sign", w.media(t), "--key", w.key("officer-1"), "--yes"],
            "sign the bundle file before splitting", id="media parts"),
        Row(2, lambda w, t: ["sign", w.copy(t, w.builder_only), "--key", w.key("builder-1"), "--trust", w.trust,
                             "--yes"], "officer key is needed", id="builder key"),
    ],
    ("unsign",): [
        Row(0, lambda w, t: ["unsign", w.copy(t, w.bundle), "--keyid", w.keyid("officer-1"), "--yes"], "removed"),
        Row(1, lambda w, t: ["unsign", w.copy(t, w.garbage), "--keyid", w.keyid("officer-1"), "--yes"], "tar block",
            id="not a bundle"),
        Row(2, lambda w, t: ["unsign", w.copy(t, w.bundle), "--keyid", "zz", "--yes"], "not a keyid",
            id="bad keyid"),
    ],
    ("verify",): [
        Row(0, lambda w, t: ["verify", w.bundle, "--trust", w.trust], "VERIFIED"),
        Row(1, lambda w, t: ["verify", w.builder_only, "--trust", w.trust], "officer: 0 of 1", id="no officer"),
        Row(2, lambda w, t: ["verify", t / "missing.tar", "--trust", w.trust], "missing.tar", id="missing bundle"),
        Row(2, lambda w, t: ["verify", w.bundle, "--trust", _unreadable(t, w.trust)], "Permission denied",
            unprivileged=True, id="unreadable policy"),
        Row(2, lambda w, t: ["verify", w.bundle, "--trust", w.a_tar], "not a trust policy", id="--trust given a tar"),
        Row(2, lambda w, t: ["verify", w.bundle, "--trust", w.trust, "--allow-expired", "--reason", " ",
                             "--override-key", w.key("officer-1")], "--reason must give", id="blank --reason"),
        Row(2, lambda w, t: ["verify", w.bundle, "--trust", w.trust, "--state", w.garbage], "garbage.tar",
            id="--state is a file"),
    ],
    ("trust", "init"): [
        Row(0, lambda w, t: w.init_args(t / "trust.json"), "wrote"),
        Row(2, lambda w, t: [a for a in w.init_args(t / "t.json") if a not in ("--root", w.pub("root-1"))],
            "needs at least one --root", id="no --root"),
        Row(2, lambda w, t: w.init_args(t / "t.json", "--root-threshold", "2"),
            "--root-threshold 2 must be between 1 and the number of root keys (1)", id="threshold above key count"),
        Row(2, lambda w, t: [*w.init_args(t / "t.json")[:5], "1year", *w.init_args(t / "t.json")[6:]], "365d",
            id="--expires 1year"),
        Row(2, lambda w, t: [w.key("root-1") if a == w.pub("root-1") else a for a in w.init_args(t / "t.json")],
            "private key file; a public key is expected", id="private key as --root"),
        Row(2, lambda w, t: w.init_args(t / "t.json", "--builder-threshold", "x"), "--builder-threshold",
            id="bad flag value"),
        Row(2, lambda w, t: [_unreadable(t, w.pub("root-1")) if a == w.pub("root-1") else a
                             for a in w.init_args(t / "t.json")], "Permission denied", unprivileged=True,
            id="unreadable --root"),
    ],
    ("trust", "rotate"): [
        Row(0, lambda w, t: ["trust", "rotate", w.trust, "--officer", w.pub("officer-2"), "--key", w.key("root-1"),
                             "--key", w.key("root-2"), "-o", t / "v2.json"], "version 2"),
        Row(1, lambda w, t: ["trust", "rotate", w.half_signed, "--key", w.key("root-1"), "-o", t / "v2.json"],
            "root: 1 of 2", id="current version not signed by its roots"),
        Row(2, lambda w, t: ["trust", "rotate", w.trust, "--builder-threshold", "5", "--key", w.key("root-1"),
                             "-o", t / "v2.json"], "threshold 5", id="threshold above key count"),
        Row(2, lambda w, t: ["trust", "rotate", w.trust, "--revoke", "zz", "-o", t / "v2.json"], "--revoke",
            id="bad keyid"),
    ],
    ("trust", "sign"): [
        Row(0, lambda w, t: ["trust", "sign", w.copy(t, w.half_signed), "--key", w.key("root-2")], "signed"),
        Row(1, lambda w, t: ["trust", "sign", w.copy(t, w.damaged_policy), "--key", w.key("root-2")], "threshold",
            id="damaged policy"),
        Row(2, lambda w, t: ["trust", "sign", w.copy(t, w.half_signed), "--key", w.key("builder-1")], "not a root key",
            id="builder key"),
    ],
    ("trust", "show"): [
        Row(0, lambda w, t: ["trust", "show", w.trust], "trust policy for geheim-pilot"),
        Row(1, lambda w, t: ["trust", "show", w.half_signed], "root: 1 of 2", id="half signed"),
        Row(2, lambda w, t: ["trust", "show", t / "missing.json"], "missing.json", id="missing policy"),
        Row(2, lambda w, t: ["trust", "show", w.trust, "--keyid", "00000000"], "no key in", id="unknown keyid"),
        Row(2, lambda w, t: ["trust", "show", _unreadable(t, w.trust)], "Permission denied", unprivileged=True,
            id="unreadable policy"),
    ],
    ("toolkit", "release"): [
        Row(0, lambda w, t: ["toolkit", "release", "--wheels", w.wheels, "--version", "0.1.0", "--commit", COMMIT,
                             "--key", w.key("toolkit-1"), "--trust", w.toolkit_trust, "-o", t / "rel.json"], "toolkit 1 of 1"),
        Row(2, lambda w, t: ["toolkit", "release", "--wheels", w.wheels, "--version", "0.1.0", "--commit", COMMIT,
                             "--key", w.key("toolkit-1"), "-o", t / "rel.json"], "--key needs --trust", id="key without trust"),
    ],
    ("toolkit", "sign"): [
        Row(0, lambda w, t: ["toolkit", "sign", _unsigned_release(w, t), "--key", w.key("toolkit-1"), "--trust",
                             w.toolkit_trust], "signed"),
        Row(1, lambda w, t: ["toolkit", "sign", _unsigned_release(w, t), "--key", w.key("toolkit-1"), "--trust",
                             w.half_signed], "root: 1 of 2", id="policy not signed by its roots"),
        Row(2, lambda w, t: ["toolkit", "sign", _unsigned_release(w, t), "--key", w.key("officer-1"), "--trust",
                             w.toolkit_trust], "a toolkit key is needed", id="officer key"),
    ],
    ("toolkit", "verify"): [
        Row(0, lambda w, t: ["toolkit", "verify", w.wheels / "toolkit-release.json", "--trust", w.toolkit_trust,
                             "--wheels", w.wheels], "VERIFIED"),
        Row(1, lambda w, t: ["toolkit", "verify", _unsigned_release(w, t), "--trust", w.toolkit_trust],
            "toolkit: 0 of 1", id="unsigned"),
        Row(2, lambda w, t: ["toolkit", "verify", t / "missing.json", "--trust", w.toolkit_trust], "missing.json",
            id="missing statement"),
    ],
    ("toolkit", "wheels"): [
        Row(0, lambda w, t: ["toolkit", "wheels", "--release", w.wheels, "--trust", w.toolkit_trust, "-o", t / "out"],
            "wrote the 1 wheel of"),
        Row(1, lambda w, t: ["toolkit", "wheels", "--release", _swapped_wheels(w, t), "--trust", w.toolkit_trust,
                             "-o", t / "out"], "sha256", id="a wheel not released"),
        Row(2, lambda w, t: ["toolkit", "wheels", "--trust", w.toolkit_trust, "-o", t / "out"],
            "give a bundle or --release DIR", id="neither bundle nor release"),
    ],
    ("import",): [
        Row(0, lambda w, t: ["import", w.bundle, "--trust", w.trust, "--registry", w.registry, "--plain-http",
                             "--state", t / "state", "--files-dir", t / "files"], "IMPORTED"),
        Row(1, lambda w, t: ["import", w.builder_only, "--trust", w.trust, "--registry", w.registry, "--plain-http",
                             "--state", t / "state"], "officer: 0 of 1", id="rejected"),
        Row(2, lambda w, t: ["import", w.bundle, "--trust", w.trust, "--registry", w.registry, "--state", t / "state",
                             "--username", "u"], "--password-file", id="username without password file"),
        Row(2, lambda w, t: ["import", w.bundle, "--trust", w.trust, "--registry", w.registry, "--state", t / "state",
                             "--username", "u", "--password-file", _unreadable(t)], "Permission denied",
            unprivileged=True, id="unreadable password file"),
    ],
    ("split",): [
        Row(0, lambda w, t: ["split", w.bundle, "--size", "8K", "-o", t / "media"], "split"),
        Row(2, lambda w, t: ["split", w.bundle, "--size", "1.5G", "-o", t / "media"], "fractions", id="bad size"),
        Row(2, lambda w, t: ["split", t / "missing.tar", "--size", "8K", "-o", t / "media"], "missing.tar",
            id="missing bundle"),
    ],
    ("join",): [
        Row(0, lambda w, t: ["join", w.media(t), "--trust", w.trust, "-o", t / "joined.tar"], "joined"),
        Row(1, lambda w, t: ["join", _damage_a_part(w.media(t)), "--trust", w.trust, "-o", t / "joined.tar"], "sha256",
            id="damaged part"),
        Row(1, lambda w, t: ["join", w.media(t), "--trust", w.other_target, "-o", t / "joined.tar"], "elsewhere",
            id="policy of another target"),
        Row(2, lambda w, t: ["join", t, "--trust", w.trust, "-o", t / "joined.tar"], "parts.json", id="no index"),
        Row(2, lambda w, t: ["join", w.media(t), "--trust", w.trust, "-o", _empty(t / "joined.tar")],
            "exists: add --force", id="existing output"),
    ],
    ("extract",): [
        Row(0, lambda w, t: ["extract", w.bundle, "--trust", w.trust, "-o", t / "out"], "EXTRACTED"),
        Row(1, lambda w, t: ["extract", w.builder_only, "--trust", w.trust, "-o", t / "out"], "officer: 0 of 1",
            id="rejected"),
        Row(2, lambda w, t: ["extract", w.bundle, "--trust", w.trust, "--member", "nothing/", "-o", t / "out"],
            "--member 'nothing/'", id="no member has the prefix"),
        Row(2, lambda w, t: ["extract", w.bundle, "--trust", w.trust, "-o", t], "exists: add --force",
            id="existing output"),
    ],
    ("transfer",): [
        Row(0, lambda w, t: ["transfer", w.bundle, t / "dest"], "sha256"),
        Row(1, lambda w, t, sshd: ["transfer", w.bundle, sshd.url(t / "in"), "--identity", sshd.identity,
                                   "--known-hosts", _empty(t / "known_hosts")], "host key", needs=("sshd",),
            id="unknown host key"),
        Row(2, lambda w, t: ["transfer", t / "missing.tar", t / "dest"], "missing.tar", id="missing source"),
        Row(2, lambda w, t: ["transfer", w.bundle, "ssh://root@127.0.0.1:22/srv"], "identity",
            id="ssh without identity"),
    ],
    ("audit", "verify"): [
        Row(0, lambda w, t: ["audit", "verify", "--log", w.log], "INTACT: "),
        Row(1, lambda w, t: ["audit", "verify", "--log", _damage_log(w, t)], "audit.log", id="edited entry"),
        Row(2, lambda w, t: ["audit", "verify"], "--log FILE or --state DIR", id="no log named"),
        Row(2, lambda w, t: ["audit", "verify", "--log", _unreadable(t, w.log)], "Permission denied",
            unprivileged=True, id="unreadable log"),
    ],
    ("audit", "show"): [
        Row(0, lambda w, t: ["audit", "show", "--log", w.log], "verify"),
        Row(1, lambda w, t: ["audit", "show", "--log", _damage_log(w, t)], "audit.log", id="edited entry"),
        Row(2, lambda w, t: ["audit", "show", "--log", t / "missing.log"], "no such audit log", id="missing log"),
    ],
    ("audit", "head"): [
        Row(0, lambda w, t: ["audit", "head", "--log", w.log], "2:"),
        Row(1, lambda w, t: ["audit", "head", "--log", _damage_log(w, t)], "audit.log", id="edited entry"),
        Row(2, lambda w, t: ["audit", "head", "--state", t], "no such audit log", id="no log there"),
    ],
    ("inventory",): [
        Row(0, lambda w, t: ["inventory", "--registry", w.registry, "--plain-http", "-o", t / "inv.json"], "wrote"),
        Row(1, lambda w, t: ["inventory", "--registry", "127.0.0.1:1", "--plain-http", "-o", t / "inv.json"],
            "connection refused", id="registry refuses connections"),
        Row(2, lambda w, t: ["inventory", "--registry", w.registry, "-o", t / "inv.json", "--username", "u"],
            "--password-file", id="username without password file"),
    ],
    ("manifests", "render"): [
        Row(0, lambda w, t: ["manifests", "render", w.platform, "--trust", w.trust, "--registry", "127.0.0.1:5000",
                             "-o", t / "out"], "status"),
        Row(1, lambda w, t: ["manifests", "render", w.platform_builder_only, "--trust", w.trust, "--registry",
                             "127.0.0.1:5000", "-o", t / "out"], "officer: 0 of 1", id="rejected"),
        Row(2, lambda w, t: ["manifests", "render", w.bundle, "--trust", w.trust, "--registry", "127.0.0.1:5000",
                             "-o", t / "out"], "workloads", id="a bundle without workloads"),
    ],
    ("packages", "export"): [
        Row(0, lambda w, t: ["packages", "export", w.platform, "--trust", w.trust, "-o", t / "out"], "apt source"),
        Row(1, lambda w, t: ["packages", "export", w.platform_builder_only, "--trust", w.trust, "-o", t / "out"],
            "officer: 0 of 1", id="rejected"),
        Row(2, lambda w, t: ["packages", "export", w.bundle, "--trust", w.trust, "-o", t / "out"], "packages",
            id="a bundle without packages"),
    ],
    ("lab", "up"): [
        Row(0, lambda w, t: _lab(t, "up", "--nodes", "1", "--inventory", t / "hosts.yml"), "up"),
        Row(2, lambda w, t: _lab(t, "up", "--nodes", "0"), "--nodes", id="no nodes"),
    ],
    ("lab", "down"): [
        Row(0, lambda w, t: _lab(t, "down"), "no lab was up"),
        Row(2, lambda w, t: ["lab", "down", "--dir", t / "a dir"], "whitespace", id="bad --dir"),
    ],
    ("lab", "status"): [
        Row(0, lambda w, t: _lab_up_then(t, "status"), "sshd ok"),
        Row(1, lambda w, t: _lab(t, "status"), "DOWN", id="not up"),
        Row(2, lambda w, t: ["lab", "status", "--dir", t / "a dir"], "whitespace", id="bad --dir"),
    ],
}

# Labs brought up by rows, taken down after each row.
_LABS: list[Path] = []


def _lab(t: Path, action: str, *extra) -> list:
    work = t / "lab"
    if action == "up":
        _LABS.append(work)
        extra = (*extra, "--name", f"airgap-lab-c{os.getpid()}-{len(_LABS)}")
    return ["lab", action, "--dir", work, *extra]


def _lab_up_then(t: Path, action: str) -> list:
    r = _run(_lab(t, "up", "--nodes", "1", "--inventory", t / "hosts.yml"))
    assert r.code == 0, r.err
    return _lab(t, action)


@pytest.fixture(autouse=True)
def _labs_down():
    yield
    from airgap.lab import Lab

    while _LABS:
        Lab(_LABS.pop()).down()


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _damage_a_part(media: Path) -> Path:
    part = sorted(media.glob("*.part001"))[0]
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    return media


def _damage_log(w: World, t: Path) -> Path:
    lines = w.log.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"verify"', '"import"', 1)
    log = t / "audit.log"
    log.write_text("".join(lines))
    return log


def _rows():
    for verb, rows in TABLE.items():
        for row in rows:
            yield pytest.param(verb, row, id=f"{' '.join(verb)}-{row.code}" + (f"-{row.id}" if row.id else ""))


# --------------------------------------------------------------------------- the tests


def test_every_verb_has_rows_for_every_exit_code_it_names():
    """The parser's verbs are the table's verbs, and each verb's epilog names its
    exit codes: a row for each, and a 2 (usage or input error) for every verb."""
    import re

    verbs = dict(_all_verbs(build_parser()))
    assert set(verbs) == set(TABLE), f"verbs without rows: {set(verbs) - set(TABLE)}; rows without a verb: {set(TABLE) - set(verbs)}"
    for verb, parser in verbs.items():
        assert parser.epilog and "Exit codes: " in parser.epilog, f"{' '.join(verb)}: no 'Exit codes:' epilog"
        named = {int(c) for c in re.findall(r"(?:Exit codes: |; )([012]) ", parser.epilog)}
        assert 0 in named and 2 in named, f"{' '.join(verb)}: {parser.epilog}"
        covered = {row.code for row in TABLE[verb]}
        assert named <= covered, f"{' '.join(verb)}: no row for exit code(s) {named - covered}"
        assert covered <= named, f"{' '.join(verb)}: rows for exit code(s) {covered - named} its epilog does not name"


@pytest.mark.parametrize("verb,row", list(_rows()))
def test_exit_code(verb, row, world, tmp_path, request):
    argv = row.argv(world, tmp_path, **{name: request.getfixturevalue(name) for name in row.needs})
    assert tuple(str(a) for a in argv[: len(verb)]) == verb
    r = _run_unprivileged(argv) if row.unprivileged else _run(argv, env=row.env)
    assert r.code == row.code, f"exit {r.code}, expected {row.code}\nstdout: {r.out}\nstderr: {r.err}"
    assert row.says in r.out + r.err, f"{row.says!r} not in\nstdout: {r.out}\nstderr: {r.err}"
    if row.code:
        assert "Traceback" not in r.err
        assert r.err.strip() or row.says in r.out, "a refusal says why"


@pytest.mark.parametrize("verb,row", [p for p in _rows() if p.values[1].code == 0])
def test_quiet_leaves_the_result_line(verb, row, world, tmp_path):
    """Every verb's --quiet: nothing on stderr, at most one line on stdout."""
    (tmp_path / "loud").mkdir()
    (tmp_path / "quiet").mkdir()
    loud = _run(row.argv(world, tmp_path / "loud"))
    quiet = _run([*row.argv(world, tmp_path / "quiet"), "--quiet"])
    assert quiet.code == 0, quiet.err
    assert quiet.err == "", f"--quiet printed on stderr: {quiet.err}"
    assert len(quiet.out.splitlines()) <= 1, f"--quiet printed more than one line:\n{quiet.out}"
    assert len(quiet.out) < len(loud.out) or len(loud.out.splitlines()) <= 1


# --- --force ------------------------------------------------------------------

# verb -> (argv writing to the output in t, the output path in t)
WRITERS: dict[tuple[str, ...], Callable[[World, Path], tuple[list, Path]]] = {
    ("keygen",): lambda w, t: (["keygen", "k", "--dir", t, "--no-passphrase"], t / "k.pub"),
    ("key", "export"): lambda w, t: (["key", "export", w.key("officer-1"), "-o", t / "out"], t / "out"),
    ("build",): lambda w, t: (["build", w.spec, "-o", t / "out", "--key", w.key("builder-1")], t / "out"),
    ("split",): lambda w, t: (["split", w.bundle, "--size", "8K", "-o", t], t / f"{w.bundle.name}.part001"),
    ("join",): lambda w, t: (["join", w.media(t / "m"), "--trust", w.trust, "-o", t / "out"], t / "out"),
    ("extract",): lambda w, t: (["extract", w.bundle, "--trust", w.trust, "-o", t / "out"],
                                t / "out" / "files" / "configs" / "pilot.conf"),
    ("trust", "init"): lambda w, t: (w.init_args(t / "out"), t / "out"),
    ("trust", "rotate"): lambda w, t: (["trust", "rotate", w.trust, "--key", w.key("root-1"), "--key", w.key("root-2"),
                                        "-o", t / "out"], t / "out"),
    ("inventory",): lambda w, t: (["inventory", "--registry", w.registry, "--plain-http", "-o", t / "out"], t / "out"),
    ("transfer",): lambda w, t: (["transfer", w.bundle, t], t / w.bundle.name),
    ("toolkit", "release"): lambda w, t: (["toolkit", "release", "--wheels", w.wheels, "--version", "0.1.0", "--commit",
                                           COMMIT, "-o", t / "out"], t / "out"),
    ("toolkit", "wheels"): lambda w, t: (["toolkit", "wheels", "--release", w.wheels, "--trust", w.toolkit_trust,
                                          "-o", t / "out"], t / "out" / "toolkit-release.json"),
    ("manifests", "render"): lambda w, t: (["manifests", "render", w.platform, "--trust", w.trust, "--registry",
                                            "127.0.0.1:5000", "-o", t / "out"], t / "out" / "status.yaml"),
    ("packages", "export"): lambda w, t: (["packages", "export", w.platform, "--trust", w.trust, "-o", t / "out"],
                                          t / "out" / "Packages"),
}


def test_every_verb_that_writes_a_named_output_takes_force():
    verbs = dict(_all_verbs(build_parser()))
    for verb, parser in verbs.items():
        options = {o for a in parser._actions for o in a.option_strings}
        if "--output" in options or verb in WRITERS:
            assert "--force" in options, f"{' '.join(verb)} writes an output but has no --force"
    with_force = {v for v, p in verbs.items() if any("--force" in a.option_strings for a in p._actions)}
    assert with_force == set(WRITERS), "each verb with --force has a row in WRITERS"


@pytest.mark.parametrize("verb", list(WRITERS), ids=[" ".join(v) for v in WRITERS])
def test_force_is_needed_to_replace_an_output(verb, world, tmp_path):
    argv, output = WRITERS[verb](world, tmp_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(b"precious")
    # A verb that writes a directory names the directory.
    named = {("toolkit", "wheels"): output.parent, ("manifests", "render"): output.parent,
             ("packages", "export"): output.parent, ("extract",): tmp_path / "out"}.get(verb, output)
    r = _run(argv)
    assert r.code == 2, r.err
    assert f"{named} exists" in r.err and "add --force to overwrite" in r.err
    assert output.read_bytes() == b"precious"
    r = _run([*argv, "--force"])
    assert r.code == 0, r.err
    assert output.read_bytes() != b"precious"


# --- help text ------------------------------------------------------------------


def test_every_argument_has_help_text():
    import argparse

    missing = []
    for verb, parser in _all_verbs(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(verb)} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"arguments without help text: {missing}"


# --- only AirgapError leaves the library --------------------------------------------

# Raising a builtin exception is allowed only where Python's own protocols expect it.
_ALLOWED_RAISES = {
    "NotImplementedError": "abstract methods",
    "SystemExit": "the command's entry points",
}
_PROTOCOL_RAISES = {"__getitem__": "KeyError", "__next__": "StopIteration",  # what Python expects from these
                    "__getattr__": "AttributeError"}  # (PEP 562 too: hasattr and getattr defaults need it)
_ALLOWED_FILES = {
    "airgap/lab/ns.py": "OSError(errno) from libc calls, as the os module raises it",
}


def _builtin_raises(tree: ast.AST):
    """(line, name) of each ``raise <builtin exception>`` not caught by a ``try`` around it."""
    import builtins

    def caught(name: str, handlers: list[ast.ExceptHandler]) -> bool:
        raised = getattr(builtins, name)
        for h in handlers:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            for t in types:
                if t is None or (isinstance(t, ast.Name) and issubclass(raised, getattr(builtins, t.id, ()) or ())):
                    return True
        return False

    def walk(node: ast.AST, handlers: list[ast.ExceptHandler], function: str = ""):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.id if isinstance(target, ast.Name) else None
            if (name and isinstance(getattr(builtins, name, None), type) and not caught(name, handlers)
                    and _PROTOCOL_RAISES.get(function) != name):
                yield node.lineno, name
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            handlers = []  # a try outside a function does not catch what the function raises later
            function = getattr(node, "name", "")
        if isinstance(node, ast.Try):
            for child in node.body:
                yield from walk(child, [*handlers, *node.handlers], function)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                yield from walk(child, handlers, function)
            return
        for child in ast.iter_child_nodes(node):
            yield from walk(child, handlers, function)

    yield from walk(tree, [])


def test_the_library_raises_only_airgap_errors():
    bad = []
    for path in sorted((REPO / "airgap").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in _ALLOWED_FILES:
            continue
        for line, name in _builtin_raises(ast.parse(path.read_text(), rel)):
            if name not in _ALLOWED_RAISES:
                bad.append(f"{rel}:{line}: raise {name}")
    assert not bad, "raise an AirgapError subclass (InvalidValueError/InvalidTypeError for API misuse):\n" + "\n".join(bad)


def test_value_and_type_errors_of_the_api_are_usage_errors_that_old_callers_still_catch():
    from airgap.exceptions import InvalidTypeError, InvalidValueError, UsageError
    from airgap.keys import SigningKey
    from airgap.trust import Override

    with pytest.raises(InvalidValueError) as exc:
        Override(reason=" ", signing_key=SigningKey.generate("officer-1"))
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, UsageError) and exc.value.exit_code == 2
    assert issubclass(InvalidTypeError, TypeError) and issubclass(InvalidTypeError, UsageError)


# --- one small parser per verb, built only for the verb being run ----------------------


def test_the_parser_built_for_one_verb_is_that_verb_of_the_whole_parser():
    """main() builds only the verb it runs: for every verb, that parser's help is the whole parser's."""
    from airgap.cli import VERBS

    whole = dict(_all_verbs(build_parser()))
    assert {verb[0] for verb in whole} == set(VERBS)
    for verb, parser in whole.items():
        alone = dict(_all_verbs(build_parser(verb[0])))
        assert {v[0] for v in alone} == {verb[0]}, f"{verb[0]}: built other verbs too: {sorted(alone)}"
        assert alone[verb].format_help() == parser.format_help(), " ".join(verb)


def test_running_a_verb_imports_only_its_group():
    code = ("import sys\nfrom airgap.cli import main\n"
            "try:\n    main(['audit', 'head', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('airgap.cli.')))\n"
            "print(sorted(m for m in sys.modules if m.startswith('airgap.') and not m.startswith('airgap.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-2] == "['airgap.cli._audit', 'airgap.cli._base']"
    assert "airgap.receive" not in out[-1] and "airgap.trust" not in out[-1]


# What only some verify runs need (issue 8, start-up counts): the policy verbs' authoring
# (init, rotate, sign), the state and audit machinery (--state, --record, --audit-log),
# workloads and OS packages (YAML, dpkg via subprocess), writing SBOMs (uuid) and deriving key-file keys (nacl.pwhash).
_NOT_FOR_A_PLAIN_VERIFY = ("yaml", "subprocess", "uuid", "nacl.pwhash", "airgap.trust.authoring", "airgap.anchored",
                           "airgap.audit", "airgap.state", "airgap.workloads", "airgap.debs")


def test_verifying_a_plain_bundle_imports_only_what_it_needs(world):
    code = ("import sys\nfrom airgap.cli import main\n"
            f"code = main(['verify', {str(world.bundle)!r}, '--trust', {str(world.trust)!r}, '--quiet'])\n"
            "print(code)\n"
            f"print(sorted(m for m in {_NOT_FOR_A_PLAIN_VERIFY!r} + ('airgap.verify', 'airgap.trust.policy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-2] == "0"  # it verified, so every check a verify makes has run
    assert out[-1] == "['airgap.trust.policy', 'airgap.verify']"


# --- bad input anywhere: still only AirgapError ------------------------------------------

_OUTPUT_FLAGS = {"-o", "--output", "--dir"}
_BAD_INPUTS: dict[str, Callable[[World, Path, Path], Path]] = {
    "missing": lambda w, t, p: t / f"missing-{p.name}",
    "directory": lambda w, t, p: _fresh_dir(t / f"dir-{p.name}"),
    "empty": lambda w, t, p: _empty(t / f"empty-{p.name}"),
    "garbage": lambda w, t, p: w.garbage,
}


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _inputs(argv: list) -> list[int]:
    """Positions in *argv* of the files and directories a row reads (existing paths that are not outputs)."""
    return [i for i, a in enumerate(argv) if isinstance(a, Path) and a.exists()
            and not (i and str(argv[i - 1]) in _OUTPUT_FLAGS)]


_READS_NO_FILE = {("keygen",), ("inventory",), ("lab", "up"), ("lab", "down"), ("lab", "status")}


def _success_rows():
    for verb, rows in TABLE.items():
        for row in rows:
            if row.code == 0 and verb not in _READS_NO_FILE:
                yield pytest.param(verb, row, id=" ".join(verb))


@pytest.mark.parametrize("verb,row", list(_success_rows()))
def test_bad_input_in_every_place_leaves_only_airgap_errors(verb, row, world, tmp_path):
    """Every file or directory a verb reads, replaced by a missing path, a directory, an empty
    file and garbage: the verb refuses (1 or 2) with a message, and nothing but an AirgapError
    leaves it (``_run`` lets any other exception fail the test, as no traceback may reach a user)."""
    t = tmp_path / "probe"
    t.mkdir()
    places = _inputs(row.argv(world, t))
    assert places, f"{' '.join(verb)}: the row reads no file, so nothing was probed (list it in _READS_NO_FILE)"
    refusals = 0
    for place in places:
        for kind, bad in _BAD_INPUTS.items():
            t = tmp_path / f"{place}-{kind}"
            t.mkdir()
            argv = row.argv(world, t)
            original = argv[place]
            argv[place] = bad(world, t, original)
            r = _run(argv)
            where = f"{' '.join(verb)}: {original.name} -> {kind}"
            if r.code == 0:  # some inputs may be anything (transfer sends any file)
                continue
            refusals += 1
            assert r.code in (1, 2), f"{where}: exit {r.code}\n{r.err}"
            assert r.err.strip(), f"{where}: refused without a word"
    assert refusals >= len(places) * 2, f"{' '.join(verb)}: only {refusals} of {len(places) * 4} bad inputs refused"
