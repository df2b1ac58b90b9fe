#!/usr/bin/env bash
# The README's main job: the whole pipeline on the sample bundle and the lab.
# Installs what it needs, then runs airgap.lab.demo (see its docstring for the steps)
# on this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root (the lab needs network, mount and PID namespaces)" >&2
    exit 2
fi
bash scripts/setup.sh
exec .venv/bin/python -m airgap.lab.demo --repo "$PWD" "$@"
