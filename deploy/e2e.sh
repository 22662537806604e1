#!/usr/bin/env bash
# End-to-end test of the blobmount container image and the hardened deploy/docker-compose.yml
# (fuse-mounter with SYS_ADMIN + CHOWN and /dev/fuse; the daemon as uid 65534 with no
# capabilities; the app as uid 1000) under a real Docker engine, against Azurite on 127.0.0.1.
# Needs root and /dev/fuse.
#
#   bash deploy/e2e.sh
#
# It installs what is missing (deploy/install-tools.sh --e2e: Debian docker.io, busybox-static,
# ...; Azurite through tests/scripts/install-deps.sh), starts a private dockerd (own data-root,
# exec-root, pidfile and socket under a temp dir, no bridge, no iptables), builds the static
# binary and the image (legacy builder), starts Azurite, runs the compose file with the CI
# override and checks:
#   - each container's privileges, from /proc/PID/status of its process: uid, effective and
#     bounding capabilities, no_new_privs, seccomp; read-only root file systems; no /dev/fuse
#     and no key in the daemon's environment;
#   - the app writes through the shared volume and the object lands in Azurite;
#   - the app reads an object put into Azurite;
#   - the sidecar's healthcheck (`blobmount health`) passes; with Azurite stopped /readyz turns
#     503 and the container unhealthy while /healthz stays 200, and both recover once it is back;
#   - SIGKILL of the daemon gives ENOTCONN in the app; `docker compose up -d blobmount` (and,
#     after a kill of its process, restart: on-failure) serves again without restarting the
#     app: the fuse-mounter detaches the dead mount and mounts afresh for the new daemon;
#   - SIGKILL of the fuse-mounter: the app still reads; the restarted mounter waits while the
#     daemon serves (no mount stacked on the live one) and mounts afresh once that daemon ends;
#   - SIGTERM (docker stop) of the daemon right after a write: exit 0, the write is in Azurite;
#     then of the fuse-mounter: exit 0, no mount left.
# Everything it starts is stopped by PID or by name in the EXIT trap; every wait is bounded.
# Prints PASS/FAIL per check and "e2e: N passed, M failed"; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TOOLS=${BLOBMOUNT_TEST_TOOLS:-/opt/blobmount-test}
V=$TOOLS/deploy-venv

passes=0
fails=0
pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
step() { echo "== $* ($(date -u +%T))"; }
t0=$(date +%s)

[[ $(id -u) == 0 ]] || { echo "e2e: needs root" >&2; exit 1; }
[[ -e /dev/fuse ]] || { echo "e2e: /dev/fuse is missing" >&2; exit 1; }

W=$(mktemp -d /tmp/blobmount-e2e.XXXXXX)
SHARED=$W/shared
PROJECT=blobmount-e2e
export DOCKER_HOST=unix://$W/docker.sock DOCKER_CONFIG=$TOOLS/docker-config DOCKER_BUILDKIT=0
export COMPOSE_PROJECT_NAME=$PROJECT
export COMPOSE_FILE=$REPO/deploy/docker-compose.yml:$REPO/deploy/docker-compose.ci.yml
export BLOBMOUNT_SHARED=$SHARED BLOBMOUNT_CONFIG_FILE=$W/blobmount.yaml AZURE_ACCOUNT_KEY_FILE=$W/account-key
export BLOBMOUNT_IMAGE=blobmount:e2e APP_IMAGE=blobmount-e2e-app:dev
# The sidecar's health endpoint (docker-compose.ci.yml: loopback, host network), set below.
export BLOBMOUNT_HEALTH_PORT=
dockerd_pid=""
azurite_pid=""

