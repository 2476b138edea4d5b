"""AWS Signature Version 4 for the lean DynamoDB writer's one request shape: ``POST <path>`` with the JSON
protocol headers. Byte-identical to botocore's ``SigV4Auth`` for the same credentials, time and body
(tests/unit/test_ddb_http.py checks it against botocore's own request).

https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any
from urllib.parse import quote, urlsplit

CONTENT_TYPE = "application/x-amz-json-1.0"  # DynamoDB's JSON protocol version (botocore: jsonVersion 1.0)
_SHA256 = hashlib.sha256
_HMAC_NEW = hmac.new
# RFC 3986 pchar and "/": what a request path may carry unencoded; "%" only as the start of an escape
_PATH_SAFE = "/~!$&'()*+,;=:@-._"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, and consecutive slashes collapsed, as AWS services and botocore's
    ``utils.remove_dot_segments`` do."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return (first + "/".join(out) + last) or "/"


def request_path(endpoint_path: str) -> str:
    """The path the request line carries for an endpoint's path: dot segments removed, every character a path
    may not carry percent-encoded once (an existing ``%XX`` escape is kept; a bare ``%`` becomes ``%25``)."""
    path = remove_dot_segments(endpoint_path or "/")
    if not path.startswith("/"):
        path = "/" + path
    pieces = _ESCAPE.split(path)
    escapes = _ESCAPE.findall(path)
    encoded = quote(pieces[0], safe=_PATH_SAFE)
    for escape, piece in zip(escapes, pieces[1:], strict=True):
        encoded += escape.upper() + quote(piece, safe=_PATH_SAFE)
    return encoded


def canonical_uri(path: str) -> str:
    """SigV4's CanonicalURI of a request path, for every service but S3: each segment URI-encoded again
    (botocore: ``quote(normalize_url_path(path), safe="/~")``)."""
    return quote(remove_dot_segments(path), safe="/~")


class SigV4Signer:
    """AWS Signature Version 4 for ``POST <path>`` with the JSON-protocol headers DynamoDB needs.

    Produces the headers botocore's ``SigV4Auth.add_auth`` produces for the same request (signed headers
    ``content-type;host;x-amz-date[;x-amz-security-token];x-amz-target``, the payload's SHA-256 in the
    canonical request), without building an ``AWSRequest``; the signing key (four HMACs) is derived once per
    day, region, service and secret.
    """

    def __init__(self, region: str, service: str = "dynamodb") -> None:
        self.region = region
        self.service = service
        self._cache: tuple[tuple[str, str], bytes] = (
            ("", ""),
            b"",
        )  # one tuple: swapped atomically (threads)

    def signing_key(self, secret_key: str, datestamp: str) -> bytes:
        (cached_for, key) = self._cache
        if cached_for != (secret_key, datestamp):
            key = _HMAC_NEW(f"AWS4{secret_key}".encode(), datestamp.encode(), _SHA256).digest()
            for part in (self.region, self.service, "aws4_request"):
                key = _HMAC_NEW(key, part.encode(), _SHA256).digest()
            self._cache = ((secret_key, datestamp), key)
        return key

    def headers(
        self, credentials: Any, *, host: str, path: str, target: str, body: bytes, amz_date: str
    ) -> dict[str, str]:
        """The request headers, Authorization included. ``credentials`` has access_key/secret_key/token."""
        datestamp = amz_date[:8]
        token = credentials.token
        if token:
            canonical_headers = (
                f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-amz-date:{amz_date}\n"
                f"x-amz-security-token:{_trimall(token)}\nx-amz-target:{target}\n"
            )
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        else:
            canonical_headers = (
                f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n"
            )
            signed = "content-type;host;x-amz-date;x-amz-target"
        canonical_request = (
            f"POST\n{canonical_uri(path)}\n\n{canonical_headers}\n{signed}\n{_SHA256(body).hexdigest()}"
        )
        scope = f"{datestamp}/{self.region}/{self.service}/aws4_request"
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{_SHA256(canonical_request.encode()).hexdigest()}"
        )
        signature = _HMAC_NEW(
            self.signing_key(credentials.secret_key, datestamp), string_to_sign.encode(), _SHA256
        ).hexdigest()
        headers = {
            "X-Amz-Target": target,
            "Content-Type": CONTENT_TYPE,
            "X-Amz-Date": amz_date,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers


def _trimall(value: str) -> str:
    return " ".join(value.split())  # SigV4 canonical header value (botocore SigV4Auth._header_value)


def host_header(url: str) -> str:
    """The Host value botocore signs: lower-case host, port only when not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def amz_date(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
