#!/usr/bin/env bash
# Build the real Kubernetes components of the local cluster and of the `controlplane` test tier from published Go
# modules (and one C file), into a cache outside the repo keyed by version. A second run reuses the cache.
#
# Usage: build.sh [controlplane|node|keda|all] [--print-dir]
#   controlplane  etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#   node          controlplane + containerd (+ shim, ctr), CoreDNS, the pause binary
#   keda          KEDA's operator, metrics API server and admission webhooks
#   all           node + keda
#   --print-dir   only print the cache directories of the set, one per line (no build)
# Prints one cache directory per built set on stdout; progress and timings on stderr.
# Env:  DIGEST_CONTROLPLANE_CACHE  cache root of the k8s binaries (default ~/.cache/digest-pipelines/controlplane)
#       DIGEST_CLUSTER_CACHE       cache root of the other components (default ~/.cache/digest-pipelines/cluster)
#       DIGEST_CONTROLPLANE_JOBS   `go build -p` (default: number of cores)
#
# Recipe (verified here with Go 1.26):
# - `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` is refused (its go.mod has `replace` directives), and as a
#   plain dependency k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at the placeholder v0.0.0. So we
#   build in a small wrapper module that requires k8s.io/kubernetes vX.Y.Z and replaces every staging module (read
#   from upstream's own go.mod: `k8s.io/<m> => ./staging/...`) with its published v0.Y.Z, copying upstream's `go` and
#   `godebug` lines (they set the binaries' GODEBUG defaults). All six k8s binaries come from one `go build`.
# - Version stamping: -X k8s.io/{component-base,client-go/pkg}/version.git* as upstream's hack/lib/version.sh does.
# - etcd: its server module has replaces too, so a second wrapper module requires go.etcd.io/etcd/server/v3.
# - containerd v2 has no replaces: plain `go install`. CoreDNS: a wrapper main with the plugins the cluster uses.
# - pause: `build/pause/linux/pause.c` from the k8s.io/kubernetes module zip, compiled static with gcc.
# - KEDA: built inside its downloaded module (its go.mod's replace applies only there).
set -euo pipefail

K8S_VERSION=1.36.3
ETCD_VERSION=3.6.16
CONTAINERD_VERSION=2.4.2
COREDNS_VERSION=1.15.0
KEDA_VERSION=2.21.0

what="${1:-controlplane}"
cp_root="${DIGEST_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/digest-pipelines/controlplane}"
cl_root="${DIGEST_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/digest-pipelines/cluster}"
k8s_dest="$cp_root/k8s-v${K8S_VERSION}-etcd-v${ETCD_VERSION}"
ctd_dest="$cl_root/containerd-v${CONTAINERD_VERSION}"
dns_dest="$cl_root/coredns-v${COREDNS_VERSION}"
pause_dest="$cl_root/pause-k8s-v${K8S_VERSION}"
keda_dest="$cl_root/keda-v${KEDA_VERSION}"
if [[ "${2:-}" == "--print-dir" ]]; then
  case "$what" in
    controlplane) echo "$k8s_dest" ;;
    node) printf '%s\n' "$k8s_dest" "$ctd_dest" "$dns_dest" "$pause_dest" ;;
    keda) echo "$keda_dest" ;;
    *) printf '%s\n' "$k8s_dest" "$ctd_dest" "$dns_dest" "$pause_dest" "$keda_dest" ;;
  esac
  exit 0
fi

