#!/usr/bin/env bash
# Build the blobmount image with the legacy Docker builder (no BuildKit, no base image pull):
#   bash deploy/build-image.sh [TAG] [BINARY]
# TAG defaults to blobmount:dev; BINARY to the output of deploy/build-static.sh (built if needed).
# Needs a reachable Docker engine (DOCKER_HOST) and Debian's ca-certificates.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-blobmount:dev}
bin=${2:-}
[[ -n $bin ]] || bin=$(bash "$here/build-static.sh")
[[ -f /etc/ssl/certs/ca-certificates.crt ]] ||
    { echo "build-image: no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/blobmount"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
cp "$here/Dockerfile" "$ctx/Dockerfile"
mkdir -m 0700 "$ctx/cache"   # /var/cache/blobmount in the image, owned by 65534
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
echo "build-image: $tag $(docker image inspect -f '{{.Size}}' "$tag") bytes" >&2
