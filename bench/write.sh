#!/usr/bin/env bash
# blobmount write benchmark (issue 4): the raw SDK vs blobmount (streaming uploads, and staged
# only) vs rclone mount (--vfs-cache-mode writes), on Azurite (storage on tmpfs, BENCH_AZURITE_DIR),
# every write measured until it is
# durable in the store (the clock stops when a listing shows every object with all its bytes).
#
#   bash bench/write.sh                  # 1 GiB file, 1000 x 4 KiB creates, tar x of 5000 files, 3 runs
#   BENCH_SMALL=1 bash bench/write.sh    # 128 MiB, 200 creates, 500 files, 1 run
#   BENCH_WRITE_SCENARIOS="seq append" BENCH_WRITE_TOOLS="raw blobmount rclone" bash bench/write.sh
#
# Needs root (FUSE), the test tools (tests/scripts/install-deps.sh: Azurite) and the bench venv
# (bench/run.sh creates it), rclone (Debian). Builds blobmount in release unless $BLOBMOUNT_BIN is
# set. Prints a table (MB/s or files/s, ratio to raw and to rclone, peak daemon RSS) and writes it
# to bench/results/write-<UTC timestamp>.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"
REPO=$(cd "$HERE/.." && pwd)
if [[ ${BENCH_SMALL:-0} == 1 ]]; then d_big=128 d_small=200 d_tar=500 d_reps=1; else d_big=1024 d_small=1000 d_tar=5000 d_reps=3; fi
BIG_MIB=${BENCH_BIG_MIB:-$d_big}     # the sequential file
NSMALL=${BENCH_NSMALL:-$d_small}     # 4 KiB files created with 8 threads
NTAR=${BENCH_NTAR:-$d_tar}           # files in the tar archive extracted
REPS=${BENCH_REPS:-$d_reps}
TOOLS_TO_RUN=${BENCH_WRITE_TOOLS:-raw blobmount blobmount-staged rclone}
# seq: the big file; append: NAPPEND appends of 1 MiB to it (needs seq); small; tar.
SCENARIOS=${BENCH_WRITE_SCENARIOS:-seq append small tar}
NAPPEND=${BENCH_NAPPEND:-5}
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
PY=${BENCH_VENV:-$TOOLS/bench-venv}/bin/python
WORK=${BENCH_WORK:-/var/tmp/blobmount-write-bench.$$}
# Azurite's storage: tmpfs by default, so the emulated store does not share the disk (and its
# journal) with the mount's cache directory, as a remote store would not. With Azurite on the
# same disk, its writeback of a 1 GiB blob slowed the cache directory's file creations that
# followed (1000 creates: 141 files/s on a fresh disk, 83-98 right after a 1 GiB write).
AZ_DIR=${BENCH_AZURITE_DIR:-/dev/shm/blobmount-write-bench.$$}
DURABLE_TIMEOUT=${BENCH_DURABLE_TIMEOUT:-900}
# Seconds between two checks of the store: each is a full listing, which loads Azurite too.
POLL=${BENCH_POLL:-0.5}
CONTAINER=writebench
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$HERE/results/write-$TS.txt

log() { echo "[write-bench $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if(NR%2)print a[(NR+1)/2]; else printf "%.4f\n",(a[NR/2]+a[NR/2+1])/2}'; }
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; } # field NAME < "a=1 b=2"

[[ $EUID == 0 ]] || die "run as root (FUSE mounts)"
[[ -x $TOOLS/bin/azurite-blob && -x $PY ]] || die "missing $TOOLS (run tests/scripts/install-deps.sh and bench/run.sh once)"
command -v rclone >/dev/null || die "missing rclone (apt-get install rclone)"
unset AWS_CA_BUNDLE STORAGE_EMULATOR_HOST AZURE_STORAGE_CONNECTION_STRING

release_blobmount
build_shaper

