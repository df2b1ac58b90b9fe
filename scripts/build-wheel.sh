#!/usr/bin/env bash
# Build airgap's wheel reproducibly from a git ref (a release tag), so anyone can
# rebuild a toolkit release and compare digests:
#   scripts/build-wheel.sh v0.1.0 -o /tmp/rebuild
#   airgap toolkit verify toolkit-release.json --trust trust.json --wheels /tmp/rebuild-with-deps
# --with-dependencies also fetches the pinned runtime dependencies (a release's
# wheelhouse). SOURCE_DATE_EPOCH is the commit time; see airgap/wheels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh >/dev/null
exec .venv/bin/python -m airgap.wheels "$@"
