#!/usr/bin/env bash
# Requests per operation (issue 18): `rsync -a` of BENCH_RSYNC_FILES (700) small files through a
# blobmount mount into an Azurite container already holding BENCH_RSYNC_OTHERS (20,000) other
# objects, requests counted at a proxy between the mount and Azurite, against the raw SDK writing
# the same number of objects one PUT each.
#
#   bash bench/rsync.sh                                  # 700 files over 20,000 others
#   BENCH_RSYNC_FILES=300 BENCH_RSYNC_OTHERS=5000 bash bench/rsync.sh
#   BENCH_RSYNC_CLOSE_DELAY_MS=500 bash bench/rsync.sh   # with write-behind (write.close-delay-ms);
#                                                        # the time lasts until every file is stored
#
# Runs the ignored test `bench_rsync` of tests/tests/request_budget.rs (it starts its own Azurite
# from /opt/blobmount-test, see tests/scripts/install-deps.sh), prints one Markdown table row
# (time; requests per file in all and by kind; the raw SDK's time; the machine's load) and
# appends it to bench/results/rsync.md. Needs root (FUSE) and rsync.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"
unset AWS_CA_BUNDLE
command -v rsync >/dev/null || apt-get install -y rsync
cargo build -q -p blobmount
# cargo test, not nextest: filling 20,000 objects alone can pass nextest's per-test timeout.
out=$(cargo test -q -p blobmount-tests --test request_budget -- --ignored --exact bench_rsync \
    --nocapture 2>&1) || { echo "$out" | tail -40; exit 1; }
row=$(echo "$out" | grep -o 'BENCH-ROW.*' | sed 's/^BENCH-ROW //')
echo "$out" | grep -E '^(filled|rsync -a of)' || true
mkdir -p "$HERE/results"
if [[ ! -s $HERE/results/rsync.md ]]; then
    {
        echo "| run (UTC) | workload | time | requests/file | LIST/file | HEAD/file | PUT+copy/file | metadata/file | other/file | raw SDK (ratio) | load (1/5/15 min) |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
    } >"$HERE/results/rsync.md"
fi
echo "| $(date -u +%Y-%m-%dT%H:%MZ) $row" | tee -a "$HERE/results/rsync.md"
