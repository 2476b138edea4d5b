"""A DynamoDB-shaped endpoint for tests that checks SigV4 on the wire: each request is signed again, exactly
as received (request line, headers, body), with botocore's ``SigV4Auth`` and the secret of its access key; a
match answers BatchWriteItem success, a mismatch ``InvalidSignatureException``. Used over HTTP and HTTPS."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def verifying_handler(secrets: Mapping[str, str], scheme: str = "http") -> type[BaseHTTPRequestHandler]:
    """A request handler class; its ``received`` lists (request path, access key, signature verified)."""

    class Verifier(BaseHTTPRequestHandler):
        received: ClassVar[list[tuple[str, str, bool]]] = []

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            auth = self.headers["Authorization"]
            access_key = auth.split("Credential=")[1].split("/")[0]
            token = self.headers.get("X-Amz-Security-Token")
            req = AWSRequest(
                method="POST",
                url=f"{scheme}://{self.headers['Host']}{self.path}",
                data=body,
                headers={
                    "X-Amz-Target": self.headers["X-Amz-Target"],
                    "Content-Type": self.headers["Content-Type"],
                    "X-Amz-Date": self.headers["X-Amz-Date"],
                    **({"X-Amz-Security-Token": token} if token else {}),
                },
            )
            req.context["timestamp"] = self.headers["X-Amz-Date"]
            creds = Credentials(access_key, secrets.get(access_key, "?"), token)
            signer = SigV4Auth(creds, "dynamodb", "us-east-1")
            expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
            ok = auth.endswith(f"Signature={expected}")
            self.received.append((self.path, access_key, ok))
            if ok:
                out, status = b'{"UnprocessedItems":{}}', 200
            else:
                out, status = b'{"__type":"#InvalidSignatureException","message":"mismatch"}', 400
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("x-amz-crc32", str(zlib.crc32(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    return Verifier
