#!/usr/bin/env bash
# Installs what minik8s needs on a Debian/Ubuntu machine: etcd (Debian's etcd-server)
# and the Python dependencies in ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: etcd; iproute2 and util-linux for the kubelet (its pods see the
# host's root filesystem, and its tests run `ip`, `ipcmk` and `ipcs` inside them).
PKGS=""
command -v etcd >/dev/null 2>&1 || PKGS="$PKGS etcd-server"
command -v ip >/dev/null 2>&1 || PKGS="$PKGS iproute2"
command -v ipcmk >/dev/null 2>&1 || PKGS="$PKGS util-linux"
if [ -n "$PKGS" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing$PKGS with apt" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PKGS >/dev/null
    # Debian starts a system etcd on 2379; minik8s runs its own, so keep the port free.
    case "$PKGS" in *etcd-server*) $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true ;; esac
  else
    echo "error: missing$PKGS and apt-get is not available; install them (etcd 3.4+) and retry" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
