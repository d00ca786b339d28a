#!/usr/bin/env bash
# Installs what minik8s needs on a Debian/Ubuntu machine: etcd (Debian's etcd-server)
# and the Python dependencies in ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing etcd-server with apt" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
    # Debian starts a system etcd on 2379; minik8s runs its own, so keep the port free.
    $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
  else
    echo "error: etcd is not on PATH and apt-get is not available; install etcd 3.4+ and retry" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