command -v go >/dev/null || [[ ! -x /usr/local/go/bin/go ]] || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "build: FAILED: no Go toolchain on PATH (need Go >= 1.26; install it from go.dev/dl)" >&2; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
jobs="${DIGEST_CONTROLPLANE_JOBS:-$(nproc)}"
minor=${K8S_VERSION#*.}; minor=${minor%%.*}; patch=${K8S_VERSION##*.}
staging_version="v0.${minor}.${patch}"

work=""
trap '[[ -z "$work" ]] || rm -rf "$work"' EXIT
quiet() { "$@" >"$work/step.log" 2>&1 || { cat "$work/step.log" >&2; echo "build: FAILED: $*" >&2; exit 1; }; }
# begin NAME DEST FILES...: returns 1 (cached) when every file exists and the set is complete
cached() {
  local dest=$1; shift
  [[ -f "$dest/.complete" ]] || return 1
  for f in "$@"; do [[ -x "$dest/$f" ]] || return 1; done
}
start_set() {  # start_set DEST: fresh work dir beside the cache entry
  mkdir -p "$(dirname "$1")"
  work=$(mktemp -d "$1.build.XXXXXX")
  mkdir -p "$work/out"
}
finish_set() {  # finish_set DEST LABEL STARTED
  touch "$work/out/.complete"
  rm -rf "$1"
  mv "$work/out" "$1"
  cd /; rm -rf "$work"; work=""
  echo "build: $2 built in $(( $(date +%s) - $3 )) s -> $1" >&2
  echo "$1"
}

build_k8s() {
  local started; started=$(date +%s)
  if cached "$k8s_dest" etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; then
    echo "build: cached k8s v$K8S_VERSION + etcd v$ETCD_VERSION" >&2; echo "$k8s_dest"; return
  fi
  start_set "$k8s_dest"
  echo "build: k8s v$K8S_VERSION + etcd v$ETCD_VERSION (go build -p $jobs; $(go version)); minutes when cold" >&2
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init example.invalid/etcdbin >/dev/null 2>&1
  quiet go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}"
  go build -p "$jobs" -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3
  echo "build: etcd after $(( $(date +%s) - started )) s" >&2

  mkdir -p "$work/k8s" && cd "$work/k8s"
  local upstream_gomod
  upstream_gomod=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$upstream_gomod" ]] || { echo "build: FAILED: could not download k8s.io/kubernetes@v${K8S_VERSION}" >&2; exit 1; }
  go mod init example.invalid/k8sbin >/dev/null 2>&1
  go mod edit -go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$upstream_gomod")"
  local godebug; godebug=$(sed -n 's/^godebug \(.*\)$/\1/p' "$upstream_gomod")
  [[ -n "$godebug" ]] && go mod edit -godebug="$godebug"
  local staging; staging=$(sed -n 's#^[[:space:]]*\(replace \)\{0,1\}k8s.io/\([a-z0-9-]*\) => ./staging/.*#\2#p' "$upstream_gomod")
  [[ -n "$staging" ]] || { echo "build: FAILED: no staging replaces found in $upstream_gomod" >&2; exit 1; }
  for m in $staging; do go mod edit -replace="k8s.io/$m=k8s.io/$m@$staging_version"; done
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy) pkgs=() c
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  quiet go get "${pkgs[@]/%/@v${K8S_VERSION}}"
  local stamp="" build_date; build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $p.gitVersion=v${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
    stamp+=" -X $p.gitTreeState=clean -X $p.buildDate=${build_date}"
  done
  go build -p "$jobs" -ldflags "-s -w$stamp" -o "$work/out/" "${pkgs[@]}"
  "$work/out/kube-apiserver" --version >&2
  finish_set "$k8s_dest" "k8s v$K8S_VERSION + etcd v$ETCD_VERSION" "$started"
}

build_containerd() {
  local started; started=$(date +%s)
  if cached "$ctd_dest" containerd containerd-shim-runc-v2 ctr; then
    echo "build: cached containerd v$CONTAINERD_VERSION" >&2; echo "$ctd_dest"; return
  fi
  start_set "$ctd_dest"; cd "$work"
  echo "build: containerd v$CONTAINERD_VERSION" >&2
  local m=github.com/containerd/containerd/v2/cmd
  GOBIN="$work/out" go install -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
    "$m/containerd@v$CONTAINERD_VERSION" "$m/containerd-shim-runc-v2@v$CONTAINERD_VERSION" "$m/ctr@v$CONTAINERD_VERSION"
  finish_set "$ctd_dest" "containerd v$CONTAINERD_VERSION" "$started"
}