cleanup() {
    local rc=$1
    set +e
    step "cleanup"
    if [[ -n $dockerd_pid ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
        timeout 60 docker compose down -v -t 10 >/dev/null 2>&1
    fi
    # A SIGKILLed mounter or daemon leaves a dead mount behind: detach whatever is left.
    if mountpoint -q "$SHARED/mnt" 2>/dev/null || grep -q " $SHARED/mnt " /proc/self/mounts; then
        umount -l "$SHARED/mnt"
    fi
    grep -q " $SHARED " /proc/self/mounts && umount -l "$SHARED"
    if [[ -n $dockerd_pid ]]; then
        kill -TERM "$dockerd_pid" 2>/dev/null
        for _ in $(seq 1 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$dockerd_pid" 2>/dev/null
    fi
    # dockerd leaves its network namespace and overlay mounts under its own roots.
    grep -o " $W/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
    [[ -n $azurite_pid ]] && stop_azurite
    if [[ $rc != 0 || $fails != 0 ]]; then
        echo "--- dockerd log (tail)"; tail -n 20 "$W/dockerd.log" 2>/dev/null
        echo "--- azurite log (tail)"; tail -n 5 "$W/azurite.log" 2>/dev/null
    fi
    rm -rf --one-file-system "$W"
    echo "e2e: took $(($(date +%s) - t0)) s"
    if [[ $rc != 0 ]]; then
        local f=$fails
        ((f > 0)) || f=1
        echo "e2e: aborted (exit $rc)"
        echo "e2e: $passes passed, $f failed"
    fi
}
trap 'cleanup $?' EXIT

# --- tools -----------------------------------------------------------------------------------
step "tools"
bash deploy/install-tools.sh --e2e
[[ -x $TOOLS/bin/azurite-blob ]] || bash tests/scripts/install-deps.sh

# --- Azurite ---------------------------------------------------------------------------------
step "Azurite on 127.0.0.1"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
mkdir -p "$W/azurite"
# Started again on the same port and data directory after the outage test below.
start_azurite() {
    "$TOOLS/bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" --loose --skipApiVersionCheck \
        --disableTelemetry --location "$W/azurite" >>"$W/azurite.log" 2>&1 </dev/null &
    azurite_pid=$!
}
stop_azurite() { # by PID; under set -e, so every step that may fail says it may
    [[ -n $azurite_pid ]] || return 0
    kill -TERM "$azurite_pid" 2>/dev/null || { azurite_pid=""; return 0; }
    for _ in $(seq 1 40); do kill -0 "$azurite_pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$azurite_pid" 2>/dev/null || true # already gone after TERM: fine
    wait "$azurite_pid" 2>/dev/null || true       # its exit status is 143 after TERM
    azurite_pid=""
}
start_azurite
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
ENDPOINT=http://127.0.0.1:$port/$ACCOUNT
CONTAINER=e2e-data
export AZURITE_CONN="DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=$ENDPOINT;"
# az CMD ...: create | put NAME FILE | get NAME (to stdout) | wait NAME SECONDS
cat >"$W/az.py" <<'PY'
import os, sys, time
from azure.storage.blob import BlobServiceClient
svc = BlobServiceClient.from_connection_string(os.environ["AZURITE_CONN"])
c = svc.get_container_client(os.environ["CONTAINER"])
cmd = sys.argv[1]
if cmd == "create":
    deadline = time.time() + 30
    while True:
        try:
            c.create_container(); break
        except Exception as e:
            if "ContainerAlreadyExists" in str(e): break
            if time.time() > deadline: raise
            time.sleep(0.3)
elif cmd == "put":
    c.upload_blob(sys.argv[2], open(sys.argv[3], "rb").read(), overwrite=True)
elif cmd == "get":
    sys.stdout.buffer.write(c.download_blob(sys.argv[2]).readall())
elif cmd == "wait":
    deadline = time.time() + float(sys.argv[3])
    while not c.get_blob_client(sys.argv[2]).exists():
        if time.time() > deadline: sys.exit(1)
        time.sleep(0.2)
PY
printf '#!/bin/sh\nexec timeout 60 "%s" "%s" "$@"\n' "$V/bin/python" "$W/az.py" >"$W/az"
chmod +x "$W/az"
export CONTAINER
az() { "$W/az" "$@"; }
check "Azurite up, container $CONTAINER created (SharedKey)" az create

# --- Docker engine ---------------------------------------------------------------------------
step "private dockerd"
setsid dockerd --data-root "$W/docker" --exec-root "$W/exec" --pidfile "$W/dockerd.pid" \
    -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false \
    >"$W/dockerd.log" 2>&1 </dev/null &
dockerd_pid=$!
for _ in $(seq 1 120); do timeout 5 docker info >/dev/null 2>&1 && break; sleep 0.5; done
check "docker engine up ($(timeout 5 docker version -f '{{.Server.Version}}' 2>/dev/null))" \
    timeout 5 docker info -f '{{.ServerVersion}}'

# --- images ----------------------------------------------------------------------------------
step "static binary"
tb=$(date +%s)
bin=$(bash deploy/build-static.sh)
echo "  $bin ($(($(date +%s) - tb)) s, $(stat -c %s "$bin") bytes): $(file -b "$bin")"
check "binary is statically linked" bash -c "file -b '$bin' | grep -q static"
step "images (legacy builder)"
ti=$(date +%s)
check "build $BLOBMOUNT_IMAGE (FROM scratch)" timeout 300 bash deploy/build-image.sh "$BLOBMOUNT_IMAGE" "$bin"
echo "  image build: $(($(date +%s) - ti)) s"
mkdir -p "$W/app-image"
cp /bin/busybox "$W/app-image/busybox"
cat >"$W/app-image/Dockerfile" <<'DF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
DF
check "build $APP_IMAGE (busybox)" timeout 300 docker build -q -t "$APP_IMAGE" "$W/app-image"
check "image runs: blobmount version" bash -c \
    "timeout 30 docker run --rm --network none '$BLOBMOUNT_IMAGE' version | grep -q '^blobmount '"

check "image's probe (blobmount health) fails when nothing is mounted" bash -c \
    "! timeout 30 docker run --rm --network none '$BLOBMOUNT_IMAGE' health --timeout 2 /data/mnt"

# --- shared volume and config ----------------------------------------------------------------
step "shared volume, config"
mkdir -p "$SHARED"
mount --bind "$SHARED" "$SHARED"
mount --make-shared "$SHARED"
mkdir -p "$SHARED/mnt"
cat >"$W/blobmount.yaml" <<YAML
store:
  url: az://$ACCOUNT/$CONTAINER
  endpoint: $ENDPOINT
mount:
  mountpoint: /data/mnt
  uid: 1000
  gid: 1000
  allow-other: true
  foreground: true
cache:
  dir: /var/cache/blobmount
YAML
# The compose secret: a file the daemon's uid can read, bind-mounted as is.
printf '%s' "$KEY" >"$W/account-key"
chown 65534:65534 "$W/account-key"
chmod 0400 "$W/account-key"
# AppArmor: the compose file names the profile deploy/apparmor/blobmount-fuse-mounter. Load it
# where AppArmor is enabled; elsewhere Docker ignores the option (checked below).
apparmor=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo N)
if [[ $apparmor == Y ]]; then
    check "AppArmor profile loaded" apparmor_parser -r -W deploy/apparmor/blobmount-fuse-mounter
else
    echo "  AppArmor is not enabled in this kernel: the profile cannot be loaded or enforced here"
fi
BLOBMOUNT_HEALTH_PORT=$(free_port)
echo "put into the store before the mount" >"$W/from-store.txt"
check "object put into Azurite" az put from-store.txt "$W/from-store.txt"
check "docker compose config" timeout 30 docker compose config -q
# CHOWN is in the mounter's cap_add for the socket hand-over: without it the mounter must stop
# with an error that says so, and leave no mount behind.
out=$(timeout 60 docker run --rm --network none -u 0:0 --cap-drop ALL --cap-add SYS_ADMIN \
    --device /dev/fuse --read-only --tmpfs /run/blobmount-fuse -v "$SHARED:/data:rshared" \
    "$BLOBMOUNT_IMAGE" fuse-mounter --socket /run/blobmount-fuse/fuse.sock --uid 65534 --gid 65534 /data/mnt 2>&1) &&
    rc=0 || rc=$?
echo "  mounter without CAP_CHOWN: exit $rc: $out"
no_chown_refused() {
    [[ $rc != 0 ]] && grep -q 'needs CAP_CHOWN' <<<"$out" && ! grep -q " $SHARED/mnt " /proc/self/mounts
}
check "a mounter without CAP_CHOWN fails, naming it, and leaves no mount" no_chown_refused

# --- up ----------------------------------------------------------------------------------------
step "docker compose up (the app waits for a healthy daemon)"
sidecar=$PROJECT-blobmount-1
mounter=$PROJECT-fuse-mounter-1
app=$PROJECT-app-1
# `up` itself waits for the sidecar's healthcheck before it starts the app (depends_on);
# `--wait` is not used because it also wants a healthcheck on the app.
if timeout 180 docker compose up -d; then
    pass "compose up: mounter started, daemon healthy, app started"
else
    fail "compose up"
    docker compose ps -a
    docker compose logs --no-color | tail -n 40
    exit 1
fi
in_app() { timeout 30 docker compose exec -T app sh -c "$1"; }
echo "  on the host: $(findmnt -n -o FSTYPE,SOURCE,OPTIONS "$SHARED/mnt" || true)"
# The mounter's mount: type fuse.blobmount, source "blobmount" (a self-mounting daemon's source
# is "blobmount:URL"; the mounter knows no URL).
check "host sees the FUSE mount propagated from the fuse-mounter" \
    bash -c "findmnt -n -o FSTYPE,SOURCE '$SHARED/mnt' | grep -qE '^fuse(.blobmount)? +blobmount\$'"
app_started=$(docker inspect -f '{{.State.StartedAt}}' "$app")
check "daemon healthy (healthcheck: blobmount health /data/mnt)" \
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$sidecar")" = healthy ]
# The last healthcheck run: "EXITCODE OUTPUT".
last_probe() {
    docker inspect -f '{{json .State.Health.Log}}' "$sidecar" | python3 -c \
        'import json, sys; e = (json.load(sys.stdin) or [{}])[-1]; print(e.get("ExitCode"), (e.get("Output") or "").strip())'
}
echo "  last healthcheck: $(last_probe)"
probe_says_ready() { [[ $(last_probe) == '0 /data/mnt: ready' ]]; }
check "the healthcheck ran blobmount health and it answered ready" probe_says_ready

step "privileges of each container"
# status_of CONTAINER FIELD: a field of /proc/PID/status of the container's main process.
status_of() {
    sed -n "s/^$2:[[:space:]]*//p" "/proc/$(docker inspect -f '{{.State.Pid}}' "$1")/status"
}
describe() {
    echo "  $1: Uid $(status_of "$1" Uid | cut -f1) CapEff $(status_of "$1" CapEff) CapBnd $(status_of "$1" CapBnd)" \
        "NoNewPrivs $(status_of "$1" NoNewPrivs) Seccomp $(status_of "$1" Seccomp)" \
        "ReadonlyRootfs $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$1")" \
        "AppArmorProfile '$(docker inspect -f '{{.AppArmorProfile}}' "$1")'"
}
for c in "$mounter" "$sidecar" "$app"; do describe "$c"; done
# privileges CONTAINER UID CAPEFF: the real/effective uid, effective = permitted = bounding
# capabilities, no_new_privs, seccomp filter mode (2), read-only root file system.
privileges() {
    local c=$1 ok=0
    [[ $(status_of "$c" Uid) == "$2"$'\t'"$2"$'\t'"$2"$'\t'"$2" ]] || { echo "Uid $(status_of "$c" Uid)"; ok=1; }
    for f in CapEff CapPrm CapBnd; do
        [[ $(status_of "$c" $f) == "$3" ]] || { echo "$f $(status_of "$c" $f), want $3"; ok=1; }
    done
    [[ $(status_of "$c" CapAmb) == 0000000000000000 ]] || { echo "CapAmb $(status_of "$c" CapAmb)"; ok=1; }
    [[ $(status_of "$c" NoNewPrivs) == 1 ]] || { echo "NoNewPrivs $(status_of "$c" NoNewPrivs)"; ok=1; }
    [[ $(status_of "$c" Seccomp) == 2 ]] || { echo "Seccomp $(status_of "$c" Seccomp)"; ok=1; }
    [[ $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c") == true ]] || { echo "root file system writable"; ok=1; }
    return $ok
}
# CAP_CHOWN (bit 0) and CAP_SYS_ADMIN (bit 21): 0x200001.
check "fuse-mounter: uid 0 with exactly SYS_ADMIN + CHOWN, no_new_privs, seccomp, read-only root" \
    privileges "$mounter" 0 0000000000200001
check "daemon: uid 65534, no capabilities at all, no_new_privs, seccomp, read-only root" \
    privileges "$sidecar" 65534 0000000000000000
check "app: uid 1000, no capabilities, no_new_privs, seccomp, read-only root" \
    privileges "$app" 1000 0000000000000000
check "fuse-mounter and app have no network (network_mode: none)" bash -c \
    "[[ \$(docker inspect -f '{{.HostConfig.NetworkMode}}' '$mounter' '$app' | sort -u) == none ]]"
dpid=$(docker inspect -f '{{.State.Pid}}' "$sidecar")
check "daemon has no /dev/fuse" test ! -e "/proc/$dpid/root/dev/fuse"
check "daemon's root file system refuses writes (EROFS)" bash -c \
    "! touch /proc/$dpid/root/probe 2>/dev/null && ! mkdir /proc/$dpid/root/var/probe 2>/dev/null"
check "the account key is in no container's environment" bash -c \
    "! docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' '$mounter' '$sidecar' '$app' | grep -qF -- '$KEY'"
check "daemon reads the key from the compose secret file" bash -c \
    "[[ \$(cat /proc/$dpid/root/run/secrets/azure-account-key) == '$KEY' ]]"
check "daemon writes only to its volumes: cache and registry" bash -c \
    "ls -A /proc/$dpid/root/var/cache/blobmount | grep -q . && ls /proc/$dpid/root/run/blobmount-user/blobmount/*.json >/dev/null"
if [[ $apparmor != Y ]]; then
    # Measured: Docker 20.10 starts the container with apparmor=PROFILE when AppArmor is off,
    # and runs it unconfined (the option has no effect).
    check "AppArmor off: Docker accepted apparmor=blobmount-fuse-mounter and ignored it" bash -c \
        "[[ \$(docker inspect -f '{{.State.Running}}' '$mounter') == true ]]"
fi

step "write and read through the shared volume"
check "app reads the object put into Azurite" \
    bash -c "[[ \$(timeout 30 docker compose exec -T app cat /data/mnt/from-store.txt) == 'put into the store before the mount' ]]"
check "app (uid 1000) writes a file" in_app 'echo "written by the app" > /data/mnt/from-app.txt'
check "the app's file is an object in Azurite" \
    bash -c "'$W/az' wait from-app.txt 20 && [[ \$('$W/az' get from-app.txt) == 'written by the app' ]]"

# --- store outage ----------------------------------------------------------------------------
step "store outage: stop Azurite, /readyz must turn unready, then ready again"
H=http://127.0.0.1:$BLOBMOUNT_HEALTH_PORT
code() { curl -s -o /dev/null -m 10 -w '%{http_code}' "$H$1"; }
# wait_code PATH WANT SECONDS: poll until PATH answers WANT (or, with !WANT, anything else).
wait_code() {
    local t=$SECONDS c
    while ((SECONDS - t < $3)); do
        c=$(code "$1")
        if [[ $2 == !* ]]; then [[ $c != "${2#!}" ]] && break; else [[ $c == "$2" ]] && break; fi
        sleep 0.5
    done
    echo "  $1: $c after $((SECONDS - t)) s"
    if [[ $2 == !* ]]; then [[ $c != "${2#!}" ]]; else [[ $c == "$2" ]]; fi
}
health_is() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$sidecar")" = "$1" ]; }
wait_health() { # STATUS SECONDS
    local t=$SECONDS
    until health_is "$1" || ((SECONDS - t >= $2)); do sleep 0.5; done
    echo "  container health: $(docker inspect -f '{{.State.Health.Status}}' "$sidecar") after $((SECONDS - t)) s; last probe: $(last_probe)"
    health_is "$1"
}
check "/readyz is 200 with the store up" [ "$(code /readyz)" = 200 ]
check "/metrics answers in Prometheus text" \
    bash -c "curl -sf -m 10 '$H/metrics' | grep -q '^blobmount_backend_requests_total{'"
