#!/usr/bin/env bash
# `make demo`: the product's first hour on the local cluster, in one command.
# Starts the control plane with a real node (kubelet + containerd in the cluster's own network
# namespace), imports the images built from this repository (cluster/images.py: the operator,
# the CPU runtime), installs the chart so the operator runs IN the cluster as users run it,
# serves the demo artifact over https from this checkout, applies a SpeechModel that fetches it
# (digest verified by the init container) onto the real node, waits until it is Ready and
# transcribes examples/audio/sample.wav through the SpeechModel's Service (kubectl
# port-forward). Where no real node can run (not root, no namespaces), it says so and falls back
# to the operator as a local process with KWOK's simulated pods.
# Its last lines are the exports of `make cluster`; `make down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${KUBESCRIBE_CLUSTER_DIR:-.cluster}
venv=${VENV:-.venv}
step() { printf '\n==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }
# Poll (every 0.2 s, at most $1 s) until the rest of the line succeeds.
poll() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.2
    done
}
show_model() {
    kubectl get speechmodels -A >&2
    kubectl get pods -n speech -o wide >&2
    kubectl describe speechmodel demo -n speech >&2
}
exports() {
    printf 'export KUBECONFIG=%s\nexport PATH=%s:"$PATH"\n' "$KUBECONFIG" "$(dirname "$(command -v kubectl)")"
}

step "starting the local control plane with a real node"
started=$(python3 cluster/local_cluster.py up --real-node --state-dir "$state")
eval "$(grep '^export ' <<< "$started")"
# The host's end of the node's veth: where the API server listens and what pods reach.
host_ip=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["api_host"] if s.get("node_slot") is not None else "")' "$state/cluster.json")
kubectl create namespace speech --dry-run=client -o yaml | kubectl apply -f - >&2

if [ -z "$host_ip" ]; then
    # ---------------------------------------------------------- fallback: KWOK's simulated pods
    step "no real node: the operator runs here as the chart's ServiceAccount; pods are simulated by KWOK"
    helm upgrade --install kubescribe charts/kubescribe --namespace kubescribe-system \
        --create-namespace --set replicaCount=0 --wait --timeout 120s >&2
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
    kubectl apply -f examples/speechmodels/cpu-demo.yaml >&2
    if ! kubectl wait speechmodel/demo -n speech --for=condition=Ready --timeout=180s >&2; then
        tail -n 40 "$state/logs/operator.log" >&2
        exit 1
    fi
    show_model
    printf '\nThe demo SpeechModel is Ready (its pods are simulated by KWOK). `make down` stops it all.\n' >&2
    exports
    exit 0
fi

real_node='{"kubescribe.io/node": "real"}'
toleration='{"key": "kubescribe.io/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}'

step "serving the demo artifact (examples/models/demo) over https on $host_ip, the host's side of the node's veth"
# A serving certificate from the cluster's CA: pods trust that CA through the ca.crt of their
# ServiceAccount volume (the kube-root-ca.crt ConfigMap every namespace gets).
pki="$state/pki"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s\n' \
    "$host_ip" > "$state/artifacts.ext"
openssl req -new -newkey rsa:2048 -nodes -keyout "$state/artifacts.key" -subj /CN=kubescribe-demo-artifacts \
    -out "$state/artifacts.csr" 2>/dev/null
openssl x509 -req -in "$state/artifacts.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$state/artifacts.ext" -out "$state/artifacts.crt" 2>/dev/null
artifact_port=$(free_port "$host_ip")
server='import functools, http.server, ssl, sys
host, port, cert, key, root = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer((host, port), handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(cert, key)
server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()'
nohup python3 -c "$server" "$host_ip" "$artifact_port" "$state/artifacts.crt" "$state/artifacts.key" \
    examples/models > "$state/logs/artifacts.log" 2>&1 &
python3 cluster/local_cluster.py adopt --state-dir "$state" --name artifacts --pid $!
poll 30 curl -sf --cacert "$pki/ca.crt" "https://$host_ip:$artifact_port/demo/kubescribe.yaml"
artifact_uri="https://$host_ip:$artifact_port/demo"
artifact_sha256=$(sha256sum examples/models/demo/kubescribe.yaml | cut -d' ' -f1)
echo "model.uri: $artifact_uri (sha256 of kubescribe.yaml: $artifact_sha256)" >&2
# The fetch container's environment comes from model.credentialsSecret: point its https client
# at the cluster's CA.
kubectl create secret generic demo-artifact-ca -n speech \
    --from-literal=REQUESTS_CA_BUNDLE=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt \
    --dry-run=client -o yaml | kubectl apply -f - >&2

step "helm upgrade --install kubescribe charts/kubescribe: the operator image, on the real node"
cat > "$state/demo-values.yaml" <<VALUES
nodeSelector: $real_node
tolerations: [$toleration]
VALUES
if ! helm upgrade --install kubescribe charts/kubescribe --namespace kubescribe-system \
    --create-namespace -f "$state/demo-values.yaml" --wait --timeout 300s >&2; then
    kubectl get pods -n kubescribe-system -o wide >&2
    kubectl describe pods -n kubescribe-system >&2
    exit 1
fi
kubectl get pods -n kubescribe-system -o wide >&2

step "kubectl apply: the demo SpeechModel, its artifact fetched from $artifact_uri, on the real node"
kubectl apply -f - >&2 <<MODEL
apiVersion: kubescribe.io/v1alpha1
kind: SpeechModel
metadata:
  name: demo
  namespace: speech
spec:
  model:
    uri: $artifact_uri
    version: "0.1.0"
    sha256: $artifact_sha256
    credentialsSecret: demo-artifact-ca
  runtime:
    device: cpu
    threads: 1
    resources:
      requests: {cpu: 500m, memory: 512Mi}
      limits: {memory: 2Gi}
  replicas: 1
  pod:
    automountServiceAccountToken: true  # for its ca.crt: the cluster's CA signed the artifact server
  scheduling:
    nodeSelector: $real_node
    tolerations: [$toleration]
MODEL

step "waiting for the SpeechModel to be Ready (the init container fetches and verifies the artifact)"
if ! kubectl wait speechmodel/demo -n speech --for=condition=Ready --timeout=300s >&2; then
    show_model
    kubectl logs -n kubescribe-system deploy/kubescribe --tail=40 >&2 || true
    exit 1
fi
show_model
pod=$(kubectl get pods -n speech -l app.kubernetes.io/instance=demo -o jsonpath='{.items[0].metadata.name}')
echo "the init container's log (kubectl logs $pod -c fetch):" >&2
kubectl logs -n speech "$pod" -c fetch >&2 || true

step "transcribing examples/audio/sample.wav through the Service (kubectl port-forward svc/demo)"
service_port=$(kubectl get service demo -n speech -o jsonpath='{.spec.ports[0].port}')
local_port=$(free_port 127.0.0.1)
kubectl port-forward -n speech service/demo "$local_port:$service_port" > "$state/logs/port-forward.log" 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
poll 60 curl -sf "http://127.0.0.1:$local_port/readyz"
answer=$(curl -sS --fail-with-body -F file=@examples/audio/sample.wav -F model=demo \
    "http://127.0.0.1:$local_port/v1/audio/transcriptions")
kill $forward 2>/dev/null || true
transcript=$(printf '%s' "$answer" | python3 -c 'import json, sys; print(json.load(sys.stdin)["text"])')
printf '\ntranscript of examples/audio/sample.wav through service/demo: %s\n' "$transcript" >&2
printf '\nThe demo SpeechModel is Ready on the real node and transcribes. `make down` stops it all.\n' >&2
exports
