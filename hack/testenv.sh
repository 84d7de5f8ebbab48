#!/usr/bin/env bash
# testenv.sh builds the control plane that autonode's tests run for real:
# kube-apiserver, kube-scheduler, kube-controller-manager and kubelet v1.37.2,
# and etcd v3.7.3, from the Go module proxy, into a cache folder that later
# runs reuse. It prints the folder on its last line.
#
#   TESTENV_DIR   where the binaries go (default: $XDG_CACHE_HOME or ~/.cache,
#                 then autonode/testenv/k8s-v1.37.2-etcd-v3.7.3)
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
here=$(cd "$(dirname "$0")" && pwd)
dir=${TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autonode/testenv/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}}
mkdir -p "$dir"

# -mod=readonly: the committed go.sum files must cover the build.
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # name module-dir package [ldflags]
  local name=$1 mod=$2 pkg=$3 flags=${4:-}
  if [ -x "$dir/$name" ]; then
    echo "testenv: $name is cached in $dir"
    return
  fi
  echo "testenv: building $name (first run only; a few minutes)"
  local start=$SECONDS
  (cd "$here/$mod" && go build -trimpath -ldflags "-s -w $flags" -o "$dir/$name.tmp" "$pkg")
  mv "$dir/$name.tmp" "$dir/$name"
  echo "testenv: built $name in $((SECONDS - start))s"
}

build etcd etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s-bins k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-scheduler k8s-bins k8s.io/kubernetes/cmd/kube-scheduler "$ldflags"
build kube-controller-manager k8s-bins k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
# The kubelet runs only in the optional "real kubelet" tier (device plugins
# registering for real); it needs root and containerd at test time.
build kubelet k8s-bins k8s.io/kubernetes/cmd/kubelet "$ldflags"
echo "$dir"
