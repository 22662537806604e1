#!/usr/bin/env python3
"""Privilege rules for deploy/docker-compose.yml that `docker compose config` and the
compose-spec schema do not check: the hardened fd-passing layout (docs/deploy.md, "Privileges
and why").

usage: compose-check.py BLOBMOUNT_CONFIG.yaml < `docker compose ... config --format json`
BLOBMOUNT_CONFIG is the blobmount config the daemon mounts (for cache.read-memory-mib).
Prints one line per violation and exits 1 if there is any.
"""
import json
import sys

import yaml

MIB = 1 << 20
HEADROOM_MIB = 256  # beyond cache.read-memory-mib: listing cache, runtime, TLS, metrics


def flag(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def volume_at(svc, target):
    return [v for v in svc.get("volumes", []) if v.get("target") == target]


def holding(svc, path):
    """The volume of svc whose target holds path (longest target wins)."""
    best = None
    for v in svc.get("volumes", []):
        t = v["target"].rstrip("/")
        if (path == t or path.startswith(t + "/")) and (best is None or len(t) > len(best["target"])):
            best = v
    return best


def uid_of(svc):
    user = str(svc.get("user", ""))
    head = user.split(":")[0]
    return int(head) if head.isdigit() else None


def main():
    cfg = json.load(sys.stdin)
    bm_cfg = yaml.safe_load(open(sys.argv[1])) or {}
    svcs = cfg["services"]
    errs = []
    for name in ("fuse-mounter", "blobmount", "app"):
        if name not in svcs:
            errs.append(f"service {name} missing")
    if errs:
        print("\n".join(errs))
        return 1
    m, d, app = svcs["fuse-mounter"], svcs["blobmount"], svcs["app"]

    for name, s in svcs.items():
        opts = s.get("security_opt") or []
        if s.get("privileged"):
            errs.append(f"{name}: must not be privileged")
        if "ALL" not in (s.get("cap_drop") or []):
            errs.append(f"{name}: cap_drop: [ALL]")
        if "no-new-privileges:true" not in opts and "no-new-privileges" not in opts:
            errs.append(f"{name}: security_opt no-new-privileges:true")
        if not s.get("read_only"):
            errs.append(f"{name}: read_only: true")
        for o in opts:
            if o.replace("=", ":") in ("apparmor:unconfined", "seccomp:unconfined"):
                errs.append(f"{name}: {o} (ship a profile instead)")
        if s.get("pid") == "host" or s.get("ipc") == "host":
            errs.append(f"{name}: no host pid/ipc namespace")

    # fuse-mounter: the only privilege, and nothing else.
    margs = [str(a) for a in m.get("command") or []]
    if margs[:1] != ["fuse-mounter"]:
        errs.append(f"fuse-mounter: command must be blobmount fuse-mounter, got {margs}")
    if sorted(m.get("cap_add") or []) != ["CHOWN", "SYS_ADMIN"]:
        errs.append(f"fuse-mounter: cap_add must be exactly SYS_ADMIN and CHOWN, got {m.get('cap_add')}")
    if [dv.get("source") for dv in m.get("devices", [])] != ["/dev/fuse"]:
        errs.append("fuse-mounter: exactly the device /dev/fuse")
    if m.get("network_mode") != "none":
        errs.append("fuse-mounter: network_mode: none (it never talks to the store)")
    if m.get("secrets") or m.get("environment", {}).keys() - {"RUST_LOG"}:
        errs.append("fuse-mounter: no secrets and no environment (it holds no credentials)")
    if not any(o.startswith("apparmor=") or o.startswith("apparmor:") for o in m.get("security_opt") or []):
        errs.append("fuse-mounter: security_opt apparmor=<profile> (deploy/apparmor/)")
    target = margs[-1] if margs else ""
    mv = holding(m, target)
    if not mv or mv.get("bind", {}).get("propagation") != "rshared":
        errs.append(f"fuse-mounter: the volume holding {target} must be a bind with propagation: rshared")

    # daemon: no privilege at all.
    dargs = [str(a) for a in d.get("command") or []]
    sock = flag(dargs, "--fuse-fd-socket")
    if not sock:
        errs.append("blobmount: must serve a descriptor from the fuse-mounter (--fuse-fd-socket)")
    elif sock != flag(margs, "--socket"):
        errs.append(f"blobmount: --fuse-fd-socket {sock} is not the fuse-mounter's --socket {flag(margs, '--socket')}")
    else:
        dv, mvs = holding(d, sock), holding(m, sock)
        if not dv or not mvs or dv.get("source") != mvs.get("source") or dv.get("type") != "volume":
            errs.append(f"blobmount: the socket {sock} must be on a named volume both services mount")
    if d.get("cap_add"):
        errs.append(f"blobmount: no cap_add (got {d['cap_add']})")
    if d.get("devices"):
        errs.append("blobmount: no devices (the descriptor is passed, /dev/fuse is not needed)")
    uid = uid_of(d)
    if uid in (None, 0):
        errs.append(f"blobmount: user must be a numeric non-root uid, got {d.get('user')!r}")
    elif str(uid) != flag(margs, "--uid"):
        errs.append(f"blobmount: runs as uid {uid} but the fuse-mounter gives the socket to --uid {flag(margs, '--uid')}")
    if "--foreground" not in dargs:
        errs.append("blobmount: must run --foreground")
    env = d.get("environment") or {}
    for k, v in env.items():
        if "KEY" in k and not k.endswith("_FILE") or "SECRET" in k or "TOKEN" in k:
            errs.append(f"blobmount: credential {k} in the environment; use a compose secret file")
    if not d.get("secrets"):
        errs.append("blobmount: credentials from a compose secret (secrets:)")
    dv = volume_at(d, "/data")
    if [v.get("bind", {}).get("propagation") for v in dv] != ["rslave"]:
        errs.append("blobmount: /data with propagation rslave (its /healthz statfs()es the mount)")
    xdg = env.get("XDG_RUNTIME_DIR")
    if not xdg or not any(t.split(":")[0] == xdg for t in d.get("tmpfs") or []):
        errs.append("blobmount: XDG_RUNTIME_DIR (its registry) must be a tmpfs")
    cache_dir = env.get("BLOBMOUNT_CACHE__DIR") or (bm_cfg.get("cache") or {}).get("dir")
    if not cache_dir or not any(v.get("type") == "volume" for v in volume_at(d, cache_dir)):
        errs.append(f"blobmount: the cache dir ({cache_dir}) must be set and be a named volume")
    budget = (bm_cfg.get("cache") or {}).get("read-memory-mib") or 512
    limit = int(d.get("mem_limit") or 0)
    if limit < (budget + HEADROOM_MIB) * MIB:
        errs.append(f"blobmount: mem_limit {limit} is below cache.read-memory-mib ({budget} MiB) + {HEADROOM_MIB} MiB")
    test = d.get("healthcheck", {}).get("test") or []
    if test[:3] != ["CMD", "/blobmount", "health"] or "--timeout" not in test:
        errs.append(f"blobmount: healthcheck must be [CMD, /blobmount, health, --timeout, ...], got {test}")

    # app: another non-root user, nothing else.
    a_uid = uid_of(app)
    if a_uid in (None, 0) or a_uid == uid:
        errs.append(f"app: must run as a numeric non-root uid other than the daemon's, got {app.get('user')!r}")
    if app.get("cap_add") or app.get("devices"):
        errs.append("app: no cap_add, no devices")
    if [v.get("bind", {}).get("propagation") for v in volume_at(app, "/data")] != ["rslave"]:
        errs.append("app: /data with propagation rslave")
    if app.get("depends_on", {}).get("blobmount", {}).get("condition") != "service_healthy":
        errs.append("app: depends_on blobmount: service_healthy")
    mount_uid = (bm_cfg.get("mount") or {}).get("uid")
    if mount_uid is not None and a_uid is not None and mount_uid != a_uid:
        errs.append(f"app: runs as uid {a_uid} but the mount shows files owned by mount.uid {mount_uid}")

    for e in errs:
        print("ERROR", e)
    print(f"{len(svcs)} service(s) checked, {len(errs)} violation(s)")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
