#!/usr/bin/env bash
# blobmount on S3 against its S3 peers (issue 18): s3s-fs (a Rust S3 server from the crate
# registry that serves ranged GETs properly, unlike moto) as the store; the raw clients, blobmount,
# rclone mount (--vfs-cache-mode off for reads, writes for writes) and s3fs-fuse (Debian) as
# peers, in one run. Raw clients (what a user runs instead of a mount):
#   raw              curl with SigV4: one GET, one PUT of the whole object
#   raw-8ranges      curl: 8 parallel ranged GETs of 1/8 of the object each (reads only)
#   raw-sdk          the AWS SDK's managed transfer (boto3, bench/s3-sdk.py): a parallel multipart
#                    upload (upload_file) and parallel ranged GETs (download_fileobj) with
#                    blobmount's part size and parts in flight (write.part-size-mib,
#                    write.parts-in-flight, read from the measured binary's config schema)
#   raw-sdk-defaults the same with the SDK's own TransferConfig defaults (skipped when equal)
#
#   bash bench/s3.sh                        # 1 GiB, 3 runs each
#   BENCH_SMALL=1 bash bench/s3.sh          # 128 MiB, 1 run
#   BENCH_SHAPE=10:2000 bash bench/s3.sh    # through a remote-like link (latency ms : Mbit/s)
#
# Scenarios: seq_read (cold sequential read of the file with dd, page cache dropped, fresh mount;
# MB/s) and seq_write (dd bs=1M conv=fsync of a new file, timed until the store has it with all
# its bytes: for the mounts dd's own end (they upload at fsync/close), checked with a HEAD;
# MB/s; the raw writers until the store answers the PUT / CompleteMultipartUpload). Prints a
# table with ratios to the one-request raw client, to the best raw client of the scenario
# (named under the table) and to rclone, and writes
# bench/results/s3-<UTC timestamp>.md. Needs root (FUSE, drop_caches). Everything started is
# stopped by PID; the server binds 127.0.0.1 only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

SMALL=${BENCH_SMALL:-0}
MIB=${BENCH_S3_MIB:-$([[ $SMALL == 1 ]] && echo 128 || echo 1024)}
REPS=${BENCH_REPS:-$([[ $SMALL == 1 ]] && echo 1 || echo 3)}
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
PEERS=${BENCH_S3_TOOLS:-raw raw-8ranges raw-sdk raw-sdk-defaults blobmount rclone s3fs}
PY=${BENCH_PYTHON:-$TOOLS/venv/bin/python} # with boto3 (tests/scripts/install-deps.sh)
WORK=${BENCH_WORK:-/var/tmp/blobmount-s3bench.$$}
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$HERE/results/s3-$TS.md
AK=bench SK=benchbenchbench REGION=us-east-1 BUCKET=bench
S3S_VERSION=0.14.1 # 0.15+ needs a newer rustc than this machine's (research/bench/scripts/README.md)

