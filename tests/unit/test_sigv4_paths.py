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
