"""TOML configuration files with provenance: the nearest project file, then the user file.

Project layer: walking up from cwd, the first directory holding a `carbonrun.toml` (the whole file is
the table; it wins over a pyproject.toml beside it) or a `pyproject.toml` with a `[tool.carbonrun]`
table. A pyproject.toml without that table does not stop the walk, so a sub-package's pyproject does
not hide the settings of the repository around it.
User layer: `$XDG_CONFIG_HOME/carbonrun/config.toml` (default `$HOME/.config/carbonrun/config.toml`).

Keys are the setting names of settings.SPECS, spelled with `-` or `_`. Values pass through raw:
settings.resolve converts them and puts the layer label in its errors. The one other key is
`providers`, a table of per-provider tables (tokens, ...): resolve reads only SPECS names, so it never
sees it; the live providers read it from the layer dicts. The user file may also hold
`trusted-projects`, the project directories allowed to choose destinations (DESTINATIONS).
"""
from __future__ import annotations

import os
import re
import stat
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

from carbonrun.errors import CarbonrunError
from carbonrun import paths

Layer = Tuple[str, Dict[str, Any]]
CONFIG_MAX_BYTES = 1 << 20
PYPROJECT_SECTION = "tool.carbonrun"


def load_layers(cwd: str, env: Mapping[str, str], warnings: Optional[List[str]] = None) -> List[Layer]:
    """Config layers, highest precedence first: [(label, {setting: raw value})].

    The label ("project /p/carbonrun.toml", "user /h/.config/carbonrun/config.toml") is what
    `carbonrun config` shows as a setting's source. A project file's destinations are dropped unless
    the user trusts the project (see `_untrusted`); why goes to `warnings` when a list is given.
    """
    layers: List[Layer] = []
    user = user_config_path(env)
    user_table: Dict[str, Any] = {}
    if os.path.isfile(user):
        text = _read(user)
        user_table = _settings(user, text, _parse(user, text), None)
    project = _project_layer(cwd)
    if project is not None:
        path = project[0].split(" ", 1)[1]
        foreign = _foreign_owner(path)
        if foreign is not None and not trusted(os.path.dirname(path), user_table, env):
            if warnings is not None:  # as git refuses a repository owned by someone else
                warnings.append(f"ignored the project file {path}: it belongs to another user (uid {foreign}); "
                                f"to use it, add trusted-projects = [\"{os.path.dirname(path)}\"] to {user} "
                                f"or set {TRUST_ENV}={os.path.dirname(path)}")
        else:
            dropped = _untrusted(project, user_table, env, user, cwd)
            if warnings is not None:
                warnings.extend(dropped)
            layers.append(project)
    if os.path.isfile(user):
        layers.append((f"user {user}", user_table))
    return layers


# Settings that choose where carbonrun sends data or credentials. A project file is written by whoever
# wrote the repository one runs in, so (as git ignores repository config that would run programs) it may
# choose these only for a project the user trusts: in `trusted-projects` of the user file, or in
# CARBONRUN_TRUSTED_PROJECTS (directories, separated by os.pathsep; "*" trusts every project).
DESTINATIONS = ("provider", "provider_url", "pushgateway", "store")
_PROVIDER_DESTINATIONS = ("base_url", "base-url", "url")
OUTPUTS = ("json", "prometheus_textfile")  # a project file may point these inside the project only
TRUST_KEY = "trusted_projects"
TRUST_ENV = "CARBONRUN_TRUSTED_PROJECTS"


