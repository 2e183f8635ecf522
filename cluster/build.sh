#!/usr/bin/env bash
# Builds the local control plane from Go modules into a version-keyed cache outside the
# repository: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok) and helm (helm.sh/helm/v3); and the
# real node's kubelet and kube-proxy from the same k8s.io/kubernetes build (cluster/node.py); and
# argocd-lua (cluster/argocd-lua: Argo CD's gopher-lua, for the health-check tests).
# Prints the bin directory on its last line. A finished entry is reused; nothing is committed.
#
#   cluster/build.sh            build what is missing, print the bin directory
#   cluster/build.sh --print    print the bin directory if the control plane is built, else exit 1
#                               (the node's binaries may still be missing: cluster/node.py says so)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${KUBESCRIBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubescribe}/cluster
bin="$cache/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
programs=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)
k8s_programs=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

complete() { for p in "${programs[@]}"; do [ -x "$bin/$p" ] || return 1; done; }
if [ "${1:-}" = "--print" ]; then complete && echo "$bin"; exit $?; fi
# Argo CD's Lua (gopher-lua) for the health-check tests: cluster/argocd-lua, keyed by its source
# and the gopher-lua version, so an edit of main.go builds it again (linked as argocd-lua).
argocd_lua_key() { echo "argocd-lua-$GOPHER_LUA_VERSION-$(sha256sum "$here/argocd-lua/main.go" | cut -c1-12)"; }
argocd_lua_built() { [ -x "$bin/$(argocd_lua_key)" ] && [ "$(readlink "$bin/argocd-lua")" = "$(argocd_lua_key)" ]; }
# The node's binaries joined later: an entry built before them gains just those two.
k8s_missing() { for p in "${k8s_programs[@]}"; do [ -x "$bin/$p" ] || echo "$p"; done; }
if complete && [ -z "$(k8s_missing)" ] && argocd_lua_built; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "cluster/build.sh: go is needed to build the control plane" >&2; exit 2; }
mkdir -p "$bin" "$cache/src"
# One build at a time (make test and make demo may start together); the second reuses the first's.
exec 9>"$cache/.build.lock"
flock 9
if complete && [ -z "$(k8s_missing)" ] && argocd_lua_built; then echo "$bin"; exit 0; fi
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
log() { printf '[cluster build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$(date +%s)

# A wrapper module per upstream project, so their requirements never pull each other.
wrapper() {  # wrapper NAME -> cd into a fresh module directory
    local dir="$cache/src/$1"
    rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
    go mod init "kubescribe.local/build/$1" >/dev/null 2>&1
}

# The module's own go.mod, as the proxy serves it.
upstream_gomod() { go mod download -json "$1@$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])'; }

# Every `X => ./local/path` replace of an upstream go.mod becomes `X => X <version>` here, where
# version_of X answers the published version (generated from the real file, not typed by hand).
replace_local_paths() {  # replace_local_paths GOMOD VERSION_FUNCTION
    local gomod=$1 version_of=$2 mod
    for mod in $(awk '$2 == "=>" && $3 ~ /^\.\.?\// {print $1} /^replace \(/{r=1;next} r && /^\)/{r=0} r && $2=="=>" && $3 ~ /^\.\.?\// {print $1}' "$gomod" | sort -u); do
        go mod edit -replace "$mod=$mod@$($version_of "$mod")"
    done
}

missing=$(k8s_missing)
if [ -n "$missing" ]; then
    log "kubernetes $K8S_VERSION: resolving modules"
    wrapper kubernetes
    staging_version() { echo "v0.${K8S_VERSION#v1.}"; }
    gomod=$(upstream_gomod k8s.io/kubernetes "$K8S_VERSION")
    go mod edit -go="$(awk '$1=="go"{print $2; exit}' "$gomod")"
    replace_local_paths "$gomod" staging_version
    log "kubernetes: $(grep -c '=> k8s.io' go.mod) staging modules mapped to their published v0.x"
    go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null 2>&1 || go get "k8s.io/kubernetes@$K8S_VERSION"
    minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for p in $missing; do
        log "kubernetes: building $p (a cold build takes a while on 2 cores)"
        go build -mod=mod -trimpath -ldflags "$ldflags" -o "$bin/$p.tmp.$$" "k8s.io/kubernetes/cmd/$p"
        mv "$bin/$p.tmp.$$" "$bin/$p"
    done
fi

if [ ! -x "$bin/etcd" ]; then
    log "etcd $ETCD_VERSION: resolving modules"
    wrapper etcd
    etcd_version() { echo "$ETCD_VERSION"; }
    gomod=$(upstream_gomod go.etcd.io/etcd/server/v3 "$ETCD_VERSION")
    go mod edit -go="$(awk '$1=="go"{print $2; exit}' "$gomod")"
    replace_local_paths "$gomod" etcd_version
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    log "etcd: building"
    go build -mod=mod -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
        -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin/etcd.tmp" "$bin/etcd"
fi

if [ ! -x "$bin/kwok" ]; then
    log "kwok $KWOK_VERSION: building"
    wrapper kwok
    go get "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1 || go get "sigs.k8s.io/kwok@$KWOK_VERSION"
    go build -mod=mod -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
        -o "$bin/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok
    mv "$bin/kwok.tmp" "$bin/kwok"
fi

if [ ! -x "$bin/helm" ]; then
    log "helm $HELM_VERSION: building"
    wrapper helm
    go get "helm.sh/helm/v3@$HELM_VERSION" >/dev/null 2>&1 || go get "helm.sh/helm/v3@$HELM_VERSION"
    # Helm's default Kubernetes version (helm template/lint offline) follows its client-go, as
    # its own Makefile sets it; without it Helm assumes v1.20.
    client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go); client_go=${client_go#v0.}
    kube_minor=${client_go%%.*}
    helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
    done
    go build -mod=mod -trimpath -ldflags "$helm_ldflags" \
        -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm
    mv "$bin/helm.tmp" "$bin/helm"
fi

if ! argocd_lua_built; then
    log "argocd-lua (gopher-lua $GOPHER_LUA_VERSION): building"
    wrapper argocd-lua
    cp "$here/argocd-lua/main.go" .
    go get "github.com/yuin/gopher-lua@$GOPHER_LUA_VERSION" >/dev/null 2>&1 || go get "github.com/yuin/gopher-lua@$GOPHER_LUA_VERSION"
    go build -mod=mod -trimpath -ldflags "-s -w" -o "$bin/argocd-lua.tmp" .
    mv "$bin/argocd-lua.tmp" "$bin/$(argocd_lua_key)"
    ln -sfn "$(argocd_lua_key)" "$bin/argocd-lua"
fi

log "done in $(( $(date +%s) - start )) s"
echo "$bin"
