"""The lean writer signs the path it sends as SigV4 specifies for every service but S3 (the canonical URI is
the request path with dot segments removed, each segment URI-encoded once more),
for endpoint paths beyond "/".

The check is a verifier on the wire: a local server takes the request line and headers exactly as received,
signs them again with botocore's ``SigV4Auth`` and the shared secret, and answers
``InvalidSignatureException`` unless the signatures agree; the sink's rows are written only when they do.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import numpy as np
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.aws.sigv4 import canonical_uri, remove_dot_segments, request_path
from consumers.core.ports import ScoreRows
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PATHS = ["", "/", "/a%20b", "/x/../y", "/a b", "//p//q/", "/%7e/%7E", "/a%2Fb/", "/ü/100%", "/./.."]


@pytest.mark.parametrize("path", PATHS)
def test_request_path_is_a_valid_path_and_stable(path):
    wire = request_path(path)
    assert wire.startswith("/") and " " not in wire and all(ord(c) < 128 for c in wire)
    assert request_path(wire) == wire  # encoding what is already encoded changes nothing
    assert canonical_uri(wire) == __import__("urllib.parse").parse.quote(remove_dot_segments(wire), safe="/~")


def test_dot_segments_and_double_slashes_are_removed_like_botocore():
    from botocore.utils import remove_dot_segments as botocore_remove

    for path in ["/x/../y", "//p//q/", "/a/./b", "/../a", "/a/b/..", "/"]:
        assert remove_dot_segments(path) == (botocore_remove(path) or "/"), path


class _Verifier(BaseHTTPRequestHandler):
    received: list[tuple[str, bool]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        host = self.headers["Host"]
        req = AWSRequest(
            method="POST",
            url=f"http://{host}{self.path}",
            data=body,
            headers={
                "X-Amz-Target": self.headers["X-Amz-Target"],
                "Content-Type": self.headers["Content-Type"],
                "X-Amz-Date": self.headers["X-Amz-Date"],
            },
        )
        if self.headers.get("X-Amz-Security-Token"):
            req.headers["X-Amz-Security-Token"] = self.headers["X-Amz-Security-Token"]
        req.context["timestamp"] = self.headers["X-Amz-Date"]
        creds = Credentials("AKIDEXAMPLE", SECRET, self.headers.get("X-Amz-Security-Token"))
        signer = SigV4Auth(creds, "dynamodb", "us-east-1")
        string_to_sign = signer.string_to_sign(req, signer.canonical_request(req))
        expected = signer.signature(string_to_sign, req)
        ok = self.headers["Authorization"].endswith(f"Signature={expected}")
        self.received.append((self.path, ok))
        if ok:
            out = b'{"UnprocessedItems":{}}'
            status = 200
        else:
            out = b'{"__type":"com.amazon.coral.service#InvalidSignatureException","message":"mismatch"}'
            status = 400
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("x-amz-crc32", str(zlib.crc32(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def verifier() -> Iterator[str]:
    _Verifier.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Verifier)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _rows(n: int) -> ScoreRows:
    return ScoreRows(
        ids=[f"e{i}" for i in range(n)],
        scores=np.full(n, 0.5, dtype=np.float32),
        positions=[Position("shardId-000000000000", str(1000 + i)) for i in range(n)],
        arrivals=[1_700_000_000.0] * n,
        model_version="v",
        scored_at_ms=1,
    )


@pytest.mark.parametrize("path", [p for p in PATHS if p])
def test_a_verifier_that_signs_what_it_receives_accepts_the_lean_writers_signature(verifier, path):
    # GIVEN a DynamoDB endpoint with a path (a proxy or gateway in front of the service)
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    client = session.client("dynamodb", endpoint_url=verifier + path)
    sink = LeanDynamoDBSink(client, "scores", backoff=Backoff(base_s=0.001, cap_s=0.002))
    # WHEN rows are written
    unwritten = sink.write(_rows(3), Deadline(10))
    # THEN the request line carried the encoded path and its signature verified
    assert _Verifier.received and all(ok for _, ok in _Verifier.received), _Verifier.received
    assert {p for p, _ in _Verifier.received} == {request_path(path)}
    assert unwritten == set()