mkdir -p "$WORK"/{mnt,azurite,logs,cache} "$HERE/results"
AZ_PID= MPID=
cleanup() {
    set +e
    stop_pid "$MPID" 30
    mountpoint -q "$WORK/mnt" 2>/dev/null && fusermount3 -u -z "$WORK/mnt"
    stop_pid "${SHAPER_PID:-}" 10
    stop_pid "$AZ_PID" 30
    # Logs and the daemon's counters are kept (not committed: results/logs-*/ is ignored).
    [[ -d $WORK/logs ]] && mkdir -p "$HERE/results/logs-write-$TS" && cp -r "$WORK/logs/." "$HERE/results/logs-write-$TS/"
    rm -rf "$WORK" "$AZ_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
EP_RAW=http://127.0.0.1:$PORT/devstoreaccount1
EP=$EP_RAW
AZ() { "$PY" "$HERE/az.py" "$EP" "$CONTAINER" "$@"; }
# fresh_azurite: a fresh, empty Azurite for each tool. Azurite scans its whole blob table for
# every listing, so a tool measured after others would pay for their objects.
fresh_azurite() {
    stop_pid "$AZ_PID" 30
    rm -rf "$AZ_DIR"; mkdir -p "$AZ_DIR"
    start_azurite "$PORT" "$AZ_DIR" "$WORK/logs/azurite.log"
    EP=$EP_RAW AZ create
}
# Every measured client (blobmount, the SDK, rclone) goes through the shaped link, if any.
start_shaper "$PORT" "$WORK/logs/shaper.log"
EP=http://127.0.0.1:$SHAPED_PORT/devstoreaccount1
log "Azurite on 127.0.0.1:$PORT (disk storage), restarted empty for every tool"

log "source data: ${BIG_MIB} MiB file, tar of $NTAR files"
head -c "${BIG_MIB}M" /dev/urandom > "$WORK/src.bin"
head -c 1M /dev/urandom > "$WORK/app.bin"
BIG_BYTES=$((BIG_MIB * 1048576))
"$PY" - "$WORK/tree.tar" "$NTAR" << 'EOF'
import io, os, random, sys, tarfile
path, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
blob = os.urandom(64 * 1024)
with tarfile.open(path, "w") as t:
    for i in range(n):
        # A source tree: 50 files per directory, two levels, sizes 200 B to 24 KiB.
        size = rnd.randint(200, 24 * 1024)
        info = tarfile.TarInfo(f"src/m{i // 1000:02d}/d{(i // 50) % 20:02d}/f{i:05d}.c")
        info.size = size
        info.mode = 0o644
        t.addfile(info, io.BytesIO(blob[:size]))
EOF
TAR_BYTES=$(tar -tvf "$WORK/tree.tar" | awk '{s+=$3} END{print s}')

cat > "$WORK/rclone.conf" << EOF
[az]
type = azureblob
use_emulator = true
endpoint = $EP
EOF

mount_tool() { # TOOL: mount on $WORK/mnt, wait until it serves
    local tool=$1 cache=$WORK/cache/$1 i
    rm -rf "$cache"; mkdir -p "$cache"
    case $tool in
        blobmount | blobmount-staged)
            local streaming=true
            [[ $tool == blobmount-staged ]] && streaming=false
            env AZURE_STORAGE_ACCOUNT_KEY="$KEY" BLOBMOUNT_WRITE__STREAMING=$streaming RUST_LOG=info \
                "$BM" mount "az://devstoreaccount1/$CONTAINER" "$WORK/mnt" --endpoint "$EP" \
                --foreground --cache-dir "$cache" >> "$WORK/logs/$tool.log" 2>&1 < /dev/null &
            ;;
        rclone)
            # Defaults otherwise: uploads start --vfs-write-back (5 s) after close.
            rclone --config "$WORK/rclone.conf" mount "az:$CONTAINER" "$WORK/mnt" \
                --vfs-cache-mode writes --cache-dir "$cache" --log-level NOTICE \
                >> "$WORK/logs/$tool.log" 2>&1 < /dev/null &
            ;;
        *) die "unknown tool $tool" ;;
    esac
    MPID=$!
    for ((i = 0; i < 600; i++)); do
        mountpoint -q "$WORK/mnt" && return 0
        kill -0 "$MPID" 2>/dev/null || die "$tool exited: $(tail -3 "$WORK/logs/$tool.log")"
        sleep 0.1
    done
    die "$tool did not mount"
}
umount_tool() { # TOOL -> prints the daemon's peak RSS in MiB
    local hwm addr
    hwm=$(awk '/^VmHWM/{printf "%d", $2/1024}' "/proc/$MPID/status" 2>/dev/null || echo NA)
    # blobmount: keep its request counters next to the logs (what each scenario cost).
    addr=$(grep -o 'address=[0-9.:]*' "$WORK/logs/$1.log" 2>/dev/null | tail -1 | cut -d= -f2)
    [[ -n $addr ]] && curl -s -m 5 "http://$addr/metrics" > "$WORK/logs/$1-$r.metrics" || true
    fusermount3 -u "$WORK/mnt" 2>/dev/null || fusermount3 -u -z "$WORK/mnt" || true
    stop_pid "$MPID" 30; MPID=
    echo "$hwm"
}
# start_waiter PREFIX FILES BYTES POLL: start the store poller (every POLL s, until the store
# lists FILES objects with data holding BYTES) *before* the operation it times, idle until
# finish_waiter tells it the operation returned: its Python start is not timed (the raw side's
# own process start is not either) and it does not load the store during the operation.
start_waiter() {
    WAITER_GO=$WORK/waiter.go.$RANDOM
    rm -f "$WAITER_GO"
    AZ wait "$1" "$2" "$3" "$4" "$DURABLE_TIMEOUT" "$WAITER_GO" > "$WORK/waiter.out" 2>&1 &
    WAITER=$! WAITER_WHAT="$1 (want n=$2 bytes=$3)"
}
finish_waiter() {
    touch "$WAITER_GO"
    wait "$WAITER" || die "$WAITER_WHAT: not durable after ${DURABLE_TIMEOUT}s ($(cat "$WORK/waiter.out"))"
}

