"""Peers that hold a client at the TCP level, for the budget tests of the Kubernetes API and the Pushgateway.

- `SilentListener`: accepts connections and never sends a byte (an apiserver behind a broken
  load balancer, a half-dead node). A dead port is refused at once; this one is not.
- `TrickleAnswer`: reads a request, then answers one byte at a time (a Pushgateway that trickles).
- `TrickleRelay`: forwards to a real server (the control plane's apiserver), the client's bytes at
  once and the server's one at a time, `pause` apart: every read gets a byte before any per-read
  timeout, and the whole answer (TLS handshake included) takes minutes.

Both listen on 127.0.0.1 only, hold nothing longer than MAX_HOLD, and close every connection on `stop()`.
"""

from __future__ import annotations

import socket
import threading
import time

MAX_HOLD = 60.0  # s


class _Listener:
    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.accepted = 0
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=type(self).__name__, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # ends a blocked accept(); close() alone does not
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
        self._thread.join(5)

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            self._keep(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError


class SilentListener(_Listener):
    def _serve(self, client: socket.socket) -> None:
        self._stopping.wait(MAX_HOLD)  # read nothing, answer nothing


class TrickleRelay(_Listener):
    def __init__(self, upstream_port: int, pause: float = 0.2):
        super().__init__()
        self.upstream_port = upstream_port
        self.pause = pause

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            return
        self._keep(upstream)
        threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()
        began = time.monotonic()
        try:
            upstream.settimeout(MAX_HOLD)
            while not self._stopping.is_set() and time.monotonic() - began < MAX_HOLD:
                data = upstream.recv(4096)
                if not data:
                    return
                for byte in data:
                    client.sendall(bytes([byte]))
                    if self._stopping.wait(self.pause):
                        return
        except OSError:
            return

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(4096):
                upstream.sendall(data)
        except OSError:
            pass


class TrickleAnswer(_Listener):
    """Reads a request, then answers it one byte every `pause` (a Pushgateway that trickles): status
    line and headers that never end within MAX_HOLD."""

    def __init__(self, pause: float = 0.5):
        super().__init__()
        self.pause = pause

    def _serve(self, client: socket.socket) -> None:
        began = time.monotonic()
        try:
            client.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Trickle: " + b"." * 10_000:
                if time.monotonic() - began > MAX_HOLD:
                    return
                client.sendall(bytes([byte]))
                if self._stopping.wait(self.pause):
                    return
        except OSError:
            return
