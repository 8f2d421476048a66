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
    """A path carbonrun will not write. `strerror` says why ("it is a FIFO ..."), for callers that
    print "cannot write PATH: {e.strerror}"; str() names the path too."""

    def __init__(self, path: PathLike, why: str) -> None:
        super().__init__(why)
        self.path, self.why = os.fspath(path), why
        self.strerror = f"it is {why}: refused, left untouched"

    def __str__(self) -> str:
        return f"{self.path} is {self.why}: refused, left untouched"


def kind(mode: int) -> str:
    """What a file is, in words ('a character device', 'a FIFO (named pipe)', ... or 'a regular file')."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file"


def is_dev_null(path: PathLike) -> bool:
    """/dev/null, by name or through links: writing there means keeping nothing. (Any other device,
    even one with the same numbers, is refused like every device.)"""
    return os.path.realpath(os.fspath(path)) == DEV_NULL


def check_replaceable(path: PathLike) -> Optional[os.stat_result]:
    """None when nothing is at `path`, its lstat when it is a regular file of ours; else RefusedPath."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise RefusedPath(path, f"{kind(st.st_mode)}, not a regular file")
    if st.st_uid != os.geteuid():
        raise RefusedPath(path, f"a file of another user (uid {st.st_uid})")
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
    import tempfile  # tempfile (and random) only when a file is written

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
            raise RefusedPath(path, kind(os.fstat(fd).st_mode))
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


def append_text(path: PathLike, text: str) -> None:
    """Append to a regular file of ours (a CI step summary), or create it 0600; never through a link,
    never into a device or a FIFO (RefusedPath), never blocking."""
    if is_dev_null(path):
        return
    check_replaceable(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the check: write nothing
            raise RefusedPath(path, kind(os.fstat(fd).st_mode))
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
