"""Pick the run store from one spec: an SQLite file path, or a postgresql:// URL (a shared database)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from carbonrun.redact import redact  # noqa: F401  (the old place of the name)

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

