#!/usr/bin/env bash
# Build {{name}} to a WebAssembly component: {{name}}.wasm next to this script.
#
# Needs Node.js 18+ and npm. componentize-js is pinned in package.json and installed into
# ./node_modules by the first run (`npm install`, about 400 MB). To reuse an install instead,
# set BLOBMOUNT_COMPONENTIZE_JS to a directory whose node_modules/ has that version (blobmount's
# CI does). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

want=$(node -p 'require("./package.json").dependencies["@bytecodealliance/componentize-js"]')
have() {
    node -p 'require("./node_modules/@bytecodealliance/componentize-js/package.json").version' 2>/dev/null || true
}
if [[ $(have) != "$want" ]]; then
    if [[ -n ${BLOBMOUNT_COMPONENTIZE_JS:-} && ! -e node_modules ]]; then
        ln -s "$BLOBMOUNT_COMPONENTIZE_JS/node_modules" node_modules
    fi
    if [[ $(have) != "$want" ]]; then
        npm install --no-audit --no-fund --loglevel=error
    fi
fi
node build.mjs
echo "build.sh: built $PWD/{{name}}.wasm"
