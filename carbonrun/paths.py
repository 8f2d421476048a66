"""Where carbonrun keeps its files: the XDG base directories, once.

CARBONRUN_HOME, when set, holds the store and the state together (one place to point a test, a CI job
or a container at). Every function takes the environment as a mapping, so tests and `env -i` runs stay
isolated; HOME is read from it before the password database.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Mapping, Optional

APP = "carbonrun"
_DEFAULTS = {"XDG_CONFIG_HOME": ".config", "XDG_DATA_HOME": ".local/share", "XDG_STATE_HOME": ".local/state",
             "XDG_CACHE_HOME": ".cache"}


def _env(env: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if env is None else env


def home(env: Optional[Mapping[str, str]] = None) -> Path:
    return Path(_env(env).get("HOME") or os.path.expanduser("~"))


def xdg(variable: str, env: Optional[Mapping[str, str]] = None) -> Path:
    """The base directory an XDG variable names, or its default under HOME.

    The spec says to ignore an empty or relative value, so a stray `XDG_DATA_HOME=data` cannot scatter
    files relative to wherever a command happens to run.
    """
    value = _env(env).get(variable, "")
    return Path(value) if os.path.isabs(value) else home(env) / _DEFAULTS[variable]


def carbonrun_home(env: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    value = _env(env).get("CARBONRUN_HOME")
    return Path(value) if value else None


def config_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    """The user's configuration: $XDG_CONFIG_HOME/carbonrun."""
    return xdg("XDG_CONFIG_HOME", env) / APP


def data_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    """The run store and its spool: CARBONRUN_HOME, else $XDG_DATA_HOME/carbonrun."""
    return carbonrun_home(env) or xdg("XDG_DATA_HOME", env) / APP


def state_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    """State that must survive a crash (a sweep's original power limits): CARBONRUN_HOME, else XDG state."""
    return carbonrun_home(env) or xdg("XDG_STATE_HOME", env) / APP


def cache_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    """Answers that can be fetched again (live intensity): $XDG_CACHE_HOME/carbonrun."""
    return xdg("XDG_CACHE_HOME", env) / APP


def kept_dirs(env: Optional[Mapping[str, str]] = None) -> List[Path]:
    """Where a record the store could not take is kept aside, in order: `kept` in the data directory;
    only when that cannot be written, in the XDG state directory (often another file system), then in
    a private directory under $TMPDIR or /tmp. `carbonrun sync` looks in each."""
    tmp = _env(env).get("TMPDIR", "")
    tmp_dir = Path(tmp if os.path.isabs(tmp) and os.path.isdir(tmp) else "/tmp") / f"{APP}-{os.geteuid()}"
    out: List[Path] = []
    for d in (data_dir(env), xdg("XDG_STATE_HOME", env) / APP, tmp_dir):
        if d / "kept" not in out:
            out.append(d / "kept")
    return out


def runtime_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    """Node-local and private (launcher locks): $XDG_RUNTIME_DIR/carbonrun, else /tmp/carbonrun-UID."""
    runtime = _env(env).get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return Path(runtime) / APP
    return Path("/tmp") / f"{APP}-{os.getuid()}"
