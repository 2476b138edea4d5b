"""The SigV4 signer (consumers/aws/sigv4.py), exactly: the signing key of AWS's published example, the
headers and Authorization botocore's ``SigV4Auth`` produces for the same request (with and without a session
token, for another service and region, for a path beyond "/"), the key cache, ``X-Amz-Date`` text, the Host
value, dot-segment removal and the request path's percent-encoding.

Header names are compared case-insensitively (HTTP header names are; tests/mutation/README.md lists the
letter-case mutants as equivalent)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from consumers.aws.sigv4 import (
    CONTENT_TYPE,
    SigV4Signer,
    amz_date,
    canonical_uri,
    host_header,
    remove_dot_segments,
    request_path,
)

TARGET = "DynamoDB_20120810.BatchWriteItem"


def lower(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def botocore_headers(creds, *, url: str, path: str, body: bytes, service: str, region: str):
    req = AWSRequest(
        method="POST",
        url=url + path,
        data=body,
        headers={"X-Amz-Target": TARGET, "Content-Type": CONTENT_TYPE},
    )
    SigV4Auth(creds, service, region).add_auth(req)
    return req


def ours(creds, signer: SigV4Signer, *, url: str, path: str, body: bytes, date: str):
    return signer.headers(creds, host=host_header(url), path=path, target=TARGET, body=body, amz_date=date)


# ------------------------------------------------------------------ the signing key


def test_the_signing_key_of_awss_published_example():
    # https://docs.aws.amazon.com/general/latest/gr/signature-v4-examples.html (kSigning of the example)
    signer = SigV4Signer("us-east-1", "iam")
    key = signer.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_the_signing_key_chains_date_region_service_and_aws4_request():
    def h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    expected = h(h(h(h(b"AWS4secret", "20260314"), "eu-west-1"), "dynamodb"), "aws4_request")
    assert SigV4Signer("eu-west-1").signing_key("secret", "20260314") == expected


def test_the_key_is_derived_again_for_another_day_or_secret_and_reused_otherwise():
    signer = SigV4Signer("eu-west-1")
    fresh = SigV4Signer("eu-west-1")
    k1 = signer.signing_key("s1", "20260314")
    assert signer.signing_key("s1", "20260314") is k1
    assert signer.signing_key("s1", "20260315") == fresh.signing_key("s1", "20260315") != k1
    assert signer.signing_key("s2", "20260315") == fresh.signing_key("s2", "20260315")
    assert signer.signing_key("s1", "20260314") == k1


# ------------------------------------------------------------------ the headers, against botocore


@pytest.mark.parametrize(
    ("token", "service", "region", "url", "path"),
    [
        (None, "dynamodb", "us-east-1", "https://dynamodb.us-east-1.amazonaws.com", "/"),
        ("FwoGZXIvYXdzEJr//////////wEaDOKEN", "dynamodb", "eu-west-1", "http://localhost:4566", "/"),
        ("tok  with   spaces", "dynamodb", "ap-south-1", "https://h.example:8443", "/proxy/ddb"),
        (None, "execute-api", "eu-central-1", "https://gw.example", "/a%20b/c~d"),
    ],
)
def test_headers_are_botocores_for_the_same_request(token, service, region, url, path):
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token)
    creds = creds.get_frozen_credentials()
    body = b'{"RequestItems":{"scores":[]}}'
    req = botocore_headers(creds, url=url, path=path, body=body, service=service, region=region)
    date = req.context["timestamp"]
    signer = SigV4Signer(region, service) if service != "dynamodb" else SigV4Signer(region)
    got = lower(ours(creds, signer, url=url, path=path, body=body, date=date))
    expected = {
        "x-amz-target": TARGET,
        "content-type": CONTENT_TYPE,
        "x-amz-date": date,
        "authorization": req.headers["Authorization"],
    }
    if token:
        expected["x-amz-security-token"] = token
    assert got == expected
    # and signing again (the cached key) gives the same
    assert lower(ours(creds, signer, url=url, path=path, body=body, date=date)) == expected


def test_the_authorization_header_names_the_scope_and_the_signed_headers():
    creds = Credentials("AKID", "SECRET", "TOKEN").get_frozen_credentials()
    h = lower(
        SigV4Signer("eu-west-1").headers(
            creds, host="h", path="/", target=TARGET, body=b"{}", amz_date="20260314T101112Z"
        )
    )
    auth = h["authorization"]
    assert auth.startswith(
        "AWS4-HMAC-SHA256 Credential=AKID/20260314/eu-west-1/dynamodb/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="
    )
    assert len(auth.rsplit("=", 1)[1]) == 64
    no_token = Credentials("AKID", "SECRET").get_frozen_credentials()
    h = lower(
        SigV4Signer("eu-west-1").headers(
            no_token, host="h", path="/", target=TARGET, body=b"{}", amz_date="20260314T101112Z"
        )
    )
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-target, " in h["authorization"]
    assert "x-amz-security-token" not in h


def test_the_signature_covers_the_body_path_host_target_and_time():
    creds = Credentials("AKID", "SECRET").get_frozen_credentials()
    base = {"host": "h", "path": "/", "target": TARGET, "body": b"{}", "amz_date": "20260314T101112Z"}

    def sig(**kw):
        return SigV4Signer("eu-west-1").headers(creds, **dict(base, **kw))["Authorization"]

    ref = sig()
    for change in (
        {"body": b"{ }"},
        {"path": "/x"},
        {"host": "h2"},
        {"target": "DynamoDB_20120810.GetItem"},
        {"amz_date": "20260314T101113Z"},
    ):
        assert sig(**change) != ref, change


# ------------------------------------------------------------------ X-Amz-Date, Host, paths


def test_amz_date_is_utc_basic_iso8601():
    assert amz_date(0) == "19700101T000000Z"
    assert amz_date(1_700_000_000.9) == "20231114T221320Z"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com", "dynamodb.eu-west-1.amazonaws.com"),
        ("http://Local.Host:4566/x", "local.host:4566"),
        ("http://h:80", "h"),
        ("https://h:443", "h"),
        ("http://h:8080", "h:8080"),
        ("https://[fe80::1]", "[fe80::1]"),
        ("https://[fe80::1]:444", "[fe80::1]:444"),
        ("ftp://h:80", "h:80"),
        ("file:///no/host", ""),
    ],
)
def test_host_header(url, host):
    assert host_header(url) == host


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/b/", "/a/b/"),
        ("/a", "/a"),
        ("a", "a"),
        ("//", "/"),
        ("/a/..", "/"),
        ("/a/../", "/"),
        ("/./a/./", "/a/"),
        ("/a/b/../../c", "/c"),
        ("a/b/../c/", "a/c/"),
        ("/...", "/..."),
        ("/.a/b.", "/.a/b."),
        (".", "/"),
        ("a/..", "/"),
    ],
)
def test_remove_dot_segments_more_values(path, expected):
    assert remove_dot_segments(path) == expected


@pytest.mark.parametrize(
    ("endpoint_path", "wire"),
    [
        ("", "/"),
        ("x", "/x"),
        ("/x/y", "/x/y"),
        ("/%2f", "/%2F"),
        ("/a%2fb%3Ac", "/a%2Fb%3Ac"),
        ("/%41 %42/", "/%41%20%42/"),
        ("/p q%zz", "/p%20q%25zz"),
        ("/a%2", "/a%252"),
        ("/%e2%82%ac€", "/%E2%82%AC%E2%82%AC"),
        ("/u:p@h;v=1,2", "/u:p@h;v=1,2"),  # RFC 3986 pchar stays as it is
        ("/%7E:@!$&'()*+,;=", "/%7E:@!$&'()*+,;="),  # after an escape too
    ],
)
def test_request_path_values(endpoint_path, wire):
    assert request_path(endpoint_path) == wire


def test_canonical_uri_encodes_the_request_path_again_but_not_slashes_or_tildes():
    assert canonical_uri("/a%2Fb/~c d") == "/a%252Fb/~c%20d"
    assert canonical_uri("/x/../y/") == "/y/"
    assert canonical_uri("") == "/"
