#!/usr/bin/env python3
"""Write an Azurite (loki) metadata database holding one container with N empty blobs.

usage: azurite_fixture.py LOCATION CONTAINER PREFIX N

Filling a container through the REST API costs Azurite more per blob the more the container
holds (every write scans the collection): 20,000 blobs take ~100 s on this machine and 100,000
would take most of an hour. Listing benchmarks only need the blobs' records, so this writes the
database file Azurite loads at start (`--location LOCATION`) directly: the container and N
zero-length block blobs PREFIXfNNNNNN, in the same record shape Azurite 3 writes itself (checked
by bench/list.sh, which lists them through Azurite before timing anything). Start Azurite on
LOCATION afterwards. Zero-length blobs need no extent (no data file).
"""
import json
import os
import sys
import time
import uuid

loc, container, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.makedirs(os.path.join(loc, "__blobstorage__"), exist_ok=True)
now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
ms = int(time.time() * 1000)
# MD5 of no bytes, as Azurite records it for an empty Put Blob.
EMPTY_MD5 = list(bytes.fromhex("d41d8cd98f00b204e9800998ecf8427e"))


def collection(name, data, indices):
    def order(field):
        # A loki binary index: the records' positions sorted by the field (ties in any order).
        return sorted(range(len(data)), key=lambda i: data[i].get(field, ""))
    return {
        "name": name, "data": data, "idIndex": None,
        "binaryIndices": {i: {"name": i, "dirty": False, "values": order(i)} for i in indices},
        "constraints": None, "uniqueNames": [], "transforms": {}, "objType": name,
        "dirty": True, "cachedIndex": None, "cachedBinaryIndex": None, "cachedData": None,
        "adaptiveBinaryIndices": True, "transactional": False, "cloneObjects": False,
        "cloneMethod": "parse-stringify", "asyncListeners": False, "disableMeta": False,
        "disableChangesApi": True, "disableDeltaChangesApi": True, "autoupdate": False,
        "serializableIndices": True, "disableFreeze": True, "ttl": None,
        "maxId": len(data), "DynamicViews": [],
        "events": {"insert": [], "update": [], "pre-insert": [], "pre-update": [], "close": [],
                   "flushbuffer": [], "error": [], "delete": [None], "warning": [None]},
        "changes": [], "dirtyIds": [],
    }


def meta(i):
    return {"revision": 0, "created": ms, "version": 0}


containers = [{
    "accountName": "devstoreaccount1", "name": container,
    "properties": {"etag": "\"0x1D000000000000\"", "lastModified": now,
                   "leaseStatus": "unlocked", "leaseState": "available",
                   "hasImmutabilityPolicy": False, "hasLegalHold": False},
    "meta": meta(0), "$loki": 1,
}]
blobs = []
for i in range(n):
    blobs.append({
        "deleted": False, "accountName": "devstoreaccount1", "containerName": container,
        "name": f"{prefix}f{i:06d}",
        "properties": {
            "creationTime": now, "lastModified": now,
            "etag": f"\"0x1D{i:014X}\"", "contentLength": 0,
            "contentType": "application/octet-stream",
            "contentMD5": {"type": "Buffer", "data": EMPTY_MD5},
            "blobType": "BlockBlob", "leaseStatus": "unlocked", "leaseState": "available",
            "serverEncrypted": True, "accessTier": "Hot", "accessTierInferred": True,
            "accessTierChangeTime": now,
        },
        "snapshot": "", "isCommitted": True,
        "persistency": {"id": str(uuid.UUID(int=0)), "offset": 0, "count": 0},
        "meta": meta(i), "$loki": i + 1,
    })
db = {
    "filename": os.path.join(loc, "__azurite_db_blob__.json"),
    "collections": [
        collection("$SERVICES_COLLECTION$", [], []),
        collection("$CONTAINERS_COLLECTION$", containers, ["accountName", "name"]),
        collection("$BLOBS_COLLECTION$", blobs, ["accountName", "containerName", "name", "snapshot"]),
        collection("$BLOCKS_COLLECTION$", [], ["accountName", "containerName", "blobName", "name"]),
    ],
    "databaseVersion": 1.5, "engineVersion": 1.5, "autosave": True, "autosaveInterval": 5000,
    "autosaveHandle": None, "throttledSaves": True,
    "options": {"persistenceMethod": "fs", "autosave": True, "autosaveInterval": 5000,
                "serializationMethod": "normal", "destructureDelimiter": "$<\n"},
    "persistenceMethod": "fs", "persistenceAdapter": None, "verbose": False, "events": {
        "init": [None], "loaded": [], "flushChanges": [], "close": [], "changes": [],
        "warning": []},
    "ENV": "NODEJS",
}
with open(db["filename"], "w") as f:
    json.dump(db, f)
print(f"wrote {n} blobs under {container}/{prefix} to {db['filename']}")
