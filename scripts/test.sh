#!/usr/bin/env bash
# The one command that installs everything and runs the whole test suite on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
