#!/usr/bin/env bash
# twoliter-project.sh assembles the project tree that twoliter expects
# (docs/VARIANT.md, "How the tree is assembled") from this repository:
#
#   Twoliter.toml Cargo.toml Cargo.lock [Twoliter.lock]
#   kits/ packages/ sources/            copied as they are
#   variants/build.rs variants.rs       from variant/
#   variants/<name>/Cargo.toml          from variant/Cargo.toml
#   sources/autonode/                   the Go module, vendored
#
# The variant's name comes from variant/Cargo.toml (aws-k8s-1_36-autonode
# becomes aws-k8s-1.36-autonode). Only the module's own package folders are
# staged: the tools modules under hack/ never are, because twoliter vendors
# every go.mod it finds under sources/. Vendoring reads the Go module cache
# only (GOPROXY=off). The tree is built beside OUT and moved into place, so
# OUT is either the old tree or the new one.
#
# Usage: hack/twoliter-project.sh [OUT]   (default build/twoliter)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "${1:-$root/build/twoliter}")
go=${GO:-go}

name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$root/variant/Cargo.toml" | head -n1 | tr _ .)
if [ -z "$name" ]; then
  echo "twoliter-project: no package name in variant/Cargo.toml" >&2
  exit 1
fi

tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp/variants/$name" "$tmp/sources/autonode"

cp "$root/Twoliter.toml" "$root/Cargo.toml" "$root/Cargo.lock" "$tmp/"
if [ -f "$root/Twoliter.lock" ]; then cp "$root/Twoliter.lock" "$tmp/"; fi
cp -r "$root/kits" "$root/packages" "$tmp/"
cp -r "$root/sources/." "$tmp/sources/"
cp "$root/variant/build.rs" "$root/variant/variants.rs" "$tmp/variants/"
cp "$root/variant/Cargo.toml" "$tmp/variants/$name/"

# The Go module: go.mod, go.sum and every top-level folder that holds Go
# code, except the tools modules and the Bottlerocket folders.
cd "$root"
mapfile -t dirs < <(git ls-files --cached --others --exclude-standard -- '*.go' |
  awk -F/ 'NF > 1 { print $1 }' | sort -u |
  grep -v -x -E 'hack|build|bin|kits|packages|variant|variants|sources')
cp go.mod go.sum "$tmp/sources/autonode/"
git ls-files -z --cached --others --exclude-standard -- "${dirs[@]}" |
  while IFS= read -r -d '' f; do
    # Tracked files deleted in the working tree are listed too; skip them.
    if [ -f "$f" ]; then printf '%s\0' "$f"; fi
  done | tar --null -T - -cf - | tar -C "$tmp/sources/autonode" -xf -

(cd "$tmp/sources/autonode" && GOFLAGS=-mod=mod GOPROXY=off GOWORK=off GOTOOLCHAIN=local "$go" mod vendor)

# twoliter treats every go.mod under sources/ as a module to vendor.
mods=$(cd "$tmp/sources" && find . -name go.mod | sort)
if [ "$mods" != "./autonode/go.mod" ]; then
  echo "twoliter-project: sources/ must hold exactly one Go module, found:" >&2
  echo "$mods" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out"
trap - EXIT
echo "twoliter-project: $out (variant $name)"