log() { echo "[s3bench $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.1f", n/1e6/s}'; }
median() { printf '%s\n' "$@" | grep -v '^NA$' | sort -g | awk '{a[NR]=$1} END{if(NR==0)print "NA"; else if(NR%2)print a[(NR+1)/2]; else printf "%.4g\n",(a[NR/2]+a[NR/2+1])/2}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

[[ $EUID == 0 ]] || die "run as root (FUSE mounts, drop_caches)"
unset AWS_CA_BUNDLE # breaks rclone's and boto3's S3 clients on these machines

# ---------------------------------------------------------------- install
need=()
command -v rclone >/dev/null || need+=(rclone)
command -v s3fs >/dev/null || need+=(s3fs)
command -v curl >/dev/null || need+=(curl)
command -v fusermount3 >/dev/null || need+=(fuse3)
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
S3S=$TOOLS/s3s/bin/s3s-fs
if [[ ! -x $S3S ]]; then
    log "cargo install s3s-fs $S3S_VERSION (a few minutes)"
    cargo install -q --locked --root "$TOOLS/s3s" s3s-fs --version "$S3S_VERSION" --features binary
fi
if [[ " $PEERS " == *" raw-sdk"* ]] && ! "$PY" -c 'import boto3' 2> /dev/null; then
    [[ -x $TOOLS/venv/bin/pip && $PY == "$TOOLS/venv/bin/python" ]] \
        || die "no boto3 for $PY: run tests/scripts/install-deps.sh or set BENCH_PYTHON"
    log "pip install boto3 into $TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check 'boto3>=1.28,<2'
fi
release_blobmount
build_shaper

# The SDK client with blobmount's write defaults (from the binary measured) and with its own.
# shellcheck disable=SC2016 # $defs is JSON, not shell
read -r BM_PART_MIB BM_INFLIGHT < <("$BM" config schema 2> /dev/null | python3 -c '
import json, sys
p = json.load(sys.stdin)["$defs"]["WriteConfig"]["properties"]
print(p["part-size-mib"]["default"], p["parts-in-flight"]["default"])' || echo "8 8")
if [[ " $PEERS " == *" raw-sdk"* ]]; then
    read -r SDK_PART_MIB SDK_INFLIGHT < <("$PY" -c '
from boto3.s3.transfer import TransferConfig
t = TransferConfig()
print(t.multipart_chunksize >> 20, t.max_concurrency)')
    if [[ $SDK_PART_MIB == "$BM_PART_MIB" && $SDK_INFLIGHT == "$BM_INFLIGHT" ]]; then
        PEERS=$(echo "$PEERS" | tr ' ' '\n' | grep -vx raw-sdk-defaults | tr '\n' ' ')
    fi
    log "raw-sdk: ${BM_PART_MIB} MiB parts, $BM_INFLIGHT in flight (blobmount's defaults); SDK defaults ${SDK_PART_MIB} MiB, $SDK_INFLIGHT"
fi
# sdk OP KEY TOOL: one boto3 transfer through the endpoint; prints its seconds.
sdk() {
    local part=$BM_PART_MIB n=$BM_INFLIGHT
    [[ $3 == raw-sdk-defaults ]] && part=$SDK_PART_MIB n=$SDK_INFLIGHT
    AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=$REGION \
        "$PY" "$HERE/s3-sdk.py" "$1" "$EP" "$BUCKET" "$2" "$WORK/src.bin" "$part" "$n"
}

# ---------------------------------------------------------------- server
mkdir -p "$WORK"/{data,mnt,cache,logs} "$HERE/results"
S3_PID='' MPID='' SHAPER_PID=''
cleanup() {
    set +e
    [[ -n $MPID ]] && { fusermount3 -u -z "$WORK/mnt" 2>/dev/null; stop_pid "$MPID" 20; }
    mountpoint -q "$WORK/mnt" 2>/dev/null && fusermount3 -u -z "$WORK/mnt"
    stop_pid "$SHAPER_PID" 10
    stop_pid "$S3_PID" 20
    mkdir -p "$HERE/results/logs-s3-$TS" && cp "$WORK"/logs/* "$HERE/results/logs-s3-$TS/" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
"$S3S" --host 127.0.0.1 --port "$PORT" --access-key "$AK" --secret-key "$SK" "$WORK/data" \
    > "$WORK/logs/s3s-fs.log" 2>&1 &
S3_PID=$!
for ((i = 0; i < 100; i++)); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
# s3() METHOD PATH [curl args...]: a SigV4-signed request to ENDPOINT (default: the server).
s3() {
    local m=$1 p=$2; shift 2
    curl -sS --fail --aws-sigv4 "aws:amz:$REGION:s3" --user "$AK:$SK" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X "$m" "${S3_EP:-http://127.0.0.1:$PORT}$p" "$@"
}
s3 PUT "/$BUCKET" -o /dev/null || die "create bucket failed"
BYTES=$((MIB << 20))
head -c "$BYTES" /dev/urandom > "$WORK/src.bin"
s3 PUT "/$BUCKET/big.bin" -T "$WORK/src.bin" -o /dev/null || die "upload failed"
log "s3s-fs on 127.0.0.1:$PORT, ${MIB} MiB object uploaded"

start_shaper "$PORT" "$WORK/logs/shaper.log"
EP=http://127.0.0.1:$SHAPED_PORT
S3_EP=$EP

cat > "$WORK/rclone.conf" << EOF
[s3s]
type = s3
provider = Other
access_key_id = $AK
secret_access_key = $SK
endpoint = $EP
region = $REGION
force_path_style = true
EOF
echo "$AK:$SK" > "$WORK/passwd" && chmod 600 "$WORK/passwd"

# mount_tool TOOL MODE (read|write): mounts at $WORK/mnt; sets MPID.
mount_tool() {
    local tool=$1 mode=$2 logf=$WORK/logs/$1.log i
    rm -rf "$WORK/cache/$tool"; mkdir -p "$WORK/cache/$tool"
    case $tool in
        blobmount)
            env AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=$REGION RUST_LOG=info \
                "$BM" mount "s3://$BUCKET" "$WORK/mnt" --endpoint "$EP" --foreground \
                --cache-dir "$WORK/cache/$tool" >> "$logf" 2>&1 < /dev/null &
            ;;
        rclone)
            local cm=off; [[ $mode == write ]] && cm=writes
            rclone --config "$WORK/rclone.conf" mount "s3s:$BUCKET" "$WORK/mnt" --vfs-cache-mode "$cm" \
                --cache-dir "$WORK/cache/$tool" --log-level NOTICE >> "$logf" 2>&1 < /dev/null &
            ;;
        s3fs)
            # retries=1: s3s-fs answers 500 to HEAD of `prefix/`, which s3fs retries for minutes.
            s3fs "$BUCKET" "$WORK/mnt" -f -o "url=$EP,use_path_request_style,passwd_file=$WORK/passwd,dbglevel=warn,retries=1" \
                >> "$logf" 2>&1 < /dev/null &
            ;;
    esac
    MPID=$!
    for ((i = 0; i < 300; i++)); do
        mountpoint -q "$WORK/mnt" && return 0
        kill -0 "$MPID" 2>/dev/null || die "$tool exited: $(tail -3 "$logf")"
        sleep 0.1
    done
    die "$tool did not mount"
}
umount_tool() {
    fusermount3 -u "$WORK/mnt" 2>/dev/null || fusermount3 -u -z "$WORK/mnt"
    for ((i = 0; i < 300; i++)); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$MPID" 10; MPID=
}

declare -A RES
put() { RES[$1,$2]+="$3 "; log "RESULT $1 $2 = $3 MB/s (load $(cut -d' ' -f1 /proc/loadavg))"; }

for ((r = 1; r <= REPS; r++)); do
    for tool in $PEERS; do
        # seq_read
        case $tool in
            raw)
                drop_caches; t0=$(now)
                n=$(s3 GET "/$BUCKET/big.bin" -o /dev/null -w '%{size_download}')
                [[ $n == "$BYTES" ]] || die "raw GET: $n bytes"
                put seq_read raw "$(rate "$BYTES" "$(since "$t0")")"
                ;;
            raw-8ranges)
                drop_caches; t0=$(now); part=$((BYTES / 8)); pids=()
                for k in 0 1 2 3 4 5 6 7; do
                    s3 GET "/$BUCKET/big.bin" -r "$((k * part))-$(((k + 1) * part - 1))" -o /dev/null & pids+=($!)
                done
                for p in "${pids[@]}"; do wait "$p" || die "ranged GET failed"; done
                put seq_read raw-8ranges "$(rate "$BYTES" "$(since "$t0")")"
                ;;
            raw-sdk | raw-sdk-defaults)
                drop_caches
                dt=$(sdk get big.bin "$tool") || die "$tool download failed"
                put seq_read "$tool" "$(rate "$BYTES" "$dt")"
                ;;
            *)
                mount_tool "$tool" read; drop_caches; t0=$(now)
                if timeout 900 dd if="$WORK/mnt/big.bin" of=/dev/null bs=1M status=none; then
                    put seq_read "$tool" "$(rate "$BYTES" "$(since "$t0")")"
                else
                    put seq_read "$tool" NA
                fi
                umount_tool
                ;;
        esac
        # seq_write
        key=w-$tool-$r.bin
        case $tool in
            raw-8ranges) ;;
            raw)
                t0=$(now); s3 PUT "/$BUCKET/$key" -T "$WORK/src.bin" -o /dev/null
                put seq_write raw "$(rate "$BYTES" "$(since "$t0")")"
                ;;
            raw-sdk | raw-sdk-defaults)
                dt=$(sdk put "$key" "$tool") || die "$tool upload failed"
                put seq_write "$tool" "$(rate "$BYTES" "$dt")"
                ;;
            *)
                mount_tool "$tool" write; t0=$(now)
                if timeout 900 dd if="$WORK/src.bin" of="$WORK/mnt/$key" bs=1M conv=fsync status=none; then
                    # Durable means in the store with all its bytes (rclone --vfs-cache-mode
                    # writes uploads after close, while still mounted: the clock runs until a
                    # HEAD shows it, then the mount goes).
                    len=
                    for ((i = 0; i < 9000; i++)); do
                        len=$(s3 HEAD "/$BUCKET/$key" -I 2>/dev/null | tr -d '\r' | awk -F': ' 'tolower($1)=="content-length"{print $2}' || true)
                        [[ $len == "$BYTES" ]] && break
                        sleep 0.1
                    done
                    dt=$(since "$t0")
                    umount_tool
                    if [[ $len == "$BYTES" ]]; then put seq_write "$tool" "$(rate "$BYTES" "$dt")"; else put seq_write "$tool" NA; fi
                else
                    umount_tool; put seq_write "$tool" NA
                fi
                ;;
        esac
    done
done

# shellcheck disable=SC2086 # the runs are words
m() { [[ -n ${RES[$1,$2]:-} ]] && median ${RES[$1,$2]} || echo NA; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a == "NA" || b == "NA" || b == 0) print "-"; else printf "%.2fx", a/b}'; }
# label SCENARIO TOOL: what the row measures.
label() {
    case $2 in
        raw) [[ $1 == seq_read ]] && echo "raw: one GET (curl)" || echo "raw: one PUT (curl)" ;;
        raw-8ranges) echo "raw: 8 parallel ranged GETs (curl)" ;;
        raw-sdk | raw-sdk-defaults)
            local part=$BM_PART_MIB n=$BM_INFLIGHT what
            [[ $2 == raw-sdk-defaults ]] && part=$SDK_PART_MIB n=$SDK_INFLIGHT what=", SDK defaults"
            [[ $2 == raw-sdk ]] && what=", as blobmount"
            if [[ $1 == seq_read ]]; then
                echo "raw SDK ranged GETs, $n in flight ($part MiB$what; boto3 download_fileobj)"
            else
                echo "raw SDK multipart, $n parts in flight ($part MiB$what; boto3 upload_file)"
            fi
            ;;
        *) echo "$2 mount" ;;
    esac
}
# best_raw SCENARIO: the raw client with the highest median (its name), or nothing.
best_raw() {
    local t v best='' bv=0
    for t in $PEERS; do
        [[ $t == raw* ]] || continue
        v=$(m "$1" "$t")
        [[ $v == NA ]] && continue
        awk -v a="$v" -v b="$bv" 'BEGIN{exit !(a > b)}' && best=$t bv=$v
    done
    echo "$best"
}
{
    echo "# S3 benchmark $TS on s3s-fs $S3S_VERSION, ${MIB} MiB, median of $REPS; $(nproc) cores; load at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# link: $([[ -n ${BENCH_SHAPE:-} ]] && echo "shaped $BENCH_SHAPE (latency ms:Mbit/s)" || echo loopback); blobmount ${BLOBMOUNT_BIN:+$BLOBMOUNT_BIN, }$("$BM" version 2> /dev/null | head -1), scripts at $(git -C "$REPO" rev-parse --short HEAD); $(rclone version 2>/dev/null | head -1); s3fs $(s3fs --version 2>&1 | grep -o 'V[0-9.]*' | head -1); boto3 $("$PY" -c 'import boto3; print(boto3.__version__)' 2> /dev/null || echo -)"
    printf '| scenario | tool | client | MB/s | vs raw 1 req | vs best raw | vs rclone | runs |\n|---|---|---|---|---|---|---|---|\n'
    for sc in seq_read seq_write; do
        best=$(best_raw "$sc")
        for tool in $PEERS; do
            [[ $sc == seq_write && $tool == raw-8ranges ]] && continue
            v=$(m "$sc" "$tool")
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$sc" "$tool" "$(label "$sc" "$tool")" "$v" \
                "$(ratio "$v" "$(m "$sc" raw)")" "$(ratio "$v" "$([[ -n $best ]] && m "$sc" "$best" || echo NA)")" \
                "$(ratio "$v" "$(m "$sc" rclone)")" "${RES[$sc,$tool]:-}"
        done
    done
    echo
    for sc in seq_read seq_write; do
        best=$(best_raw "$sc")
        [[ -n $best ]] || continue
        echo "$sc: best raw client is $best, $(m "$sc" "$best") MB/s: $(label "$sc" "$best"). blobmount: $(ratio "$(m "$sc" blobmount)" "$(m "$sc" "$best")") of it."
        # The SDK with blobmount's part size and parts in flight does the same work.
        [[ $best != raw-sdk && -n ${RES[$sc,raw-sdk]:-} ]] \
            && echo "$sc: blobmount vs raw-sdk (the same parts and parallelism): $(ratio "$(m "$sc" blobmount)" "$(m "$sc" raw-sdk)")."
    done
    echo
    echo "seq_read: dd bs=1M of the object, page cache dropped, fresh mount (raw: one curl GET; raw-8ranges: 8 parallel ranged GETs; raw-sdk*: boto3 download_fileobj, a HEAD and parallel ranged GETs into a counting sink)."
    echo "seq_write: dd bs=1M conv=fsync of a new file, until a HEAD shows all its bytes (raw: one curl PUT, UNSIGNED-PAYLOAD; raw-sdk*: boto3 upload_file, parallel UploadPart with SHA-256-signed payload and CRC32 over http, until CompleteMultipartUpload answers)."
} | tee "$OUT"
log "written $OUT"
