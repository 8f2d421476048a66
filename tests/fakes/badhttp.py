"""Loopback HTTP servers that misbehave the way real ones do: hang, drip, redirect forever.

Each accepts on 127.0.0.1, serves every connection on its own daemon thread, and stops (closing what
it holds) on close(). Bounded: a connection is held or dripped for at most `hold_s`.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import List


class BadServer:
    """mode: "hang" (reads the request, never answers), "drip" (headers, then one body byte every
    `drip_s`), "redirect" (302 to itself, for ever)."""

    def __init__(self, mode: str, hold_s: float = 20.0, drip_s: float = 0.5) -> None:
        assert mode in ("hang", "drip", "redirect")
        self.mode, self.hold_s, self.drip_s = mode, hold_s, drip_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._open: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.mode == "redirect":
                conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {self.url}/intensity?again\r\n"
                             "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
                return
            if self.mode == "drip":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            end = time.monotonic() + self.hold_s
            while time.monotonic() < end and not self._stop.wait(self.drip_s):
                if self.mode == "drip":
                    conn.sendall(b" ")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._open:
            try:
                conn.close()
            except OSError:
                pass
