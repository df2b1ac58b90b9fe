"""How the demo runs: its work files, keys, environment and commands (:class:`DemoRunner`).

The steps themselves are :class:`airgap.lab.demo.Demo`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airgap.exceptions import OperationError
from airgap.lab.source import SourceRegistry

if TYPE_CHECKING:
    from airgap.lab.control import Lab

# A demo passphrase, used only for the demo's throw-away keys (never for real keys).
DEMO_PASSPHRASE = "airgap-demo-only"
# --officer-token: the officer's key lives on a SoftHSM2 token made for the demo.
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
DEMO_TOKEN = "demo-officer"
DEMO_PIN = "4242"


@dataclass
class DemoRunner:
    """Where the demo works and how it runs a command (its environment, the lab's network namespace)."""

    workdir: Path
    repo: Path = field(kw_only=True)  # the checkout: bundles/, playbooks/, ansible.cfg
    lab_dir: Path | None = None
    lab_name: str = "airgap-lab"
    inventory: Path | None = None
    log: Callable[[str], None] = print
    venv_bin: Path = field(default_factory=lambda: Path(sys.executable).parent)
    source: SourceRegistry | None = None
    lab: Lab | None = None
    release_dir: Path | None = None  # the toolkit release the builder carries (make_toolkit_release)
    officer_token: bool = False
    runtime: str = "podman"
    apt: tuple[Path, Path] | None = None  # the connected side's apt sources and the target's baseline

    @property
    def keys(self) -> Path:
        return self.workdir / "keys"

    @property
    def trust(self) -> Path:
        return self.workdir / ("trust-officer-token.json" if self.officer_token else "trust.json")

    @property
    def passphrase_file(self) -> Path:
        return self.keys / "demo-passphrase.txt"

    @property
    def token_dir(self) -> Path:
        return self.workdir / "softhsm"

    @property
    def officer_uri(self) -> str:
        return f"pkcs11:token={DEMO_TOKEN};object=officer-token"

    def officer_key_args(self) -> list[str]:
        """How the officer's key is given to sign: a key file, or the token URI with its PIN file."""
        if self.officer_token:
            return ["--key", self.officer_uri, "--pin-file", str(self.token_dir / "pin")]
        return ["--key", str(self.keys / "officer-1.key")]

    @property
    def officer_pub(self) -> Path:
        return self.keys / ("officer-token.pub" if self.officer_token else "officer-1.pub")

    def step(self, title: str) -> None:
        self.log(f"\n==> {title}")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AIRGAP_PASSPHRASE", DEMO_PASSPHRASE)
        if self.officer_token:
            env["SOFTHSM2_CONF"] = str(self.token_dir / "softhsm2.conf")
            env["AIRGAP_PKCS11_MODULE"] = SOFTHSM_MODULE
        env["PATH"] = f"{self.venv_bin}:{env.get('PATH', '/usr/bin:/bin')}"
        env["ANSIBLE_CONFIG"] = str(self.repo / "ansible.cfg")
        # The operator sees what changed and what failed, then the recap: not
        # a header for every task that was fine or skipped.
        env.setdefault("ANSIBLE_DISPLAY_OK_HOSTS", "false")
        env.setdefault("ANSIBLE_DISPLAY_SKIPPED_HOSTS", "false")
        if self.lab is not None:
            # Facts are cached per lab: every lab has hosts of the same names.
            env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(Path(self.lab.workdir) / "ansible-facts")
        if self.source:
            env["AIRGAP_SOURCE_REGISTRY"] = self.source.host
        if self.release_dir:
            env["AIRGAP_WHEELHOUSE"] = str(self.release_dir)
        return env

    def run(self, argv: Sequence[object], *, netns: bool = False, check: bool = True, capture: bool = False,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        if netns:
            argv = ["ip", "netns", "exec", self.lab_name, *argv]
        self.log(("$ " if cwd is None else f"$ (cd {cwd} && ") + " ".join(str(a) for a in argv) + ("" if cwd is None else ")"))
        proc = subprocess.run([str(a) for a in argv], cwd=cwd or self.repo, env=self.env(), text=True,
                              capture_output=capture)
        if check and proc.returncode != 0:
            detail = (proc.stderr or "").strip()[-2000:] if capture else ""
            raise OperationError(f"{' '.join(str(a) for a in argv[:4])} … exited {proc.returncode} {detail}")
        return proc

    def airgap(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.run([str(self.venv_bin / "airgap"), *map(str, args)], **kw)

    def the_lab(self) -> Lab:
        """The lab, once :meth:`Demo.lab_up` brought it up (or it was given)."""
        if self.lab is None:
            raise OperationError("the demo's lab is not up yet (lab_up)")
        return self.lab

    def source_host(self) -> str:
        """The source registry's address, once it was started."""
        if self.source is None:
            raise OperationError("the demo's source registry is not started (start_source_registry)")
        return self.source.host
