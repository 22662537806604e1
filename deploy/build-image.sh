#!/usr/bin/env bash
# Build the blobmount image with the legacy Docker builder (no BuildKit, no base image pull):
#   bash deploy/build-image.sh [TAG] [BINARY]
# TAG defaults to blobmount:dev; BINARY to the output of deploy/build-static.sh (built if needed).
# Needs a reachable Docker engine (DOCKER_HOST), Debian's ca-certificates and busybox-static.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-blobmount:dev}
bin=${2:-}
[[ -n $bin ]] || bin=$(bash "$here/build-static.sh")
for f in /etc/ssl/certs/ca-certificates.crt /bin/busybox; do
    [[ -f $f ]] || { echo "build-image: $f missing (apt-get install ca-certificates busybox-static)" >&2; exit 1; }
done
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/blobmount"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
cp /bin/busybox "$ctx/mountpoint"
cp "$here/Dockerfile" "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
echo "build-image: $tag $(docker image inspect -f '{{.Size}}' "$tag") bytes" >&2
