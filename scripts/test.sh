#!/usr/bin/env bash
# The README's test command: installs what it needs, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint and types first: a finding fails the run before the long suite starts.
.venv/bin/ruff check airgap tests benchmarks scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
