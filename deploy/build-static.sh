#!/usr/bin/env bash
# Build a fully static `blobmount` binary for a `FROM scratch` image and print its path.
#
#   bash deploy/build-static.sh            # -> target/x86_64-unknown-linux-musl/release/blobmount
#
# Prefers musl (rustup target x86_64-unknown-linux-musl + Debian's musl-tools for ring's C code).
# When the musl target cannot be installed (rustup's download host is not reachable everywhere),
# falls back to a static glibc build (-C target-feature=+crt-static). BLOBMOUNT_STATIC_TARGET=gnu
# forces the fallback. Ship the musl build: static glibc resolves host names through NSS modules
# it loads at run time, which a FROM scratch image lacks (IP-address endpoints still work).
# Everything but the last line (the path) goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build-static: $*" >&2; }

want=${BLOBMOUNT_STATIC_TARGET:-musl}
target=""
if [[ $want == musl ]]; then
    if ! command -v musl-gcc >/dev/null; then
        log "apt-get install musl-tools"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null; } >&2 ||
            log "musl-tools could not be installed"
    fi
    if command -v musl-gcc >/dev/null &&
        { rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
            rustup target add x86_64-unknown-linux-musl >&2; }; then
        target=x86_64-unknown-linux-musl
    else
        log "musl target unavailable; falling back to static glibc (+crt-static)"
    fi
fi

start=$(date +%s)
if [[ $target == x86_64-unknown-linux-musl ]]; then
    log "cargo build --release --locked -p blobmount --target $target"
    CC_x86_64_unknown_linux_musl=musl-gcc \
        cargo build --release --locked -p blobmount --bin blobmount --target "$target" >&2
else
    target=x86_64-unknown-linux-gnu
    log "RUSTFLAGS=-Ctarget-feature=+crt-static cargo build --release --locked -p blobmount --target $target"
    # An explicit --target keeps RUSTFLAGS away from build scripts and proc macros.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked -p blobmount --bin blobmount --target "$target" >&2
fi
bin=${CARGO_TARGET_DIR:-$PWD/target}/$target/release/blobmount
log "built in $(($(date +%s) - start)) s"

# A FROM scratch image has no loader: refuse anything that is not statically linked.
info=$(file -b "$bin" 2>/dev/null || true)
if [[ -n $info && $info != *"static"* ]]; then
    log "$bin is not statically linked: $info"
    exit 1
fi
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
    log "$bin has dynamic dependencies:"
    ldd "$bin" >&2
    exit 1
fi
log "$bin: ${info:-?} ($(stat -c %s "$bin") bytes)"
echo "$bin"
