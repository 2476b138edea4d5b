"""A TLS terminator in front of a local server, as ElastiCache Serverless's proxy layer is in front of its
Valkey nodes: clients complete a verified TLS handshake here, and the bytes go on in plain TCP to the server
on another 127.0.0.1 port. The Valkey builds the PyPI wheels ship have no TLS, so the local cache speaks TLS
through this (asyncio, one thread). When the server behind is down, a client's connection is accepted and then
closed: what a client sees of a cache node that is gone."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading


class TLSTerminator:
    def __init__(self, context: ssl.SSLContext, listen_port: int, upstream_port: int) -> None:
        self.context = context
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.connections = 0  # client connections accepted (a reconnect counts again)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-terminator", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> TLSTerminator:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        fut.result(timeout=10)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", self.listen_port, ssl=self.context, ssl_handshake_timeout=10
        )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                up_writer.close()
        except asyncio.CancelledError:
            pass  # drop_connections() / stop(): the connection is closed below
        finally:
            writer.close()
            self._tasks.discard(task)

    def drop_connections(self) -> None:
        """Close every client connection (a cache node failing over)."""

        def cancel() -> None:
            for t in list(self._tasks):
                t.cancel()

        self._loop.call_soon_threadsafe(cancel)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
