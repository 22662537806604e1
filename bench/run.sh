#!/usr/bin/env bash
# blobmount read benchmark (issue 3): raw Azurite vs blobmount (each read mode) vs rclone mount.
#
#   bash bench/run.sh                  # full run (1 GiB files, 10k listing, 10 GiB RSS check)
#   BENCH_SMALL=1 bash bench/run.sh    # smoke run, a few minutes (64 MiB files, 1k listing)
#
# Installs what it needs (apt, npm via tests/scripts/install-deps.sh, a PyPI venv), builds blobmount
# (or uses $BLOBMOUNT_BIN), starts Azurite on 127.0.0.1 with disk storage, creates the data,
# measures, prints a table and writes bench/results/<UTC timestamp>.csv, bench/results/latest.csv,
# docs/bench-read.png and the results section of docs/benchmarks.md. Needs root (FUSE, drop_caches).
# Every knob is an environment variable; see docs/benchmarks.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"
REPO=$(cd "$HERE/.." && pwd)

# ---------------------------------------------------------------- settings
SMALL=${BENCH_SMALL:-0}
if [[ $SMALL == 1 ]]; then
    d_big=64 d_conc=16 d_nsmall=200 d_nlist=1000 d_huge=512 d_fio=5 d_reps=1
else
    d_big=1024 d_conc=256 d_nsmall=1000 d_nlist=10000 d_huge=10240 d_fio=20 d_reps=3
