#!/usr/bin/env bash
# Installs everything, starts a local cluster (`minik8s up`; arguments go to it), runs
# the example in manifests/web.yaml and shows its pods on the nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
bin=$PWD/.venv/bin

# The state dir (and so the kubeconfig) `minik8s up` will use.
state=~/.minik8s
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --state-dir=*) state=${args[$i]#--state-dir=} ;;
    --state-dir) state=${args[$((i + 1))]:-$state} ;;
  esac
done

"$bin/minik8s" up "$@"
export KUBECONFIG=$state/kubeconfig
echo
echo "\$ kubectl-lite apply -f manifests/web.yaml"
"$bin/kubectl-lite" apply -f manifests/web.yaml
"$bin/kubectl-lite" rollout status deployment/web --timeout=120s
echo
echo "\$ kubectl-lite get pods -o wide"
"$bin/kubectl-lite" get pods -o wide
echo
echo "Next: export KUBECONFIG=$KUBECONFIG PATH=$bin:\$PATH, then the walk-through in README.md."
