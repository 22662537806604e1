#!/usr/bin/env bash
# Build {{name}} to a WebAssembly component: {{name}}.wasm next to this script.
#
# The route (rustup's wasm32 target, or Debian's rustc-web building std from source where only
# apt and crates.io are reachable) is chosen by route.sh, shared with blobmount's own plugins;
# force one with BLOBMOUNT_PLUGIN_ROUTE=rustup|debian. CARGO_TARGET_DIR is honoured, and the
# Debian route's tools go to BLOBMOUNT_PLUGIN_TOOLS (default ./.tools). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

source ./route.sh
select_route

"${CARGO[@]}" build --quiet --release --target "$TARGET"
cp -f "${CARGO_TARGET_DIR:-target}/$TARGET/release/{{crate}}.wasm" {{name}}.wasm
echo "build.sh: built $PWD/{{name}}.wasm with the $ROUTE route"
