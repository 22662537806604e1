#!/usr/bin/env bash
# pjdfstest (the Rust port, crates.io `pjdfstest`) for blobmount's POSIX conformance test.
#
#   bash tests/scripts/pjdfstest.sh install
#       Install the runner into $BLOBMOUNT_TEST_TOOLS (default /opt/blobmount-test):
#       libacl1-dev from apt (the crate links libacl), then `cargo install --locked` of a
#       pinned version into $TOOLS/pjdfstest, linked as $TOOLS/bin/pjdfstest. Safe to re-run:
#       an installed runner of the pinned version is kept. Meant for install-deps.sh.
#
#   bash tests/scripts/pjdfstest.sh run MOUNTPOINT [PATTERN...]
#       Run the suite (or the tests whose names contain a PATTERN) in MOUNTPOINT, a mount
#       made by hand (as root, with --allow-other: the suite switches to other users), with
#       tests/pjdfstest/pjdfstest.toml. Then compare with tests/pjdfstest/exclusions.txt and
#       known-failures.txt: exit 1 if a test outside them fails or a listed test passes.
#       The CI check is tests/tests/posix_conformance.rs, which mounts Azurite itself.
set -euo pipefail

PJDFSTEST_VERSION=0.2.2
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
BIN=$TOOLS/bin
LISTS=$(cd "$(dirname "$0")/.." && pwd)/pjdfstest

install() {
    mkdir -p "$BIN"
    local exe=$TOOLS/pjdfstest/bin/pjdfstest
    if [[ -x $exe && $("$exe" --version 2>/dev/null) == "pjdfstest $PJDFSTEST_VERSION" ]]; then
        ln -sf "$exe" "$BIN/pjdfstest"
        return
    fi
    # exacl (a dependency) links -lacl: the unversioned libacl.so is in libacl1-dev.
    if ! dpkg-query -W -f='${Status}' libacl1-dev 2>/dev/null | grep -q 'ok installed'; then
        echo "pjdfstest: apt-get install libacl1-dev"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libacl1-dev >/dev/null
    fi
    echo "pjdfstest: cargo install pjdfstest@$PJDFSTEST_VERSION"
    # A target dir of its own: a workspace build holding its lock does not block this.
    CARGO_TARGET_DIR=$TOOLS/pjdfstest/target \
        cargo install --locked --quiet --root "$TOOLS/pjdfstest" "pjdfstest@$PJDFSTEST_VERSION"
    rm -rf "$TOOLS/pjdfstest/target"
    ln -sf "$exe" "$BIN/pjdfstest"
    "$BIN/pjdfstest" --version
}

run() {
    local mp=${1:?usage: pjdfstest.sh run MOUNTPOINT [PATTERN...]}
    shift
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    mkdir "$work/secondary" # another file system (for the EXDEV cases): /tmp
    set +e
    NO_COLOR=1 RUST_BACKTRACE=0 "$BIN/pjdfstest" -c "$LISTS/pjdfstest.toml" -p "$mp" \
        -s "$work/secondary" "$@" | tee "$work/out"
    set -e
    # PATTERN lines of both lists (entries of the --attr-timeout 0 pass left out).
    local -a pats=()
    mapfile -t pats < <(sed -e 's/#.*//' "$LISTS/exclusions.txt" "$LISTS/known-failures.txt" \
        | awk 'NF && $1 !~ /^attr-timeout-0\// { print $1 }')
    local bad=0 name result p listed
    while read -r name result; do
        listed=
        for p in "${pats[@]}"; do
            # shellcheck disable=SC2053 # PATTERN is a glob on purpose
            [[ $name == $p ]] && { listed=$p; break; }
        done
        if [[ $result == FAILED && -z $listed ]]; then
            echo "UNEXPECTED FAILURE: $name"
            bad=1
        elif [[ $result == ok && -n $listed ]]; then
            echo "NOW PASSES (delete '$listed' from the lists): $name"
            bad=1
        fi
    done < <(awk 'NF == 2 && ($2 == "ok" || $2 == "FAILED") { print $1, $2 }' "$work/out")
    ((bad == 0)) && echo "pjdfstest: every result is as listed"
    return "$bad"
}

case ${1:-} in
install) install ;;
run) shift; run "$@" ;;
*) echo "usage: $0 install | run MOUNTPOINT [PATTERN...]" >&2; exit 2 ;;
esac
