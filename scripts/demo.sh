#!/usr/bin/env bash
# The main job on a fresh machine: install glmops, run the shipped example playbook against this
# machine, then run it again to show that a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/glmops run playbooks/example.yml -i inventory/localhost.yml
echo "--- second run: expect changed=0 ---"
.venv/bin/glmops run playbooks/example.yml -i inventory/localhost.yml