def _foreign_owner(path: str) -> Optional[int]:
    """The owner's uid when the file is neither ours nor root's (None otherwise)."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return None
    return None if uid in (os.geteuid(), 0) else uid


def _inside(directory: str, path: str) -> bool:
    top, here = os.path.realpath(directory), os.path.realpath(path)
    return here == top or here.startswith(top.rstrip(os.sep) + os.sep)


def trusted(project_dir: str, user_table: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """Whether the user trusts the project directory (or one above it) to choose destinations."""
    listed = user_table.get(TRUST_KEY) or []
    entries = [str(x) for x in listed] if isinstance(listed, list) else [str(listed)]
    entries += [e for e in env.get(TRUST_ENV, "").split(os.pathsep) if e]
    return any(entry == "*" or _inside(os.path.expanduser(entry), project_dir) for entry in entries)


def _untrusted(project: Layer, user_table: Mapping[str, Any], env: Mapping[str, str], user: str,
               cwd: str) -> List[str]:
    """Remove the destinations an untrusted project file sets (in place); one warning for each."""
    from carbonrun.store import is_none, is_url  # only when a project file sets destinations

    label, table = project
    path = label.split(" ", 1)[1]
    directory = os.path.dirname(path)
    dropped: List[str] = []
    if TRUST_KEY in table:
        del table[TRUST_KEY]
        dropped.append("trusted-projects")
    def local(value: str) -> bool:
        return _inside(directory, os.path.join(cwd, os.path.expanduser(value)))

    if not trusted(directory, user_table, env):
        for name in DESTINATIONS:  # a local store is the project's choice while it stays inside the project
            value = str(table.get(name))
            if name in table and (name != "store" or is_url(value) or not (is_none(value) or local(value))):
                del table[name]
                dropped.append(name.replace("_", "-"))
        for name in OUTPUTS:  # files written: inside the project, so a clone cannot overwrite ~/.bashrc
            if name in table and not local(str(table[name])):
                del table[name]
                dropped.append(name.replace("_", "-"))
        for provider, options in (table.get("providers") or {}).items():
            for key in _PROVIDER_DESTINATIONS:
                if isinstance(options, dict) and key in options:
                    del options[key]
                    dropped.append(f"providers.{provider}.{key}")
    if not dropped:
        return []
    return [f"ignored {', '.join(dropped)} from the project file {path}: a project file may not choose where "
            "carbonrun sends data or credentials, nor write files outside the project; to trust it, add "
            f"trusted-projects = [\"{directory}\"] to {user} or set {TRUST_ENV}={directory}"]


def user_config_path(env: Mapping[str, str]) -> str:
    """XDG location; HOME comes from `env` first so tests and `env -i` runs stay isolated."""
    return str(paths.config_dir(env) / "config.toml")


def explain(settings: Any) -> List[Tuple[str, Any, str]]:
    """(name as spelled in files and flags, value, source label) for every setting, in SPECS order."""
    from carbonrun.settings import SPECS  # settings imports this module

    return [(name.replace("_", "-"), settings.values.get(name), settings.sources.get(name, "default"))
            for name in SPECS]


def locate(label: str, name: str) -> str:
    """"path:line" of setting `name` in the file of a layer label ("project /p/carbonrun.toml"), for
    errors; re-reading the file is fine, as this runs only when a value is refused."""
    path = label.split(" ", 1)[1] if " " in label else label
    try:
        text = _read(path)
    except CarbonrunError:
        return path
    section = PYPROJECT_SECTION if os.path.basename(path) == "pyproject.toml" else None
    for key in dict.fromkeys((name.replace("_", "-"), name)):
        line = _line_of(text, key, section)
        if line != "?":
            return f"{path}:{line}"
    return path


def _project_layer(cwd: str) -> Optional[Layer]:
    directory = os.path.abspath(cwd)
    while True:
        path = os.path.join(directory, "carbonrun.toml")
        if os.path.isfile(path):
            text = _read(path)
            return f"project {path}", _settings(path, text, _parse(path, text), None)
        path = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(path):
            text = _read(path)
            # Cheap test first: most pyprojects never mention us, and then TOML is not even imported.
            if "carbonrun" in text:
                tool = _parse(path, text).get("tool")
                if isinstance(tool, dict) and "carbonrun" in tool:
                    return f"project {path}", _settings(path, text, tool["carbonrun"], PYPROJECT_SECTION)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def read_limited(path: str, limit: int, encoding: str = "utf-8") -> str:
    """A regular file's text, at most `limit` bytes. A file named by a project (or a link in a cloned
    repository) may be a FIFO that never answers or /dev/zero that never ends: neither may hold or
    exhaust carbonrun, so the file is opened without blocking and must be regular and small."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit >> 20} MiB")
    return data.decode(encoding)