fi
BIG_MIB=${BENCH_BIG_MIB:-$d_big}          # the sequential / fio file
CONC_MIB=${BENCH_CONC_MIB:-$d_conc}       # each of the 4 files read concurrently
NSMALL=${BENCH_NSMALL:-$d_nsmall}         # 4 KiB files read with 8 threads
NLIST=${BENCH_NLIST:-$d_nlist}            # objects in the directory listed with ls -l
HUGE_MIB=${BENCH_HUGE_MIB:-$d_huge}       # the big-file RSS check (0 = skip)
FIO_SECS=${BENCH_FIO_SECS:-$d_fio}
REPS=${BENCH_REPS:-$d_reps}               # repetitions (median) of raw, seq, conc and small
LS_REPS=${BENCH_LS_REPS:-1}               # repetitions of ls -l cold+warm (slow through a mount)
LS_ALL=${BENCH_LS_ALL_MODES:-0}           # 1: ls -l in every blobmount read mode, not only the primary one
BUDGET_MIB=${BENCH_BUDGET_MIB:-256}       # cache.read-memory-mib for the big-file RSS check
MODES=${BENCH_MODES:-direct block-cache file-cache}
MODE_ENV=${BENCH_MODE_ENV:-BLOBMOUNT_READ__MODE}
PRIMARY_MODE=${BENCH_PRIMARY_MODE:-block-cache} # mode of the ls -l rows and of the big-file RSS check
PEERS=${BENCH_PEERS-rclone-off rclone-full}
SCENARIOS=${BENCH_SCENARIOS:-seq conc small ls fio}
UPDATE_DOCS=${BENCH_UPDATE_DOCS:-1}
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
VENV=${BENCH_VENV:-$TOOLS/bench-venv}
WORK=${BENCH_WORK:-/var/tmp/blobmount-bench.$$}
TMO=${BENCH_TIMEOUT:-900}                 # seconds before one workload is declared hung
CONTAINER=benchdata
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
RESULTS=$HERE/results
TS=$(date -u +%Y%m%dT%H%M%SZ)
CSV=$RESULTS/$TS.csv
T_START=$(date +%s)

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
# rate BYTES SECS -> MB/s (10^6 bytes per second)
rate() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.1f", n/1e6/s}'; }
median() { printf '%s\n' "$@" | grep -v '^NA$' | sort -g | awk '{a[NR]=$1} END{if(NR==0)print "NA"; else if(NR%2)print a[(NR+1)/2]; else printf "%.4g\n",(a[NR/2]+a[NR/2+1])/2}'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
joinby() { local IFS=$1; shift; echo "$*"; }

[[ $EUID == 0 ]] || die "run as root (FUSE mounts, /proc/sys/vm/drop_caches, apt-get)"
unset AWS_CA_BUNDLE STORAGE_EMULATOR_HOST AZURE_STORAGE_CONNECTION_STRING

# ---------------------------------------------------------------- install
install_deps() {
    local need=()
    command -v rclone >/dev/null || need+=(rclone)
    command -v fio >/dev/null || need+=(fio)
    command -v curl >/dev/null || need+=(curl)
    command -v fusermount3 >/dev/null || need+=(fuse3)
    command -v uptime >/dev/null || need+=(procps)
    python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    if ((${#need[@]})); then
        log "apt-get install ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    if [[ ! -x $TOOLS/bin/azurite-blob ]]; then
        log "installing the test emulators (tests/scripts/install-deps.sh)"
        BLOBMOUNT_TEST_TOOLS=$TOOLS bash "$REPO/tests/scripts/install-deps.sh"
    fi
    if ! "$VENV/bin/python" -c 'import azure.storage.blob, matplotlib' 2>/dev/null; then
        log "pip install azure-storage-blob matplotlib into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check azure-storage-blob matplotlib
    fi
}
install_deps
PY=$VENV/bin/python

if [[ -n ${BLOBMOUNT_BIN:-} ]]; then
    BM=$BLOBMOUNT_BIN
    [[ -x $BM ]] || die "BLOBMOUNT_BIN=$BM is not executable"
else
    log "cargo build --release -p blobmount"
    (cd "$REPO" && cargo build --release -q -p blobmount)
    BM=${CARGO_TARGET_DIR:-$REPO/target}/release/blobmount
fi
build_shaper

# ---------------------------------------------------------------- state and cleanup
mkdir -p "$WORK"/{mnt,cache,logs,azurite} "$RESULTS"
AZ_PID= MPID= MTOOL= MDIR=
cleanup() {
    set +e
    [[ -n $MPID ]] && unmount_tool
    local d
    for d in "$WORK"/mnt/*; do
        mountpoint -q "$d" 2>/dev/null && fusermount3 -u -z "$d"
    done
    stop_pid "${SHAPER_PID:-}" 10
    stop_pid "$AZ_PID" 20
    if [[ -d $WORK/logs ]]; then
        mkdir -p "$RESULTS/logs-$TS" && cp "$WORK"/logs/* "$RESULTS/logs-$TS/" 2>/dev/null
    fi
    rm -rf "$WORK"
    log "cleaned up $WORK (logs kept in bench/results/logs-$TS)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
hwm_mib() { awk '/^VmHWM/{printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo NA; }

# ---------------------------------------------------------------- CSV
{
    echo "# blobmount read benchmark, run $TS ($([[ $SMALL == 1 ]] && echo SMALL smoke run || echo full run))"
    echo "# start: $(date -u '+%F %T UTC'); uptime:$(uptime)"
    echo "# machine: nproc=$(nproc); $(awk '/MemTotal/{printf "mem=%.1fGiB", $2/1048576}' /proc/meminfo); kernel=$(uname -r); $(. /etc/os-release && echo "os=$PRETTY_NAME")"
    echo "# blobmount: $("$BM" version 2>&1 | head -1); bin=$BM; repo=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo +dirty)"
    echo "# rclone: $(rclone version 2>/dev/null | head -1); fio: $(fio --version); curl: $(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "# azurite: $(grep -m1 '"version"' "$TOOLS/npm/node_modules/azurite/package.json" | tr -dc '0-9.'); azure-storage-blob: $("$PY" -c 'import azure.storage.blob as b; print(b.__version__)'); python: $("$PY" -V | cut -d' ' -f2)"
    [[ -n ${BENCH_BIN_SOURCE:-} ]] && echo "# blobmount binary built from: $BENCH_BIN_SOURCE"
    echo "# link: ${BENCH_SHAPE:+shaped $BENCH_SHAPE (latency ms:Mbit/s per direction, tests/src/bin/shaping-proxy.rs)}${BENCH_SHAPE:-loopback}"
    echo "# sizes: big_mib=$BIG_MIB conc_mib=$CONC_MIB nsmall=$NSMALL nlist=$NLIST huge_mib=$HUGE_MIB fio_secs=$FIO_SECS reps=$REPS ls_reps=$LS_REPS budget_mib=$BUDGET_MIB"
    echo "tool,scenario,value,unit,runs,peak_rss_mib,load1,note"
} > "$CSV"
# record TOOL SCENARIO VALUE UNIT RUNS PEAK_RSS NOTE
record() {
    local note=${7:-}
    note=${note//,/;}; note=${note//$'\n'/ }
    printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$1" "$2" "$3" "$4" "${5//,/;}" "${6:-}" "$(load1)" "$note" >> "$CSV"
    log "RESULT $1 $2 = $3 $4 (runs ${5:-} peak_rss ${6:--} MiB) $note"
}

# ---------------------------------------------------------------- Azurite and data
PORT=$(free_port)
EP=http://127.0.0.1:$PORT/devstoreaccount1
log "starting Azurite (disk, $WORK/azurite) on 127.0.0.1:$PORT"
start_azurite "$PORT" "$WORK/azurite" "$WORK/logs/azurite.log"
AZ() { "$PY" "$HERE/az.py" "$EP" "$CONTAINER" "$@"; }

SRC=$WORK/src.bin
log "creating data: ${BIG_MIB} MiB file, 4 x ${CONC_MIB} MiB, $NSMALL x 4 KiB, $NLIST-object directory"
head -c $((BIG_MIB << 20)) /dev/urandom > "$SRC"
AZ create
log "upload big.bin: $(AZ put-file big.bin "$SRC")"
for i in 0 1 2 3; do log "upload conc/c$i: $(AZ put-random "conc/c$i" "$CONC_MIB")"; done
log "populate small/: $(AZ populate small "$NSMALL" 4096)"
log "populate list/: $(AZ populate list "$NLIST" 16)"
if ((HUGE_MIB > 0)); then log "upload huge.bin (${HUGE_MIB} MiB): $(AZ put-random huge.bin "$HUGE_MIB")"; fi
BIG_BYTES=$((BIG_MIB << 20)) CONC_BYTES=$((CONC_MIB << 20)) HUGE_BYTES=$((HUGE_MIB << 20))
# The data is in place: from here every measured client goes through the shaped link, if any.
start_shaper "$PORT" "$WORK/logs/shaper.log"
EP=http://127.0.0.1:$SHAPED_PORT/devstoreaccount1

# ---------------------------------------------------------------- raw backend
log "raw backend"
URL=$(AZ sas-url big.bin)
curl_get() { # URL [RANGE] -> prints bytes downloaded
    local r=()
    [[ -n ${2:-} ]] && r=(-r "$2")
    curl -sS --fail "${r[@]}" -o /dev/null -w '%{size_download}\n' "$1"
}
runs=()
for ((r = 1; r <= REPS; r++)); do
    drop_caches; t0=$(now); n=$(curl_get "$URL"); dt=$(since "$t0")
    [[ $n == "$BIG_BYTES" ]] || die "raw GET returned $n bytes"
    runs+=("$(rate "$n" "$dt")")
done
record raw seq_cold "$(median "${runs[@]}")" MB/s "$(joinby ';' "${runs[@]}")" "" "curl single-stream GET of ${BIG_MIB} MiB; page cache dropped"
runs=()
for ((r = 1; r <= REPS; r++)); do
    drop_caches; t0=$(now); part=$((BIG_BYTES / 8)); pids=()
    for k in 0 1 2 3 4 5 6 7; do curl_get "$URL" "$((k * part))-$(((k + 1) * part - 1))" > "$WORK/r$k" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || die "ranged GET failed"; done
    dt=$(since "$t0"); n=$(cat "$WORK"/r? | awk '{s+=$1} END{print s}')
    [[ $n == "$BIG_BYTES" ]] || die "ranged GETs returned $n bytes"
    runs+=("$(rate "$n" "$dt")")
done
record raw-8ranges seq_cold "$(median "${runs[@]}")" MB/s "$(joinby ';' "${runs[@]}")" "" "8 parallel curl ranged GETs of ${BIG_MIB} MiB"
CURLS=(); for i in 0 1 2 3; do CURLS+=("$(AZ sas-url "conc/c$i")"); done
runs=()
for ((r = 1; r <= REPS; r++)); do
    drop_caches; t0=$(now); pids=()
    for i in 0 1 2 3; do curl_get "${CURLS[$i]}" > "$WORK/r$i" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || die "GET failed"; done
    dt=$(since "$t0"); n=$(cat "$WORK"/r[0-3] | awk '{s+=$1} END{print s}')
    [[ $n == $((4 * CONC_BYTES)) ]] || die "4 GETs returned $n bytes"
    runs+=("$(rate "$n" "$dt")")
done
record raw conc4 "$(median "${runs[@]}")" MB/s "$(joinby ';' "${runs[@]}")" "" "4 curl GETs of 4 objects in parallel"
runs=()
for ((r = 1; r <= REPS; r++)); do
    drop_caches; out=$(AZ get-small small "$NSMALL" 8)
    runs+=("$(sed 's/.*ops_per_s=//' <<< "$out")")
done
record raw small8 "$(median "${runs[@]}")" ops/s "$(joinby ';' "${runs[@]}")" "" "Python SDK download_blob of $NSMALL x 4 KiB; 8 threads"
out=$(AZ list list/ "$REPS")
grep -q "^n=$NLIST " <<< "$out" || die "listing saw: $out"
record raw ls_cold "$(sed 's/.*secs=\([^ ]*\).*/\1/' <<< "$out")" s "$(sed 's/.*runs=//' <<< "$out")" "" "Python SDK list_blobs over all pages of $NLIST objects"

# ---------------------------------------------------------------- mounts
MOUNT_ENV=()
mount_tool() { # TOOL -> MPID, MDIR; returns 1 when the mount fails (reason in MOUNT_ERR)
    local tool=$1 cache=$WORK/cache/$1 logf=$WORK/logs/$1.log i
    MTOOL=$tool MDIR=$WORK/mnt/$tool MOUNT_ERR=
    rm -rf "$cache"; mkdir -p "$MDIR" "$cache"
    echo "==== $(date -u +%T) mount ${MOUNT_ENV[*]} ($CUR_SCEN)" >> "$logf"
    case $tool in
        blobmount-*)
            local mode=${tool#blobmount-} menv=()
            [[ $mode == default ]] || menv=("$MODE_ENV=$mode")
            env AZURE_STORAGE_ACCOUNT_KEY="$KEY" RUST_LOG=info "${menv[@]}" "${MOUNT_ENV[@]}" \
                "$BM" mount "az://devstoreaccount1/$CONTAINER" "$MDIR" --endpoint "$EP" \
                --foreground --cache-dir "$cache" >> "$logf" 2>&1 < /dev/null &
            ;;
        rclone-off | rclone-full)
            rclone --config "$WORK/rclone.conf" mount "az:$CONTAINER" "$MDIR" \
                --vfs-cache-mode "${tool#rclone-}" --cache-dir "$cache" --log-level NOTICE >> "$logf" 2>&1 < /dev/null &
            ;;
        *) die "unknown tool $tool" ;;
    esac
    MPID=$!
    for ((i = 0; i < 600; i++)); do
        mountpoint -q "$MDIR" && return 0
        if ! kill -0 "$MPID" 2>/dev/null; then
            local rc=0; wait "$MPID" || rc=$?
            MOUNT_ERR="exit $rc: $(tail -3 "$logf" | tr '\n' ' ')"
            MPID=; return 1
        fi
        sleep 0.1
    done
    MOUNT_ERR="not mounted within 60 s"
    unmount_tool
    return 1
}
unmount_tool() { # -> sets UNMOUNT_NOTE
    local i rc=0
    UNMOUNT_NOTE=
    [[ -n $MPID ]] || return 0
    if mountpoint -q "$MDIR"; then
        case $MTOOL in
            blobmount-*) timeout 90 "$BM" unmount "$MDIR" >> "$WORK/logs/$MTOOL.log" 2>&1 ||
                { UNMOUNT_NOTE="blobmount unmount failed; "; fusermount3 -u -z "$MDIR" || true; } ;;
            *) fusermount3 -u "$MDIR" 2>/dev/null || fusermount3 -u -z "$MDIR" || true ;;
        esac
    fi
    for ((i = 0; i < 600; i++)); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$MPID" 2>/dev/null; then
        UNMOUNT_NOTE+="daemon still running 60 s after unmount (killed); "
        stop_pid "$MPID" 10
    fi
    wait "$MPID" 2>/dev/null || rc=$?
    ((rc == 0)) || UNMOUNT_NOTE+="daemon exit code $rc; "
    mountpoint -q "$MDIR" && fusermount3 -u -z "$MDIR"
    MPID=
}
cat > "$WORK/rclone.conf" << EOF
[az]
type = azureblob
use_emulator = true
endpoint = $EP
EOF

# per-scenario bookkeeping: PEAK (max VmHWM over the scenario's mounts), NOTE (problems seen)
begin() { CUR_SCEN=$1 PEAK=0 NOTE=; ERRLINES0=$(errlines); }
errlines() { local n; n=$(grep -cE ' ERROR |panicked|^ERROR' "$WORK/logs/$CUR_TOOL.log" 2>/dev/null) || true; echo "${n:-0}"; }
mnt() {
    if ! mount_tool "$CUR_TOOL"; then NOTE+="mount failed ($MOUNT_ERR); "; return 1; fi
    drop_caches
}
umnt() {
    local h; h=$(hwm_mib "$MPID")
    [[ $h != NA ]] && ((h > PEAK)) && PEAK=$h
    unmount_tool; NOTE+=$UNMOUNT_NOTE
}
finish_note() {
    local e; e=$(($(errlines) - ERRLINES0))
    ((e > 0)) && NOTE+="$e error lines in the daemon log ($CUR_TOOL.log); "
    echo "$NOTE"
}
t_dd() { # FILE -> seconds, or NA (and a note) when dd fails
    local t0; t0=$(now)
    if timeout -k 10 "$TMO" dd if="$1" of=/dev/null bs=1M status=none 2>> "$WORK/logs/$CUR_TOOL.log"; then since "$t0"; else echo NA; fi
}
fio_iops() { # FILE -> "IOPS P99_MS" (NA NA on failure)
    local out
    out=$(timeout -k 10 $((FIO_SECS + 300)) fio --name=rr --filename="$1" --readonly --rw=randread --bs=4k \
        --ioengine=psync --iodepth=1 --numjobs=1 --runtime="$FIO_SECS" --time_based --invalidate=1 \
        --output-format=json 2>> "$WORK/logs/$CUR_TOOL.log") || { echo "NA NA"; return; }
    "$PY" -c 'import json,sys; t=sys.stdin.read(); r=json.loads(t[t.find("{"):])["jobs"][0]["read"]; print("%.1f %.2f" % (r["iops"], r["clat_ns"]["percentile"]["99.000000"]/1e6))' <<< "$out" 2>/dev/null || echo "NA NA"
}

sc_seq() {
    local runs=() r dt
    begin seq_cold
    for ((r = 1; r <= REPS; r++)); do
        mnt || return 1
        dt=$(t_dd "$MDIR/big.bin")
        if [[ $dt == NA ]]; then NOTE+="dd failed; "; runs+=(NA); else runs+=("$(rate "$BIG_BYTES" "$dt")"); fi
        umnt
    done
    record "$CUR_TOOL" seq_cold "$(median "${runs[@]}")" MB/s "$(joinby ';' "${runs[@]}")" "$PEAK" "$(finish_note)"
}
sc_conc() {
    local runs=() r i t0 pids bad
    begin conc4
    for ((r = 1; r <= REPS; r++)); do
        mnt || return 1
        t0=$(now); pids=(); bad=0
        for i in 0 1 2 3; do
            timeout -k 10 "$TMO" dd if="$MDIR/conc/c$i" of=/dev/null bs=1M status=none 2>> "$WORK/logs/$CUR_TOOL.log" &
            pids+=($!)
        done
        for i in "${pids[@]}"; do wait "$i" || bad=1; done
        if ((bad)); then NOTE+="a concurrent dd failed; "; runs+=(NA); else runs+=("$(rate $((4 * CONC_BYTES)) "$(since "$t0")")"); fi
        umnt
    done
    record "$CUR_TOOL" conc4 "$(median "${runs[@]}")" MB/s "$(joinby ';' "${runs[@]}")" "$PEAK" "$(finish_note)"
}
sc_small() {
    local runs=() r out
    begin small8
    for ((r = 1; r <= REPS; r++)); do
        mnt || return 1
        if out=$(timeout -k 10 "$TMO" "$PY" "$HERE/fsread.py" "$MDIR/small" "$NSMALL" 8 4096 2>> "$WORK/logs/$CUR_TOOL.log"); then
            runs+=("$(sed 's/.*ops_per_s=\([^ ]*\).*/\1/' <<< "$out")")
        else
            NOTE+="small reads failed ($out); "; runs+=(NA)
        fi
        umnt
    done
    record "$CUR_TOOL" small8 "$(median "${runs[@]}")" ops/s "$(joinby ';' "${runs[@]}")" "$PEAK" "$(finish_note)"
}
sc_ls() {
    local cold=() warm=() r t0 n
    begin ls
    for ((r = 1; r <= LS_REPS; r++)); do
        mnt || return 1
        t0=$(now); n=$(timeout -k 10 "$TMO" ls -l "$MDIR/list" 2>> "$WORK/logs/$CUR_TOOL.log" | grep -c '^-' || true); cold+=("$(since "$t0")")
        ((n == NLIST)) || NOTE+="cold ls -l listed $n of $NLIST files; "
        t0=$(now); n=$(timeout -k 10 "$TMO" ls -l "$MDIR/list" 2>> "$WORK/logs/$CUR_TOOL.log" | grep -c '^-' || true); warm+=("$(since "$t0")")
        ((n == NLIST)) || NOTE+="warm ls -l listed $n of $NLIST files; "
        umnt
    done
    local note; note=$(finish_note)
    record "$CUR_TOOL" ls_cold "$(median "${cold[@]}")" s "$(joinby ';' "${cold[@]}")" "$PEAK" "fresh mount; page cache dropped; $note"
    record "$CUR_TOOL" ls_warm "$(median "${warm[@]}")" s "$(joinby ';' "${warm[@]}")" "$PEAK" "second ls -l right after the cold one; $note"
}
sc_fio() {
    local cold warm t0 dt
    begin fio
    mnt || return 1
    read -r -a cold <<< "$(fio_iops "$MDIR/big.bin")"
    [[ ${cold[0]} == NA ]] && NOTE+="fio cold failed; "
    # warm the tool's cache with one full sequential read that also checks the data
    t0=$(now)
    if ! timeout -k 10 "$TMO" cmp "$SRC" "$MDIR/big.bin" >> "$WORK/logs/$CUR_TOOL.log" 2>&1; then NOTE+="DATA MISMATCH or read error in cmp of big.bin; "; fi
    dt=$(since "$t0")
    # no drop_caches here: "warm" means the tool's own cache holds the file (rclone-full's cache file may
    # also be in the page cache); fio --invalidate=1 still drops the mounted file's own page cache.
    read -r -a warm <<< "$(fio_iops "$MDIR/big.bin")"
    [[ ${warm[0]} == NA ]] && NOTE+="fio warm failed; "
    umnt
    local note; note=$(finish_note)
    record "$CUR_TOOL" fio_cold "${cold[0]}" IOPS "p99_ms=${cold[1]}" "$PEAK" "fio randread 4k QD1 ${FIO_SECS}s; fresh mount; $note"
    record "$CUR_TOOL" fio_warm "${warm[0]}" IOPS "p99_ms=${warm[1]}" "$PEAK" "same mount right after a full read (cmp with the source: $(rate "$BIG_BYTES" "$dt") MB/s); $note"
}
sc_huge() {
    local dt
    begin huge
    MOUNT_ENV=("BLOBMOUNT_CACHE__READ_MEMORY_MIB=$BUDGET_MIB")
    if ! mnt; then MOUNT_ENV=(); return 1; fi
    MOUNT_ENV=()
    dt=$(t_dd "$MDIR/huge.bin")
    [[ $dt == NA ]] && NOTE+="dd failed; "
    umnt
    local note; note=$(finish_note)
    record "$CUR_TOOL" huge_seq "$([[ $dt == NA ]] && echo NA || rate "$HUGE_BYTES" "$dt")" MB/s "" "$PEAK" "dd of ${HUGE_MIB} MiB; read-memory-mib=$BUDGET_MIB; $note"
    record "$CUR_TOOL" huge_rss "$PEAK" MiB "" "$PEAK" "daemon VmHWM reading ${HUGE_MIB} MiB; budget $BUDGET_MIB + 64 = $((BUDGET_MIB + 64)) MiB; $note"
}

# ---------------------------------------------------------------- which read modes does this binary take?
VYAML=$WORK/validate.yaml
printf 'store:\n  url: az://devstoreaccount1/%s\nmount:\n  mountpoint: %s\n' "$CONTAINER" "$WORK/mnt" > "$VYAML"
validate() { env "$@" "$BM" config validate "$VYAML" > "$WORK/validate.out" 2>&1; }
BM_TOOLS=()
IGNORED=0
if validate "$MODE_ENV=bench-no-such-mode"; then
    # the key is not checked by validate: find out with a mount whether a bogus mode is refused
    CUR_TOOL=blobmount-bench-no-such-mode CUR_SCEN=probe
    if mount_tool "$CUR_TOOL"; then
        unmount_tool
        IGNORED=1
    fi
fi
for m in $MODES; do
    if ((IGNORED)); then
        record "blobmount-$m" skipped NA - "" "" "this binary ignores $MODE_ENV (a bogus value validates and mounts)"
    elif ! validate "$MODE_ENV=$m"; then
        record "blobmount-$m" skipped NA - "" "" "rejected by config validate: $(head -c 300 "$WORK/validate.out")"
    else
        BM_TOOLS+=("blobmount-$m")
    fi
done
((${#BM_TOOLS[@]})) || { log "no read mode accepted: measuring the binary's default read path"; BM_TOOLS=(blobmount-default); }
# listing does not depend on the read mode: ls -l runs in the primary mode only (unless BENCH_LS_ALL_MODES=1)
PRIMARY=blobmount-$PRIMARY_MODE
[[ " ${BM_TOOLS[*]} " == *" $PRIMARY "* ]] || PRIMARY=${BM_TOOLS[0]}

# ---------------------------------------------------------------- run
for CUR_TOOL in "${BM_TOOLS[@]}" $PEERS; do
    log "== $CUR_TOOL"
    for s in $SCENARIOS; do
        CUR_SCEN=$s
        [[ $s == ls && $CUR_TOOL == blobmount-* && $CUR_TOOL != "$PRIMARY" && $LS_ALL != 1 ]] && continue
        if ! "sc_$s"; then
            record "$CUR_TOOL" skipped NA - "" "" "mount failed in scenario $s: ${MOUNT_ERR:-?}"
            break
        fi
    done
done
if ((HUGE_MIB > 0)); then
    CUR_TOOL=$PRIMARY
    log "== $CUR_TOOL big-file RSS check"
    sc_huge || record "$CUR_TOOL" huge_rss NA MiB "" "" "mount failed: ${MOUNT_ERR:-?}"
fi

{
    echo "# end: $(date -u '+%F %T UTC'); uptime:$(uptime); elapsed_s=$(($(date +%s) - T_START))"
} >> "$CSV"
cp "$CSV" "$RESULTS/latest.csv"
report_args=("$CSV")
[[ $UPDATE_DOCS == 1 ]] && report_args+=(--png "$REPO/docs/bench-read.png" --docs "$REPO/docs/benchmarks.md")
"$PY" "$HERE/report.py" "${report_args[@]}"
log "done in $(($(date +%s) - T_START)) s: $CSV"
