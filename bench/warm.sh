#!/usr/bin/env bash
# Warm reads from the file cache (issue 18, per-byte CPU): a file already downloaded by the
# mount, read again, through blobmount's FUSE passthrough (the kernel reads the cached copy),
# through the daemon (passthrough off), through rclone mount --vfs-cache-mode full, and the
# same bytes in a local file on the same disk (the floor).
#
#   bash bench/warm.sh                     # 1 GiB file, 3 repetitions
#   BENCH_WARM_MIB=256 BENCH_REPS=1 bash bench/warm.sh
#
# Per tool, after one full read that fills its cache (checked with cmp):
#   disk  - page cache dropped, then a sequential dd of the whole file (MB/s), the daemon's
#           CPU seconds during it (utime+stime of the mount process) and the page cache it
#           added (Cached in /proc/meminfo: the local copy, plus the FUSE file's own pages when
#           reads go through the daemon);
#   hot   - the same dd again at once (whatever the kernel kept);
#   fio   - 4 KiB random reads for BENCH_FIO_SECS seconds, 1 job, page cache kept (IOPS: the
#           cost of one small read through each path).
# Writes bench/results/warm-<UTC>.csv and prints a table. Needs root (FUSE, drop_caches).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

MIB=${BENCH_WARM_MIB:-1024}
REPS=${BENCH_REPS:-3}
FIO_SECS=${BENCH_FIO_SECS:-10}
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
VENV=${BENCH_VENV:-$TOOLS/bench-venv}
PY=$VENV/bin/python
WORK=${BENCH_WORK:-/var/tmp/blobmount-warm.$$}
CONTAINER=warmdata
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
TS=$(date -u +%Y%m%dT%H%M%SZ)
CSV=$HERE/results/warm-$TS.csv

log() { echo "[warm $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.1f", n/1e6/s}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if(NR%2)print a[(NR+1)/2]; else printf "%.4g\n",(a[NR/2]+a[NR/2+1])/2}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
cached_kib() { awk '/^Cached:/{print $2}' /proc/meminfo; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

[[ $EUID == 0 ]] || die "run as root (FUSE mounts, drop_caches)"
{ command -v fio && command -v rclone; } >/dev/null || die "needs fio and rclone (apt-get install fio rclone)"
[[ -x $PY ]] || die "no Python venv at $VENV: run bench/run.sh once (it creates it)"
[[ -x $TOOLS/bin/azurite-blob ]] || die "no Azurite: bash tests/scripts/install-deps.sh"
unset AWS_CA_BUNDLE AZURE_STORAGE_CONNECTION_STRING
release_blobmount

mkdir -p "$WORK"/{mnt,cache,logs,azurite} "$HERE/results"
AZ_PID='' MPID='' MDIR=''
cleanup() {
    set +e
    [[ -n $MDIR ]] && mountpoint -q "$MDIR" && fusermount3 -u -z "$MDIR"
    stop_pid "$MPID" 20
    stop_pid "$AZ_PID" 20
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
EP=http://127.0.0.1:$PORT/devstoreaccount1
start_azurite "$PORT" "$WORK/azurite" "$WORK/logs/azurite.log"
AZ() { "$PY" "$HERE/az.py" "$EP" "$CONTAINER" "$@"; }
SRC=$WORK/local.bin
BYTES=$((MIB << 20))
log "creating ${MIB} MiB and uploading it"
head -c "$BYTES" /dev/urandom > "$SRC"
AZ create
AZ put-file big.bin "$SRC" > /dev/null

{
    echo "# warm file-cache reads, run $TS; uptime:$(uptime)"
    echo "# machine: nproc=$(nproc); kernel=$(uname -r); blobmount: $("$BM" version 2>&1 | head -1); repo=$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD || echo +dirty); rclone: $(rclone version | head -1)"
    echo "# size_mib=$MIB reps=$REPS fio_secs=$FIO_SECS"
    echo "tool,disk_mbs,disk_runs,daemon_cpu_s,page_cache_mib,hot_mbs,fio_iops,passthrough_opens,load1"
} > "$CSV"

cat > "$WORK/rclone.conf" << EOF
[az]
type = azureblob
use_emulator = true
endpoint = $EP
EOF

mount_tool() { # TOOL
    local tool=$1 cache=$WORK/cache/$1 logf=$WORK/logs/$1.log i
    MDIR=$WORK/mnt/$tool HPORT=$(free_port)
    rm -rf "$cache"; mkdir -p "$MDIR" "$cache"
    case $tool in
        blobmount-passthrough | blobmount-daemon)
            local pass=auto
            [[ $tool == blobmount-daemon ]] && pass=never
            env AZURE_STORAGE_ACCOUNT_KEY="$KEY" BLOBMOUNT_CACHE__FILE_CACHE_PASSTHROUGH=$pass \
                "$BM" mount "az://devstoreaccount1/$CONTAINER" "$MDIR" --endpoint "$EP" --read-only \
                --read-mode file-cache --foreground --cache-dir "$cache" \
                --health-listen "127.0.0.1:$HPORT" >> "$logf" 2>&1 < /dev/null &
            ;;
        rclone-full)
            rclone --config "$WORK/rclone.conf" mount "az:$CONTAINER" "$MDIR" --read-only \
                --vfs-cache-mode full --cache-dir "$cache" --log-level NOTICE >> "$logf" 2>&1 < /dev/null &
            ;;
    esac
    MPID=$!
    for ((i = 0; i < 600; i++)); do
        mountpoint -q "$MDIR" && return 0
        kill -0 "$MPID" 2>/dev/null || die "$tool did not mount: $(tail -3 "$logf")"
        sleep 0.1
    done
    die "$tool not mounted within 60 s"
}
unmount_tool() {
    fusermount3 -u "$MDIR" 2>/dev/null || fusermount3 -u -z "$MDIR" || true
    stop_pid "$MPID" 60
    MPID=
}

