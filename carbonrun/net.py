"""carbonrun's HTTP client: every request bounded in total time and size, credentials kept to their origin.

stdlib urllib underneath (a handful of small requests per run do not justify a dependency), with what
urllib lacks: a deadline for the whole request (its timeout bounds each socket read, so a server
sending one byte a second would hold the caller for ever), a size limit, and redirects that drop
credential headers when they leave the origin the user configured. Imported only when a live
provider or a Pushgateway is configured.
"""
from __future__ import annotations

import ipaddress
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Tuple

MAX_BODY = 8 << 20  # the APIs answer a few kB; a server streaming more is not an intensity provider
CREDENTIAL_HEADERS = ("authorization", "auth-token", "proxy-authorization", "cookie", "x-api-key")


class TooLarge(OSError):
    """The answer went past MAX_BODY."""


def _origin(url: str) -> Tuple[str, str, Optional[int]]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def credential_problem(url: str) -> Optional[str]:
    """Why credentials must not go to `url` (None when they may): https only, but for loopback."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "the URL is malformed"
    if parts.scheme.lower() == "https":
        return None
    if parts.scheme.lower() == "http" and is_loopback(host):
        return None
    return "credentials travel only over https (plain http only to a loopback address)"


def redirect_handler() -> Any:
    """A redirect handler that drops credential headers when the redirect leaves the origin
    (scheme, host, port), as browsers and curl do, and follows only http(s)."""

    class SameOriginCredentials(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            target = urllib.parse.urljoin(req.full_url, newurl)
            if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
                raise urllib.error.HTTPError(target, code, "redirect to a scheme other than http(s)", headers, fp)
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and _origin(target) != _origin(req.full_url):
                for name in list(new.headers):
                    if name.lower() in CREDENTIAL_HEADERS:
                        del new.headers[name]
                for name in list(new.unredirected_hdrs):
                    if name.lower() in CREDENTIAL_HEADERS:
                        del new.unredirected_hdrs[name]
            return new

    return SameOriginCredentials


def http_get(url: str, headers: Mapping[str, str], timeout: float, max_bytes: int = MAX_BODY,
             method: str = "GET", data: Optional[bytes] = None) -> bytes:
    """GET (or `method` with `data`) `url`, answer in hand within `timeout` seconds in all (connect,
    headers and body together).

    urllib's timeout bounds each socket read, so a server sending one byte a second would hold a
    caller for ever; the request runs on a daemon thread instead, and a late one is abandoned (its
    socket timeout and MAX_BODY still end it). Redirects keep credentials within the origin.
    """
    deadline = time.monotonic() + timeout
    box: Dict[str, Any] = {}

    def work() -> None:
        try:
            box["body"] = _read_all(url, headers, deadline, timeout, max_bytes, method, data)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=work, name="carbonrun-http", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]
    body: bytes = box["body"]
    return body


def _read_all(url: str, headers: Mapping[str, str], deadline: float, timeout: float, max_bytes: int,
              method: str, data: Optional[bytes]) -> bytes:
    opener = urllib.request.build_opener(redirect_handler())
    req = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    chunks: List[bytes] = []
    size = 0
    with opener.open(req, timeout=timeout) as resp:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("timed out")
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge()
            chunks.append(chunk)
