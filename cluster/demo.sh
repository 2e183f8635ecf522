#!/usr/bin/env bash
# `make demo`: the operator's main job on the local control plane, in one command.
# Starts the cluster, installs the chart (no operator pod: the operator runs here, as a local
# process authenticated as the chart's ServiceAccount), applies the CPU demo SpeechModel, waits
# until it is Ready and shows it. Pods are simulated by KWOK (`make serve` runs the real runtime).
# Its last lines are the exports of `make cluster`; `make down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${KUBESCRIBE_CLUSTER_DIR:-.cluster}
venv=${VENV:-.venv}
step() { printf '\n==> %s\n' "$*" >&2; }

step "starting the local control plane"
eval "$(python3 cluster/local_cluster.py up --state-dir "$state" | grep '^export ')"

step "helm upgrade --install kubescribe charts/kubescribe (namespace kubescribe-system)"
helm upgrade --install kubescribe charts/kubescribe --namespace kubescribe-system \
    --create-namespace --set replicaCount=0 --wait --timeout 120s >&2

step "starting the operator as the chart's ServiceAccount (TokenRequest token)"
token=$(kubectl create token kubescribe -n kubescribe-system --duration=24h)
server=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')
cat > "$state/operator.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$ca"}}]
users: [{name: kubescribe, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: kubescribe}}]
current-context: local
KUBECONFIG
KUBECONFIG="$state/operator.kubeconfig" nohup "$venv/bin/kubescribe" operator --all-namespaces \
    --liveness-port 0 --metrics-port 0 --resync-seconds 10 > "$state/logs/operator.log" 2>&1 &
python3 cluster/local_cluster.py adopt --state-dir "$state" --name operator --pid $!
echo "operator log: $state/logs/operator.log" >&2

step "kubectl apply -f examples/speechmodels/cpu-demo.yaml"
kubectl create namespace speech --dry-run=client -o yaml | kubectl apply -f - >&2
kubectl apply -f examples/speechmodels/cpu-demo.yaml >&2

step "waiting for the SpeechModel to be Ready"
if ! kubectl wait speechmodel/demo -n speech --for=condition=Ready --timeout=180s >&2; then
    tail -n 40 "$state/logs/operator.log" >&2
    exit 1
fi
kubectl get speechmodels -A >&2
kubectl describe speechmodel demo -n speech >&2
printf '\nThe demo SpeechModel is Ready (its pods are simulated by KWOK). `make down` stops it all.\n' >&2
printf 'export KUBECONFIG=%s\nexport PATH=%s:"$PATH"\n' "$KUBECONFIG" "$(dirname "$(command -v kubectl)")"
