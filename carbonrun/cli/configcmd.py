"""`carbonrun config`: the settings a run would use, and which layer each came from.

Debugging configuration is mostly a question of precedence ("why is my region ignored?"), so every
value is shown with its source: flag, env CARBONRUN_*, project file, user file or default.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import click

from carbonrun import config as config_mod
from carbonrun import settings
from carbonrun.cli.run import flag_values, run_options
from carbonrun.redact import redact_text
from carbonrun.sanitize import terminal
from carbonrun.store.sqlite import default_path


def config_files(env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None) -> Dict[str, Any]:
    """The config files that apply here: the project file found (or None) and the user file."""
    env = dict(os.environ) if env is None else env
    labels = [label for label, _ in config_mod.load_layers(cwd or os.getcwd(), env)]
    project = next((label.split(" ", 1)[1] for label in labels if label.startswith("project ")), None)
    user = config_mod.user_config_path(env)
    return {"project": project, "user": user, "user_exists": os.path.isfile(user)}


def _shown(value: Any) -> str:
    """A value as a user would type it in a config file, without its passwords."""
    return terminal(redact_text(_typed(value)))


def _typed(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def effective(name: str) -> str:
    """What a run does when a setting is not set: the effective default, in words."""
    if name == "store":
        return str(default_path())
    return {"region": "from the time zone, else world", "intensity": "from the region",
            "intensity-file": "none", "provider": "none (no network)", "provider-url": "the provider's own",
            "json": "none", "scc": "120,190,340 (US EPA)", "start-within": "start at once",
            "expected-duration": "median of earlier runs", "prometheus-textfile": "none",
            "pushgateway": "none"}.get(name, "none")


def render_text(rows: List[Tuple[str, Any, str]], files: Dict[str, Any]) -> str:
    """Aligned plain text: name, value (the effective default when unset), source; then the files consulted."""
    shown = [(name, effective(name) if value is None else _shown(value), source) for name, value, source in rows]
    width = max(len(name) for name, _, _ in shown)
    vwidth = min(40, max(len(v) for _, v, _ in shown))
    lines = [f"{name:<{width}}  {value:<{vwidth}}  {source}".rstrip() for name, value, source in shown]
    user = files["user"] + ("" if files["user_exists"] else " (absent)")
    lines += ["", f"project file: {files['project'] or '(none found from here upwards)'}", f"user file:    {user}",
              "precedence:   flag > env CARBONRUN_* > project file > user file > default"]
    return "\n".join(lines) + "\n"


def to_json(rows: List[Tuple[str, Any, str]], files: Dict[str, Any]) -> str:
    settings = {name: {"value": redact_text(value) if isinstance(value, str) else value, "source": source,
                       "layer": source.split(" ", 1)[0]}
                for name, value, source in rows}
    return json.dumps({"settings": settings, "files": files}, indent=2) + "\n"


@click.command(epilog="Examples:\n\n  carbonrun config\n\n  carbonrun config --region FR\n\n"
                      "  CARBONRUN_PUE=1.2 carbonrun config --json")
@run_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {settings: {name: {value, source, layer}}, files}.")
@click.pass_context
def config(ctx: click.Context, /, as_json: bool, **params: Any) -> int:
    """Show the effective settings and where each came from.

    Sources, highest first: a flag given here, an env variable CARBONRUN_<NAME>, the project file
    (carbonrun.toml or [tool.carbonrun] in pyproject.toml, nearest upwards), the user file
    ($XDG_CONFIG_HOME/carbonrun/config.toml), the default. Run options given here are shown as
    `flag`, so you can check what `carbonrun run` with them would use.
    """
    st = settings.resolve(flag_values(ctx, params))
    rows = config_mod.explain(st)
    files = config_files()
    sys.stdout.write(to_json(rows, files) if as_json else render_text(rows, files))
    return 0
