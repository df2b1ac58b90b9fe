"""The demo's connected-side registry: Debian's docker-registry on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from airgap.exceptions import OperationError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SourceRegistry:
    """The connected side's registry: Debian's docker-registry on loopback."""

    root: Path
    host: str = ""
    proc: subprocess.Popen | None = None

    def start(self) -> SourceRegistry:
        port = free_port()
        self.host = f"127.0.0.1:{port}"
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {self.host}}}\n"
        )
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(config)], stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise OperationError(f"the source registry did not start; see {self.root / 'registry.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
