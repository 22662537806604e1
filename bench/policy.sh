#!/usr/bin/env bash
# Policy benchmark (issue 5): `ls -l` of a directory of N objects through blobmount with the
# built-in filter vs the same filter as a WASM plugin (plugins/dist/glob-filter.wasm), and the
# median warm filter call (cargo bench -p blobmount-policy --bench filter_call).
#
#   bash bench/policy.sh                      # N=10000, 7 repetitions of cold + warm per filter
#   BENCH_NLIST=1000 BENCH_REPS=1 bash bench/policy.sh
#
# Needs root (FUSE), the test tools (tests/scripts/install-deps.sh: Azurite, the bench venv) and
# the plugins (bash plugins/build.sh). Builds blobmount in release unless $BLOBMOUNT_BIN is set.
# Both mounts hide `*.tmp` (none of the listed objects matches, so both list all N files): the
# difference is only who decides. Prints a table and appends it to bench/results/policy-<ts>.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"
REPO=$(cd "$HERE/.." && pwd)
NLIST=${BENCH_NLIST:-10000}
REPS=${BENCH_REPS:-7}
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
PY=${BENCH_VENV:-$TOOLS/bench-venv}/bin/python
PLUGIN=${BENCH_PLUGIN:-${BLOBMOUNT_PLUGIN_DIR:-$REPO/plugins/dist}/glob-filter.wasm}
WORK=${BENCH_WORK:-/var/tmp/blobmount-policy-bench.$$}
SKIP_CALL=${BENCH_SKIP_FILTER_CALL:-0}
CONTAINER=policybench
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$HERE/results/policy-$TS.txt

log() { echo "[policy-bench $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if(NR%2)print a[(NR+1)/2]; else printf "%.4f\n",(a[NR/2]+a[NR/2+1])/2}'; }

[[ $EUID == 0 ]] || die "run as root (FUSE mounts, drop_caches)"
[[ -x $TOOLS/bin/azurite-blob && -x $PY ]] || die "missing $TOOLS (run tests/scripts/install-deps.sh and bench/run.sh once)"
[[ -f $PLUGIN ]] || die "missing $PLUGIN (run bash plugins/build.sh)"
unset AWS_CA_BUNDLE STORAGE_EMULATOR_HOST AZURE_STORAGE_CONNECTION_STRING

release_blobmount

mkdir -p "$WORK"/{mnt,azurite,logs} "$HERE/results"
AZ_PID= MPID=
cleanup() {
    set +e
    stop_pid "$MPID"
    mountpoint -q "$WORK/mnt" 2>/dev/null && fusermount3 -u -z "$WORK/mnt"
    stop_pid "$AZ_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
EP=http://127.0.0.1:$PORT/devstoreaccount1
log "starting Azurite on 127.0.0.1:$PORT"
start_azurite "$PORT" "$WORK/azurite" "$WORK/logs/azurite.log"
AZ() { "$PY" "$HERE/az.py" "$EP" "$CONTAINER" "$@"; }
AZ create
log "populate list/ with $NLIST objects: $(AZ populate list "$NLIST" 16)"

cat > "$WORK/builtin.yaml" <<EOF
policy:
  filter:
    exclude: ["*.tmp"]
EOF
cat > "$WORK/wasm.yaml" <<EOF
plugins:
  filter:
    path: $PLUGIN
    params: { exclude: "*.tmp" }
EOF

# mount CONFIG: start a foreground daemon on $WORK/mnt and wait until it serves.
mount_with() {
    "$BM" mount "az://devstoreaccount1/$CONTAINER" "$WORK/mnt" --endpoint "$EP" --foreground \
        --cache-dir "$WORK/cache" --config "$1" \
        > "$WORK/logs/mount-$(basename "$1" .yaml).log" 2>&1 \
        < /dev/null &
    MPID=$!
    for ((i = 0; i < 600; i++)); do
        mountpoint -q "$WORK/mnt" && return 0
        kill -0 "$MPID" 2>/dev/null || die "blobmount exited: $(tail -5 "$WORK/logs/mount-$(basename "$1" .yaml).log")"
        sleep 0.1
    done
    die "blobmount did not mount"
}
export AZURE_STORAGE_ACCOUNT_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

declare -A COLD WARM
for kind in builtin wasm; do COLD[$kind]="" WARM[$kind]=""; done
for ((r = 1; r <= REPS; r++)); do
    # Alternate the order so drift (load from other work) hits both alike.
    order="builtin wasm"; ((r % 2 == 0)) && order="wasm builtin"
    for kind in $order; do
        mount_with "$WORK/$kind.yaml"
        sync; echo 3 > /proc/sys/vm/drop_caches
        t0=$(now); n=$(ls -l "$WORK/mnt/list" | grep -c '^-' || true); c=$(since "$t0")
        ((n == NLIST)) || die "$kind: cold ls -l listed $n of $NLIST"
        t0=$(now); n=$(ls -l "$WORK/mnt/list" | grep -c '^-' || true); w=$(since "$t0")
        ((n == NLIST)) || die "$kind: warm ls -l listed $n of $NLIST"
        COLD[$kind]+="$c " WARM[$kind]+="$w "
        log "rep $r $kind: cold ${c}s warm ${w}s"
        stop_pid "$MPID"; MPID=
        mountpoint -q "$WORK/mnt" && fusermount3 -u -z "$WORK/mnt"
    done
done

CALL="not measured"
if [[ $SKIP_CALL != 1 ]]; then
    log "cargo bench -p blobmount-policy --bench filter_call"
    CALL=$(cd "$REPO" && cargo bench -q --locked -p blobmount-policy --bench filter_call 2>&1 | tail -20)
fi

mc() { median ${COLD[$1]}; }
mw() { median ${WARM[$1]}; }
{
    echo "# policy benchmark $TS: ls -l of $NLIST objects (Azurite), median of $REPS; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# blobmount: $BM; repo $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD || echo +dirty)"
    printf '| filter | ls -l cold (s) | ls -l warm (s) | runs cold | runs warm |\n|---|---|---|---|---|\n'
    for kind in builtin wasm; do
        printf '| %s | %s | %s | %s | %s |\n' "$kind" "$(mc $kind)" "$(mw $kind)" "${COLD[$kind]% }" "${WARM[$kind]% }"
    done
    awk -v a="$(mc wasm)" -v b="$(mc builtin)" -v c="$(mw wasm)" -v d="$(mw builtin)" \
        'BEGIN{printf "\nwasm / builtin: cold %.3fx, warm %.3fx (target <= 1.1x)\n", a/b, c/d}'
    echo
    echo "filter_call bench:"
    echo "$CALL"
} | tee "$OUT"
