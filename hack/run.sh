#!/usr/bin/env bash
# Installs everything, then starts what exists: etcd + the API server on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
exec .venv/bin/minik8s apiserver "$@"
