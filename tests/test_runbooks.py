"""The runbooks work as written: their commands, walked in the order the personas act.

The walk runs every marked step of docs/runbooks/ (see tests/runbook.py) in a
fresh directory against real parts: a TLS source registry that asks for a
password (the engineer's), a TLS internal registry with its own account (the
operator's), sshd for the transfer, SoftHSM2 for the token ceremony.  The
site's names in the runbooks are replaced by the fixtures' (SITE below).  A
command that exits otherwise than documented, or a documented output line that
is not printed, fails the walk at that step.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airgap import keys
from airgap.cli import build_parser
from tests import runbook
from tests.fixtures.images import build_oci_layout, pilot_images, push_layout
from tests.fixtures.registry import start_registry

# The secrets the site's people hold (the runbooks read them from /run/secrets/).
SECRETS = {
    "root-1": "root one's own passphrase", "root-2": "root two's own passphrase",
    "root-3.pin": "3333", "root-3.so-pin": "33333333",
    "builder-1": "builder passphrase", "officer-1": "officer one passphrase",
    "officer-2": "officer two passphrase",
    "source-registry-password": "src-pw", "registry-push-password": "int-pw",
}


def _bench(tmp_path: Path) -> tuple[Path, dict, dict, Path]:
    """A working directory, the people's secrets, a HOME of its own: (work, env, table, root)."""
    root = tmp_path / "root"  # stands for / : the runbooks' absolute paths land below it
    secrets = root / "run" / "secrets"
    secrets.mkdir(parents=True)
    for name, value in SECRETS.items():
        (secrets / name).write_text(value + "\n")
        (secrets / name).chmod(0o600)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        "XDG_RUNTIME_DIR": str(home / "run"), "XDG_CONFIG_HOME": str(home / ".config"),
    }
    table = {
        "/run/secrets/": f"{secrets}/",
        "/var/lib/airgap": f"{root}/var/lib/airgap",
        "/srv/airgap": f"{root}/srv/airgap",
    }
    return work, env, table, root


@pytest.fixture
def site(tmp_path, test_ca, sshd):
    """The fixtures a walk needs, and the table that maps the runbooks' site names onto them."""
    src = start_registry(tmp_path / "source-registry", htpasswd={"builder": SECRETS["source-registry-password"]},
                         tls=(test_ca.cert_pem, test_ca.key_pem))
    internal = start_registry(tmp_path / "internal-registry", htpasswd={"airgap": SECRETS["registry-push-password"]},
                              tls=(test_ca.cert_pem, test_ca.key_pem))
    try:
        built = build_oci_layout(tmp_path / "layout", {k: v for k, v in pilot_images().items() if k != "multi"})
        for name in built:
            push_layout(tmp_path / "layout", name, src.host, f"pilot/{name}", dest_tag="1.0", credentials=src.credentials)
        work, env, table, _ = _bench(tmp_path)
        home = Path(env["HOME"])
        shutil.copy(sshd.identity, home / ".ssh" / "id_ed25519")
        shutil.copy(sshd.known_hosts, home / ".ssh" / "known_hosts")
        shutil.copy(test_ca.ca_pem, work / "ca.crt")  # the site's internal CA, handed out with the toolkit
        captured: dict[str, str] = {}
        table.update({
            "registry.example:5000": src.host,
            "registry.pilot.internal:5000": internal.host,
            "ssh://airgap@staging.pilot.internal:22": f"ssh://{sshd.user}@127.0.0.1:{sshd.port}",
            # keyids the runbooks write as examples: the walk's own keys' short keyids
            "1fad8d66": lambda: _short_keyid(work / "keys" / "officer-2.pub"),
            "3f2a1b2c": lambda: _short_keyid(work / "keys" / "officer-1.pub"),
            # the audit head the operator's runbook writes down (its example value)
            EXAMPLE_HEAD: lambda: captured["head"],
        })
        yield work, env, table, captured
    finally:
        src.close()
        internal.close()


EXAMPLE_HEAD = "3:c1395b02a975116a8585eaafc3d10ee94ef376b235b61a2d92f0fe09e5331095"
_HEAD = re.compile(r"^(\d+:[0-9a-f]{64})$", re.M)


def _short_keyid(pub: Path) -> str:
    return keys.load_public(pub).keyid[:8]


