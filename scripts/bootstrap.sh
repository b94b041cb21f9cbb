#!/usr/bin/env bash
# Prepare a fresh Debian machine for glmops. Safe to run again: each step checks first.
#   bash scripts/bootstrap.sh          what the local demo needs (scripts/demo.sh, a few minutes):
#                                      system packages, .venv with the CPU build of torch, glmops with
#                                      its server extra and the openai client
#   bash scripts/bootstrap.sh --tests  + the test tools, the CPU engines (llama-cpp-python,
#                                      chatglm-cpp: built from source, ~15 min the first time) and
#                                      .venv-pins (scripts/test.sh runs this one)
set -euo pipefail
cd "$(dirname "$0")/.."
tests=false
case "${1:-}" in
  "") ;;
  --tests) tests=true ;;
  *) echo "usage: bash scripts/bootstrap.sh [--tests]   (unknown argument: $1)" >&2; exit 2 ;;
esac

need_apt=()
for pkg in openssh-server openssh-client git git-lfs rsync iproute2 sudo curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch first, pinned, the CPU build: on Linux PyPI's torch is the CUDA build (~0.5 GB plus a
# multi-GB cuda-toolkit); PyTorch's CPU index has torch==2.13.0+cpu (~190 MB), which pip prefers
# (a local version sorts after the plain one). GLMOPS_TORCH_INDEX= (empty) skips that index.
# A host name that does not resolve (an offline mirror setup) skips it: pip would retry it for minutes.
torch_index=()
index=${GLMOPS_TORCH_INDEX-https://download.pytorch.org/whl/cpu}
if [ "$(uname -s)" = Linux ] && [ -n "$index" ] && "$PY" -c "import socket, sys, urllib.parse as u; socket.getaddrinfo(u.urlsplit(sys.argv[1]).hostname, 443)" "$index" 2>/dev/null; then
  torch_index=(--extra-index-url "$index")
fi
install_torch() {  # VENV: torch alone from the CPU index, then its dependencies from the usual index
  "$1/bin/python" -c "import torch" 2>/dev/null && return 0
  "$1/bin/pip" install -q --no-deps "${torch_index[@]}" torch==2.13.0
  "$1/bin/pip" install -q torch==2.13.0
}
install_torch .venv
# The demo: the server extra (it deploys this checkout's wheel, makes tiny models with transformers)
# and the openai client it streams the answer with (the same bound as the dev extra).
.venv/bin/pip install -q -e '.[server]' 'openai>=1.30'
if ! $tests; then
  exit 0
fi

.venv/bin/pip install -q -e '.[server,dev]'
# The CPU engines (the `cpu` extra) build from source, one at a time with two jobs, as portable code
# (pip caches the built wheels, so a second run takes seconds). chatglm-cpp's vendored CMake files need
# CMAKE_POLICY_VERSION_MINIMUM with CMake 4.
export CMAKE_BUILD_PARALLEL_LEVEL=2
.venv/bin/python -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS=-DGGML_NATIVE=OFF .venv/bin/pip install -q 'llama-cpp-python==0.3.36'
.venv/bin/python -c "import chatglm_cpp" 2>/dev/null || CMAKE_POLICY_VERSION_MINIMUM=3.5 .venv/bin/pip install -q 'chatglm-cpp==0.4.2'
.venv/bin/pip install -q -e '.[server,dev,cpu]'
.venv/bin/python -m compileall -q glmops >/dev/null || true  # byte-code, as a regular install has
# The deployed pins (roles/python_env/defaults/main.yml: torch_pin, transformers_pin and the cpu profile's
# packages) in a venv of their own: ChatGLM3's own remote code (the checkpoint of scripts/make_tiny_chatglm.py)
# runs in it, as on a deployed target; it does not run with the newer transformers of .venv.
if [ ! -x .venv-pins/bin/python ]; then
  "$PY" -m venv .venv-pins
  .venv-pins/bin/pip install -q --upgrade pip
fi
pins=$(.venv/bin/python -c "import yaml; d = yaml.safe_load(open('roles/python_env/defaults/main.yml')); print(d['torch_pin'], d['transformers_pin'], *d['python_env_profile_packages']['cpu'])")
install_torch .venv-pins
.venv-pins/bin/pip install -q $pins
.venv-pins/bin/pip install -q -e '.[server]'