stop_azurite
check "/readyz turns unready within 30 s of the store stopping" wait_code /readyz '!200' 30
curl -s -m 10 "$H/readyz" | sed 's/^/  readyz: /'
check "/healthz stays 200 (the mount itself is fine)" [ "$(code /healthz)" = 200 ]
check "the daemon's container turns unhealthy (healthcheck = blobmount health)" wait_health unhealthy 30
start_azurite
check "/readyz is 200 again within 60 s of the store coming back" wait_code /readyz 200 60
check "the container is healthy again" wait_health healthy 30
check "data written before the outage is still served" \
    bash -c "[[ \$(timeout 30 docker compose exec -T app cat /data/mnt/from-app.txt) == 'written by the app' ]]"

# --- crash -------------------------------------------------------------------------------------
# In the fd-passing layout the mounter gave its descriptor away and kept no copy: when the
# daemon dies the kernel ends the FUSE connection (ENOTCONN), and the mount stays until the
# mounter detaches it. A new daemon connects to the same socket; the mounter detaches the dead
# mount and mounts afresh for it, and the new mount propagates to the app.
step "crash: docker kill -s KILL the daemon"
timeout 30 docker kill -s KILL "$sidecar" >/dev/null
for _ in $(seq 1 40); do
    [ "$(docker inspect -f '{{.State.Running}}' "$sidecar")" = false ] && break
    sleep 0.25
