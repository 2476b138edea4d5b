"""Shared fixtures: a moto server over HTTP (real boto3 calls), event fixtures, the default bundle."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from consumers.local.emulator import MotoServer

EVENTS_DIR = Path(__file__).parent / "events"
REPO = Path(__file__).resolve().parent.parent


def load_event(name: str) -> dict:
    """A JSON fixture from tests/events/ (AWS-shaped Kinesis events)."""
    return json.loads((EVENTS_DIR / name).read_text())


@pytest.fixture(scope="session")
def moto_server():
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto_server, monkeypatch):
    """A clean moto server and the env boto3 needs to reach it (AWS_ENDPOINT_URL, fake credentials)."""
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    yield moto_server


@pytest.fixture
def boto_session(aws):
    import boto3

    return boto3.session.Session(region_name=os.environ["AWS_REGION"])
