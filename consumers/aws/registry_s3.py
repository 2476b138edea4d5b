"""The model registry on S3, read side (``consumers.core.registry.RegistryReader``):
``s3://bucket/prefix/<model>``. Consumers only read (their role has ``s3:GetObject`` on the prefix and
nothing else); the write side, for the people who publish, is ``model/registry_s3.py``.

Reads are conditional (``IfNoneMatch``: an unchanged alias document costs one 304 response, no body). The
check a container repeats (the alias document, every ``MODEL_REFRESH_S``) goes the lean way after its first
read: botocore's own S3 signer (``S3SigV4Auth``) on the URL botocore itself resolved for that key (endpoint
rules, virtual-host or path style), sent over the lean writer's keep-alive HTTP/1.1 client
(``consumers/aws/http1.py``). botocore's GetObject costs ~1.3 ms of CPU for a 304 here, the lean check
~0.2 ms (benchmarks/results/rollout.json). Any other answer, or a connection that fails, is asked again
through botocore, so a surprise costs speed, never correctness.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

from consumers.aws import deadline
from consumers.aws.errors import AWS_ERRORS, error_code, http_status
from consumers.aws.http1 import ProtocolError, RawConnection, ssl_context_for
from consumers.aws.sigv4 import host_header
from consumers.core.registry import Fetched, Missing, RegistryError, check_version

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
MAX_DOC_BYTES = 4 * 1024 * 1024  # an alias document or card is KBs; anything near this is not one
CONNECT_TIMEOUT_S = 1.0
DEFAULT_TIMEOUT_S = 5.0  # without a declared deadline (a CLI)


class S3RegistryReader:
    def __init__(self, client: Any, uri: str, *, lean: bool = True) -> None:
        if not uri.startswith("s3://"):
            raise RegistryError(f"registry {uri}: expected s3://bucket/prefix")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise RegistryError(f"registry {uri}: expected s3://bucket/prefix")
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.lean = lean
        self.lean_checks = 0  # conditional reads answered on the lean path
        self.fallbacks = 0  # lean reads handed to botocore
        self._urls: dict[str, str] = {}  # key -> the URL botocore sent its GetObject to
        self._pending: str | None = None
        self._conn: RawConnection | None = None
        if lean:
            client.meta.events.register("before-send.s3.GetObject", self._remember_url)

    def _remember_url(self, request: Any, **_: Any) -> None:
        if self._pending is not None:
            self._urls[self._pending] = request.url

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def fail(self, what: str, key: str, exc: Exception) -> RegistryError:
        code = error_code(exc)
        if code in MISSING_CODES:
            return Missing(f"registry {self.uri}: {key} does not exist")
        return RegistryError(f"registry {self.uri}: cannot {what} {key}: {code}: {exc}")

    def get(self, key: str, *, etag: str | None = None) -> Fetched | None:
        url = self._urls.get(key) if self.lean and etag else None
        if url is not None and etag is not None:
            try:
                return self._lean_get(url, etag)
            except _Unusual:
                self.fallbacks += 1
        self._pending = key
        try:
            return self._botocore_get(key, etag)
        finally:
            self._pending = None

    def _lean_get(self, url: str, etag: str) -> Fetched | None:
        """A conditional GET signed by botocore's S3 signer and sent over the keep-alive lean client."""
        creds = self.client._request_signer._credentials  # botocore keeps it there (see lean_dynamodb.py)
        if creds is None:
            raise _Unusual
        request = AWSRequest(method="GET", url=url, headers={"If-None-Match": etag})
        S3SigV4Auth(creds.get_frozen_credentials(), "s3", self.client.meta.region_name).add_auth(request)
        parts = urlsplit(url)
        headers = {"Host": host_header(url), **dict(request.headers.items())}
        bound = deadline.current()
        timeout = max(0.05, bound.remaining()) if bound is not None else DEFAULT_TIMEOUT_S
        try:
            conn = self._conn or RawConnection(
                parts.hostname or "",
                parts.port or (443 if parts.scheme == "https" else 80),
                ssl_context_for(self.client, parts.scheme),
                min(CONNECT_TIMEOUT_S, timeout),
            )
            self._conn = conn
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            status, resp_headers, body, keep = conn.exchange(path, headers, b"", timeout, method="GET")
        except (OSError, ProtocolError):
            self._close()
            raise _Unusual from None
        if not keep:
            self._close()
        if status == 304:
            self.lean_checks += 1
            return None
        if status == 200 and len(body) <= MAX_DOC_BYTES:
            self.lean_checks += 1
            return Fetched(body, resp_headers.get("etag", ""))
        raise _Unusual

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def reset_connections(self) -> None:
        """Drop the lean connection (SnapStart's hooks); the next check opens a new one."""
        self._close()

    def _botocore_get(self, key: str, etag: str | None) -> Fetched | None:
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


class _Unusual(Exception):
    """A lean read that botocore must answer instead."""
