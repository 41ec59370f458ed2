"""Serving an http.server from a daemon thread: what the test doubles (fault proxy, Secret stub,
fake OAuth provider) share, so each of them is only its handler."""

from __future__ import annotations

import threading
from socketserver import BaseServer


def serve_in_background(server: BaseServer, name: str) -> threading.Thread:
    """Start serving; a short poll interval keeps `stop_serving` quick."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    return thread


def stop_serving(server: BaseServer, thread: threading.Thread) -> None:
    """Stop accepting, close the listening socket, and wait (bounded) for the serving thread."""
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
