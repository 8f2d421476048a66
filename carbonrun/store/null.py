"""The store that keeps nothing: `--no-store`, `store = "none"`, `CARBONRUN_STORE=none`, `--store /dev/null`.

A run is measured, printed and exported as usual; no record is written anywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional

from carbonrun.store.base import NoStore, Record, Store, Summary, writable

if TYPE_CHECKING:
    from carbonrun.record import RunRecord

class NullStore(Store):
    kind = "none"
    where = "store none: runs are not kept"

    def connect(self, create: bool = True) -> None:
        if not create:
            raise NoStore("no runs are kept (--no-store, store = \"none\" or /dev/null): nothing to read")

    def close(self) -> None:
        pass

    def begin(self, record: "RunRecord", started_ts: float) -> Optional[int]:
        writable(record)["id"] = None
        return None

    def save(self, record: "RunRecord") -> None:
        pass

    def keep_aside(self, record: "RunRecord", text: Optional[str] = None) -> Path:  # never reached: saving cannot fail
        raise OSError("no store")

    def delete(self, ids: Iterable[int]) -> int:
        return 0

    def get(self, ref: str) -> Record:
        self.connect(create=False)
        raise KeyError(ref)

    def query(self, *, limit: Optional[int] = None, tags: Optional[Dict[str, str]] = None,
              command: Optional[str] = None, status: Optional[str] = None, since_ts: Optional[float] = None,
              job: Optional[str] = None, brief: bool = False, summary: bool = False) -> List[Record]:
        self.connect(create=False)
        return []

    def summaries(self, *, limit: Optional[int] = None, tags: Optional[Dict[str, str]] = None,
                  command: Optional[str] = None, status: Optional[str] = None, since_ts: Optional[float] = None,
                  job: Optional[str] = None) -> List[Summary]:
        self.connect(create=False)
        return []

    def count(self) -> int:
        return 0

    def ids(self, prefix: str = "") -> List[str]:
        return []

    def prune_ids(self, keep: Optional[int] = None, older_than_days: Optional[float] = None,
                  now: Optional[float] = None) -> List[int]:
        return []
