#!/usr/bin/env bash
# Build every Rust plugin in this workspace to a WebAssembly component in plugins/dist/.
#
# Two routes, tried in order (force one with BLOBMOUNT_PLUGIN_ROUTE=rustup|debian):
#   rustup  `rustup target add wasm32-unknown-unknown`; the toolchain ships wasm-component-ld,
#           which links straight to a component. Fast (seconds), but needs static.rust-lang.org.
#   debian  Debian's rustc-web + rust-web-src + lld-22 (apt) and wasm-component-ld from
#           crates.io, building std from source (-Z build-std). Works where only apt and
#           crates.io are reachable (CI). First run ~3 min, then incremental.
# Safe to re-run: installed tools are kept, cargo rebuilds only what changed.
# Each plugin is built by its own cargo invocation so that only its hook's SDK feature is on
# (features would otherwise unify across the workspace and embed every world).
set -euo pipefail
cd "$(dirname "$0")"

TARGET=wasm32-unknown-unknown
TOOLS=${BLOBMOUNT_PLUGIN_TOOLS:-$PWD/.tools}
ROUTE=${BLOBMOUNT_PLUGIN_ROUTE:-}
PLUGINS=(glob-filter tenant-acl prefix-consistency conflict-resolver misbehave)
WASM_COMPONENT_LD_VERSION=0.5.31
LLD=/usr/lib/llvm-22/bin/wasm-ld

rustup_route() {
    command -v rustup >/dev/null || return 1
    local sysroot ld
    sysroot=$(rustc --print sysroot) || return 1
    if [[ ! -d $sysroot/lib/rustlib/$TARGET ]]; then
        echo "build.sh: rustup target add $TARGET"
        timeout 60 rustup target add "$TARGET" >/dev/null 2>&1 || return 1
    fi
    ld=$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld
    [[ -x $ld ]] || return 1
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=$ld
    CARGO=(cargo)
}

debian_route() {
    if [[ ! -x /usr/bin/rustc || ! -d /usr/lib/rustlib/src/rust/library || ! -x $LLD ]]; then
        echo "build.sh: apt-get install rustc-web cargo-web rust-web-src lld-22"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            rustc-web cargo-web rust-web-src lld-22 >/dev/null
    fi
    if [[ ! -x $TOOLS/bin/wasm-component-ld ]]; then
        echo "build.sh: cargo install wasm-component-ld@$WASM_COMPONENT_LD_VERSION"
        cargo install --locked --quiet "wasm-component-ld@$WASM_COMPONENT_LD_VERSION" --root "$TOOLS"
    fi
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=$TOOLS/bin/wasm-component-ld
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=--wasm-ld-path=$LLD"
    # Debian's cargo and rustc, not rustup's proxies (which come first on PATH).
    export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
    CARGO=(/usr/bin/cargo -Z build-std=std,panic_abort)
}

case $ROUTE in
    rustup) rustup_route || { echo "build.sh: the rustup route failed" >&2; exit 1; } ;;
    debian) debian_route ;;
    "") if rustup_route; then ROUTE=rustup; else
            echo "build.sh: rustup cannot provide $TARGET here; using Debian's rustc-web"
            ROUTE=debian; debian_route; fi ;;
    *) echo "build.sh: BLOBMOUNT_PLUGIN_ROUTE must be rustup or debian" >&2; exit 2 ;;
esac

mkdir -p dist
for p in "${PLUGINS[@]}"; do
    "${CARGO[@]}" build --quiet --release --locked --target "$TARGET" -p "$p"
    cp -f "target/$TARGET/release/${p//-/_}.wasm" "dist/$p.wasm"
done
echo "build.sh: built ${#PLUGINS[@]} components with the $ROUTE route in $PWD/dist"
