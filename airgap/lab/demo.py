"""The whole pipeline on the embedded default, end to end, on one machine.

Connected side (the host's network namespace): make the sample images offline,
serve them from a loopback registry, create demo keys and a trust policy,
build the bundle as the builder, countersign it as the officer.

The gap: the bundle is cut into media parts and the parts are the only thing
that crosses, as files.

Isolated side (the lab's network namespace, loopback only): verify the parts,
roll out with ``site.yml`` (bundle, registry, import, runtime, workloads), prove
the result with ``check.yml``, and ask the pilot applications for their pages.

Used by ``scripts/demo.sh`` (the README's first command, which passes the
checkout as ``--repo``) and by the rollout tests, so the demo and the tests run
the same steps.  How a step runs a command is :mod:`airgap.lab.runner`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from airgap.exceptions import OperationError
from airgap.lab.runner import DEMO_PASSPHRASE, DEMO_PIN, DEMO_TOKEN, DemoRunner
from airgap.lab.source import SourceRegistry

__all__ = ["Demo", "main"]


@dataclass
class Demo(DemoRunner):
    """The demo's steps, each one command (or a few) an engineer, officer or operator would run."""

    # ------------------------------------------------------------------ connected side
    def prepare(self) -> None:
        """Everything before the first build: source registry, images, keys, trust policy,
        toolkit release and the Debian mirror (the demo, the rollout test and the rollout
        benchmark all start here)."""
        self.start_source_registry()
        self.make_images()
        self.make_keys()
        self.make_trust()
        self.make_toolkit_release()
        self.make_apt_mirror()

    def start_source_registry(self) -> str:
        self.step("Connected side: start the source registry (loopback)")
        self.source = SourceRegistry(self.workdir / "source-registry").start()
        self.log(f"source registry at {self.source.host}")
        return self.source.host

    def make_images(self) -> None:
        self.step("Connected side: make the pilot images offline (busybox + umoci) and push them")
        layout = self.workdir / "layout"
        if layout.exists():  # make-images.sh wants a new directory; the images are rebuilt identically
            shutil.rmtree(layout)
        self.run(["bash", self.repo / "bundles/geheim-pilot/make-images.sh", layout, self.source_host()])

    def make_apt_mirror(self, spec: str = "bundle.yaml") -> None:
        """The connected side's Debian mirror, for the spec's ``packages:``: here a local copy.

        The tests and the demo may not reach the internet, so the mirror is the
        .deb files apt already fetched on this machine (scripts/setup.sh keeps
        them), indexed by dpkg-scanpackages; the target's baseline is this
        machine's dpkg status without those packages (lab nodes are copies of
        it), so the bundle carries exactly them.
        """
        from airgap.spec import load_spec

        packages = load_spec(self.repo / "bundles/geheim-pilot" / spec, env={"AIRGAP_SOURCE_REGISTRY": "127.0.0.1:1"}).packages
        if packages is None:
            raise OperationError(f"bundles/geheim-pilot/{spec} lists no packages")
        names = packages.names
        self.step(f"Connected side: a local Debian mirror for the nodes' packages ({', '.join(names)})")
        mirror = self.workdir / "apt-mirror"
        if mirror.exists():
            shutil.rmtree(mirror)
        mirror.mkdir(parents=True)
        for name in names:
            debs = sorted(Path("/var/cache/apt/archives").glob(f"{name}_*.deb"))
            if not debs:
                raise OperationError(f"no {name} .deb in /var/cache/apt/archives: run scripts/setup.sh")
            for deb in debs:
                shutil.copyfile(deb, mirror / deb.name)
        index = self.run(["dpkg-scanpackages", "--multiversion", "."], capture=True, cwd=mirror)
        (mirror / "Packages").write_text(index.stdout)
        sources = self.workdir / "apt-sources.list"
        sources.write_text(f"deb [trusted=yes] file:{mirror} ./\n")
        keep = [p for p in Path("/var/lib/dpkg/status").read_text().split("\n\n")
                if p.strip() and p.split("\n", 1)[0].removeprefix("Package: ") not in names]
        baseline = self.workdir / "target-baseline.status"
        baseline.write_text("\n\n".join(keep) + "\n")
        self.apt = (sources, baseline)

    @property
    def controller_state(self) -> Path:
        """The controller's own verification state (rollback), per work directory."""
        return self.workdir / "controller-state"

    def make_keys(self) -> None:
        self.step("Officers and builder: create demo keys (encrypted, Argon2id)")
        self.keys.mkdir(parents=True, exist_ok=True)
        if not self.passphrase_file.exists():
            fd = os.open(self.passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(DEMO_PASSPHRASE + "\n")
        self.log(f"the demo keys' throw-away passphrase is in {self.passphrase_file} "
                 f"(also set as AIRGAP_PASSPHRASE for the demo's commands; never use it for real keys)")
        for name in ("root-1", "root-2", "root-3", "builder-1", "officer-1", "toolkit-1"):
            if not (self.keys / f"{name}.key").exists():
                self.airgap("keygen", name, "--dir", self.keys, "--quiet")
        if self.officer_token:
            self.make_officer_token()

    def make_officer_token(self) -> None:
        """A SoftHSM2 token for the officer, and an Ed25519 key generated on it (never in a file)."""
        self.step("Officer: a key on a PKCS#11 token (SoftHSM2), generated on the token")
        if self.officer_pub.exists():
            self.log(f"token key exists: {self.officer_uri} ({self.officer_pub})")
            return
        shutil.rmtree(self.token_dir, ignore_errors=True)
        (self.token_dir / "tokens").mkdir(parents=True)
        (self.token_dir / "softhsm2.conf").write_text(
            f"directories.tokendir = {self.token_dir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        pin = self.token_dir / "pin"
        fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(DEMO_PIN + "\n")
        self.run(["softhsm2-util", "--init-token", "--free", "--label", DEMO_TOKEN, "--so-pin", "12345678", "--pin", DEMO_PIN])
        self.airgap("keygen", "officer-token", "--dir", self.keys, "--pkcs11", self.officer_uri, "--pin-file", pin)
        self.log(f"the token's throw-away user PIN is in {pin}")

    def make_trust(self) -> None:
        self.step("Officers: sign the trust policy (root 2 of 3, builder 1, officer 1, toolkit 1)")
        if self.trust.exists() and b'"toolkit"' in self.trust.read_bytes():
            return
        k = self.keys
        self.airgap("trust", "init", "--target", "geheim-pilot", "--expires", "365d",
                    "--root", k / "root-1.pub", "--root", k / "root-2.pub", "--root", k / "root-3.pub", "--root-threshold", "2",
                    "--builder", k / "builder-1.pub", "--builder-threshold", "1",
                    "--officer", self.officer_pub, "--officer-threshold", "1",
                    "--toolkit", k / "toolkit-1.pub", "--toolkit-threshold", "1",
                    "--key", k / "root-1.key", "--key", k / "root-2.key", "-o", self.trust)

    def make_toolkit_release(self, directory: Path | None = None, wheels_from: Path | None = None) -> Path:
        """The toolkit role releases the toolkit: its wheels and a signed statement listing them.

        A rehearsal: the airgap wheel is built from this working tree (the same
        reproducible build as scripts/build-wheel.sh), and the statement names
        the checkout's HEAD commit.  The builder then carries this directory.
        """
        from airgap import __version__, wheels

        self.step("Toolkit role: release the toolkit (reproducible wheels, statement signed by the toolkit key)")
        rel = directory or self.workdir / "toolkit-release"
        if rel.exists():
            shutil.rmtree(rel)
        rel.mkdir(parents=True)
        source = wheels_from or wheels.wheelhouse().directory
        for wheel in sorted(source.glob("*.whl")):
            shutil.copyfile(wheel, rel / wheel.name)
        commit = subprocess.run(["git", "-C", str(self.repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        version = next(rel.glob("airgap-*.whl")).name.split("-")[1] if wheels_from else __version__
        self.airgap("toolkit", "release", "--wheels", rel, "--version", version,
                    "--commit", commit.stdout.strip() if commit.returncode == 0 else "0" * 40,
                    "--key", self.keys / "toolkit-1.key", "--trust", self.trust, "-o", rel / "toolkit-release.json")
        self.release_dir = rel
        return rel

    def build(self, spec: str = "bundle.yaml", version: str = "1.0.0") -> Path:
        """Build, inspect and countersign one bundle (the source registry must be up)."""
        self.step(f"Engineer: build bundle {version}; officer: review and countersign")
        out = self.workdir / "dist" / f"geheim-pilot-{version}.tar"
        if out.exists():
            out.unlink()
        apt = ["--apt-sources", self.apt[0], "--apt-baseline", self.apt[1]] if self.apt else []
        self.airgap("build", self.repo / "bundles/geheim-pilot" / spec, "-o", out, "--key", self.keys / "builder-1.key",
                    "--plain-http", *apt)
        self.airgap("inspect", out, "--trust", self.trust)
        self.airgap("sign", out, *self.officer_key_args(), "--trust", self.trust, "--yes")
        return out

    def carry(self, bundle: Path) -> Path:
        """Cut the bundle into media parts; only the parts cross the gap."""
        self.step("The gap: cut the bundle into media parts; only the parts cross, as files")
        media = self.workdir / "media" / bundle.stem
        if media.exists():
            shutil.rmtree(media)
        self.airgap("split", bundle, "--size", "16M", "-o", media, "--key", self.keys / "builder-1.key")
        incoming = self.workdir / "isolated" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.trust, incoming / "trust.json")
        return media

    # ------------------------------------------------------------------ isolated side
    def lab_up(self, fresh: bool = False):
        """Bring the lab up (or use the Lab given to the Demo).

        ``fresh``: a lab that is already up is brought down first. A freshly
        built bundle has new content under the same version, which the
        isolated side's rollback state rightly refuses; the demo rehearses a
        first rollout, so it starts from an empty site.
        """
        from airgap.lab import DEFAULT_INVENTORY, DEFAULT_WORKDIR, Lab

        self.step("Isolated side: bring the lab up (network namespace with only loopback, 3 nodes)")
        if self.lab is None:
            self.lab = Lab(self.lab_dir or DEFAULT_WORKDIR, name=self.lab_name, inventory=self.inventory or DEFAULT_INVENTORY)
        lab = self.lab
        self.lab_name = lab.name
        if fresh and lab.status().up:
            self.log(f"lab {lab.name} is up from an earlier run: bringing it down for a fresh site")
            lab.down()
        info = lab.up()
        self.log(info.to_text())
        return info

    def inventory_path(self) -> Path:
        return Path(self.the_lab().info().inventory)

    def join_inside(self, media: Path, bundle_name: str) -> Path:
        self.step("Isolated side: check every part and join them (no network route exists here)")
        self.run(["ip", "-n", self.lab_name, "route", "get", "192.0.2.1"], check=False)
        out = self.workdir / "isolated" / "incoming" / bundle_name
        if out.exists():
            out.unlink()
        self.airgap("verify", media, "--trust", self.workdir / "isolated/incoming/trust.json", netns=True)
        self.airgap("join", media, "--trust", self.workdir / "isolated/incoming/trust.json", "-o", out, netns=True)
        return out

    def playbook(self, name: str, *extra: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        return self.run([str(self.venv_bin / "ansible-playbook"), "-i", str(self.inventory_path()), f"playbooks/{name}", *extra],
                        netns=True, check=check, capture=capture)

    def runtime_args(self) -> list[str]:
        """The container hosts' runtime, when not the default (podman)."""
        return ["-e", f"airgap__runtime={self.runtime}"] if self.runtime != "podman" else []

    def rollout_args(self, bundle: Path) -> list[str]:
        return ["-e", f"bundle_path={bundle}", "-e", f"trust_path={self.workdir / 'isolated/incoming/trust.json'}",
                "-e", f"airgap__controller_state_dir={self.controller_state}", *self.runtime_args()]

    def stage(self, bundle: Path, *extra: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        """Only the bundle stage of site.yml: copy, install the toolkit (if released), verify there."""
        self.step(f"Operator: ansible-playbook stages/10-bundle.yml (bundle {bundle.name})")
        return self.playbook("stages/10-bundle.yml", *self.rollout_args(bundle), *extra, check=check, capture=capture)

    def rollout(self, bundle: Path, *extra: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        self.step(f"Operator: ansible-playbook site.yml (bundle {bundle.name})")
        return self.playbook("site.yml", *self.rollout_args(bundle), *extra, check=check, capture=capture)

    def check(self, *extra: str, strict: bool = True, capture: bool = False) -> dict:
        """Run check.yml (with *extra* arguments); return its JSON report (with ``returncode`` added).

        ``strict``: raise when a check failed (the demo); the tests look at
        the report instead.
        """
        self.step("Security officer: ansible-playbook check.yml (read-only)")
        report_dir = self.workdir / "check-report"
        report_json = report_dir / "airgap-check.json"
        if report_json.exists():
            report_json.unlink()  # never judge an earlier run's report
        proc = self.playbook("check.yml", "-e", f"check__report_dir={report_dir}",
                             "-e", f"airgap__controller_state_dir={self.controller_state}", *self.runtime_args(),
                             *extra, check=False, capture=capture)
        if not report_json.exists():
            detail = (proc.stdout or "")[-3000:] if capture else ""
            raise OperationError(f"check.yml wrote no report (exit {proc.returncode}) {detail}")
        report = json.loads(report_json.read_text())
        report["returncode"] = proc.returncode
        report["output"] = proc.stdout if capture else ""
        report["paths"] = [str(report_dir / f"airgap-check.{ext}") for ext in ("md", "html", "json")]
        if strict and proc.returncode != 0:
            self.log(self.summary(report))
            raise OperationError(f"check.yml reported FAIL; see {report['paths'][0]}")
        return report

    @staticmethod
    def summary(report: dict) -> str:
        """The officer's minute: the Markdown report up to its evidence, and where the rest is."""
        md = Path(report["paths"][0]).read_text()
        head = md.split("\n## Evidence", 1)[0].rstrip()
        return f"{head}\n\nFull report (evidence of every check): " + ", ".join(report["paths"])

    def ask_pilot(self) -> list[str]:
        """Fetch the pilot's pages from inside the isolated network."""
        self.step("The pilot answers (from inside the isolated network)")
        answers = []
        probe = ("import sys,urllib.request;"
                 "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()[:400])")
        for url in ("http://127.0.10.2:8080/cgi-bin/status", "http://127.0.10.3:8081/cgi-bin/notes"):
            proc = self.run([sys.executable, "-c", probe, url], netns=True, capture=True, check=False)
            text = proc.stdout.strip() if proc.returncode == 0 else f"no answer ({proc.stderr.strip()[-200:]})"
            self.log(f"{url}:\n{text}")
            answers.append(text)
        return answers

    def show_containerd(self) -> None:
        """What a containerd node holds and where it may pull from (as kubelet would find it)."""
        self.step("A containerd node: the signed images in k8s.io, the internal registry as its only server")
        ssh = self.the_lab().ssh_argv("node-1")
        self.run([*ssh, "ctr -n k8s.io images ls -q"], netns=True, check=False)
        self.run([*ssh, "cat /etc/containerd/certs.d/docker.io/hosts.toml"], netns=True, check=False)

    def stop(self) -> None:
        if self.source:
            self.source.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Run the airgap pipeline end to end on the sample bundle and the lab.")
    p.add_argument("--repo", required=True, type=Path,
                   help="the airgap checkout (bundles/, playbooks/, ansible.cfg); scripts/demo.sh passes it")
    p.add_argument("--workdir", help="work files (default: REPO/out/demo)")
    p.add_argument("--down", action="store_true", help="bring the lab down at the end")
    p.add_argument("--officer-token", action="store_true",
                   help="keep the officer's key on a SoftHSM2 token (PKCS#11) instead of in a key file")
    p.add_argument("--runtime", choices=("podman", "containerd"), default="podman",
                   help="the container hosts' runtime: podman runs the workloads (podman kube play); containerd "
                        "is prepared as a Kubernetes node's runtime (every signed image pre-pulled by digest)")
    args = p.parse_args(argv)
    repo = args.repo.resolve()
    workdir = Path(args.workdir) if args.workdir else repo / "out" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(workdir, repo=repo, officer_token=args.officer_token, runtime=args.runtime)
    # The controller's rollback state belongs to this run's freshly built bundles.
    shutil.rmtree(demo.controller_state, ignore_errors=True)
    try:
        demo.prepare()
        bundle = demo.build()
        media = demo.carry(bundle)
        demo.lab_up(fresh=True)
        joined = demo.join_inside(media, bundle.name)
        demo.rollout(joined)
        report = demo.check()
        if demo.runtime == "containerd":
            demo.show_containerd()
        else:
            answers = demo.ask_pilot()
            if any(a.startswith("no answer") for a in answers):
                raise OperationError("a pilot application did not answer")
        demo.step("The security officer's report (check.yml)")
        demo.log(demo.summary(report))
        what = ("containerd nodes prepared (every signed image in k8s.io by digest, nothing pullable from outside)"
                if demo.runtime == "containerd" else "the workloads run from their Kubernetes manifests")
        demo.log(f"\nDONE: bundle built, signed twice, carried as media parts, verified, imported, rolled out ({what}), "
                 "checked: PASS (the lab's expected Haven failures are listed in the report).")
        if args.down:
            demo.log(f"The lab is brought down (--down).  Work files: {workdir}")
        else:
            demo.log(f"The lab stays up for you to explore: airgap lab status | airgap lab down.  Work files: {workdir}")
    except OperationError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        demo.stop()
        if args.down and demo.lab is not None:
            demo.lab.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