def walk(steps: list[runbook.Step], work: Path, env: dict, table: dict, captured: dict) -> None:
    """Run *steps* in order; fail at the first that does not do what its runbook says."""
    shell = runbook.Shell(work, env)
    for step in steps:
        if step.file:
            target = work / runbook.substitute(step.file, table)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(runbook.substitute(step.content, table))
            continue
        for command, expected in zip(step.commands, step.expected):
            command = runbook.substitute(command, table)
            if step.lab:
                problems = runbook.check_lab_command(command)
                assert not problems, f"{step.where}: {command}\n" + "\n".join(problems)
                proc = subprocess.run([*shlex.split(command), "--syntax-check"], cwd=runbook.REPO, env={**env, "HOME": os.environ.get("HOME", "/root")},
                                      capture_output=True, text=True, timeout=120)
                assert proc.returncode == 0, f"{step.where}: {command} --syntax-check\n{proc.stdout}{proc.stderr}"
                continue
            rc, output = shell.run(command, step.answers)
            print(f"$ {command}\n{output}")  # shown when the walk fails
            assert rc == step.exit, f"{step.where}: exit {rc}, the runbook says {step.exit}\n$ {command}\n{output}"
            if head := _HEAD.search(output):
                captured["head"] = head[1]
            missing = runbook.find_lines([runbook.substitute(e, table) for e in expected], output)
            assert missing is None, f"{step.where}: not printed: {missing!r}\n$ {command}\n{output}"


def test_the_runbooks_run_as_written(site):
    work, env, table, captured = site
    steps = runbook.walk_order()
    # Every persona has steps, and the walk reaches the end: import and the audit anchor.
    assert {s.doc for s in steps} == set(runbook.ORDER)
    walk(steps, work, env, table, captured)
    assert (work.parent / "root" / "var/lib/airgap/audit.log").is_file()


def test_a_misspelled_command_fails_the_walk(tmp_path):
    """The walk is a test: one wrong option in the first step of the first runbook stops it there."""
    work, env, table, _ = _bench(tmp_path)
    walk(runbook.walk_order()[:1], work, env, table, {})  # as written, the first step runs
    shutil.rmtree(work / "keys")
    docs = tmp_path / "mutated"
    shutil.copytree(runbook.RUNBOOKS, docs)
    text = (docs / "key-ceremonies.md").read_text()
    assert "--dir keys/" in text
    (docs / "key-ceremonies.md").write_text(text.replace("--dir keys/", "--dri keys/", 1))
    steps = runbook.walk_order(docs)
    with pytest.raises(AssertionError, match=r"key-ceremonies.md:\d+: exit 2, the runbook says 0"):
        walk(steps[:1], work, env, table, {})


def test_a_missing_output_line_fails_the_walk(tmp_path):
    work, env, table, _ = _bench(tmp_path)
    step = runbook.parse("<!-- runbook -->\n```console\n$ airgap --version\nairgap 99.0\n```\n", "x.md")
    with pytest.raises(AssertionError, match="not printed: 'airgap 99.0'"):
        walk(step, work, env, table, {})


def _airgap_commands() -> list[tuple[str, str]]:
    """Every 'airgap ...' command in the runbooks, walked or not, with where it is."""
    found = []
    for doc in sorted(runbook.RUNBOOKS.glob("*.md")):
        lines = doc.read_text().splitlines()
        i = 0
        fenced = False
        while i < len(lines):
            if lines[i].startswith("```"):
                fenced = not fenced
            in_code = fenced or lines[i].startswith("    ")
            line = lines[i].strip().removeprefix("$ ") if in_code else ""
            start = i
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            i += 1
            if line.startswith("airgap ") or line.startswith("AIRGAP_"):
                found.append((f"{doc.name}:{start + 1}", line))
    return found


def test_every_airgap_command_in_the_runbooks_parses():
    """Commands shown but not walked (a token on a real HSM, the second officer) are spelled right too."""
    commands = _airgap_commands()
    assert len(commands) > 30
    parser = build_parser()
    for where, line in commands:
        argv = shlex.split(line.split(" #", 1)[0])
        while argv and "=" in argv[0] and not argv[0].startswith("-"):
            argv.pop(0)  # VAR=value before the command
        argv = argv[1:]  # 'airgap'
        for cut in ("|", ">", "&&"):
            if cut in argv:
                argv = argv[:argv.index(cut)]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"docs/runbooks/{where}: does not parse (exit {exc.code}): {line}")


def test_the_parse_check_catches_a_misspelling():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(shlex.split("verify media/ --trsut trust.json"))


def test_the_extractor_reads_commands_output_and_options():
    text = ("intro\n<!-- runbook: exit=1 answers=yes,y -->\n```console\n$ airgap a \\\n    --b c\nout … line\n"
            "$ airgap d\n```\n<!-- runbook: file=spec/x.yaml -->\n```yaml\nk: v\n```\n```console\n$ not walked\n```\n")
    steps = runbook.parse(text, "t.md")
    assert [s.commands for s in steps] == [["airgap a \\\n    --b c", "airgap d"], []]
    assert steps[0].expected == [["out … line"], []]
    assert (steps[0].exit, steps[0].answers, steps[1].file, steps[1].content) == (1, ["yes", "y"], "spec/x.yaml", "k: v\n")
    assert runbook.find_lines(["out … line"], "x\nout 42 line\n") is None
    assert runbook.find_lines(["b", "a"], "a\nb\n") == "a"  # in order
    assert runbook.find_lines(["ask? [y/N]", "done"], "ask? [y/N] done\n") is None
