# Sourced by plugins/build.sh and by the build.sh of every project `blobmount plugin new`
# writes (the daemon embeds this file), so the two build routes cannot drift apart.
#
# Picks how to build a wasm32-unknown-unknown component; force one with
# BLOBMOUNT_PLUGIN_ROUTE=rustup|debian:
#   rustup  `rustup target add wasm32-unknown-unknown`; the toolchain ships wasm-component-ld,
#           which links straight to a component. Fast (seconds), but needs static.rust-lang.org.
#   debian  Debian's rustc-web + rust-web-src + lld-22 (apt) and wasm-component-ld from
#           crates.io, building std from source (-Z build-std). Works where only apt and
#           crates.io are reachable (CI). First run ~3 min, then incremental.
# After `select_route`: ROUTE is rustup or debian, the linker is exported, and "${CARGO[@]}"
# is the cargo command to run (`"${CARGO[@]}" build --release --target "$TARGET"`).
# Tools the debian route installs go to $BLOBMOUNT_PLUGIN_TOOLS (default: $PWD/.tools).

TARGET=wasm32-unknown-unknown
TOOLS=${BLOBMOUNT_PLUGIN_TOOLS:-$PWD/.tools}
ROUTE=${BLOBMOUNT_PLUGIN_ROUTE:-}
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

select_route() {
    case $ROUTE in
        rustup) rustup_route || { echo "build.sh: the rustup route failed" >&2; exit 1; } ;;
        debian) debian_route ;;
        "") if rustup_route; then ROUTE=rustup; else
                echo "build.sh: rustup cannot provide $TARGET here; using Debian's rustc-web"
                ROUTE=debian; debian_route; fi ;;
        *) echo "build.sh: BLOBMOUNT_PLUGIN_ROUTE must be rustup or debian" >&2; exit 2 ;;
    esac
}
