"""The lean writer's TLS and credentials, tested by what happens on the wire (issue 11, defect 8), not by
reading settings back: a local HTTPS server with its own CA completes real handshakes.

- trusted through ``AWS_CA_BUNDLE``: the handshake completes, SNI names the endpoint's host, the rows are
written;
- an untrusted certificate (no bundle naming its CA) or a certificate for another host name: no request is
ever
  sent, the rows come back unwritten, quickly (no retry cures a trust problem);
- refreshable credentials (``RefreshableCredentials``, as on Lambda with role credentials): a request after
the
  refresh is signed with the new key, checked by the server re-signing what it received.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.credentials import RefreshableCredentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumers.aws.clients import client_config
from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.core.ports import ScoreRows
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position
from tests.sigv4_server import verifying_handler

SECRETS = {"AKIDOLD": "old-secret", "AKIDNEW": "new-secret"}


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool, sans: list[x509.GeneralName]):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for ``localhost`` signed by it, and another CA that signed nothing here."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _cert("test CA", ca_key, ca_name, ca_key, ca=True, sans=[])
    key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", ca_key, ca_name, key, ca=False, sans=[x509.DNSName("localhost")])
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")])
    other = _cert("other CA", other_key, other_name, other_key, ca=True, sans=[])
    (d / "ca.pem").write_bytes(_pem(ca))
    (d / "other-ca.pem").write_bytes(_pem(other))
    (d / "server.pem").write_bytes(_pem(server))
    (d / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {
        "ca": d / "ca.pem",
        "other_ca": d / "other-ca.pem",
        "cert": d / "server.pem",
        "key": d / "server.key",
    }


_Verifier = verifying_handler(SECRETS, scheme="https")


@pytest.fixture
def tls_server(pki) -> Iterator[dict]:
    _Verifier.received = []
    sni: list[str | None] = []
    handshakes: list[bool] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    ctx.sni_callback = lambda sslobj, name, _ctx: sni.append(name)

    class Server(ThreadingHTTPServer):
        def get_request(self):  # the handshake happens here, per connection
            sock, addr = self.socket.accept()
            try:
                tls = ctx.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                handshakes.append(False)
                sock.close()
                raise
            handshakes.append(True)
            return tls, addr

    server = Server(("127.0.0.1", 0), _Verifier)
    server.handle_error = lambda *a: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"port": server.server_address[1], "sni": sni, "handshakes": handshakes}
    server.shutdown()
    server.server_close()


def _rows(n: int = 3) -> ScoreRows:
    return ScoreRows(
        ids=[f"e{i}" for i in range(n)],
        scores=np.full(n, 0.5, dtype=np.float32),
        positions=[Position("shardId-000000000000", str(100 + i)) for i in range(n)],
        arrivals=[1_700_000_000.0] * n,
        model_version="v",
        scored_at_ms=1,
    )


def _sink(endpoint: str, *, credentials=None) -> LeanDynamoDBSink:
    session = boto3.session.Session(
        aws_access_key_id="AKIDOLD", aws_secret_access_key=SECRETS["AKIDOLD"], region_name="us-east-1"
    )
    # built as the handler builds it (botocore retries off)
    client = session.client("dynamodb", endpoint_url=endpoint, config=client_config(2))
    if credentials is not None:
        client._request_signer._credentials = credentials  # the credential object botocore's signer holds
    return LeanDynamoDBSink(client, "scores", backoff=Backoff(base_s=0.01, cap_s=0.02))


def test_a_trusted_server_completes_the_handshake_with_sni_and_gets_the_rows(tls_server, pki, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki["ca"]))
    sink = _sink(f"https://localhost:{tls_server['port']}")
    assert sink.write(_rows(), Deadline(10)) == set()
    assert tls_server["handshakes"] and all(tls_server["handshakes"])
    assert tls_server["sni"] and set(tls_server["sni"]) == {"localhost"}
    assert _Verifier.received and all(ok for _, _, ok in _Verifier.received)


def test_an_untrusted_certificate_gets_no_request_and_is_not_retried(tls_server, pki, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki["other_ca"]))  # trusts a CA that did not sign the server
    sink = _sink(f"https://localhost:{tls_server['port']}")
    unwritten = sink.write(_rows(), Deadline(10))
    assert set(unwritten) == {"e0", "e1", "e2"}
    assert _Verifier.received == []  # nothing was sent over an unverified connection
    # one refused handshake by the lean path, one by botocore's for the same chunk: no retry cures trust
    assert tls_server["handshakes"] and not any(tls_server["handshakes"])
    assert len(tls_server["handshakes"]) <= 2, tls_server["handshakes"]


def test_a_certificate_for_another_host_name_is_refused(tls_server, pki, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki["ca"]))
    sink = _sink(f"https://127.0.0.1:{tls_server['port']}")  # the certificate names localhost only
    unwritten = sink.write(_rows(), Deadline(10))
    assert set(unwritten) == {"e0", "e1", "e2"}
    assert _Verifier.received == []


def test_refreshed_credentials_sign_the_next_request(tls_server, pki, monkeypatch):
    # GIVEN role credentials on botocore's RefreshableCredentials with a clock the test moves: they expire in
    # an hour; the refresh hands out a new key
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki["ca"]))
    now = [datetime.datetime.now(datetime.UTC)]
    refreshes: list[str] = []

    def refresh() -> dict[str, str]:
        refreshes.append("AKIDNEW")
        expiry = now[0] + datetime.timedelta(hours=1)
        return {
            "access_key": "AKIDNEW",
            "secret_key": SECRETS["AKIDNEW"],
            "token": "",
            "expiry_time": expiry.isoformat(),
        }

    creds = RefreshableCredentials(
        "AKIDOLD", SECRETS["AKIDOLD"], None, now[0] + datetime.timedelta(hours=1), refresh, "test",
        time_fetcher=lambda: now[0],
    )  # fmt: skip
    sink = _sink(f"https://localhost:{tls_server['port']}", credentials=creds)
    # WHEN the sink writes, the clock passes the expiry, and it writes again
    assert sink.write(_rows(), Deadline(10)) == set()
    now[0] += datetime.timedelta(hours=2)
    assert sink.write(_rows(), Deadline(10)) == set()
    # THEN the refresh ran on the sink's own code path and the second request was signed with the new key
    keys = [k for _, k, _ in _Verifier.received]
    assert refreshes and keys[0] == "AKIDOLD" and keys[-1] == "AKIDNEW", keys
    assert all(ok for _, _, ok in _Verifier.received)
