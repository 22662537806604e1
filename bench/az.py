#!/usr/bin/env python3
"""Azure Blob (Azurite) helper for bench/run.sh: fixtures and the raw-backend SDK measurements.

usage: az.py ENDPOINT CONTAINER COMMAND [ARGS...]
  ENDPOINT  e.g. http://127.0.0.1:PORT/devstoreaccount1 (Azurite, well-known dev account)

commands (timings are printed as "key=value" words on one line):
  create                          create the container
  put-file KEY FILE               upload a local file (blocks of 8 MiB, 4 in parallel)
  append KEY FILE                 append FILE to KEY as the SDK can: stage it as new blocks (8 MiB,
                                  4 in parallel) and commit the blob's committed blocks plus them
                                  -> bytes=... secs=...
  append-via PATH KEY N FILE POLL TIMEOUT
                                  append FILE to PATH (a file in a mount) N times, each with fsync
                                  and then until the store's KEY holds it (polled every POLL s)
                                  -> appends_per_s=... secs=...
  put-random KEY MIB [SEED]       upload MIB MiB of pseudo-random bytes (blocks of 64 MiB); no local copy
  populate PREFIX N SIZE          create N objects PREFIX/fNNNNN of SIZE bytes with 16 threads
  sas-url KEY                     print a read SAS URL for KEY (for curl)
  list-sas                        print a read+list SAS query string for the container (for curl)
  list PREFIX REPS                SDK paged listing (walks every page) REPS times -> secs=median runs=...
  get-small PREFIX N THREADS      GET PREFIX/f00000..N-1 with THREADS threads -> ops_per_s=...
  head KEY                        print the size of KEY
  put-small PREFIX N SIZE THREADS PUT N objects PREFIX/fNNNNN of SIZE bytes with THREADS threads -> ops_per_s=...
  count PREFIX                    objects under PREFIX with at least one byte -> n=... bytes=...
  wait PREFIX N BYTES POLL TIMEOUT [GO]
                                  list PREFIX every POLL s until it holds N objects with BYTES bytes
                                  (one process, so the check costs one listing, not a Python start);
                                  with GO, start listing only once the file GO exists, so the process
                                  can be started before the operation it times without loading the
                                  store during it -> n=... bytes=... (exit 1 after TIMEOUT s)
"""
import datetime
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from azure.storage.blob import (
    BlobBlock,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
MIB = 1 << 20


def service(endpoint):
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={endpoint};"
    )
    return BlobServiceClient.from_connection_string(conn, max_single_put_size=64 * MIB)


def put_blocks(cc, key, blocks, threads=4):
    """blocks: iterable of (index, bytes-producer). Stage in parallel, then commit in order."""
    bc = cc.get_blob_client(key)
    ids = []

    def stage(item):
        i, make = item
        bid = f"{i:08d}-{uuid.uuid4().hex[:8]}"
        bc.stage_block(bid, make())
        return i, bid

    with ThreadPoolExecutor(threads) as ex:
        for i, bid in ex.map(stage, blocks):
            ids.append((i, bid))
    ids.sort()
    bc.commit_block_list([BlobBlock(block_id=b) for _, b in ids])


def put_many(cc, prefix, n, size, threads):
    """PUT N objects PREFIX/fNNNNN of SIZE random bytes with THREADS threads; print the rate."""
    body = os.urandom(size)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda i: cc.upload_blob(f"{prefix}/f{i:05d}", body, overwrite=True), range(n)))
    dt = time.perf_counter() - t0
    print(f"n={n} secs={dt:.3f} ops_per_s={n / dt:.1f}")


def count(cc, prefix):
    """Objects under PREFIX with at least one byte, and their bytes."""
    n = total = 0
    for b in cc.list_blobs(name_starts_with=prefix):
        if b.size > 0:
            n, total = n + 1, total + b.size
    return n, total


