#!/usr/bin/env bash
# The main job on a fresh machine: install glmops, then the local demo (scripts/demo.py): deploy the
# tiny model to this machine with playbooks/local.yml (over SSH to a throwaway sshd on loopback),
# wait for health, open `glmops tunnel`, print a streamed chat answer. Run it again: changed=0.
#   bash scripts/demo.sh         deploy (or check) and chat
#   bash scripts/demo.sh stop    stop the tunnel, the server and the throwaway sshd
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "stop" ]; then exec .venv/bin/python scripts/demo.py stop; fi
bash scripts/bootstrap.sh   # only what the demo needs (no CPU engines, no test tools)
exec .venv/bin/python scripts/demo.py
