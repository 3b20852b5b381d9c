"""A raw-socket SMTP client for protocol abuse tests: sends exact bytes, reads exact replies."""

from __future__ import annotations

import socket
import ssl
import struct
from types import TracebackType

TIMEOUT_S = 5.0


class RawSmtp:
    def __init__(
        self, host: str, port: int, source_ip: str = "", timeout_s: float = TIMEOUT_S
    ) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout_s, source_address=(source_ip, 0) if source_ip else None
        )
        self._buffer = b""

    def __enter__(self) -> RawSmtp:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Vanish: close with an RST (SO_LINGER 0), as a client that crashed or timed out."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """The next complete reply; a multi-line reply comes back joined by newlines."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def command(self, line: str) -> str:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.reply()

    def greet(self, name: str = "client.test") -> str:
        """Read the banner and send EHLO; the EHLO reply."""
        self.reply()
        return self.command(f"EHLO {name}")

    def closed_by_server(self) -> bool:
        """True when the server closed the connection (EOF) within the timeout."""
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
                self._buffer += data
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def pending(self, wait_s: float = 0.2) -> bytes:
        """Whatever the server sends within `wait_s` beyond the replies already read."""
        self.sock.settimeout(wait_s)
        try:
            data = self.sock.recv(4096)
            self._buffer += data
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(TIMEOUT_S)
        extra, self._buffer = self._buffer, b""
        return extra

    def start_tls(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        assert isinstance(self.sock, socket.socket)
        self.sock = context.wrap_socket(self.sock)

    def _line(self) -> str:
        while b"\n" not in self._buffer:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"connection closed; unread: {self._buffer!r}")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")
