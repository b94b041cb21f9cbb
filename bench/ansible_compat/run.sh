#!/bin/sh
# Regenerate the expectations of tests/test_ansible_compat.py from a real ansible-core 2.19 run.
# Usage: bench/ansible_compat/run.sh [PLAYBOOK.yml ...]   (makes /tmp/ansvenv on first use)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${ANSIBLE_VENV:-/tmp/ansvenv}
[ -x "$venv/bin/ansible-playbook" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'ansible-core==2.19.*'; }
cd "$here"
[ $# -gt 0 ] || set -- *.yml
for playbook in "$@"; do
  echo "=== $playbook"
  case $playbook in
    deleg.yml|flow.yml|force.yml) inventory="-i inv3.ini" ;;  # two local hosts, h1 and h2
    *) inventory="-i localhost, -c local" ;;
  esac
  # shellcheck disable=SC2086
  ANSIBLE_NOCOLOR=1 "$venv/bin/ansible-playbook" $inventory \
    -e ansible_python_interpreter="$(command -v python3)" "$playbook" || true
done