def main():
    endpoint, container, cmd, *args = sys.argv[1:]
    svc = service(endpoint)
    cc = svc.get_container_client(container)
    if cmd == "create":
        cc.create_container()
    elif cmd == "put-file":
        key, path = args
        size = os.path.getsize(path)
        bs = 8 * MIB

        def reader(off):
            def make():
                with open(path, "rb") as f:
                    f.seek(off)
                    return f.read(bs)
            return make

        t0 = time.perf_counter()
        put_blocks(cc, key, ((i, reader(off)) for i, off in enumerate(range(0, size, bs))))
        dt = time.perf_counter() - t0
        print(f"bytes={size} secs={dt:.3f} mb_per_s={size / MIB / dt:.1f}")
    elif cmd == "append":
        key, path = args
        size = os.path.getsize(path)
        bs = 8 * MIB
        bc = cc.get_blob_client(key)
        t0 = time.perf_counter()
        committed, _ = bc.get_block_list("committed")
        data = open(path, "rb").read()

        def stage(off):
            bid = uuid.uuid4().hex
            bc.stage_block(bid, data[off:off + bs])
            return off, bid

        with ThreadPoolExecutor(4) as ex:
            new = sorted(ex.map(stage, range(0, size, bs)))
        bc.commit_block_list([BlobBlock(block_id=b.id) for b in committed]
                             + [BlobBlock(block_id=b) for _, b in new])
        dt = time.perf_counter() - t0
        print(f"bytes={size} secs={dt:.3f}")
    elif cmd == "append-via":
        path, key, n, src = args[0], args[1], int(args[2]), args[3]
        poll, timeout = float(args[4]), float(args[5])
        data = open(src, "rb").read()
        bc = cc.get_blob_client(key)
        size = bc.get_blob_properties().size
        t0 = time.perf_counter()
        for _ in range(n):
            with open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            size += len(data)
            t1 = time.monotonic()
            while bc.get_blob_properties().size != size:
                if time.monotonic() - t1 > timeout:
                    raise SystemExit(f"{key}: not {size} bytes after {timeout} s")
                time.sleep(poll)
        dt = time.perf_counter() - t0
        print(f"appends_per_s={n / dt:.2f} secs={dt:.3f}")
    elif cmd == "put-random":
        key, mib = args[0], int(args[1])
        seed = args[2] if len(args) > 2 else key
        bs_mib = min(64, mib)
        base = os.urandom(bs_mib * MIB)  # one random buffer; each block gets its own header

        def maker(i, n):
            def make():
                hdr = f"{seed}:{i}:".encode().ljust(64, b".")
                return hdr + base[len(hdr):n * MIB]
            return make

        blocks, i, left = [], 0, mib
        while left > 0:
            n = min(bs_mib, left)
            blocks.append((i, maker(i, n)))
            i, left = i + 1, left - n
        t0 = time.perf_counter()
        put_blocks(cc, key, blocks)
        dt = time.perf_counter() - t0
        print(f"bytes={mib * MIB} secs={dt:.3f} mb_per_s={mib / dt:.1f}")
    elif cmd == "populate":
        prefix, n, size = args[0], int(args[1]), int(args[2])
        put_many(cc, prefix, n, size, 16)
    elif cmd == "sas-url":
        (key,) = args
        sas = generate_blob_sas(
            ACCOUNT, container, key, account_key=KEY,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1),
        )
        print(f"{endpoint}/{container}/{key}?{sas}")
    elif cmd == "list-sas":
        print(generate_container_sas(
            ACCOUNT, container, account_key=KEY,
            permission=ContainerSasPermissions(read=True, list=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1),
        ))
    elif cmd == "list":
        prefix, reps = args[0], int(args[1])
        runs, n = [], 0
        for _ in range(reps):
            t0 = time.perf_counter()
            n = sum(1 for _ in cc.list_blobs(name_starts_with=prefix))
            runs.append(time.perf_counter() - t0)
        print(f"n={n} secs={statistics.median(runs):.4f} runs={','.join(f'{x:.4f}' for x in runs)}")
    elif cmd == "get-small":
        prefix, n, threads = args[0], int(args[1]), int(args[2])
        keys = [f"{prefix}/f{i:05d}" for i in range(n)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as ex:
            total = sum(ex.map(lambda k: len(cc.download_blob(k).readall()), keys))
        dt = time.perf_counter() - t0
        print(f"n={n} bytes={total} secs={dt:.3f} ops_per_s={n / dt:.1f}")
    elif cmd == "put-small":
        prefix, n, size, threads = args[0], int(args[1]), int(args[2]), int(args[3])
        put_many(cc, prefix, n, size, threads)
    elif cmd == "count":
        (prefix,) = args
        n, total = count(cc, prefix)
        print(f"n={n} bytes={total}")
    elif cmd == "wait":
        prefix, want_n, want_bytes = args[0], int(args[1]), int(args[2])
        poll, timeout = float(args[3]), float(args[4])
        if len(args) > 5:
            while not os.path.exists(args[5]):
                time.sleep(0.005)
        t0 = time.monotonic()
        while True:
            n, total = count(cc, prefix)
            if (n, total) == (want_n, want_bytes):
                print(f"n={n} bytes={total}")
                break
            if time.monotonic() - t0 > timeout:
                print(f"n={n} bytes={total}")
                raise SystemExit(1)
            time.sleep(poll)
    elif cmd == "head":
        (key,) = args
        print(cc.get_blob_client(key).get_blob_properties().size)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
