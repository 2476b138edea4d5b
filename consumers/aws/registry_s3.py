"""The model registry on S3 (``consumers.core.registry.RegistryStore``): ``s3://bucket/prefix/<model>``.

Reads are conditional (``IfNoneMatch``: an unchanged alias document costs one 304 response, no body); writes
of the alias document are conditional on the ETag read (``IfMatch``), and the first write and every bundle
file on nothing being there (``IfNoneMatch: *``): S3 conditional writes, so two writers cannot both win
(412 PreconditionFailed, or 409 ConditionalRequestConflict while the other write is in flight).
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html
"""

from __future__ import annotations

from typing import Any

from consumers.aws.errors import AWS_ERRORS, error_code, http_status
from consumers.core.registry import Conflict, Fetched, Missing, RegistryError, check_version

CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
MAX_DOC_BYTES = 4 * 1024 * 1024  # an alias document or card is KBs; anything near this is not one


class S3RegistryStore:
    def __init__(self, client: Any, uri: str) -> None:
        if not uri.startswith("s3://"):
            raise RegistryError(f"registry {uri}: expected s3://bucket/prefix")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise RegistryError(f"registry {uri}: expected s3://bucket/prefix")
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, key: str, exc: Exception) -> RegistryError:
        code = error_code(exc)
        if code in MISSING_CODES:
            return Missing(f"registry {self.uri}: {key} does not exist")
        return RegistryError(f"registry {self.uri}: cannot {what} {key}: {code}: {exc}")

    def get(self, key: str, *, etag: str | None = None) -> Fetched | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
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
            raise self._fail("read", key, exc) from exc
        if len(data) > MAX_DOC_BYTES:
            raise RegistryError(f"registry {self.uri}: {key} is over {MAX_DOC_BYTES} bytes")
        return Fetched(data, str(resp.get("ETag", "")))

    def put(self, key: str, data: bytes, *, expect: str | None) -> str:
        condition = {"IfMatch": expect} if expect is not None else {"IfNoneMatch": "*"}
        try:
            resp = self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType="application/json" if key.endswith(".json") else "application/octet-stream",
                **condition,
            )
        except AWS_ERRORS as exc:
            if error_code(exc) in CONFLICT_CODES or http_status(exc) in (409, 412):
                what = "exists" if expect is None else "changed since it was read"
                raise Conflict(f"registry {self.uri}: {key} {what}; nothing written") from None
            raise self._fail("write", key, exc) from exc
        return str(resp.get("ETag", ""))

    def versions(self) -> list[str]:
        out: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(""), "Delimiter": "/"}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for cp in page.get("CommonPrefixes", []):
                    name = cp["Prefix"].rstrip("/").rpartition("/")[2]
                    try:
                        out.append(check_version(name))
                    except RegistryError:
                        continue
        except AWS_ERRORS as exc:
            raise self._fail("list", "versions", exc) from exc
        return sorted(out)

    def bundle_uri(self, version: str) -> str:
        return f"{self.uri}/{check_version(version)}"
