"""Python entry to the GEHEIM pilot sample images (for tests, the demo and the lab).

The images themselves are built by ``make-images.sh`` next to this file: one
implementation, readable by a reviewer, run offline from Debian's static
busybox with umoci, deterministic (same inputs, same digests).  This module
only calls it and reads the result, so Python callers do not parse shell
output::

    from make_images import build_layout, push
    digests = build_layout(tmp_path / "layout")        # {"status-1.0": "sha256:...", ...}
    push(tmp_path / "layout", "127.0.0.1:5000")        # HOST/pilot/status:1.0 ...

or from the command line: ``python make_images.py LAYOUT [HOST:PORT]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "make-images.sh"

APPS = ("status", "notes")
VERSIONS = ("1.0", "1.1")
PAUSE = "pause-1.0"
"""The pods' infra (pause) image: podman's ``infra_image``, containerd's ``sandbox_image``."""
TAGS = tuple(f"{app}-{version}" for app in APPS for version in VERSIONS) + (PAUSE,)
"""Tags in the OCI layout: ``status-1.0``, ``status-1.1``, ``notes-1.0``, ``notes-1.1``, ``pause-1.0``."""


def registry_ref(registry: str, tag: str) -> str:
    """``status-1.0`` -> ``HOST/pilot/status:1.0``: where :func:`push` puts a layout tag."""
    app, _, version = tag.partition("-")
    return f"{registry}/pilot/{app}:{version}"


def layout_digests(layout: str | Path) -> dict[str, str]:
    """``{tag: manifest digest}`` of the pilot tags in an OCI layout's index.json."""
    index = json.loads((Path(layout) / "index.json").read_text())
    out = {}
    for desc in index["manifests"]:
        tag = desc.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if tag in TAGS:
            out[tag] = desc["digest"]
    return out


def build_layout(layout: str | Path, registry: str | None = None) -> dict[str, str]:
    """Build the five images into a new OCI layout (and push them to *registry* if given).

    Returns ``{tag: manifest digest}``.  Raises ``subprocess.CalledProcessError``
    (with the script's stderr) if the build fails.
    """
    cmd = ["sh", str(SCRIPT), str(layout)] + ([registry] if registry else [])
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return layout_digests(layout)


def push(layout: str | Path, registry: str, *, tls_verify: bool = False) -> dict[str, str]:
    """Copy every pilot tag of *layout* to *registry* (digest-preserving); return ``{ref: digest}``."""
    digests = layout_digests(layout)
    out = {}
    for tag in TAGS:
        ref = registry_ref(registry, tag)
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--preserve-digests", f"--dest-tls-verify={str(tls_verify).lower()}",
             f"oci:{layout}:{tag}", f"docker://{ref}"],
            check=True, capture_output=True, text=True,
        )
        out[ref] = digests[tag]
    return out


if __name__ == "__main__":  # pragma: no cover
    if not 2 <= len(sys.argv) <= 3:
        print(f"usage: {sys.argv[0]} LAYOUT [HOST:PORT]", file=sys.stderr)
        sys.exit(2)
    for tag, digest in build_layout(*sys.argv[1:]).items():
        print(tag, digest)
