"""The registry's lean alias check (consumers/aws/registry_s3.py) on the wire: a local S3-shaped server that
signs every request again with botocore's S3 signer and the secret of its key, so a signature the lean path
got wrong is refused (403), as S3 would."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from consumers.aws.registry_s3 import S3RegistryReader

SECRET = "lean-secret"


class S3ish(BaseHTTPRequestHandler):
    doc: ClassVar[bytes] = b'{"format": 1}'
    fail_next: ClassVar[int] = 0
    seen: ClassVar[list[tuple[str, bool, str]]] = []  # (user agent, signature ok, status)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
        req = AWSRequest(method="GET", url=f"http://{self.headers['Host']}{self.path}", headers=headers)
        signed = self.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        req.headers = {k: v for k, v in headers.items() if k.lower() in signed or k.lower() == "x-amz-date"}
        req.context["timestamp"] = self.headers["X-Amz-Date"]
        auth = S3SigV4Auth(Credentials("AKIDLEAN", SECRET), "s3", "us-east-1")
        expected = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
        ok = expected in self.headers["Authorization"]
        etag = '"' + hashlib.md5(self.doc).hexdigest() + '"'
        if not ok:
            status, body = 403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
        elif S3ish.fail_next:
            S3ish.fail_next -= 1
            status, body = 500, b"<Error><Code>InternalError</Code></Error>"
        elif self.headers.get("If-None-Match") == etag:
            status, body = 304, b""
        else:
            status, body = 200, self.doc
        self.seen.append((self.headers.get("User-Agent", ""), ok, str(status)))
        self.send_response(status)
        self.send_header("ETag", etag)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def reader():
    S3ish.seen, S3ish.fail_next, S3ish.doc = [], 0, b'{"format": 1}'
    server = ThreadingHTTPServer(("127.0.0.1", 0), S3ish)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = boto3.session.Session(
        aws_access_key_id="AKIDLEAN", aws_secret_access_key=SECRET, region_name="us-east-1"
    ).client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
        config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )
    yield S3RegistryReader(client, "s3://model-registry/models/fraud")
    server.shutdown()


def test_repeated_checks_go_lean_signed_as_s3_checks_them(reader):
    first = reader.get("aliases.json")  # botocore: resolves the URL the lean path reuses
    assert first is not None and first.data == S3ish.doc
    assert reader.get("aliases.json", etag=first.etag) is None  # lean, 304
    assert reader.get("aliases.json", etag=first.etag) is None
    S3ish.doc = b'{"format": 1, "live": null}'
    changed = reader.get("aliases.json", etag=first.etag)  # lean, 200 with the new document
    assert changed is not None and changed.data == S3ish.doc and changed.etag != first.etag
    assert reader.lean_checks == 3 and reader.fallbacks == 0
    assert all(ok for _, ok, _ in S3ish.seen), S3ish.seen
    assert [agent.startswith("Boto3") for agent, _, _ in S3ish.seen] == [True, False, False, False]


def test_an_unusual_answer_is_asked_again_through_botocore(reader):
    first = reader.get("aliases.json")
    S3ish.fail_next = 1  # the lean request gets a 500
    assert reader.get("aliases.json", etag=first.etag) is None  # botocore asked again: 304
    assert reader.fallbacks == 1 and [s for _, _, s in S3ish.seen] == ["200", "500", "304"]


def test_a_key_never_read_through_botocore_is_not_read_lean(reader):
    assert reader.get("aliases.json", etag='"abc"') is not None  # no URL known yet: botocore
    assert reader.lean_checks == 0 and S3ish.seen[0][0].startswith("Boto3")