want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
declare -A RES RSS
put() { RES[$1,$2]+="$3 "; }
for ((r = 1; r <= REPS; r++)); do
    for tool in $TOOLS_TO_RUN; do
        log "run $r: $tool"
        fresh_azurite
        if [[ $tool == raw ]]; then
            s=$(AZ put-file "seq-raw-$r" "$WORK/src.bin" | field secs)
            put seq raw "$(awk -v b="$BIG_BYTES" -v s="$s" 'BEGIN{printf "%.1f", b/1e6/s}')"
            if want append; then
                total=0
                for ((k = 1; k <= NAPPEND; k++)); do
                    s=$(AZ append "seq-raw-$r" "$WORK/app.bin" | field secs)
                    total=$(awk -v a="$total" -v b="$s" 'BEGIN{print a+b}')
                done
                put append raw "$(awk -v n="$NAPPEND" -v s="$total" 'BEGIN{printf "%.2f", n/s}')"
            fi
            want small && put small raw "$(AZ put-small "small-raw-$r" "$NSMALL" 4096 8 | field ops_per_s)"
            continue
        fi
        mount_tool "$tool"
        d=$WORK/mnt/$tool-$r
        mkdir -p "$d"
        # 1. One big new file written sequentially, until the store has all of it.
        t0=$(now)
        # One object: a listing is cheap, so poll more often.
        start_waiter "$tool-$r/seq.bin" 1 "$BIG_BYTES" 0.1
        dd if="$WORK/src.bin" of="$d/seq.bin" bs=1M conv=fsync status=none
        finish_waiter
        put seq "$tool" "$(awk -v b="$BIG_BYTES" -v s="$(since "$t0")" 'BEGIN{printf "%.1f", b/1e6/s}')"
        # 1b. Appends of 1 MiB to it (a log, a growing dataset shard), each until durable.
        if want append; then
            # One process appends and checks the store (a HEAD), so no process start is timed.
            put append "$tool" "$(AZ append-via "$d/seq.bin" "$tool-$r/seq.bin" "$NAPPEND" \
                "$WORK/app.bin" 0.05 "$DURABLE_TIMEOUT" | field appends_per_s)"
        fi
        # 2. Many small files created by 8 threads.
        if want small; then
            mkdir -p "$d/small"
            t0=$(now)
            start_waiter "$tool-$r/small/" "$NSMALL" $((NSMALL * 4096)) "$POLL"
            "$PY" - "$d/small" "$NSMALL" << 'EOF'
