#!/usr/bin/env bash
# A big directory (issue 18): `ls` and `ls -l` of a directory of BENCH_LIST_N (100,000) objects
# in an Azurite container, through blobmount (and rclone, BENCH_LIST_PEERS), against the raw
# paged listing (curl walking List Blobs pages of 5000 with a SAS, metadata included: the
# fewest requests and the least client work that list the directory).
#
#   bash bench/list.sh                                   # 100,000 objects, 3 repetitions
#   BENCH_LIST_N=20000 BENCH_LIST_REPS=1 bash bench/list.sh
#   BENCH_SHAPE=10:2000 bash bench/list.sh               # through the remote-like link
#
# The container is written as Azurite's database file (bench/azurite_fixture.py: filling
# 100,000 objects through the API would take most of an hour on Azurite), and one object more
# is uploaded and listed through the API before anything is timed, to show Azurite serves it.
# Every blobmount and rclone `ls` is on a fresh mount (cold) and again right after (warm);
# the page cache is dropped before each cold run. Store requests of blobmount come from its
# /metrics. Prints a Markdown table and writes it to bench/results/list-<UTC>.md. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
PY=$TOOLS/bench-venv/bin/python
N=${BENCH_LIST_N:-100000}
REPS=${BENCH_LIST_REPS:-3}
PEERS=${BENCH_LIST_PEERS:-rclone}
TMO=${BENCH_TIMEOUT:-900}
CONTAINER=bigdir
WORK=${BENCH_WORK:-/var/tmp/blobmount-list.$$}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
unset AWS_CA_BUNDLE STORAGE_EMULATOR_HOST AZURE_STORAGE_CONNECTION_STRING
die() { echo "list.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%T)] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{print (NR%2)? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
AZ_PID='' SHAPER_PID='' MPID=''
cleanup() {
    [[ -n $MPID ]] && { fusermount3 -u -z "$WORK/mnt" 2>/dev/null || true; stop_pid "$MPID" 20; }
    stop_pid "$SHAPER_PID" 10
    stop_pid "$AZ_PID" 20
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/az" "$WORK/mnt" "$WORK/logs" "$HERE/results"
command -v rclone > /dev/null || PEERS=
release_blobmount
COMMIT=$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- host || echo "+changes")
build_shaper

log "writing $N objects as Azurite's database"
python3 "$HERE/azurite_fixture.py" "$WORK/az" "$CONTAINER" big/ "$N" > /dev/null
PORT=$(free_port)
start_azurite "$PORT" "$WORK/az" "$WORK/logs/azurite.log"
start_shaper "$PORT" "$WORK/logs/shaper.log"
EP=http://127.0.0.1:$SHAPED_PORT/devstoreaccount1
AZ() { "$PY" "$HERE/az.py" "$EP" "$CONTAINER" "$@"; }
SAS=$(AZ list-sas)
KEY=$(sed -n 's/^KEY = "\(.*\)"/\1/p' "$HERE/az.py")
# One object through the API, so the directory holds N + 1 and Azurite is known to serve it.
printf 'x' > "$WORK/one"
AZ put-file big/zz-via-api "$WORK/one" > /dev/null
WANT=$((N + 1))

raw_list() { # -> prints the number of objects; walks every page
    local marker='' n=0 page=$WORK/page.xml
    while :; do
        curl -sf -o "$page" "$EP/$CONTAINER?restype=container&comp=list&prefix=big/&delimiter=/&maxresults=5000&include=metadata&$SAS${marker:+&marker=$marker}" || return 1
        n=$((n + $(grep -o '<Blob>' "$page" | wc -l)))
        marker=$(grep -o '<NextMarker>[^<]*</NextMarker>' "$page" | sed 's/<[^>]*>//g' || true)
        [[ -n $marker ]] || break
    done
    echo "$n"
}

declare -A RES
add() { RES[$1]+="$2 "; }
mount_tool() { # TOOL
    local cache=$WORK/cache/$1
    rm -rf "$cache"; mkdir -p "$cache"
    case $1 in
        blobmount)
            env AZURE_STORAGE_ACCOUNT_KEY="$KEY" RUST_LOG=info \
                "$BM" mount "az://devstoreaccount1/$CONTAINER" "$WORK/mnt" --endpoint "$EP" \
                --foreground --cache-dir "$cache" >> "$WORK/logs/blobmount.log" 2>&1 < /dev/null &
            ;;
        rclone)
            printf '[az]\ntype = azureblob\nuse_emulator = true\nendpoint = %s\n' "$EP" > "$WORK/rclone.conf"
            rclone --config "$WORK/rclone.conf" mount "az:$CONTAINER" "$WORK/mnt" \
                --vfs-cache-mode off --cache-dir "$cache" >> "$WORK/logs/rclone.log" 2>&1 < /dev/null &
            ;;
    esac
    MPID=$!
    for ((i = 0; i < 600; i++)); do
        mountpoint -q "$WORK/mnt" && return 0
        kill -0 "$MPID" 2>/dev/null || die "$1 exited: $(tail -3 "$WORK/logs/$1.log")"
        sleep 0.1
    done
    die "$1 did not mount"
}
unmount_tool() {
    fusermount3 -u "$WORK/mnt" 2>/dev/null || fusermount3 -u -z "$WORK/mnt" || true
    stop_pid "$MPID" 30; MPID=
}
metrics_lists() { # sum of blobmount's store list requests so far
    local addr
    addr=$(grep -o 'address=[0-9.:]*' "$WORK/logs/blobmount.log" | tail -1 | cut -d= -f2)
    [[ -n $addr ]] || { echo NA; return; }
    curl -s -m 5 "http://$addr/metrics" | awk '/^blobmount_backend_requests_total\{call="list"\}/{s+=$2} END{print s+0}'
}
timed_ls() { # ARGS... -> seconds; checks the count
    local t0 n
    t0=$(now)
    n=$(timeout -k 10 "$TMO" ls "$@" "$WORK/mnt/big" | grep -vc '^total' || true)
    local dt; dt=$(since "$t0")
    ((n == WANT)) || die "ls $* listed $n of $WANT names"
    echo "$dt"
}

