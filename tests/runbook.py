"""Reads the runnable steps out of the runbooks (docs/runbooks/*.md) and runs them.

A step is a fenced block right after a marker comment::

    <!-- runbook -->
    ```console
    $ airgap keygen root-1 --dir keys/ --passphrase-file /run/secrets/root-1
    wrote keys/root-1.key (0600, encrypted) and keys/root-1.pub
    ```

Lines starting with ``$ `` are commands (a line ending in `` \\`` continues);
every other non-empty line is documented output that the command must print
(stdout or stderr, in that order; ``…`` stands for any text).  Marker options:

- ``exit=N``: the commands must exit N (default 0), for documented refusals;
- ``answers=A,B``: run on a terminal and type these answers (``sign``'s questions);
- ``later``: key-ceremonies steps that happen after the operator's (rotation);
- ``lab``: needs the full lab (``ansible-playbook``): checked, not run (see
  :func:`check_lab_command`);
- ``file=PATH``: the block is the content of PATH (a spec, a config file).

The commands run one after another in one working directory, each in
``bash``, with the variables ``export``ed by earlier steps.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = REPO / "docs" / "runbooks"
# The order the personas act in; key-ceremonies' "later" steps (rotation) come last.
ORDER = ("key-ceremonies.md", "engineer.md", "officer.md", "operator.md")

_MARKER = re.compile(r"^<!--\s*runbook(?::\s*(?P<opts>.*?))?\s*-->\s*$")
_FENCE = re.compile(r"^(?P<fence>```+)\s*(?P<info>\S*)\s*$")


@dataclass
class Step:
    doc: str
    line: int  # of the block's first line, 1-based
    commands: list[str] = field(default_factory=list)
    expected: list[list[str]] = field(default_factory=list)  # per command
    exit: int = 0
    answers: list[str] | None = None
    later: bool = False
    lab: bool = False
    file: str | None = None
    content: str = ""

    @property
    def where(self) -> str:
        return f"docs/runbooks/{self.doc}:{self.line}"


def parse(text: str, doc: str) -> list[Step]:
    """The marked blocks of one runbook, in order."""
    lines = text.splitlines()
    steps: list[Step] = []
    i = 0
    while i < len(lines):
        m = _MARKER.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = _FENCE.match(lines[j]) if j < len(lines) else None
        if not fence:
            raise ValueError(f"docs/runbooks/{doc}:{i + 1}: a runbook marker must be followed by a fenced block")
        end = j + 1
        while end < len(lines) and lines[end].strip() != fence["fence"]:
            end += 1
        if end == len(lines):
            raise ValueError(f"docs/runbooks/{doc}:{j + 1}: unterminated block")
        step = Step(doc, j + 2)
        for opt in shlex.split(m["opts"] or ""):
            key, _, value = opt.partition("=")
            if key == "exit":
                step.exit = int(value)
            elif key == "answers":
                step.answers = value.split(",")
            elif key in ("later", "lab"):
                setattr(step, key, True)
            elif key == "file":
                step.file = value
            else:
                raise ValueError(f"docs/runbooks/{doc}:{i + 1}: unknown runbook option {opt!r}")
        body = lines[j + 1:end]
        if step.file:
            step.content = "\n".join(body) + "\n"
        else:
            _commands(step, body)
            if not step.commands:
                raise ValueError(f"{step.where}: a runnable block without a '$ ' command")
        steps.append(step)
        i = end + 1
    return steps


def _commands(step: Step, body: list[str]) -> None:
    pending = ""
    for raw in body:
        if pending:
            pending += "\n" + raw
            if not raw.endswith("\\"):
                step.commands.append(pending)
                pending = ""
            continue
        if raw.startswith("$ "):
            if raw.endswith("\\"):
                pending = raw[2:]
            else:
                step.commands.append(raw[2:])
            step.expected.append([])
        elif raw.strip():
            if not step.commands:
                raise ValueError(f"{step.where}: output before the first '$ ' command")
            step.expected[-1].append(raw.strip())
    if pending:
        raise ValueError(f"{step.where}: the last command ends in a continuation")


def walk_order(directory: Path = RUNBOOKS) -> list[Step]:
    """Every runnable step of the runbooks in the order the personas act."""
    now: list[Step] = []
    later: list[Step] = []
    for doc in ORDER:
        for step in parse((directory / doc).read_text(), doc):
            (later if step.later else now).append(step)
    return now + later


def substitute(text: str, table: Mapping[str, str | Callable[[], str]]) -> str:
    for placeholder, value in table.items():
        if placeholder in text:
            text = text.replace(placeholder, value() if callable(value) else value)
    return text


def find_lines(expected: list[str], output: str) -> str | None:
    """None if every expected line is in *output* in order, else the first one missing."""
    got = [line.strip() for line in output.replace("\r\n", "\n").splitlines()]
    at = 0
    for want in expected:
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("…")))
        while at < len(got) and not pattern.search(got[at]):
            at += 1
        if at == len(got):
            return want
        # the next line may be printed on the same one (a prompt and the result after its answer)
    return None


class Shell:
    """Runs commands one by one in *cwd*, keeping exported variables between them."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.exports = cwd.parent / "runbook-exports.sh"
        self.exports.write_text("")

    def run(self, command: str, answers: list[str] | None = None, timeout: float = 120) -> tuple[int, str]:
        script = (f"set -o pipefail\n. {shlex.quote(str(self.exports))}\n{command}\nrc=$?\n"
                  f"export -p | grep -v -E '^declare -x (PWD|OLDPWD|SHLVL|_)=' > {shlex.quote(str(self.exports))}\n"
                  "exit $rc\n")
        argv = ["bash", "--noprofile", "--norc", "-c", script]
        if answers is None:
            proc = subprocess.run(argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
            return proc.returncode, proc.stdout
        return self._on_terminal(argv, answers, timeout)

    def _on_terminal(self, argv: list[str], answers: list[str], timeout: float) -> tuple[int, str]:
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdin=slave, stdout=slave, stderr=slave,
                                    start_new_session=True)
        finally:
            os.close(slave)
        # A terminal in canonical mode keeps typed lines until they are read.
        os.write(master, "".join(a + "\n" for a in answers).encode())
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has gone
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        return proc.wait(timeout), b"".join(chunks).decode(errors="replace")


def check_lab_command(command: str) -> list[str]:
    """Problems with an ``ansible-playbook`` step that needs the full lab to run.

    It is not run here (tests/test_rollout.py runs the rollout for real), but
    its playbook and inventory must exist and every ``-e NAME=`` must be a
    variable the playbooks read.
    """
    argv = shlex.split(command)
    if argv[0] != "ansible-playbook":
        return [f"a lab step must be an ansible-playbook command: {command}"]
    problems = []
    for i, arg in enumerate(argv):
        if arg == "-i" and not (REPO / argv[i + 1]).exists():
            problems.append(f"inventory {argv[i + 1]} does not exist")
        elif arg.endswith(".yml") and argv[i - 1] != "-i" and not (REPO / arg).is_file():
            problems.append(f"playbook {arg} does not exist")
        elif arg == "-e":
            name = argv[i + 1].split("=", 1)[0]
            if not _playbooks_read(name):
                problems.append(f"-e {name}: no playbook reads {name}")
    return problems


def _playbooks_read(name: str) -> bool:
    word = re.compile(rf"\b{re.escape(name)}\b")
    return any(word.search(p.read_text(errors="replace"))
               for p in (REPO / "playbooks").rglob("*") if p.is_file() and p.suffix in (".yml", ".py", ".j2"))