done
# restart: on-failure would bring it back by itself; docker kill counts as a manual stop,
# so it stays down and the dead mount can be observed.
out=$(in_app 'cat /data/mnt/from-store.txt 2>&1' || true)
echo "  app after SIGKILL: $out"
check "app sees ENOTCONN after the daemon died" grep -q 'Transport endpoint is not connected' <<<"$out"
check "dead mount still on the host" grep -qE " $SHARED/mnt fuse(.blobmount)? " /proc/self/mounts
check "the fuse-mounter keeps running" [ "$(docker inspect -f '{{.State.Running}}' "$mounter")" = true ]
step "docker compose up -d blobmount (the app keeps running)"
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$sidecar")" = healthy ]; }
timeout 60 docker compose up -d blobmount
for _ in $(seq 1 60); do healthy && break; sleep 0.5; done
if healthy; then
    pass "daemon started again and is healthy"
else
    fail "daemon restart"
    docker compose logs --no-color blobmount fuse-mounter | tail -n 30
fi
timeout 30 docker compose logs --no-color fuse-mounter | grep 'again' | tail -n 1 | sed 's/^/  /'
check "the mounter detached the dead mount and mounted afresh for the new daemon (logged)" \
    bash -c "timeout 30 docker compose logs --no-color fuse-mounter | grep -q 'another daemon connected; mounting /data/mnt again'"
