"""Loading a bundle from S3 (moto server over HTTP): downloaded once per container into the cache, verified
every time, and a tampered object fails with the URI in the message (consumers/core/bundle.py)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from consumers.core.bundle import BUNDLE_FILES, load_bundle
from consumers.core.errors import ModelError

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "model" / "bundles" / "default"
BUCKET = "models"


@pytest.fixture
def s3(aws):
    """An S3 client on the moto server, a bucket holding the default bundle, and a GetObject counter."""
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    for name in BUNDLE_FILES:
        client.put_object(Bucket=BUCKET, Key=f"default/{name}", Body=(DEFAULT_BUNDLE / name).read_bytes())
    calls: list[str] = []
    client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: calls.append(params["url_path"])
    )
    client.get_calls = calls  # type: ignore[attr-defined]
    return client


def test_downloads_once_then_uses_the_verified_cache(s3, tmp_path):
    # GIVEN the default bundle in S3 and an empty cache
    uri = f"s3://{BUCKET}/default"
    expected = json.loads((DEFAULT_BUNDLE / "card.json").read_text())["version"]
    # WHEN it is loaded twice with the same cache (two cold starts in one container's /tmp)
    first = load_bundle(uri, s3_client=s3, cache_dir=tmp_path)
    after_first = len(s3.get_calls)
    second = load_bundle(uri, s3_client=s3, cache_dir=tmp_path)
    # THEN the three files were fetched once, and the second load read only the cache
    assert after_first == 3
    assert len(s3.get_calls) == 3
    assert first.version == second.version == expected
    assert first.uri == uri and first.booster.feature_names == first.schema.names
    # AND no temporary file is left behind
    assert not list(tmp_path.rglob("*.part"))


def test_a_corrupted_cache_is_downloaded_again(s3, tmp_path):
    # GIVEN a warm cache whose model file was damaged on disk
    uri = f"s3://{BUCKET}/default/"
    load_bundle(uri, s3_client=s3, cache_dir=tmp_path)
    (cached,) = tmp_path.rglob("model.ubj")
    cached.write_bytes(cached.read_bytes()[:-10])
    # WHEN it is loaded again
    bundle = load_bundle(uri, s3_client=s3, cache_dir=tmp_path)
    # THEN the bundle was fetched again and verifies
    assert len(s3.get_calls) == 6
    assert bundle.version == json.loads((DEFAULT_BUNDLE / "card.json").read_text())["version"]


def test_a_tampered_object_fails_with_the_uri(s3, tmp_path):
    # GIVEN a bundle in S3 whose model.ubj was changed after the card was written
    for name in BUNDLE_FILES:
        body = (DEFAULT_BUNDLE / name).read_bytes()
        if name == "model.ubj":
            body = body[:-1] + bytes([body[-1] ^ 0x01])
        s3.put_object(Bucket=BUCKET, Key=f"tampered/{name}", Body=body)
    uri = f"s3://{BUCKET}/tampered"
    # WHEN it is loaded
    with pytest.raises(ModelError) as exc:
        load_bundle(uri, s3_client=s3, cache_dir=tmp_path)
    # THEN the error names the URI and the hash mismatch
    assert str(exc.value).startswith(f"model bundle {uri}: model.ubj sha256")


def test_a_missing_object_fails_with_the_uri_and_key(s3, tmp_path):
    uri = f"s3://{BUCKET}/nothing-here"
    with pytest.raises(ModelError) as exc:
        load_bundle(uri, s3_client=s3, cache_dir=tmp_path)
    message = str(exc.value)
    assert message.startswith(f"model bundle {uri}: cannot download s3://{BUCKET}/nothing-here/")
    assert "NoSuchKey" in message
    assert not list(tmp_path.rglob("*.part"))
