"""The model registry on S3, write side (the CLI of ``model/registry.py``; consumers only read:
``consumers/aws/registry_s3.py``).

Writes of the alias document are conditional on the ETag read (``IfMatch``), and the first write and every
bundle file on nothing being there (``IfNoneMatch: *``): S3 conditional writes, so two writers cannot both
win (412 PreconditionFailed, or 409 ConditionalRequestConflict while the other write is in flight).
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
"""

from __future__ import annotations

from typing import Any

from consumers.aws.errors import AWS_ERRORS, error_code, http_status
from consumers.aws.registry_s3 import S3RegistryReader
from consumers.core.registry import Conflict, RegistryError, check_version

CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


class S3RegistryStore(S3RegistryReader):
    def put(self, key: str, data: bytes, *, expect: str | None) -> str:
        condition = {"IfMatch": expect} if expect is not None else {"IfNoneMatch": "*"}
        try:
            resp = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(key),
                Body=data,
                ContentType="application/json" if key.endswith(".json") else "application/octet-stream",
                **condition,
            )
        except AWS_ERRORS as exc:
            if error_code(exc) in CONFLICT_CODES or http_status(exc) in (409, 412):
                what = "exists" if expect is None else "changed since it was read"
                raise Conflict(f"registry {self.uri}: {key} {what}; nothing written") from None
            raise self.fail("write", key, exc) from exc
        return str(resp.get("ETag", ""))

    def versions(self) -> list[str]:
        out: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.key(""), "Delimiter": "/"}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for cp in page.get("CommonPrefixes", []):
                    name = cp["Prefix"].rstrip("/").rpartition("/")[2]
                    try:
                        out.append(check_version(name))
                    except RegistryError:
                        continue
        except AWS_ERRORS as exc:
            raise self.fail("list", "versions", exc) from exc
        return sorted(out)
