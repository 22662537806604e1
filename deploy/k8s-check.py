#!/usr/bin/env python3
"""Rules for blobmount's Kubernetes manifests that schema validation (kubernetes-validate) does not
check: API-server cross-field rules, and what a FUSE sidecar needs to work at all, in both
variants: the privileged daemon that mounts itself, and the unprivileged daemon that serves a
descriptor handed over by a privileged `blobmount fuse-mounter` (fd passing).

usage: k8s-check.py [--default] FILE.yaml...   (all files form one set: references are resolved
       across them)
--default: the files are the default deployment, which must be the unprivileged one: every
blobmount daemon serves a descriptor from a fuse-mounter, the fuse-mounters are the only
privileged containers, and every other container runs as non-root with no capabilities.
Every fd-passing daemon must be hardened (runAsNonRoot, readOnlyRootFilesystem, drop ALL,
allowPrivilegeEscalation: false, seccompProfile RuntimeDefault) and have a memory limit that
covers cache.read-memory-mib of its config; a fuse-mounter must hold no credentials or config.
Prints one line per violation and exits 1 if there is any.
"""
import re
import sys

import yaml

PROPAGATION = {None, "None", "HostToContainer", "Bidirectional"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        yield doc["spec"]
    elif kind in WORKLOADS:
        yield doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def flag(args, name):
    """The value of `--name VALUE` or `--name=VALUE` in args (None when absent)."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return str(args[i + 1])
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def mount_dir_of(c, path):
    """The volume and mountPath of container c that hold path (longest mountPath wins)."""
    best = None
    for vm in c.get("volumeMounts", []):
        mp = vm["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = vm
    return best


def run_as(c, spec):
    """The uid a container runs as, when the manifest says (container over pod)."""
    for sc in (c.get("securityContext") or {}, spec.get("securityContext") or {}):
        if "runAsUser" in sc:
            return sc["runAsUser"]
    return None


MIB = 1 << 20
UNITS = {"Ki": 1 << 10, "Mi": MIB, "Gi": 1 << 30, "Ti": 1 << 40,
         "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1}
# Memory the daemon needs beyond cache.read-memory-mib: listing cache, runtime, TLS, metrics.
MEMORY_HEADROOM_MIB = 256


def quantity(q):
    """A Kubernetes resource quantity in bytes (None when it cannot be read)."""
    m = re.fullmatch(r"([0-9.]+)([KMGT]i?|k)?", str(q))
    return int(float(m.group(1)) * UNITS[m.group(2) or ""]) if m else None


def sc_field(c, spec, key):
    """A securityContext field, container over pod."""
    for sc in (c.get("securityContext") or {}, spec.get("securityContext") or {}):
        if key in sc:
            return sc[key]
    return None


def daemon_config(c, spec, config_maps):
    """The blobmount config (parsed) the daemon reads with --config, from its ConfigMap."""
    args = [str(a) for a in c.get("args", []) + c.get("command", [])]
    path = flag(args, "--config")
    vm = mount_dir_of(c, path) if path else None
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cm = ((vols.get(vm["name"]) or {}).get("configMap") or {}).get("name") if vm else None
    if not cm or cm not in config_maps:
        return None
    key = path[len(vm["mountPath"].rstrip("/")) + 1:]
    text = (config_maps[cm].get("data") or {}).get(key)
    return yaml.safe_load(text) if text else None


def check_hardened_daemon(where, c, spec, config_maps, errs):
    """What the unprivileged daemon must have beyond the fd-passing basics."""
    if sc_field(c, spec, "runAsNonRoot") is not True:
        errs.append(f"{where}: set runAsNonRoot: true")
    if sc_field(c, spec, "readOnlyRootFilesystem") is not True:
        errs.append(f"{where}: set readOnlyRootFilesystem: true (cache and registry are volumes)")
    seccomp = (sc_field(c, spec, "seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        errs.append(f"{where}: set seccompProfile type RuntimeDefault (got {seccomp})")
    res = c.get("resources") or {}
    for kind, name in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
        if name not in (res.get(kind) or {}):
            errs.append(f"{where}: resources.{kind}.{name} missing")
    cfg = daemon_config(c, spec, config_maps) or {}
    budget = ((cfg.get("cache") or {}).get("read-memory-mib")) or 512
    limit = quantity((res.get("limits") or {}).get("memory", ""))
    want = (budget + MEMORY_HEADROOM_MIB) * MIB
    if limit is not None and limit < want:
        errs.append(f"{where}: limits.memory {res['limits']['memory']} is below cache.read-memory-mib "
                    f"({budget} MiB) + {MEMORY_HEADROOM_MIB} MiB: the budget alone could get it OOM-killed")


def check_no_credentials(where, c, spec, errs):
    """The privileged fuse-mounter must not hold the config or the store credentials."""
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for vm in c.get("volumeMounts", []):
        v = vols.get(vm["name"]) or {}
        if "secret" in v or "configMap" in v or "projected" in v:
            errs.append(f"{where}: the privileged fuse-mounter must not mount {vm['name']!r} (config or credentials)")
    for e in c.get("env", []):
        if "valueFrom" in e:
            errs.append(f"{where}: the privileged fuse-mounter must not take env {e['name']!r} from a Secret or ConfigMap")
    if c.get("envFrom"):
        errs.append(f"{where}: the privileged fuse-mounter must not use envFrom")


def check_fd_pair(where, c, spec, mounters, errs):
    """An unprivileged daemon (--fuse-fd-socket) and the fuse-mounter that feeds it."""
    args = [str(a) for a in c.get("args", []) + c.get("command", [])]
    sock = flag(args, "--fuse-fd-socket")
    sc = c.get("securityContext") or {}
    uid = run_as(c, spec)
    if sc.get("privileged"):
        errs.append(f"{where}: a daemon serving a passed descriptor (--fuse-fd-socket) must not be privileged")
    if (sc.get("capabilities") or {}).get("add"):
        errs.append(f"{where}: a daemon serving a passed descriptor must not add capabilities")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errs.append(f"{where}: drop ALL capabilities (the fd-passing daemon needs none)")
    if sc.get("allowPrivilegeEscalation") is not False:
        errs.append(f"{where}: set allowPrivilegeEscalation: false")
    if uid in (None, 0):
        errs.append(f"{where}: run the fd-passing daemon as a non-root runAsUser")
    if any(vm.get("mountPropagation") == "Bidirectional" for vm in c.get("volumeMounts", [])):
        errs.append(f"{where}: the fd-passing daemon does not mount: no Bidirectional propagation")
    feeding = [(n, m) for n, m in mounters if flag(m["args"], "--socket") == sock]
    if not feeding:
        errs.append(f"{where}: no fuse-mounter container in the pod listens on --socket {sock}")
        return
    m = feeding[0][1]
    name = m["c"]["name"]
    vm_d, vm_m = mount_dir_of(c, sock), mount_dir_of(m["c"], sock)
    if not vm_d or not vm_m or vm_d["name"] != vm_m["name"]:
        errs.append(f"{where}: the socket {sock} must be on a volume mounted by both this container and {name}")
    if m["index"] is not None and c["_index"] is not None and m["index"] > c["_index"]:
        errs.append(f"{where}: {name} must come before the daemon in initContainers (it starts first and stops last)")
    target = mount_dir_of(m["c"], m["args"][-1])
    seen = [vm for vm in c.get("volumeMounts", []) if target and vm["name"] == target["name"]]
    if not seen or seen[0].get("mountPropagation") != "HostToContainer":
        errs.append(f"{where}: mount the volume {name} mounts on with mountPropagation: HostToContainer "
                    "(the daemon's health probes statfs the mount through it)")
    m_uid = flag(m["args"], "--uid") or "0"
    if uid is not None and str(uid) != m_uid:
        errs.append(f"{where}: runs as uid {uid} but {name} gives the socket to --uid {m_uid} (mode 0600): it cannot connect")
    m["fed"] = True


def check_mounter(where, c, sidecar, errs):
    """`blobmount fuse-mounter`: the privileged half of fd passing."""
    args = [str(a) for a in c.get("args", []) + c.get("command", [])]
    target = args[-1] if args else ""
    if not sidecar:
        errs.append(f"{where}: fuse-mounter must run as a native sidecar (initContainer, restartPolicy: Always)")
    if not (c.get("securityContext") or {}).get("privileged"):
        errs.append(f"{where}: fuse-mounter mounts (/dev/fuse, mount(2)) and needs privileged: true")
    if not flag(args, "--socket"):
        errs.append(f"{where}: fuse-mounter needs --socket")
    vm = mount_dir_of(c, target)
    if not vm or vm.get("mountPropagation") != "Bidirectional":
        errs.append(f"{where}: the mount on {target} reaches the other containers only through a "
                    "volume mounted with mountPropagation: Bidirectional")


def main(argv):
    default = "--default" in argv
    files = [a for a in argv if a != "--default"]
    docs = []
    for f in files:
        with open(f) as fh:
            docs += [(f, d) for d in yaml.safe_load_all(fh) if d]
    config_maps = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "Secret"}
    errs = []
    specs = 0
    for f, doc in docs:
        for spec in pod_specs(doc):
            specs += 1
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            for v in vols.values():
                cm = (v.get("configMap") or {}).get("name")
                if cm and cm not in config_maps:
                    errs.append(f"{f}: volume {v['name']}: ConfigMap {cm!r} is not defined in these files")
                sec = (v.get("secret") or {}).get("secretName")
                if sec and sec not in secrets:
                    errs.append(f"{f}: volume {v['name']}: Secret {sec!r} is not defined in these files")
            fuse_mounters = 0
            mounters = []   # (where, {"c", "args", "index", "fed"}) of fuse-mounter containers
            daemons = []    # fd-passing daemons, checked once every mounter is known
            for kind in ("initContainers", "containers"):
                for i, c in enumerate(spec.get(kind, [])):
                    c["_index"] = i if kind == "initContainers" else None
                    where = f"{f}: {kind}/{c['name']}"
                    sc = c.get("securityContext") or {}
                    priv = sc.get("privileged") is True
                    sidecar = kind == "initContainers" and c.get("restartPolicy") == "Always"
                    if "restartPolicy" in c and not sidecar:
                        errs.append(f"{where}: restartPolicy is only allowed as 'Always' on initContainers (native sidecar)")
                    if kind == "initContainers" and not sidecar:
                        for p in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
                            if p in c:
                                errs.append(f"{where}: {p} is forbidden on an init container that is not a sidecar")
                    bidirectional = False
                    for vm in c.get("volumeMounts", []):
                        mp = vm.get("mountPropagation")
                        if mp not in PROPAGATION:
                            errs.append(f"{where}: mountPropagation {mp!r} is not one of None, HostToContainer, Bidirectional")
                        if mp == "Bidirectional":
                            bidirectional = True
                            if not priv:
                                errs.append(f"{where}: Bidirectional mount propagation is available only to privileged containers")
                        if vm["name"] not in vols:
                            errs.append(f"{where}: volumeMount {vm['name']!r} has no volume")
                    args = [str(a) for a in c.get("args", []) + c.get("command", [])]
                    blobmount = any("blobmount" in x for x in [c.get("image", "")] + args)
                    if default and not priv:
                        # Every container but the fuse-mounter: non-root, no capabilities.
                        caps = sc.get("capabilities") or {}
                        if sc_field(c, spec, "runAsNonRoot") is not True or run_as(c, spec) in (None, 0):
                            errs.append(f"{where}: run as a non-root runAsUser with runAsNonRoot: true")
                        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
                            errs.append(f"{where}: drop ALL capabilities and add none")
                        if sc.get("allowPrivilegeEscalation") is not False:
                            errs.append(f"{where}: set allowPrivilegeEscalation: false")
                    if default and priv and not (blobmount and "fuse-mounter" in args):
                        errs.append(f"{where}: in the default deployment only the fuse-mounter may be privileged")
                    if blobmount and "fuse-mounter" in args:
                        fuse_mounters += 1
                        check_mounter(where, c, sidecar, errs)
                        check_no_credentials(where, c, spec, errs)
                        mounters.append((where, {"c": c, "args": args, "index": c["_index"], "fed": False}))
                    elif blobmount and "mount" in args:
                        fuse_mounters += 1
                        fd_mode = flag(args, "--fuse-fd-socket") is not None
                        if not sidecar:
                            errs.append(f"{where}: the blobmount mount must run as a native sidecar (initContainer, restartPolicy: Always)")
                        if fd_mode:
                            daemons.append((where, c))
                            check_hardened_daemon(where, c, spec, config_maps, errs)
                        elif default:
                            errs.append(f"{where}: the default deployment must not let the daemon mount itself "
                                        "(privileged, with the credentials): serve a descriptor from a fuse-mounter "
                                        "(--fuse-fd-socket)")
                        if not fd_mode and not bidirectional:
                            errs.append(f"{where}: blobmount's mount reaches the app only with mountPropagation: Bidirectional")
                        if "--foreground" not in args and "-f" not in args:
                            errs.append(f"{where}: blobmount must run with --foreground in a container")
                        for p in ("startupProbe", "livenessProbe"):
                            probe = c.get(p)
                            if not probe:
                                errs.append(f"{where}: {p} missing (the app must wait for the mount)")
                            elif "timeoutSeconds" not in probe:
                                errs.append(f"{where}: {p} needs timeoutSeconds: a FUSE call can block")
            for where, c in daemons:
                check_fd_pair(where, c, spec, mounters, errs)
            for where, m in mounters:
                if not m["fed"]:
                    errs.append(f"{where}: no blobmount daemon in the pod serves its descriptor (--fuse-fd-socket)")
                    continue
                app_uids = {run_as(c, spec) for c in spec.get("containers", [])}
                if "--allow-other" not in m["args"] and app_uids - {int(flag(m["args"], "--uid") or 0)}:
                    errs.append(f"{where}: the app runs as another user ({sorted(map(str, app_uids))}) than --uid: "
                                "it needs --allow-other")
            if fuse_mounters:
                for c in spec.get("containers", []):
                    for vm in c.get("volumeMounts", []):
                        shared = vm["name"] in vols and "emptyDir" in vols[vm["name"]]
                        if shared and vm.get("mountPropagation") not in ("HostToContainer", "Bidirectional"):
                            errs.append(f"{f}: containers/{c['name']}: volume {vm['name']!r} needs "
                                        "mountPropagation: HostToContainer to see blobmount's mount")
    for e in errs:
        print("ERROR", e)
    print(f"{len(files)} file(s), {specs} pod spec(s) checked, {len(errs)} violation(s)")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
