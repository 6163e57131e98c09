#!/usr/bin/env bash
# Sets seqbench up from a fresh clone: the CPU torch wheel first (a plain `pip install
# torch` would pull the multi-GB CUDA build), then the package with its extras, then
# (best effort, root only) Debian's chromium for the report's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[data,dev,ray]"
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: chromium could not be installed; the browser test of the report will skip" >&2
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
