#!/usr/bin/env bash
# variant.sh builds the aws-k8s autonode variant with twoliter in the tree
# that hack/twoliter-project.sh staged (docs/VARIANT.md):
#
#   1. adds the stock aws-k8s-1.36 settings defaults from the Bottlerocket
#      release BOTTLEROCKET_REF, which must pin the same core-kit as
#      Twoliter.toml, beneath autonode's 99-autonode.toml;
#   2. locks the Rust crates of the settings packages (sources/Cargo.lock);
#   3. runs `twoliter update` (writes Twoliter.lock) and
#      `twoliter build variant`.
#
# Twoliter.lock and sources/Cargo.lock are copied back to the repository so
# that they can be committed. It needs twoliter, Docker, git, cargo and
# access to the registry and GitHub; when a tool is missing it exits 2 and
# names it.
#
# Usage: BOTTLEROCKET_REF=vX.Y.Z hack/variant.sh [STAGED] (default build/twoliter)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
project=$(realpath -m "${1:-$root/build/twoliter}")
twoliter=${TWOLITER:-twoliter}
arch=${ARCH:-$(uname -m)}
name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$root/variant/Cargo.toml" | head -n1 | tr _ .)
stock=aws-k8s-1.36

missing=()
command -v "$twoliter" >/dev/null || missing+=("twoliter (set TWOLITER or put it on PATH; see docs/VARIANT.md)")
if ! command -v docker >/dev/null; then
  missing+=("docker")
elif ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker daemon (docker info fails)")
fi
command -v git >/dev/null || missing+=("git")
command -v cargo >/dev/null || [ -f "$root/sources/Cargo.lock" ] || missing+=("cargo (to lock sources/Cargo.toml)")
[ -n "${BOTTLEROCKET_REF:-}" ] || missing+=("BOTTLEROCKET_REF: the Bottlerocket release whose stock $stock defaults to build on")
if [ ${#missing[@]} -gt 0 ]; then
  echo "variant: cannot build $name; missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi
if [ ! -f "$project/Twoliter.toml" ]; then
  echo "variant: $project is not staged; run make twoliter-project" >&2
  exit 1
fi

# 1. The stock defaults, from the Bottlerocket release that pins our core-kit.
upstream="$root/build/bottlerocket-$BOTTLEROCKET_REF"
if [ ! -d "$upstream/.git" ]; then
  git clone --quiet --depth 1 --branch "$BOTTLEROCKET_REF" https://github.com/bottlerocket-os/bottlerocket "$upstream"
fi
kit_version() { awk '/^name = "bottlerocket-core-kit"/ { found = 1 } found && /^version/ { gsub(/"/, "", $3); print $3; exit }' "$1"; }
ours=$(kit_version "$root/Twoliter.toml")
theirs=$(kit_version "$upstream/Twoliter.toml")
if [ "$ours" != "$theirs" ]; then
  echo "variant: Bottlerocket $BOTTLEROCKET_REF pins bottlerocket-core-kit $theirs, Twoliter.toml $ours;" >&2
  echo "         pick the release that pins $ours, or move Twoliter.toml to $theirs" >&2
  exit 1
fi
defaults="$project/sources/settings-defaults/$name/defaults.d"
for f in "$upstream/sources/settings-defaults/$stock/defaults.d/"*.toml; do
  base=$(basename "$f")
  if [[ ! "$base" < "99-autonode.toml" ]]; then
    echo "variant: stock defaults file $base would sort after 99-autonode.toml" >&2
    exit 1
  fi
  cp -L "$f" "$defaults/$base"
done
echo "variant: stock $stock defaults from Bottlerocket $BOTTLEROCKET_REF ($(git -C "$upstream" rev-parse HEAD))"

# 2. The settings crates' lock file.
if [ -f "$root/sources/Cargo.lock" ]; then
  cp "$root/sources/Cargo.lock" "$project/sources/Cargo.lock"
else
  cargo generate-lockfile --manifest-path "$project/sources/Cargo.toml"
  cp "$project/sources/Cargo.lock" "$root/sources/Cargo.lock"
fi

# 3. Resolve the kits and build.
cd "$project"
"$twoliter" update
cp Twoliter.lock "$root/Twoliter.lock"
"$twoliter" fetch --arch "$arch"
"$twoliter" build variant "$name" --arch "$arch"
echo "variant: images in $project/build/images"
