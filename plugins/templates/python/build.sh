#!/usr/bin/env bash
# Build {{name}} to a WebAssembly component: {{name}}.wasm next to this script.
#
# Needs Python 3.10+ with venv. componentize-py (pinned below) is installed into ./.venv by the
# first run (`pip install`, about 70 MB). To reuse an install instead, set
# BLOBMOUNT_COMPONENTIZE_PY to a virtualenv that has that version (blobmount's CI does).
# Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

version=0.25.1
venv=${BLOBMOUNT_COMPONENTIZE_PY:-.venv}
if [[ $("$venv/bin/componentize-py" --version 2>/dev/null) != "componentize-py $version" ]]; then
    venv=.venv
    [[ -x $venv/bin/pip ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "componentize-py==$version"
fi
"$venv/bin/componentize-py" -d wit -w {{hook}}-plugin componentize app -o {{name}}.wasm
echo "build.sh: built $PWD/{{name}}.wasm"
