"""Loopback HTTP servers that misbehave on purpose: a redirector, and one that drips its answer.

They stand in for a provider (or a project file's provider URL) controlled by an attacker; every
request's path and headers are recorded (Loopback.requests), so a test can see which credentials
arrived where.
"""
from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import Any, List

from tests.fakes.http import Loopback


class Redirector(Loopback):
    """Answers every GET with `status` and a Location of `target` + the request path."""

    def __init__(self, target: str, status: int = 302, host: str = "127.0.0.1") -> None:
        self.target, self.status = target, status
        super().__init__(host)

    def headers_seen(self) -> List[Any]:
        return [h for _, h in self.requests]

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(self.status)
        handler.send_header("Location", self.target + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


class Dripper(Loopback):
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


class Flood(Loopback):
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

