"""The raw SDK client of bench/s3.sh (issue 18): what a user runs instead of a mount.

boto3's managed transfers (s3transfer): `upload_file` is a parallel multipart upload
(CreateMultipartUpload, UploadPart x N with CONCURRENCY in flight, CompleteMultipartUpload) and
`download_fileobj` a HEAD plus parallel ranged GETs of PART_MIB each. Only the transfer is
timed (the interpreter, the import and the client are set up before the clock starts), and it
prints the seconds. The upload is complete in the store when `upload_file` returns (the
CompleteMultipartUpload answer), the same meaning as the raw PUT's answer; a HEAD after the
clock checks the length. Downloads go to a sink that counts the bytes (like curl -o /dev/null).

    s3-sdk.py put|get ENDPOINT BUCKET KEY FILE PART_MIB CONCURRENCY

Credentials and region come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION; the
caller unsets AWS_CA_BUNDLE. Path-style addressing (the endpoint is 127.0.0.1).
"""

import os
import sys
import threading
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


class Sink:
    """A seekable file object that keeps nothing and counts what is written."""

    def __init__(self):
        self.n = 0
        self.pos = 0
        self.lock = threading.Lock()

    def seekable(self):
        return True

    def seek(self, off, whence=0):
        self.pos = off if whence == 0 else self.pos + off
        return self.pos

    def tell(self):
        return self.pos

    def write(self, b):
        with self.lock:
            self.n += len(b)
        self.pos += len(b)
        return len(b)


def main():
    if len(sys.argv) != 8 or sys.argv[1] not in ("put", "get"):
        sys.exit(__doc__)
    op, ep, bucket, key, path, part_mib, conc = sys.argv[1:]
    part = int(part_mib) << 20
    client = boto3.client(
        "s3",
        endpoint_url=ep,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=max(10, int(conc)),
        ),
    )
    cfg = TransferConfig(
        multipart_threshold=part,
        multipart_chunksize=part,
        max_concurrency=int(conc),
        use_threads=True,
    )
    size = os.path.getsize(path)
    if op == "put":
        t0 = time.monotonic()
        client.upload_file(path, bucket, key, Config=cfg)
        dt = time.monotonic() - t0
        got = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    else:
        sink = Sink()
        t0 = time.monotonic()
        client.download_fileobj(bucket, key, sink, Config=cfg)
        dt = time.monotonic() - t0
        got = sink.n
    if got != size:
        sys.exit(f"s3-sdk {op} {key}: {got} bytes, expected {size}")
    print(f"{dt:.4f}")


if __name__ == "__main__":
    main()
