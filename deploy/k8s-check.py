#!/usr/bin/env python3
"""Rules for blobmount's Kubernetes manifests that schema validation (kubernetes-validate) does not
check: API-server cross-field rules, and what a FUSE sidecar needs to work at all.

usage: k8s-check.py FILE.yaml...   (all files form one set: references are resolved across them)
Prints one line per violation and exits 1 if there is any.
"""
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


def main(files):
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
            for kind in ("initContainers", "containers"):
                for c in spec.get(kind, []):
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
                    args = c.get("args", []) + c.get("command", [])
                    if "mount" in args and any("blobmount" in str(x) for x in [c.get("image", "")] + args):
                        fuse_mounters += 1
                        if not sidecar:
                            errs.append(f"{where}: the blobmount mount must run as a native sidecar (initContainer, restartPolicy: Always)")
                        if not bidirectional:
                            errs.append(f"{where}: blobmount's mount reaches the app only with mountPropagation: Bidirectional")
                        if "--foreground" not in args and "-f" not in args:
                            errs.append(f"{where}: blobmount must run with --foreground in a container")
                        for p in ("startupProbe", "livenessProbe"):
                            probe = c.get(p)
                            if not probe:
                                errs.append(f"{where}: {p} missing (the app must wait for the mount)")
                            elif "timeoutSeconds" not in probe:
                                errs.append(f"{where}: {p} needs timeoutSeconds: a FUSE call can block")
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
