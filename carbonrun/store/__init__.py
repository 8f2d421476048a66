"""Pick the run store from one spec: an SQLite file path, or a postgresql:// URL (a shared database)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(spec: Optional[str]) -> bool:
    return bool(spec) and str(spec).lower().startswith(URL_SCHEMES)


def open_store(spec: Optional[str]):
    """A Store (SQLite) for a path or None (the default file), a PgStore for a postgresql:// URL.

    Nothing is connected here: the caller decides when (and a writer to PostgreSQL may spool).
    """
    if is_url(spec):
        from carbonrun.store.postgres import PgStore

        return PgStore(str(spec))
    from carbonrun.store.sqlite import Store, default_path

    return Store(Path(spec) if spec else default_path())


def redact(url: str) -> str:
    """The URL without its password, for messages, notes and spool files."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