build_coredns() {
  local started; started=$(date +%s)
  if cached "$dns_dest" coredns; then echo "build: cached CoreDNS v$COREDNS_VERSION" >&2; echo "$dns_dest"; return; fi
  start_set "$dns_dest"
  echo "build: CoreDNS v$COREDNS_VERSION (minimal plugin set, no forward)" >&2
  mkdir -p "$work/dns" && cd "$work/dns"
  go mod init example.invalid/corednsbin >/dev/null 2>&1
  {
    echo 'package main'
    echo 'import ('
    for p in bind cache errors health hosts kubernetes loadbalance log ready whoami; do
      echo "  _ \"github.com/coredns/coredns/plugin/$p\""
    done
    echo '  "github.com/coredns/coredns/coremain"'
    echo ')'
    echo 'func main() { coremain.Run() }'
  } > main.go
  quiet go get "github.com/coredns/coredns@v${COREDNS_VERSION}"
  quiet go mod tidy
  go build -p "$jobs" -ldflags "-s -w" -o "$work/out/coredns" .
  finish_set "$dns_dest" "CoreDNS v$COREDNS_VERSION" "$started"
}

build_pause() {
  local started; started=$(date +%s)
  if cached "$pause_dest" pause; then echo "build: cached pause" >&2; echo "$pause_dest"; return; fi
  command -v gcc >/dev/null || { echo "build: FAILED: gcc is missing (apt-get install gcc libc6-dev)" >&2; exit 1; }
  start_set "$pause_dest"
  local dir; dir=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -f "$dir/build/pause/linux/pause.c" ]] || { echo "build: FAILED: no build/pause/linux/pause.c in $dir" >&2; exit 1; }
  gcc -Os -static -DVERSION="v${K8S_VERSION}-digest" -o "$work/out/pause" "$dir/build/pause/linux/pause.c"
  strip "$work/out/pause"
  finish_set "$pause_dest" "pause" "$started"
}

keda_module_dir() {
  go mod download -json "github.com/kedacore/keda/v2@v${KEDA_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# KEDA's install manifests (kustomize, config/) beside the binaries, from the same module version
keda_config() {
  [[ -f "$keda_dest/config/default/kustomization.yaml" ]] && return
  local dir; dir=$(keda_module_dir)
  [[ -d "$dir/config" ]] || { echo "build: FAILED: no config/ in github.com/kedacore/keda/v2@v${KEDA_VERSION}" >&2; exit 1; }
  rm -rf "$keda_dest/config.tmp" && cp -r "$dir/config" "$keda_dest/config.tmp" && chmod -R u+w "$keda_dest/config.tmp"
  mv "$keda_dest/config.tmp" "$keda_dest/config"
}

build_keda() {
  local started; started=$(date +%s)
  if cached "$keda_dest" keda keda-adapter keda-admission-webhooks; then
    keda_config
    echo "build: cached KEDA v$KEDA_VERSION" >&2; echo "$keda_dest"; return
  fi
  start_set "$keda_dest"
  echo "build: KEDA v$KEDA_VERSION (about 12 minutes cold on 2 cores)" >&2
  local dir; dir=$(keda_module_dir)
  [[ -d "$dir" ]] || { echo "build: FAILED: could not download github.com/kedacore/keda/v2@v${KEDA_VERSION}" >&2; exit 1; }
  cp -r "$dir" "$work/src" && chmod -R u+w "$work/src" && cd "$work/src"
  local v="-X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION} -X github.com/kedacore/keda/v2/version.GitCommit=module-proxy"
  go build -p "$jobs" -ldflags "-s -w $v" -o "$work/out/keda" ./cmd/operator
  go build -p "$jobs" -ldflags "-s -w $v" -o "$work/out/keda-adapter" ./cmd/adapter
  go build -p "$jobs" -ldflags "-s -w $v" -o "$work/out/keda-admission-webhooks" ./cmd/webhooks
  mkdir -p "$work/out/crds" && cp config/crd/bases/*.yaml "$work/out/crds/"
  cp -r config "$work/out/config"
  finish_set "$keda_dest" "KEDA v$KEDA_VERSION" "$started"
}

t0=$(date +%s)
case "$what" in
  controlplane) build_k8s ;;
  node) build_k8s; build_containerd; build_coredns; build_pause ;;
  keda) build_keda ;;
  all) build_k8s; build_containerd; build_coredns; build_pause; build_keda ;;
  *) echo "usage: build.sh [controlplane|node|keda|all] [--print-dir]" >&2; exit 2 ;;
esac
echo "build: $what done in $(( $(date +%s) - t0 )) s" >&2
