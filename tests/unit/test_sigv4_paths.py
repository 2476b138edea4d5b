"""The lean writer signs the path it sends as SigV4 specifies for every service but S3 (the canonical URI is
the request path with dot segments removed, each segment URI-encoded once more),
for endpoint paths beyond "/".

The check is a verifier on the wire: a local server takes the request line and headers exactly as received,
signs them again with botocore's ``SigV4Auth`` and the shared secret, and answers
``InvalidSignatureException`` unless the signatures agree; the sink's rows are written only when they do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import boto3
import numpy as np
import pytest

from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.aws.sigv4 import canonical_uri, remove_dot_segments, request_path
from consumers.core.ports import ScoreRows
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position
from tests.sigv4_server import verifying_handler

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


_Verifier = verifying_handler({"AKIDEXAMPLE": SECRET})


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
    assert _Verifier.received and all(ok for _, _, ok in _Verifier.received), _Verifier.received
    assert {p for p, _, _ in _Verifier.received} == {request_path(path)}
    assert unwritten == set()


@pytest.mark.parametrize(
    ("endpoint_path", "wire", "canonical"),
    [
        ("", "/", "/"),
        ("/", "/", "/"),
        ("a", "/a", "/a"),
        ("/x/../y", "/y", "/y"),
        ("//p//q/", "/p/q/", "/p/q/"),
        ("/a b", "/a%20b", "/a%2520b"),
        ("/a%2fb", "/a%2Fb", "/a%252Fb"),
        ("/\u00fc/100%", "/%C3%BC/100%25", "/%25C3%25BC/100%2525"),
        ("/a:b@c;d=e,f+g!h$i&j'k(l)m*n~o", "/a:b@c;d=e,f+g!h$i&j'k(l)m*n~o", None),
        ("/~user", "/~user", "/~user"),
        ("/a%20b:c@d/e f", "/a%20b:c@d/e%20f", None),  # after an escape, the same safe set
    ],
)
def test_request_path_and_canonical_uri_have_these_exact_values(endpoint_path, wire, canonical):
    assert request_path(endpoint_path) == wire
    if canonical is not None:
        assert canonical_uri(wire) == canonical


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "/"),
        (".", "/"),
        ("a/./b", "a/b"),
        ("/a/b/../c", "/a/c"),
        ("/..", "/"),
        ("x/", "x/"),
        ("/a//b", "/a/b"),
    ],
)
def test_remove_dot_segments_values(path, expected):
    assert remove_dot_segments(path) == expected


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://localhost:80", "localhost"),
        ("https://localhost:443", "localhost"),
        ("http://localhost:443", "localhost:443"),
        ("https://localhost:80", "localhost:80"),
        ("http://EXAMPLE.com", "example.com"),
        ("http://[::1]:8000", "[::1]:8000"),
        ("file:///no-host", ""),
    ],
)
def test_host_header_values(url, host):
    from consumers.aws.sigv4 import host_header

    assert host_header(url) == host
