# shellcheck shell=bash disable=SC2034 # sourced: the variables set here are used by the caller
# Shared by the bench scripts (run.sh, write.sh, policy.sh), which source it and define `die`.
# Everything a script starts is stopped by PID: never by name, so parallel runs and the
# tests' emulators are left alone.

# stop_pid PID [SECONDS]: TERM, wait up to SECONDS (default 20), then KILL - only this PID.
stop_pid() {
    local p=$1 t=${2:-20} i
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null || return 0
    kill "$p" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
}

# free_port: print a TCP port free on 127.0.0.1 now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_azurite PORT DIR LOG: Azurite ($TOOLS/bin/azurite-blob) on 127.0.0.1:PORT with disk
# storage in DIR, its output appended to LOG; sets AZ_PID and returns once it answers.
start_azurite() {
    local port=$1 dir=$2 logf=$3 i
    (cd "$dir" && exec "$TOOLS/bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
        --location "$dir" --loose --skipApiVersionCheck --disableTelemetry --silent) \
        >> "$logf" 2>&1 &
    AZ_PID=$!
    for ((i = 0; i < 600; i++)); do
        curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/" && return 0
        kill -0 "$AZ_PID" 2>/dev/null || die "Azurite exited: $(tail -5 "$logf")"
        sleep 0.1
    done
}

# A remote-like store (issue 18): BENCH_SHAPE=LATENCY_MS:MBIT (e.g. 10:2000, 40:500) puts the
# tests' shaping proxy (tests/src/bin/shaping-proxy.rs: a latency on every request, a
# bandwidth cap per direction shared by all connections) in front of the emulator for every
# measured client alike; empty: loopback as is.
#
# build_shaper: build the proxy (release) once; sets SHAPER_BIN (BENCH_SHAPER_BIN: use that
# binary instead of building it).
build_shaper() {
    [[ -n ${BENCH_SHAPE:-} ]] || return 0
    if [[ -n ${BENCH_SHAPER_BIN:-} ]]; then
        SHAPER_BIN=$BENCH_SHAPER_BIN
        return 0
    fi
    (cd "$REPO" && cargo build --release -q --locked -p blobmount-tests --bin shaping-proxy)
    SHAPER_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/shaping-proxy
}
# start_shaper UPSTREAM_PORT LOG: start it in front of 127.0.0.1:UPSTREAM_PORT; sets
# SHAPER_PID and SHAPED_PORT (= UPSTREAM_PORT when BENCH_SHAPE is empty). Its request
# counts by method are appended to LOG every 10 s and when it is stopped.
start_shaper() {
    local up=$1 logf=$2 i
    SHAPED_PORT=$up SHAPER_PID=
    [[ -n ${BENCH_SHAPE:-} ]] || return 0
    local lat=${BENCH_SHAPE%%:*} mbit=${BENCH_SHAPE##*:}
    "$SHAPER_BIN" --upstream "$up" --latency-ms "$lat" --mbit "$mbit" >> "$logf" 2>&1 &
    SHAPER_PID=$!
    for ((i = 0; i < 100; i++)); do
        SHAPED_PORT=$(sed -n 's/^port=//p' "$logf" | tail -1)
        [[ -n $SHAPED_PORT ]] && return 0
        kill -0 "$SHAPER_PID" 2>/dev/null || die "shaping proxy exited: $(tail -3 "$logf")"
        sleep 0.1
    done
    die "shaping proxy did not start"
}

# release_blobmount: set BM to $BLOBMOUNT_BIN, else build the release binary (needs REPO and
# a `log` function) and set BM to it.
release_blobmount() {
    if [[ -n ${BLOBMOUNT_BIN:-} ]]; then
        BM=$BLOBMOUNT_BIN
    else
        log "cargo build --release -p blobmount"
        (cd "$REPO" && cargo build --release -q --locked -p blobmount)
        BM=${CARGO_TARGET_DIR:-$REPO/target}/release/blobmount
    fi
}
