"""A throw-away git worktree of a ref, for gates whose baseline is the same command at another commit.

`git worktree add --detach` shares the object store, so it costs a checkout, not a clone; the
worktree lives in a temporary directory and is removed however the gate ends.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

from carbonrun.gate.stats import GateError


class SetupFailed(Exception):
    """The --setup command failed in the worktree: the gate exits 3, like a failing command."""


@dataclass
class Worktree:
    ref: str
    commit: str
    root: str  # the worktree's top directory
    cwd: str  # where the baseline runs: the worktree's counterpart of the current directory


def _git(args: List[str], cwd: str) -> str:
    try:
        p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise GateError("--vs-ref needs git, and git is not installed") from None
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        raise GateError(f"git {' '.join(args[:2])} failed: {lines[-1] if lines else f'exit {p.returncode}'}")
    return p.stdout.strip()


@contextmanager
def worktree(ref: str, cwd: str, setup: Optional[str], run_setup: Callable[[List[str], str], int]
             ) -> Iterator[Worktree]:
    """Check REF out in a temporary worktree, run `setup` there, yield it, and always remove it.

    `run_setup(argv, cwd) -> exit code` runs the setup command (the caller spawns it the way it
    spawns measured commands); a non-zero exit raises SetupFailed.
    """
    try:
        top = _git(["rev-parse", "--show-toplevel"], cwd)
    except GateError:
        raise GateError(f"--vs-ref {ref}: {cwd} is not inside a git repository") from None
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top)
    except GateError:
        raise GateError(f"--vs-ref {ref}: no such commit, branch or tag in {top} "
                        "(in CI, fetch it first: git fetch origin main)") from None
    tmp = tempfile.mkdtemp(prefix="carbonrun-ref-")
    root = os.path.join(tmp, "tree")
    try:
        _git(["worktree", "add", "--detach", "--quiet", root, commit], top)
        here = os.path.join(root, os.path.relpath(os.path.realpath(cwd), os.path.realpath(top)))
        if not os.path.isdir(here):
            raise GateError(f"--vs-ref {ref}: {os.path.relpath(cwd, top)} does not exist at {commit[:12]}")
        if setup:
            code = run_setup(["sh", "-c", setup], here)
            if code != 0:
                raise SetupFailed(f"--setup failed in the worktree of {ref} (exit {code}): {setup}")
        yield Worktree(ref, commit, root, here)
    finally:
        try:
            _git(["worktree", "remove", "--force", root], top)
        except GateError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _git(["worktree", "prune"], top)
        except GateError:
            pass
