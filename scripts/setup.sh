#!/usr/bin/env bash
# Installs what airgap needs on a fresh Debian machine: the Debian packages for
# the real parts (registry, sshd, skopeo, umoci, podman, containerd + runc, apt's
# tools, SoftHSM2 and OpenSC's pkcs11-tool for token keys, zstd for zstd-compressed
# layers) and a virtualenv in .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
    python3 python3-venv python3-dev gcc libffi-dev
    docker-registry skopeo umoci podman uidmap containerd runc
    dpkg-dev openssl
    openssh-server openssh-client busybox-static
    iproute2 util-linux procps systemd coreutils tar
    softhsm2 opensc zstd
)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The demo and the OS-package tests carry these packages from apt's cache into a bundle
# (no download while the tests run): keep their .deb files there.
cached=()
for pkg in containerd runc docker-registry podman; do
    ls /var/cache/apt/archives/"${pkg}"_*.deb >/dev/null 2>&1 || cached+=("$pkg")
done
if ((${#cached[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --reinstall --download-only "${cached[@]}" >/dev/null
fi
# Debian's containerd package enables a system service; the lab runs its own
# containerd per node, so the host's stays off.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    systemctl stop containerd || true
fi
# The Debian registry package starts a system service on :5000; airgap's tests
# and demo start their own registries on loopback ports, so the service stays off.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl stop docker-registry || true
fi

PY=${PYTHON:-python3}
stamp=.venv/.airgap-installed
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[test]"
    touch "$stamp"
fi

# The README writes every command as `airgap ...`: put this checkout's console
# script on the PATH of every login shell.  As root that is a symlink in
# /usr/local/bin (on Debian's default PATH); an existing file there that is not
# such a link is left alone.  Otherwise the line to add to ~/.profile is printed.
link=/usr/local/bin/airgap
if [ "$(id -u)" -eq 0 ]; then
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        echo "setup: $link exists and is not a link; not replaced (use $PWD/.venv/bin/airgap)" >&2
    else
        ln -sfn "$PWD/.venv/bin/airgap" "$link"
        echo "setup: airgap is on PATH: $link -> $PWD/.venv/bin/airgap"
    fi
else
    echo "setup: not root, so nothing was linked: add this line to ~/.profile to put airgap on PATH:"
    echo "    export PATH=\"$PWD/.venv/bin:\$PATH\""
fi