def _read(path: str) -> str:
    try:
        return read_limited(path, CONFIG_MAX_BYTES)
    except (OSError, UnicodeDecodeError) as e:
        raise CarbonrunError(f"{path}: cannot read config file: {e}") from None


def _parse(path: str, text: str) -> Dict[str, Any]:
    """TOML, imported only here: start-up without a config file never pays for it."""
    if sys.version_info >= (3, 11):
        import tomllib  # TOML only when a config file exists
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib  # TOML only when a config file exists
    try:
        data: Dict[str, Any] = tomllib.loads(text)
        return data
    except RecursionError:
        raise CarbonrunError(f"{path}: invalid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        reason = str(e)
        m = re.search(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$", reason)
        if m is None:
            raise CarbonrunError(f"{path}: invalid TOML: {reason}") from None
        line = m.group(1) or max(1, len(text.splitlines()))  # "end of document": the last line
        where, reason = f"{path}:{line}", reason[:m.start()]
        raise CarbonrunError(f"{where}: invalid TOML: {reason}") from None


def _settings(path: str, text: str, table: Any, section: Optional[str]) -> Dict[str, Any]:
    """Check the keys (typos should fail loudly, not be ignored) and normalise `-` to `_`."""
    from carbonrun.settings import SPECS  # settings imports this module

    name = f"[{section}]" if section else "the file"
    if not isinstance(table, dict):
        raise CarbonrunError(f"{path}: {section or 'the config'} must be a table of settings")
    out: Dict[str, Any] = {}
    spelled: Dict[str, str] = {}
    for key, value in table.items():
        norm = key.replace("-", "_")
        if norm in SPECS and norm not in spelled:  # the common case: no line lookup needed
            spelled[norm], out[norm] = key, value
            continue
        where = f"{path}:{_line_of(text, key, section)}"
        if norm not in ("providers", TRUST_KEY) and norm not in SPECS:
            raise CarbonrunError(f"{where}: unknown setting {key!r} in {name}{_suggest(key, SPECS)}")
        if norm == "providers" and not isinstance(value, dict):
            prefix = f"{section}." if section else ""
            raise CarbonrunError(f"{where}: providers must be a table, like [{prefix}providers.electricitymaps]")
        if norm in spelled:
            raise CarbonrunError(f"{where}: {norm.replace('_', '-')} is set twice "
                                 f"(as {spelled[norm]!r} and {key!r})")
        spelled[norm] = key
        out[norm] = value
    return out


def _suggest(key: str, specs: Mapping[str, Any]) -> str:
    import difflib  # only for a typo

    norm = key.replace("-", "_")
    close = difflib.get_close_matches(norm, [*specs, "providers"], n=1, cutoff=0.6)
    if not close:
        return "; `carbonrun config` lists the settings"
    return f"; did you mean {close[0] if '_' in key else close[0].replace('_', '-')!r}?"


def _line_of(text: str, key: str, section: Optional[str]) -> str:
    """The line defining `key` (as `key = `, `key.x = `, or a `[...key]` header), searched from the
    section header on; "?" when it cannot be found (unusual quoting)."""
    lines = text.splitlines()
    start = 0
    if section:
        header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, section.split("."))) + r"\s*[\].]")
        start = next((i for i, line in enumerate(lines) if header.match(line)), 0)
    pattern = re.compile(r"""^\s*(?:\[+\s*)?(?:[\w\-"'. ]*\.\s*)?["']?""" + re.escape(key) + r"""["']?\s*[=.\]]""")
    for order in (range(start, len(lines)), range(0, start)):
        for i in order:
            if pattern.match(lines[i]):
                return str(i + 1)
    return "?"
