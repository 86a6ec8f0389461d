#!/usr/bin/env bash
# Creates .venv and installs what Offload needs. Usage: scripts/bootstrap.sh [run|dev|bench]
# Safe to run again: it installs only when the requirements files changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

apt_install() {
  # Debian packages, installed only when missing and only where we may (root or sudo).
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c "import ensurepip" 2>/dev/null; then
    apt_install python3-venv
  fi
  "$python" -m venv .venv
fi

req=requirements.txt
[ "$mode" = dev ] && req=requirements-dev.txt
[ "$mode" = bench ] && req=requirements-bench.txt
stamp=".venv/.installed-$mode-$(cat requirements*.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing $req into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  rm -f .venv/.installed-"$mode"-*
  touch "$stamp"
fi

if [ "$mode" = dev ]; then
  # Browser tests drive Debian's Chromium, never a downloaded browser.
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  # The outbound TLS test makes its certificates with the openssl command.
  command -v openssl >/dev/null 2>&1 || apt_install openssl
fi
