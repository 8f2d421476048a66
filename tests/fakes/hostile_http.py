"""Loopback HTTP servers that misbehave on purpose: a redirector, and one that drips its answer.

They stand in for a provider (or a project file's provider URL) controlled by an attacker; every
request's path and headers are recorded, so a test can see which credentials arrived where.
"""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple


class Recorder:
    """A loopback server; subclasses answer in `respond`. `requests` holds (path, {header: value})."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: List[Tuple[str, Dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                try:
                    outer.respond(self)
                except OSError:
                    pass  # the client gave up

            def do_PUT(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def headers_seen(self) -> List[Dict[str, str]]:
        return [h for _, h in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Redirector(Recorder):
    """Answers every GET with `status` and a Location of `target` + the request path."""

    def __init__(self, target: str, status: int = 302, host: str = "127.0.0.1") -> None:
        self.target, self.status = target, status
        super().__init__(host)

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(self.status)
        handler.send_header("Location", self.target + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


class Dripper(Recorder):
    """Sends headers at once, then `body` one byte every `every_s` seconds (a slow-loris answer)."""

    def __init__(self, body: bytes, every_s: float = 0.2) -> None:
        self.body, self.every_s = body, every_s
        super().__init__()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(self.body)))
        handler.end_headers()
        handler.wfile.flush()
        for i in range(len(self.body)):
            handler.wfile.write(self.body[i:i + 1])
            handler.wfile.flush()
            time.sleep(self.every_s)


class Flood(Recorder):
    """Streams `size` bytes as fast as it can (an answer no provider would send)."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(self.size))
        handler.end_headers()
        chunk = b" " * 65536
        sent = 0
        while sent < self.size:
            handler.wfile.write(chunk)
            sent += len(chunk)


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
