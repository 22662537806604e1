#!/usr/bin/env bash
# Run every check of the project: formatting, lints, all unit tests and the FUSE integration
# tests against Azurite, moto (S3) and fake-gcs-server, then the deployment checks
# (deploy/lint.sh, and deploy/e2e.sh: a private Docker engine runs the image and the compose
# sidecar). Installs what is missing first (tests/scripts/install-deps.sh) and builds the WASM
# policy plugins the policy and CLI tests load (plugins/build.sh). Needs root (or FUSE rights)
# and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/scripts/install-deps.sh
# This machine kind sets AWS_CA_BUNDLE; neither the product nor its tests may depend on it.
unset AWS_CA_BUNDLE

profile=default
[[ ${CI:-} == true ]] && profile=ci

echo "== plugins (WASM components for the policy tests)"
# Tools for the Debian route are kept with the other test tools, so re-runs are incremental.
BLOBMOUNT_PLUGIN_TOOLS=${BLOBMOUNT_PLUGIN_TOOLS:-${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}/wasm} \
    bash plugins/build.sh
# The JavaScript and Python examples (componentize-js / componentize-py from install-deps.sh);
# each is rebuilt only when its sources, the WIT or the tool version changed.
bash plugins/build-langs.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path plugins/Cargo.toml --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build"
cargo build --workspace --all-targets --locked
echo "== tests"
cargo nextest run --workspace --locked --profile "$profile"
# Deployment files (deploy/): offline lint, then the container image and the compose sidecar
# under a private Docker engine against Azurite (docs/deploy.md). Both print PASS/FAIL lines.
echo "== deploy: lint"
bash deploy/lint.sh
echo "== deploy: docker end-to-end"
bash deploy/e2e.sh
