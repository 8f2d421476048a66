"""Loopback HTTP servers: one answering JSON (the live intensity APIs), one recording pushes (a Pushgateway)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple


class Server:
    """Routes: path -> (status, body) or (status, body, delay_s); the exact path wins, else the longest
    prefix. A body is JSON-encoded, sent as is when a str, or called with the request path. Every
    request (path, headers) is recorded."""

    def __init__(self) -> None:
        self.routes: Dict[str, Tuple[Any, ...]] = {}
        self.requests: List[Tuple[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append((self.path, self.headers))
                status, body, delay = server.answer(self.path.split("?", 1)[0])
                if delay:
                    time.sleep(delay)
                body = body(self.path) if callable(body) else body
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path: str) -> Tuple[int, Any, float]:
        match = path if path in self.routes else max((p for p in self.routes if path.startswith(p)),
                                                      key=len, default=None)
        if match is None:
            return 404, {"error": "no route"}, 0.0
        status, body, *delay = self.routes[match]
        return status, body, (delay[0] if delay else 0.0)

    def paths(self) -> List[str]:
        return [p for p, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Pushgateway:
    """A Pushgateway stand-in: accepts each PUT and records (method, path, Content-Type, body)."""

    def __init__(self) -> None:
        seen: List[Tuple[str, str, str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                seen.append((self.command, self.path, self.headers["Content-Type"], body.decode()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
