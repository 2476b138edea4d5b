"""The model registry on S3, read side (``consumers.core.registry.RegistryReader``):
``s3://bucket/prefix/<model>``. Consumers only read (their role has ``s3:GetObject`` on the prefix and
nothing else); the write side, for the people who publish, is ``model/registry_s3.py``.

Reads are conditional (``IfNoneMatch``: an unchanged alias document costs one 304 response, no body).
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html
"""

from __future__ import annotations

from typing import Any

from consumers.aws.errors import AWS_ERRORS, error_code, http_status
from consumers.core.registry import Fetched, Missing, RegistryError, check_version

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
MAX_DOC_BYTES = 4 * 1024 * 1024  # an alias document or card is KBs; anything near this is not one


class S3RegistryReader:
    def __init__(self, client: Any, uri: str) -> None:
        if not uri.startswith("s3://"):
            raise RegistryError(f"registry {uri}: expected s3://bucket/prefix")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise RegistryError(f"registry {uri}: expected s3://bucket/prefix")
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def fail(self, what: str, key: str, exc: Exception) -> RegistryError:
        code = error_code(exc)
        if code in MISSING_CODES:
            return Missing(f"registry {self.uri}: {key} does not exist")
        return RegistryError(f"registry {self.uri}: cannot {what} {key}: {code}: {exc}")

    def get(self, key: str, *, etag: str | None = None) -> Fetched | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(key)}
        if etag:
            kwargs["IfNoneMatch"] = etag
        try:
            resp = self.client.get_object(**kwargs)
            if int(resp.get("ContentLength") or 0) > MAX_DOC_BYTES:
                raise RegistryError(f"registry {self.uri}: {key} is over {MAX_DOC_BYTES} bytes")
            data = resp["Body"].read(MAX_DOC_BYTES + 1)
        except AWS_ERRORS as exc:
            if http_status(exc) == 304 or error_code(exc) in ("304", "NotModified"):
                return None
            raise self.fail("read", key, exc) from exc
        if len(data) > MAX_DOC_BYTES:
            raise RegistryError(f"registry {self.uri}: {key} is over {MAX_DOC_BYTES} bytes")
        return Fetched(data, str(resp.get("ETag", "")))

    def bundle_uri(self, version: str) -> str:
        return f"{self.uri}/{check_version(version)}"
