#!/usr/bin/env bash
# Build every Rust plugin in this workspace to a WebAssembly component in plugins/dist/.
#
# The build route (rustup's wasm32 target, or Debian's rustc-web building std from source) is
# chosen by route.sh, which `blobmount plugin new` projects share; see the comments there.
# Force one with BLOBMOUNT_PLUGIN_ROUTE=rustup|debian.
# Safe to re-run: installed tools are kept, cargo rebuilds only what changed.
# Each plugin is built by its own cargo invocation so that only its hook's SDK feature is on
# (features would otherwise unify across the workspace and embed every world).
set -euo pipefail
cd "$(dirname "$0")"

PLUGINS=(glob-filter tenant-acl prefix-consistency conflict-resolver misbehave meta-filter)
source ./route.sh
select_route

mkdir -p dist
for p in "${PLUGINS[@]}"; do
    "${CARGO[@]}" build --quiet --release --locked --target "$TARGET" -p "$p"
    cp -f "target/$TARGET/release/${p//-/_}.wasm" "dist/$p.wasm"
done
echo "build.sh: built ${#PLUGINS[@]} components with the $ROUTE route in $PWD/dist"
