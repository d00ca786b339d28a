#!/usr/bin/env bash
# Installs what minik8s and its tests need on a Debian/Ubuntu machine: etcd (Debian's etcd-server),
# the image tests' fixtures and the Python dependencies in ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: etcd; iproute2 and util-linux for the kubelet (its pods see the
# host's root filesystem, and its tests run `ip`, `ipcmk` and `ipcs` inside them).
PKGS=""
command -v etcd >/dev/null 2>&1 || PKGS="$PKGS etcd-server"
command -v ip >/dev/null 2>&1 || PKGS="$PKGS iproute2"
command -v ipcmk >/dev/null 2>&1 || PKGS="$PKGS util-linux"
# nft for the service proxy (proxy/: it programs netfilter through `nft -j`).
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || PKGS="$PKGS nftables"
# The image tests' fixtures (tests/images_fixtures.py): a registry (Debian's build of
# distribution), skopeo to push to it, umoci to build OCI images from busybox-static,
# and htpasswd (apache2-utils) for the registry's bcrypt password file.
command -v docker-registry >/dev/null 2>&1 || PKGS="$PKGS docker-registry"
command -v skopeo >/dev/null 2>&1 || PKGS="$PKGS skopeo"
command -v umoci >/dev/null 2>&1 || PKGS="$PKGS umoci"
dpkg -s busybox-static >/dev/null 2>&1 || PKGS="$PKGS busybox-static"
command -v htpasswd >/dev/null 2>&1 || PKGS="$PKGS apache2-utils"
# The lab tests' "VMs" (tests/lab.py) each run Debian's sshd, started with its own options
# (no system configuration is read or changed); ssh and ssh-keygen come with it.
[ -x /usr/sbin/sshd ] || PKGS="$PKGS openssh-server"
if [ -n "$PKGS" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing$PKGS with apt" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PKGS >/dev/null
    # Debian starts a system etcd on 2379; minik8s runs its own, so keep the port free.
    case "$PKGS" in *etcd-server*) $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true ;; esac
    # Likewise a system docker-registry on 5000: the tests start their own registries.
    case "$PKGS" in *docker-registry*) $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true ;; esac
    # And the system sshd: the lab runs one per host, on the hosts' own addresses.
    case "$PKGS" in *openssh-server*) $SUDO systemctl disable --now ssh >/dev/null 2>&1 || true ;; esac
  else
    echo "error: missing$PKGS and apt-get is not available; install them (etcd 3.4+) and retry" >&2
    exit 1
  fi
fi

# kubectl for the compatibility tests (tests/test_kubectl.py and others, marked
# `kubectl`). Not installed here: Debian's only candidate, kubernetes-client, is kubectl
# 1.20, eleven minors from the 1.32 the server reports (kubectl supports one either
# side). Without it those tests skip; in CI (CI=true) that would go unnoticed, so there
# a missing kubectl fails setup, and the tests fail too (tests/conftest.py).
if ! command -v kubectl >/dev/null 2>&1; then
  if [ "${CI:-}" = true ]; then
    echo "error: kubectl (v1.32, https://kubernetes.io/docs/tasks/tools/) is not on PATH; CI runs the kubectl acceptance tests" >&2
    exit 1
  fi
  echo "warning: kubectl is not on PATH: the kubectl compatibility tests will be skipped" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
