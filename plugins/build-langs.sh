#!/usr/bin/env bash
# Build the JavaScript and Python example plugins (js/glob-filter-js, python/glob-filter-py) to
# components in plugins/dist/, with componentize-js from npm and componentize-py from PyPI at
# the versions pinned in js/glob-filter-js/package.json and below.
#
# Tools: $BLOBMOUNT_COMPONENTIZE_JS (a directory whose node_modules/ has componentize-js) and
# $BLOBMOUNT_COMPONENTIZE_PY (a virtualenv with componentize-py), as tests/scripts/install-deps.sh
# installs them under $BLOBMOUNT_TEST_TOOLS/plugin-js and plugin-py (the defaults here).
#
# A component is rebuilt only when its inputs change: the sources, the WIT, the tool version
# and this script are hashed into dist/NAME.wasm.inputs, and an unchanged hash with the
# component present skips the 20-60 s build. Safe to re-run.
set -euo pipefail
# This script's own path, taken before the cd (it is one of the hashed inputs).
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")"

TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
JS=${BLOBMOUNT_COMPONENTIZE_JS:-$TOOLS/plugin-js}
PY=${BLOBMOUNT_COMPONENTIZE_PY:-$TOOLS/plugin-py}
COMPONENTIZE_PY=0.25.1
mkdir -p dist

# inputs_hash TOOL-VERSION FILE... : one hash over the files, the WIT and this script.
inputs_hash() {
    local version=$1
    shift
    { echo "$version"; cat "$@" ../wit/*.wit "$SELF"; } | sha256sum | cut -d' ' -f1
}

# up_to_date NAME HASH: dist/NAME.wasm exists and was built from these inputs.
up_to_date() {
    [[ -f dist/$1.wasm && $(cat "dist/$1.wasm.inputs" 2>/dev/null) == "$2" ]]
}

# JavaScript: js/glob-filter-js (its build.mjs writes dist/glob-filter-js.wasm).
js_version=$(node -p 'require("./js/glob-filter-js/package.json").dependencies["@bytecodealliance/componentize-js"]')
have_js=$(node -p 'require(process.argv[1]).version' \
    "$JS/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null || true)
[[ $have_js == "$js_version" ]] || {
    echo "build-langs.sh: componentize-js $js_version not found in $JS/node_modules (run tests/scripts/install-deps.sh)" >&2
    exit 1
}
h=$(inputs_hash "$js_version" js/glob-filter-js/filter.js js/glob-filter-js/build.mjs)
if up_to_date glob-filter-js "$h"; then
    echo "build-langs.sh: dist/glob-filter-js.wasm is up to date"
else
    start=$SECONDS
    # Node resolves the package from the project directory: link the shared install there.
    [[ -e js/glob-filter-js/node_modules ]] || ln -s "$JS/node_modules" js/glob-filter-js/node_modules
    (cd js/glob-filter-js && node build.mjs)
    echo "$h" > dist/glob-filter-js.wasm.inputs
    echo "build-langs.sh: built dist/glob-filter-js.wasm in $((SECONDS - start)) s"
fi

# Python: python/glob-filter-py.
[[ $("$PY/bin/componentize-py" --version 2>/dev/null) == "componentize-py $COMPONENTIZE_PY" ]] || {
    echo "build-langs.sh: componentize-py $COMPONENTIZE_PY not found in $PY (run tests/scripts/install-deps.sh)" >&2
    exit 1
}
h=$(inputs_hash "$COMPONENTIZE_PY" python/glob-filter-py/app.py)
if up_to_date glob-filter-py "$h"; then
    echo "build-langs.sh: dist/glob-filter-py.wasm is up to date"
else
    start=$SECONDS
    (cd python/glob-filter-py && "$PY/bin/componentize-py" -d ../../../wit -w filter-plugin \
        componentize app -o ../../dist/glob-filter-py.wasm)
    echo "$h" > dist/glob-filter-py.wasm.inputs
    echo "build-langs.sh: built dist/glob-filter-py.wasm in $((SECONDS - start)) s"
fi
