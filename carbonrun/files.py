"""Writing a file so that readers see the old one or the new one, never half of either."""
from __future__ import annotations

import os


def write_atomic(path: "os.PathLike[str] | str", text: str, mode: int = 0o600, fsync: bool = False) -> None:
    """Write through a temporary file in the same directory, then rename over `path`.

    The temporary name starts with a dot and ends in .tmp, so collectors that glob for *.prom or
    *.json never pick it up. `fsync` makes the content durable before the rename (spooled runs).
    """
    import tempfile

    directory = os.path.dirname(os.fspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".carbonrun.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
