"""RawConnection (consumers/aws/http1.py), byte for byte: the request it writes, and how it reads every
response shape it claims to handle -- Content-Length and chunked bodies (hex sizes, extensions, trailers),
bodies delimited by the connection's close, 1xx interim responses, keep-alive and ``Connection: close`` --
and the exact ProtocolError it raises for what it does not accept: malformed status and header lines,
unsupported Transfer-Encoding, bad or out-of-range sizes, bad chunk terminators, heads, chunk lines and bodies
over the caps (64 KiB heads and chunk lines, 64 MiB bodies: at the cap is accepted, one byte over is not).

Most tests script the socket itself (``ScriptedSocket``): each ``recv`` returns the next scripted piece, so
split reads happen exactly where a test puts them. A few run over real loopback TCP and TLS (connect
timeout, TCP_NODELAY, SNI, a real close by the peer). ``_ca_bundle`` (which CA bundle the lean writer
verifies with) is at the end."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections import deque
from types import SimpleNamespace

import pytest

from consumers.aws import http1
from consumers.aws.http1 import ConnectionClosed, ProtocolError, RawConnection, _ca_bundle

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# ------------------------------------------------------------------------------------ scripted socket
class ScriptedSocket:
    """A socket double: ``recv`` returns the scripted pieces in order (an exception in the script is raised),
    then b"" (the peer closed). Records what was sent, the timeouts set and the options."""

    def __init__(self, *pieces: bytes | BaseException) -> None:
        self.pieces: deque[bytes | BaseException] = deque(pieces)
        self.sent = bytearray()
        self.timeouts: list[float | None] = []
        self.options: dict[tuple[int, int], int] = {}
        self.recv_calls = 0
        self.closed = False
        self.close_error: OSError | None = None

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options[(level, option)] = value

    def settimeout(self, timeout: float | None) -> None:
        self.timeouts.append(timeout)

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, bufsize: int) -> bytes:
        if type(bufsize) is not int or bufsize <= 0:  # as a socket does
            raise TypeError(f"bad recv buffer size {bufsize!r}")
        self.recv_calls += 1
        if not self.pieces:
            return b""
        piece = self.pieces.popleft()
        if isinstance(piece, BaseException):
            raise piece
        return piece

    def close(self) -> None:
        self.closed = True
        if self.close_error is not None:
            raise self.close_error


@pytest.fixture
def wire():
    """``wire(*pieces)``: a RawConnection built by its own constructor over a ScriptedSocket."""
    made: list[tuple] = []

    def make(*pieces: bytes | BaseException) -> tuple[RawConnection, ScriptedSocket]:
        sock = ScriptedSocket(*pieces)

        def create_connection(address, timeout=None):
            made.append((address, timeout))
            return sock

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(http1.socket, "create_connection", create_connection)
            conn = RawConnection("ddb.test", 8000, None, 3.0)
        assert made[-1] == (("ddb.test", 8000), 3.0)
        return conn, sock

    return make


def post(conn: RawConnection, body: bytes = b"{}", timeout: float = 2.0):
    return conn.exchange("/", {"Content-Type": "application/x-amz-json-1.0"}, body, timeout)


def protocol_error(conn: RawConnection) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        post(conn)
    return info.value


# ------------------------------------------------------------------------------------------ request
def test_the_request_is_one_post_with_the_headers_in_order_and_content_length(wire):
    conn, sock = wire(OK)
    # WHEN a request with two headers (one with a latin-1 character) and a body is exchanged
    conn.exchange("/a%20b", {"X-Amz-Target": "T", "X-Name": "café"}, b'{"k":1}', 1.25)
    # THEN exactly this went out, in one write, after the read timeout was set
    assert bytes(sock.sent) == (
        b"POST /a%20b HTTP/1.1\r\nX-Amz-Target: T\r\nX-Name: caf\xe9\r\nContent-Length: 7\r\n\r\n"
        + b'{"k":1}'
    )
    assert sock.timeouts == [1.25]


def test_the_constructor_connects_with_the_connect_timeout_and_no_nagle(wire):
    _, sock = wire(OK)
    assert sock.options[(socket.IPPROTO_TCP, socket.TCP_NODELAY)]


# ------------------------------------------------------------------------------- Content-Length bodies
def test_a_content_length_body_split_over_reads_is_read_to_its_length_and_no_further(wire):
    # GIVEN a response whose head and body arrive in three pieces, the peer then silent (b"" = closed)
    conn, sock = wire(b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 10\r\n\r\n0123", b"456789")
    # WHEN it is read THEN the body is exactly the 10 bytes, and no fourth read was made
    assert post(conn) == (200, {"content-length": "10"}, b"0123456789", True)
    assert sock.recv_calls == 3


def test_a_response_delivered_one_byte_per_read_is_read_whole(wire):
    raw = b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
    conn, _ = wire(*(raw[i : i + 1] for i in range(len(raw))))
    assert post(conn) == (201, {"x-a": "1", "content-length": "5"}, b"hello", True)


def test_keep_alive_responses_in_one_read_are_split_at_the_content_length(wire):
    # GIVEN two responses that arrived in one read (the second one's head right after the first one's body)
    second = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\n{}{}"
    conn, sock = wire(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" + second)
    # THEN each exchange gets its own response, the second from what was already read
    assert post(conn) == (200, {"content-length": "3"}, b"abc", True)
    assert post(conn) == (400, {"content-length": "4"}, b"{}{}", True)
    assert sock.recv_calls == 1


def test_a_body_holding_a_blank_line_is_body_not_head(wire):
    conn, _ = wire(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\na\r\n\r\nb\r\n")
    assert post(conn) == (200, {"content-length": "8"}, b"a\r\n\r\nb\r\n", True)


def test_content_length_zero_is_an_empty_body(wire):
    conn, sock = wire(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert post(conn) == (200, {"content-length": "0"}, b"", True)
    assert sock.recv_calls == 1


@pytest.mark.parametrize("value", ["abc", "1.5", "", "+2", "1_0", "-1", "٣"])
def test_a_content_length_that_is_not_a_number_is_refused(wire, value):
    conn, _ = wire(b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n" % value.encode("utf-8"))
    err = protocol_error(conn)
    assert str(err) == "bad Content-Length" and type(err) is ProtocolError


@pytest.mark.parametrize("n", [MAX_BODY + 1, 10**30])
def test_a_content_length_outside_0_to_64_mib_is_refused_before_reading(wire, n):
    conn, _ = wire(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
    err = protocol_error(conn)
    assert str(err) == f"Content-Length {n} out of range" and type(err) is ProtocolError


def test_a_content_length_of_exactly_64_mib_is_accepted_and_read(wire):
    # GIVEN a 64 MiB Content-Length, the peer closing at once: the body is read (found missing), not refused
    conn, _ = wire(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MAX_BODY)
    err = protocol_error(conn)
    assert type(err) is ConnectionClosed


# ------------------------------------------------------------------------------------ chunked bodies
def chunked(*pieces: bytes, head: bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") -> bytes:
    return head + b"".join(pieces)


def test_chunked_sizes_are_hex_and_extensions_are_ignored(wire):
    sixteen = b"0123456789abcdef"
    conn, _ = wire(
        chunked(
            b"10\r\n" + sixteen + b"\r\n",  # 0x10 = 16 bytes
            b"A;name=value\r\n" + b"x" * 10 + b"\r\n",  # upper-case hex digit, one extension
            b"b;a=1;b=2\r\n" + b"y" * 11 + b"\r\n",  # two extensions
            b"3 ; q\r\nend\r\n",  # spaces around the size
            b"0\r\n\r\n",
        )
    )
    status, headers, body, keep = post(conn)
    assert (status, body, keep) == (200, sixteen + b"x" * 10 + b"y" * 11 + b"end", True)
    assert headers == {"transfer-encoding": "chunked"}


def test_chunked_trailers_are_skipped_and_the_next_response_follows(wire):
    conn, sock = wire(chunked(b"2\r\nhi\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n") + OK)
    assert post(conn)[2] == b"hi"
    assert post(conn) == (200, {"content-length": "2"}, b"ok", True)
    assert sock.recv_calls == 1


def test_a_chunked_body_delivered_one_byte_per_read_is_read_whole(wire):
    raw = chunked(b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\n\r\n")
    conn, _ = wire(*(raw[i : i + 1] for i in range(len(raw))))
    assert post(conn)[2] == b"hello!"


def test_transfer_encoding_is_matched_without_regard_to_case(wire):
    conn, _ = wire(
        chunked(b"2\r\nok\r\n0\r\n\r\n", head=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")
    )
    assert post(conn)[2] == b"ok"


@pytest.mark.parametrize("te", ["gzip", "gzip, chunked", "identity"])
def test_other_transfer_encodings_are_refused(wire, te):
    conn, _ = wire(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n" % te.encode())
    assert str(protocol_error(conn)) == f"unsupported Transfer-Encoding {te!r}"


@pytest.mark.parametrize("size_line", [b"zz", b"", b";ext", b"5 5", b"0x5", b"+5", b"-2", b"0_5", b"X5"])
def test_a_chunk_size_that_is_not_hex_is_refused(wire, size_line):
    conn, _ = wire(chunked(size_line + b"\r\nhello\r\n0\r\n\r\n"))
    err = protocol_error(conn)
    assert str(err) == "bad chunk size" and type(err) is ProtocolError


@pytest.mark.parametrize("after", [b"XX", b"\n0", b"\r0"])
def test_chunk_data_not_followed_by_crlf_is_refused(wire, after):
    conn, _ = wire(chunked(b"5\r\nhello" + after + b"\r\n0\r\n\r\n"))
    err = protocol_error(conn)
    assert str(err) == "bad chunk terminator" and type(err) is ProtocolError


def test_a_chunk_of_exactly_64_mib_is_accepted_and_read(wire):
    # GIVEN a first chunk of 0x4000000 bytes (64 MiB), the peer closing: read (found missing), not refused
    conn, _ = wire(chunked(b"4000000\r\n"))
    assert type(protocol_error(conn)) is ConnectionClosed


@pytest.mark.parametrize(
    "sizes",
    [
        b"4000001\r\n",  # one chunk one byte over 64 MiB
        b"1\r\nx\r\n4000000\r\n",  # 1 byte + 64 MiB: the total is over
    ],
)
def test_a_chunked_body_over_64_mib_in_total_is_refused_before_reading_the_excess(wire, sizes):
    conn, _ = wire(chunked(sizes))
    err = protocol_error(conn)
    assert str(err) == "chunked body too large" and type(err) is ProtocolError


def test_a_chunk_size_line_of_64_kib_is_read_and_one_byte_more_is_refused(wire):
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    line = b"5;" + b"e" * (MAX_HEAD - 2)  # 64 KiB without its CRLF, in one read
    # GIVEN a size line that reaches 64 KiB before its CRLF arrives in the next read: accepted
    conn, _ = wire(head, line, b"\r\nhello\r\n0\r\n\r\n")
    assert post(conn)[2] == b"hello"
    # GIVEN one more byte before the CRLF: refused
    conn, _ = wire(head, line, b"e", b"\r\nhello\r\n0\r\n\r\n")
    err = protocol_error(conn)
    assert str(err) == "chunk header too large" and type(err) is ProtocolError


# ------------------------------------------------------------------------- bodies delimited by close
@pytest.mark.parametrize("status", [204, 304])
def test_a_204_or_304_has_no_body_even_without_content_length_and_keeps_the_connection(wire, status):
    # GIVEN a keep-alive answer that may carry no body (RFC 9112 6.3), followed by the next response
    conn, _ = wire(b"HTTP/1.1 %d X\r\n\r\n" % status + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    # THEN it is read as empty at once (not waited on until a close), and the next response follows
    assert post(conn)[2:] == (b"", True)
    assert post(conn)[0] == 200


def test_without_content_length_the_body_runs_to_the_close_and_the_connection_is_not_kept(wire):
    # GIVEN an HTTP/1.1 response with neither Content-Length nor chunking, its body in three reads
    conn, sock = wire(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nab", b"cd", b"ef")
    # THEN the body is everything up to the close, and the connection must not be reused
    assert post(conn) == (200, {"x-a": "1"}, b"abcdef", False)
    # AND a caller that uses it anyway gets ConnectionClosed (a stale connection), nothing else
    with pytest.raises(ConnectionClosed):
        post(conn)


def test_a_reset_ends_a_body_delimited_by_close(wire):
    conn, _ = wire(b"HTTP/1.1 200 OK\r\n\r\n", b"partial", ConnectionResetError(104, "reset"))
    assert post(conn) == (200, {}, b"partial", False)


def test_a_body_delimited_by_close_may_be_64_mib_and_no_more(wire):
    head = b"HTTP/1.1 200 OK\r\n\r\n"
    # (the double delivers 64 MiB in one read to keep this fast; a socket would take 1024 reads)
    conn, _ = wire(head, b"x" * (MAX_BODY - 1), b"y")
    assert len(post(conn)[2]) == MAX_BODY
    conn, _ = wire(head, b"x" * MAX_BODY, b"y")
    err = protocol_error(conn)
    assert str(err) == "body too large" and type(err) is ProtocolError


# ------------------------------------------------------------------------------------------ the head
def test_header_names_are_lower_cased_values_trimmed_and_repeats_joined(wire):
    conn, _ = wire(
        b"HTTP/1.1 200 OK\r\nX-Extra: a\r\n  Date :  Sat, 14 Mar 2026 15:09:26 GMT  \r\n"
        b"x-extra: b\r\nX-Name: caf\xe9\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n"
    )
    _, headers, _, _ = post(conn)
    assert headers == {
        "x-extra": "a, b",
        "date": "Sat, 14 Mar 2026 15:09:26 GMT",  # split at the first colon only
        "x-name": "café",  # latin-1, as sent
        "x-empty": "",
        "content-length": "0",
    }


def test_a_header_line_without_a_colon_is_refused(wire):
    conn, _ = wire(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nnot a header\r\n\r\n")
    err = protocol_error(conn)
    assert str(err) == "bad header line" and type(err) is ProtocolError


@pytest.mark.parametrize(
    ("status_line", "status"),
    [
        (b"HTTP/1.1 200", 200),  # no reason phrase
        (b"HTTP/1.1 503 Service Unavailable", 503),  # a reason phrase with spaces
        (b"HTTP/1.1 404 Not Found Here", 404),
    ],
)
def test_status_lines_with_or_without_a_reason_phrase(wire, status_line, status):
    conn, _ = wire(status_line + b"\r\nContent-Length: 0\r\n\r\n")
    assert post(conn)[0] == status


@pytest.mark.parametrize(
    "status_line",
    [
        "FTP/1.1 200 OK",
        "http/1.1 200 OK",
        "HTTP/2 200 OK",
        "HTTP/1.1 abc OK",
        "HTTP/1.1 20x",
        "HTTP/1.1",
        "HTTP/1.1  200 OK",  # two spaces: the status code is empty
        "HTTP/1.1\t200 OK",
        " HTTP/1.1 200 OK",
        "",  # the response starts with a blank line
    ],
)
def test_malformed_status_lines_are_refused_naming_the_line(wire, status_line):
    conn, _ = wire(status_line.encode() + b"\r\nContent-Length: 0\r\n\r\n")
    err = protocol_error(conn)
    assert str(err) == f"bad status line {status_line!r}" and type(err) is ProtocolError


def test_an_empty_head_is_refused_at_once(wire):
    # GIVEN a peer that sends a blank line and then stays open: refused without waiting for more
    conn, sock = wire(b"\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert str(protocol_error(conn)) == "bad status line ''"
    assert sock.recv_calls == 1


def test_a_long_bad_status_line_is_quoted_to_80_characters(wire):
    line = "XTTP/1.1 200 " + "r" * 200
    conn, _ = wire(line.encode() + b"\r\n\r\n")
    assert str(protocol_error(conn)) == f"bad status line {line[:80]!r}"


def test_a_head_of_64_kib_is_read_and_one_byte_more_is_refused(wire):
    start = b"HTTP/1.1 200 OK\r\nX-Pad: "
    first = start + b"p" * (MAX_HEAD - len(start))  # 64 KiB of head, its end not yet received
    # GIVEN the end of the head arrives in the next read: accepted
    conn, _ = wire(first, b"\r\nContent-Length: 2\r\n\r\nok")
    status, headers, body, _ = post(conn)
    assert (status, body, len(headers["x-pad"])) == (200, b"ok", MAX_HEAD - len(start))
    # GIVEN one more byte of head first: refused
    conn, _ = wire(first, b"p", b"\r\nContent-Length: 2\r\n\r\nok")
    err = protocol_error(conn)
    assert str(err) == "response head too large" and type(err) is ProtocolError


# -------------------------------------------------------------------------------- interim responses
def test_1xx_interim_responses_are_skipped_and_the_final_one_returned(wire):
    # GIVEN two interim responses (one with a header) and the final one, all in one read
    conn, _ = wire(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\nX-Interim: yes\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    # THEN the final response is returned, with only its own headers
    assert post(conn) == (200, {"content-length": "2"}, b"ok", True)


def test_interim_responses_split_over_reads(wire):
    conn, _ = wire(
        b"HTTP/1.1 100 Continue\r\n", b"\r\nHTTP/1.1 2", b"04 No Content\r\nContent-Length: 0\r\n\r\n"
    )
    assert post(conn) == (204, {"content-length": "0"}, b"", True)


# ------------------------------------------------------------------------------------------ keep-alive
@pytest.mark.parametrize(
    ("status_line", "connection", "keep"),
    [
        (b"HTTP/1.1 200 OK", None, True),
        (b"HTTP/1.1 200 OK", b"keep-alive", True),
        (b"HTTP/1.1 200 OK", b"close", False),
        (b"HTTP/1.1 200 OK", b"Close", False),
        (b"HTTP/1.1 200 OK", b"CLOSE", False),
        (b"HTTP/1.0 200 OK", None, False),
        (b"HTTP/1.0 200 OK", b"keep-alive", False),
    ],
)
def test_the_connection_is_kept_only_for_http_1_1_without_connection_close(
    wire, status_line, connection, keep
):
    head = status_line + b"\r\n" + (b"Connection: " + connection + b"\r\n" if connection else b"")
    conn, _ = wire(head + b"Content-Length: 2\r\n\r\nok")
    assert post(conn) == (
        200,
        {"content-length": "2", **({"connection": connection.decode()} if connection else {})},
        b"ok",
        keep,
    )


def test_connection_close_with_a_chunked_body(wire):
    conn, _ = wire(
        chunked(
            b"2\r\nok\r\n0\r\n\r\n",
            head=b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
    )
    assert post(conn)[2:] == (b"ok", False)


# -------------------------------------------------------------------------------- peer closed / close()
def test_a_peer_that_closes_before_answering_raises_connection_closed(wire):
    conn, _ = wire()
    with pytest.raises(ConnectionClosed) as info:
        post(conn)
    assert str(info.value) == "connection closed by the peer"
    assert isinstance(info.value, ProtocolError)  # the sink treats both as connection errors


def test_a_peer_that_closes_mid_head_or_mid_body_raises_connection_closed(wire):
    for pieces in ([b"HTTP/1.1 200 OK\r\nContent-"], [b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"]):
        conn, _ = wire(*pieces)
        with pytest.raises(ConnectionClosed):
            post(conn)


def test_close_closes_the_socket_and_never_raises(wire):
    conn, sock = wire()
    conn.close()
    assert sock.closed
    conn, sock = wire()
    sock.close_error = OSError(9, "Bad file descriptor")
    conn.close()  # swallowed: closing a connection that is already gone is not an error
    assert sock.closed


# -------------------------------------------------------------------------------- real TCP and TLS
class OneShotServer:
    """Loopback TCP (TLS with ``context``): for each connection, reads one request and sends ``answer``."""

    def __init__(self, answer: bytes, context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.context = context
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += conn.recv(65536)
                head, _, body = buf.partition(b"\r\n\r\n")
                n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(body) < n:
                    body += conn.recv(65536)
                self.requests.append(buf)
                conn.sendall(self.answer)
                conn.close()
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_over_tcp_connect_timeout_nodelay_read_timeout_and_a_close_by_the_peer():
    server = OneShotServer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    try:
        conn = RawConnection("127.0.0.1", server.port, None, 1.5)
        # THEN the connect timeout is the socket's until the first exchange, and Nagle is off
        assert conn.sock.gettimeout() == 1.5
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert conn.exchange("/", {"H": "v"}, b"body", 0.75) == (
            200,
            {"connection": "close", "content-length": "2"},
            b"ok",
            False,
        )
        assert conn.sock.gettimeout() == 0.75  # the read timeout from then on
        assert server.requests == [b"POST / HTTP/1.1\r\nH: v\r\nContent-Length: 4\r\n\r\nbody"]
        # AND the server has closed: the next exchange finds the connection closed
        with pytest.raises((ConnectionClosed, ConnectionResetError, BrokenPipeError)):
            conn.exchange("/", {}, b"", 0.75)
        conn.close()
        assert conn.sock.fileno() == -1
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A CA and a server certificate for ``localhost`` it signed (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, key, issuer, issuer_key, *, ca: bool, san: str | None = None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    d = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(cert("ca", ca_key, "ca", ca_key, ca=True).public_bytes(pem))
    (d / "cert.pem").write_bytes(
        cert("localhost", key, "ca", ca_key, ca=False, san="localhost").public_bytes(pem)
    )
    (d / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return d


def test_over_tls_the_handshake_names_the_host_and_the_exchange_is_encrypted(tls_files):
    sni: list[str | None] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls_files / "cert.pem", tls_files / "key.pem")
    server_ctx.sni_callback = lambda _sock, server_name, _ctx: sni.append(server_name)
    server = OneShotServer(OK, server_ctx)
    try:
        client_ctx = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
        conn = RawConnection("localhost", server.port, client_ctx, 2.0)
        assert isinstance(conn.sock, ssl.SSLSocket) and conn.sock.server_hostname == "localhost"
        assert conn.exchange("/", {}, b"x", 2.0) == (200, {"content-length": "2"}, b"ok", True)
        assert sni == ["localhost"]
        conn.close()
    finally:
        server.close()


# ---------------------------------------------------------------------------------------- _ca_bundle
def client_verifying(verify) -> SimpleNamespace:
    """A stand-in for a botocore client whose HTTP session verifies with ``verify``."""
    return SimpleNamespace(_endpoint=SimpleNamespace(http_session=SimpleNamespace(_verify=verify)))


@pytest.fixture
def no_bundle_env(monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)


def test_aws_ca_bundle_wins_over_the_client_and_is_trimmed(monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "  /etc/pki/corp.pem \n")
    assert _ca_bundle(client_verifying(False)) == "/etc/pki/corp.pem"
    assert _ca_bundle(client_verifying("/other.pem")) == "/etc/pki/corp.pem"


def test_a_blank_aws_ca_bundle_is_ignored(monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "   ")
    assert _ca_bundle(client_verifying("/client.pem")) == "/client.pem"


def test_without_the_variable_the_clients_own_verify_setting_is_used(no_bundle_env):
    assert _ca_bundle(client_verifying("/client/ca.pem")) == "/client/ca.pem"
    assert _ca_bundle(client_verifying(False)) is False  # verify=False: the only way not to verify


def test_a_real_botocore_client_built_with_verify_false_or_a_bundle(no_bundle_env):
    import boto3

    session = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="eu-west-1")
    assert _ca_bundle(session.client("dynamodb", verify=False)) is False
    assert _ca_bundle(session.client("dynamodb", verify="/tmp/ca.pem")) == "/tmp/ca.pem"


@pytest.mark.parametrize(
    "client",
    [client_verifying(True), client_verifying(None), SimpleNamespace(), object(), None],
    ids=["verify-true", "verify-none", "no-endpoint", "object", "none"],
)
def test_otherwise_botocores_default_bundle_is_used(no_bundle_env, client):
    from botocore.httpsession import get_cert_path

    bundle = _ca_bundle(client)
    assert bundle == str(get_cert_path(True)) and bundle.endswith(".pem")