check "exactly one mount at the mount point (no stacking)" \
    [ "$(grep -c " $SHARED/mnt " /proc/self/mounts)" = 1 ]
check "app reads again without being restarted" \
    bash -c "[[ \$(timeout 30 docker compose exec -T app cat /data/mnt/from-app.txt) == 'written by the app' ]]"
check "app container was not restarted" \
    [ "$(docker inspect -f '{{.State.StartedAt}} {{.RestartCount}}' "$app")" = "$app_started 0" ]

step "crash of the daemon process itself (kill -KILL of its host PID): restart: on-failure"
pid=$(docker inspect -f '{{.State.Pid}}' "$sidecar")
kill -KILL "$pid"
for _ in $(seq 1 60); do
    [ "$(docker inspect -f '{{.RestartCount}}' "$sidecar")" -ge 1 ] && healthy && break
    sleep 0.5
done
timeout 30 docker compose logs --no-color fuse-mounter | tail -n 2 | sed 's/^/  /'
check "Docker restarted the daemon by itself (RestartCount $(docker inspect -f '{{.RestartCount}}' "$sidecar"))" \
    [ "$(docker inspect -f '{{.RestartCount}}' "$sidecar")" -ge 1 ]
check "app reads again after the automatic restart" \
    bash -c "[[ \$(timeout 30 docker compose exec -T app cat /data/mnt/from-store.txt) == 'put into the store before the mount' ]]"
