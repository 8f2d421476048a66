"""Pick the run store from one spec: an SQLite file path, a postgresql:// URL (a shared database), or
`none` / `/dev/null` (keep nothing). Every store implements `carbonrun.store.base.Store`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from carbonrun.redact import redact  # noqa: F401  (the old place of the name)
from carbonrun.files import is_dev_null

if TYPE_CHECKING:
    from carbonrun.store.base import Store

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(spec: Optional[str]) -> bool:
    return bool(spec) and str(spec).lower().startswith(URL_SCHEMES)


def is_none(spec: Optional[str]) -> bool:
    """`none` or the null device: measure, keep nothing."""
    if not spec:
        return False
    text = str(spec).strip()
    if text.lower() == "none":
        return True
    return is_dev_null(text)


def open_store(spec: Optional[str]) -> "Store":
    """The store a spec names (None: the default file). Nothing is connected here: the caller decides
    when (and a writer to PostgreSQL may spool)."""
    if is_none(spec):
        from carbonrun.store.null import NullStore  # each store loads only when chosen

        return NullStore()
    if is_url(spec):
        from carbonrun.store.postgres import PgStore  # psycopg only for a postgresql:// store

        return PgStore(str(spec))
    from carbonrun.store.sqlite import SqliteStore, default_path  # sqlite3 only when a store is opened

    return SqliteStore(Path(str(spec)) if spec else default_path())