for ((r = 1; r <= REPS; r++)); do
    log "run $r: raw paged listing"
    t0=$(now); n=$(raw_list) || die "raw listing failed"; add raw "$(since "$t0")"
    ((n == WANT)) || die "raw listing found $n of $WANT"
    for tool in blobmount $PEERS; do
        for what in ls ls-l; do
            log "run $r: $tool $what"
            flag=(); [[ $what == ls-l ]] && flag=(-l)
            sync; echo 3 > /proc/sys/vm/drop_caches
            mount_tool "$tool"
            dt=$(timed_ls "${flag[@]}") || die "$tool: ls ${flag[*]} failed (cold)"
            add "$tool,$what,cold" "$dt"
            dt=$(timed_ls "${flag[@]}") || die "$tool: ls ${flag[*]} failed (warm)"
            add "$tool,$what,warm" "$dt"
            [[ $tool == blobmount ]] && add "$tool,$what,lists" "$(metrics_lists)"
            unmount_tool
        done
    done
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086 # the runs are words
rawm=$(median ${RES[raw]})
out=$HERE/results/list-$STAMP.md
{
    echo "# bench/list.sh $STAMP"
    echo
    echo "$WANT objects in one directory of an Azurite container; link: ${BENCH_SHAPE:-loopback}; $REPS repetitions (median; all runs in brackets); load at end $load; blobmount release build of $COMMIT${BLOBMOUNT_BIN:+ ($BLOBMOUNT_BIN)}"
    echo
    echo "| what | raw paged listing (curl, pages of 5000) | tool | cold | vs raw | warm | store LISTs (cold + warm) |"
    echo "|---|---|---|---|---|---|---|"
    for tool in blobmount $PEERS; do
        for what in ls ls-l; do
            # shellcheck disable=SC2086 # the runs are words
            c=$(median ${RES[$tool,$what,cold]}) w=$(median ${RES[$tool,$what,warm]})
            ratio=$(awk -v a="$c" -v b="$rawm" 'BEGIN{printf "%.2fx", a/b}')
            lists=${RES[$tool,$what,lists]:-}
            echo "| \`${what/-/ -}\` | $rawm s [${RES[raw]% }] | $tool | $c s [${RES[$tool,$what,cold]% }] | $ratio | $w s [${RES[$tool,$what,warm]% }] | ${lists:--} |"
        done
    done
} | tee "$out"
