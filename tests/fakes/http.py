"""Loopback HTTP servers standing in for the network: the live intensity APIs (JSON by route), a
Pushgateway, and (tests/fakes/hostile_http.py) servers that misbehave on purpose."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple

import pytest

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
CREDENTIAL_VARS = ("CARBONRUN_ELECTRICITYMAPS_TOKEN", "CARBONRUN_WATTTIME_USER", "CARBONRUN_WATTTIME_PASSWORD")


class Loopback:
    """A threaded server on 127.0.0.1 (or `host`); subclasses answer in `respond`. Every GET and PUT is
    recorded in `requests` as (path, headers); a PUT's body is read first and kept in `bodies`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: List[Tuple[str, Any]] = []
        self.bodies: List[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.path, self.headers))
                try:
                    outer.respond(self)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def do_PUT(self) -> None:  # noqa: N802
                outer.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def paths(self) -> List[str]:
        return [p for p, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Server(Loopback):
    """Routes: path -> (status, body) or (status, body, delay_s); the exact path wins, else the longest
    prefix. A body is JSON-encoded, sent as is when a str, or called with the request path."""

    def __init__(self) -> None:
        self.routes: Dict[str, Tuple[Any, ...]] = {}
        super().__init__()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        status, body, delay = self.answer(handler.path.split("?", 1)[0])
        if delay:
            time.sleep(delay)
        body = body(handler.path) if callable(body) else body
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    def answer(self, path: str) -> Tuple[int, Any, float]:
        match = path if path in self.routes else max((p for p in self.routes if path.startswith(p)),
                                                      key=len, default=None)
        if match is None:
            return 404, {"error": "no route"}, 0.0
        status, body, *delay = self.routes[match]
        return status, body, (delay[0] if delay else 0.0)


class Pushgateway(Loopback):
    """A Pushgateway stand-in: accepts each PUT and records (method, path, Content-Type, body) in `seen`."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, str, str, str]] = []
        super().__init__()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        self.seen.append((handler.command, handler.path, handler.headers["Content-Type"], self.bodies[-1].decode()))
        handler.send_response(200)
        handler.end_headers()



def isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy between a client and the loopback servers, and no real provider credentials in the env."""
    for var in (*PROXY_VARS, *CREDENTIAL_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