dd_rate() { # FILE -> MB/s
    local t0; t0=$(now)
    dd if="$1" of=/dev/null bs=1M status=none
    rate "$BYTES" "$(since "$t0")"
}

measure() { # TOOL FILE PID(or empty)
    local tool=$1 f=$2 pid=$3 disk=() cpu=() pc=() hot=() r c0 k0 iops
    for ((r = 1; r <= REPS; r++)); do
        drop_caches
        k0=$(cached_kib); c0=$([[ -n $pid ]] && cpu_ticks "$pid" || echo 0)
        disk+=("$(dd_rate "$f")")
        cpu+=("$(awk -v a="$c0" -v b="$([[ -n $pid ]] && cpu_ticks "$pid" || echo 0)" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz}')")
        pc+=("$(( ($(cached_kib) - k0) / 1024 ))")
        hot+=("$(dd_rate "$f")")
    done
    iops=$(fio --name=rr --filename="$f" --readonly --rw=randread --bs=4k --ioengine=psync --invalidate=0 \
        --runtime="$FIO_SECS" --time_based --output-format=json 2>/dev/null |
        "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))')
    local opens=-
    [[ $tool == blobmount-* ]] && opens=$(curl -s "http://127.0.0.1:$HPORT/metrics" |
        awk '/^blobmount_file_cache_passthrough_opens_total /{print $2}')
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$tool" "$(median "${disk[@]}")" "$(IFS=';'; echo "${disk[*]}")" \
        "$(median "${cpu[@]}")" "$(median "${pc[@]}")" "$(median "${hot[@]}")" "$iops" "$opens" "$(cut -d' ' -f1 /proc/loadavg)" >> "$CSV"
    log "$tool: disk $(median "${disk[@]}") MB/s (${disk[*]}), daemon cpu $(median "${cpu[@]}") s, page cache +$(median "${pc[@]}") MiB, hot $(median "${hot[@]}") MB/s, fio $iops IOPS"
}

log "local file (the floor)"
measure local "$SRC" ""
for tool in blobmount-passthrough blobmount-daemon rclone-full; do
    log "$tool"
    mount_tool "$tool"
    cmp "$SRC" "$MDIR/big.bin" || die "$tool: first read differs"
    sleep 3 # the cache's own check of the download, rclone's cache bookkeeping
    measure "$tool" "$MDIR/big.bin" "$MPID"
    unmount_tool
done

echo
column -s, -t < <(grep -v '^#' "$CSV")
log "results: $CSV"
