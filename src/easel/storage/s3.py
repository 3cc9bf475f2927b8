"""Outputs in an S3-compatible object store (`pip install 'easel[s3]'`)."""

from __future__ import annotations

from typing import Any

from easel.storage.base import MissingObject, StoredObject, is_private
from easel.storage.local import check_key


class S3Storage:
    """Workers upload; clients get presigned URLs, or URLs under `public_base` (a CDN)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        public_base: str = "",
        ttl_seconds: int = 3600,
        client: Any = None,
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.public_base = public_base.rstrip("/")
        self.ttl_seconds = ttl_seconds

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        self.client.put_object(
            Bucket=self.bucket, Key=self._object(key), Body=data, ContentType=content_type
        )
        return StoredObject(key=key, content_type=content_type, size=len(data))

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingObject(key) from exc
            raise
        data: bytes = response["Body"].read()
        return data

    def url(self, key: str, ttl_seconds: int | None = None) -> str:
        """Under `public_base` when set, except a private file's: always presigned."""
        if self.public_base and not is_private(key):
            return f"{self.public_base}/{self._object(key)}"
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._object(key)},
            ExpiresIn=ttl_seconds or self.ttl_seconds,
        )
        return url

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError:
            return False
        return True
