#!/usr/bin/env bash
# The one command that installs everything (the full bootstrap: test tools, CPU engines, .venv-pins)
# and runs the whole test suite on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --tests
exec .venv/bin/python -m pytest "$@"