check "still exactly one mount at the mount point" [ "$(grep -c " $SHARED/mnt " /proc/self/mounts)" = 1 ]
check "the restarted daemon still has no capabilities" privileges "$sidecar" 65534 0000000000000000

step "crash of the fuse-mounter while the daemon serves: the restarted mounter must not stack"
timeout 30 docker kill -s KILL "$mounter" >/dev/null
check "app still reads while the mounter is down (the daemon holds the descriptor)" \
    bash -c "[[ \$(timeout 30 docker compose exec -T app cat /data/mnt/from-app.txt) == 'written by the app' ]]"
timeout 60 docker compose up -d fuse-mounter
waiting() { timeout 30 docker compose logs --no-color fuse-mounter | grep -q 'still served by a daemon; waiting'; }
for _ in $(seq 1 40); do waiting && break; sleep 0.25; done
check "the restarted mounter waits while the daemon serves the mount (logged)" waiting
check "still exactly one mount: nothing stacked on the live one" [ "$(grep -c " $SHARED/mnt " /proc/self/mounts)" = 1 ]
check "app still reads after the mounter's restart" \
    bash -c "[[ \$(timeout 30 docker compose exec -T app cat /data/mnt/from-store.txt) == 'put into the store before the mount' ]]"
# Once that daemon ends, the waiting mounter detaches the dead mount and mounts for the next.
timeout 30 docker kill -s KILL "$sidecar" >/dev/null
timeout 60 docker compose up -d blobmount
for _ in $(seq 1 60); do healthy && break; sleep 0.5; done
check "a new daemon serves again through the restarted mounter" healthy
check "exactly one mount after that" [ "$(grep -c " $SHARED/mnt " /proc/self/mounts)" = 1 ]
check "app reads through the new mount" \
    bash -c "[[ \$(timeout 30 docker compose exec -T app cat /data/mnt/from-app.txt) == 'written by the app' ]]"
