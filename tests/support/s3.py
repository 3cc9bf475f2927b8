"""A real S3-compatible server (moto in server mode) on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.app import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "easel-test",
    "AWS_SECRET_ACCESS_KEY": "easel-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in listing.get("Contents", []))


@contextmanager
def s3_server(bucket: str = "") -> Iterator[S3Server]:
    """moto keeps its buckets in process-wide memory, so each server gets a fresh bucket."""
    bucket = bucket or f"easel-outputs-{uuid.uuid4().hex[:8]}"
    from moto.server import ThreadedMotoServer

    old = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = S3Server(endpoint=f"http://127.0.0.1:{port}", bucket=bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