import os, sys
from concurrent.futures import ThreadPoolExecutor
d, n = sys.argv[1], int(sys.argv[2])
body = os.urandom(4096)
def one(i):
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(body)
with ThreadPoolExecutor(8) as ex:
    list(ex.map(one, range(n)))
EOF
            finish_waiter
            put small "$tool" "$(awk -v n="$NSMALL" -v s="$(since "$t0")" 'BEGIN{printf "%.1f", n/s}')"
        fi
        # 3. tar x of a source tree.
        if want tar; then
            t0=$(now)
            start_waiter "$tool-$r/src/" "$NTAR" "$TAR_BYTES" "$POLL"
            tar -xf "$WORK/tree.tar" -C "$d"
            finish_waiter
            put tar "$tool" "$(awk -v n="$NTAR" -v s="$(since "$t0")" 'BEGIN{printf "%.1f", n/s}')"
        fi
        h=$(umount_tool "$tool")
        [[ $h != NA ]] && { [[ -z ${RSS[$tool]:-} ]] || ((h > RSS[$tool])); } && RSS[$tool]=$h
    done
done

m() { [[ -n ${RES[$1,$2]:-} ]] && median ${RES[$1,$2]} || echo NA; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a == "NA" || b == "NA" || b == 0) print "-"; else printf "%.2fx", a/b}'; }
{
    echo "# write benchmark $TS on Azurite (storage in $AZ_DIR), median of $REPS; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# blobmount: $BM; repo $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD || echo +dirty); $(rclone version 2>/dev/null | head -1)"
    echo "# every value is measured until the store lists all objects with all their bytes"
    echo "# link: ${BENCH_SHAPE:+shaped $BENCH_SHAPE (latency ms:Mbit/s per direction, tests/src/bin/shaping-proxy.rs)}${BENCH_SHAPE:-loopback}"
    printf '| scenario | tool | value | unit | vs raw | vs rclone | peak RSS (MiB) | runs |\n|---|---|---|---|---|---|---|---|\n'
    for sc in $SCENARIOS; do
        unit=files/s; [[ $sc == seq ]] && unit=MB/s; [[ $sc == append ]] && unit=appends/s
        for tool in $TOOLS_TO_RUN; do
            [[ $tool == raw && $sc == tar ]] && continue
            v=$(m "$sc" "$tool")
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$sc" "$tool" "$v" "$unit" \
                "$(ratio "$v" "$(m "$sc" raw)")" "$(ratio "$v" "$(m "$sc" rclone)")" \
                "${RSS[$tool]:--}" "${RES[$sc,$tool]:-}"
        done
    done
    echo
    echo "seq: dd bs=1M conv=fsync of a ${BIG_MIB} MiB new file (raw: SDK Put Block x4 in parallel + Put Block List);"
    want append && echo "append: $NAPPEND appends (open O_APPEND, write, fsync, close) of 1 MiB to that file, each until a HEAD shows it in the store (raw: SDK Get Block List, Put Block, Put Block List of the old and new blocks)."
    echo "small: $NSMALL x 4 KiB files created by 8 threads (raw: 8 threads of SDK PUTs); tar: tar x of $NTAR files ($TAR_BYTES bytes)."
} | tee "$OUT"
log "written $OUT"