check "app container was still not restarted" \
    [ "$(docker inspect -f '{{.State.StartedAt}} {{.RestartCount}}' "$app")" = "$app_started 0" ]

# --- graceful stop ---------------------------------------------------------------------------
step "SIGTERM right after a write: docker stop the daemon, then the fuse-mounter"
# The MD5 is taken from the bytes the app writes, not read back through the mount.
sum=$(in_app 'set -o pipefail; dd if=/dev/urandom bs=1M count=16 2>/dev/null | tee /data/mnt/last.bin | md5sum | cut -d" " -f1' || true)
check "app wrote 16 MiB (md5 $sum)" grep -qE '^[0-9a-f]{32}$' <<<"$sum"
ts=$(date +%s.%N)
timeout 60 docker stop -t 40 "$sidecar" >/dev/null
echo "  docker stop (daemon) took $(python3 -c "import time; print(round(time.time() - $ts, 2))") s"
check "daemon exited 0 on SIGTERM" [ "$(docker inspect -f '{{.State.ExitCode}}' "$sidecar")" = 0 ]
check "daemon logged SIGTERM" \
    bash -c "timeout 30 docker logs '$sidecar' 2>&1 | grep -q 'SIGTERM: unmounting'"
check "the write made just before SIGTERM is in Azurite, complete" \
    bash -c "[[ -n '$sum' && \$('$W/az' get last.bin | md5sum | cut -d' ' -f1) == '$sum' ]]"
# The mount belongs to the mounter (compose down stops the app first, then the daemon, then it).
timeout 60 docker stop -t 10 "$mounter" >/dev/null
check "fuse-mounter exited 0 on SIGTERM" [ "$(docker inspect -f '{{.State.ExitCode}}' "$mounter")" = 0 ]
check "fuse-mounter logged the detach" \
    bash -c "timeout 30 docker logs '$mounter' 2>&1 | grep -q 'SIGTERM: detaching /data/mnt'"
check "no mount left on the host" bash -c "! grep -q ' $SHARED/mnt ' /proc/self/mounts"
out=$(in_app 'ls -A /data/mnt 2>&1; echo rc=$?' || true)
check "app sees the plain empty directory, not ENOTCONN ($(tr '\n' ' ' <<<"$out"))" [ "$out" = "rc=0" ]

step "docker compose down"
check "compose down" timeout 120 docker compose down -v -t 10

trap - EXIT
cleanup 0
echo "e2e: $passes passed, $fails failed"
[[ $fails == 0 ]]
