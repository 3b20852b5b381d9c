"""clamd answers and closes at once: the client still reads that answer (a real socket)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from gateway.net.clamd import ClamdClient, ScanStatus, TcpAddress

_REPLY = b"INSTREAM size limit exceeded. ERROR\0"


def _answer_and_close(server: socket.socket, read_bytes: int, rounds: int) -> None:
    """Like clamd past StreamMaxLength: read some of the stream, reply, close with the rest
    unread (the kernel then resets the connection while the client still writes)."""
    server.settimeout(10.0)
    for _ in range(rounds):
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10.0)
            got = 0
            while got < read_bytes:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            conn.sendall(_REPLY)


@pytest.mark.parametrize("read_bytes", [10, 256 * 1024])
def test_reply_before_close_is_read(read_bytes: int) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    rounds = 20  # the loss was a race: one round passed now and then
    thread = threading.Thread(target=_answer_and_close, args=(server, read_bytes, rounds))
    thread.start()
    client = ClamdClient(TcpAddress("127.0.0.1", port), timeout_s=10.0)
    try:
        for _ in range(rounds):
            result = asyncio.run(client.instream(b"x" * (8 * 1024 * 1024)))
            assert result.status == ScanStatus.TOO_LARGE
    finally:
        thread.join(timeout=15)
        server.close()
