"""Writing files safely: atomically, privately, and only over files that are ours to replace.

Every path carbonrun writes (the store, --json, -o, spool, baselines, sweep state, Prometheus
textfiles) goes through here. A device, FIFO, socket, directory, symbolic link or another user's
file is refused with one line naming what it is; it is never opened for writing, never chmodded and
never waited on (lstat first; O_NOFOLLOW and O_NONBLOCK where a file must be opened).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Union

PathLike = Union["os.PathLike[str]", str]
DEV_NULL = "/dev/null"

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


class RefusedPath(OSError):
    """A path carbonrun will not write: the message names what it is and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.strerror = message  # callers that print e.strerror show the whole reason

    def __str__(self) -> str:
        return self.strerror


def kind(mode: int) -> str:
    """What a file is, in words ('a character device', 'a FIFO (named pipe)', ... or 'a regular file')."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file"


def is_dev_null(path: PathLike) -> bool:
    """The null device, by name or by a link to it: writing there means keeping nothing."""
    p = os.fspath(path)
    if p == DEV_NULL:
        return True
    try:
        st, null = os.stat(p), os.stat(DEV_NULL)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def check_replaceable(path: PathLike) -> Optional[os.stat_result]:
    """None when nothing is at `path`, its lstat when it is a regular file of ours; else RefusedPath."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise RefusedPath(f"{os.fspath(path)} is {kind(st.st_mode)}, not a file carbonrun may write:"
                          " refused, left untouched")
    if st.st_uid != os.geteuid():
        raise RefusedPath(f"{os.fspath(path)} belongs to another user (uid {st.st_uid}): refused, left untouched")
    return st


def private_dirs(directory: PathLike) -> Path:
    """Create missing directories 0700 (whatever the umask); an existing one is never chmodded."""
    d = Path(directory)
    missing = [p for p in [d, *d.parents] if not os.path.lexists(p)]
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
            os.chmod(p, 0o700)  # we just made it: the umask may have widened nothing, but be sure
        except FileExistsError:
            pass
    return d


def write_atomic(path: PathLike, text: str, mode: int = 0o600, fsync: bool = False) -> None:
    """Write through a temporary file in the same directory, then rename over `path`.

    Only a missing path or a regular file of ours is replaced (RefusedPath otherwise); `/dev/null`
    takes nothing and is left alone. The temporary name starts with a dot and ends in .tmp, so
    collectors that glob for *.prom or *.json never pick it up. `fsync` makes the content durable
    before the rename (spooled runs).
    """
    import tempfile

    if is_dev_null(path):
        return
    check_replaceable(path)
    directory = os.path.dirname(os.fspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".carbonrun.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # our own temporary file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_head(path: PathLike, size: int) -> bytes:
    """The first bytes of a regular file, opened without following a link and without blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RefusedPath(f"{os.fspath(path)} is {kind(os.fstat(fd).st_mode)}: refused, left untouched")
        return os.read(fd, size)
    finally:
        os.close(fd)


def create_private(path: PathLike) -> bool:
    """Create an empty file 0600 that did not exist (never through a link); False when it existed."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        return False
    return True
