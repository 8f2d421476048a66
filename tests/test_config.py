"""Config files: discovery, precedence through settings.resolve, and errors that point at the line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from carbonrun import config, settings
from carbonrun.errors import CarbonrunError


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(home: Path) -> Dict[str, str]:
    """An isolated environment: nothing from the real HOME or XDG_CONFIG_HOME can leak in."""
    return {"HOME": str(home)}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def user_file(home: Path, text: str) -> Path:
    return write(home / ".config" / "carbonrun" / "config.toml", text)


def test_five_levels_of_precedence(tmp_path: Path, home: Path, env: Dict[str, str]) -> None:
    proj = tmp_path / "proj"
    pfile = write(proj / "carbonrun.toml", """
        interval = 0.5
        pue = 1.2
        region = "DE"
    """)
    ufile = user_file(home, """
        interval = 0.9
        pue = 1.3
        region = "US"
        quiet = true
    """)
    env.update(CARBONRUN_INTERVAL="0.3", CARBONRUN_PUE="1.4")
    s = settings.resolve({"interval": ("0.2", "flag")}, env, str(proj))

    assert (s.interval, s.sources["interval"]) == (0.2, "flag")                      # flag > env
    assert (s.pue, s.sources["pue"]) == (1.4, "env CARBONRUN_PUE")                   # env > project
    assert (s.region, s.sources["region"]) == ("DE", f"project {pfile}")             # project > user
    assert (s.quiet, s.sources["quiet"]) == (True, f"user {ufile}")                  # user > default
    assert (s.live, s.sources["live"]) == (True, "default")


def test_walks_up_past_pyproject_without_our_table(tmp_path: Path, env: Dict[str, str]) -> None:
    root = write(tmp_path / "repo" / "pyproject.toml", """
        [project]
        name = "x"

        [tool.carbonrun]
        region = "FR"
    """)
    write(tmp_path / "repo" / "pkg" / "pyproject.toml", """
        [project]
        name = "carbonrun-plugin"

        [tool.black]
        line-length = 100
    """)
    nested = tmp_path / "repo" / "pkg" / "src" / "deep"
    nested.mkdir(parents=True)

    assert config.load_layers(str(nested), env) == [(f"project {root}", {"region": "FR"})]


def test_nearest_project_file_wins(tmp_path: Path, env: Dict[str, str]) -> None:
    write(tmp_path / "carbonrun.toml", 'region = "FR"\npue = 1.5\n')
    inner = write(tmp_path / "sub" / "pyproject.toml", '[tool.carbonrun]\nregion = "SE"\n')

    layers = config.load_layers(str(tmp_path / "sub"), env)
    # Only one project layer: the outer file's pue is not merged in.
    assert layers == [(f"project {inner}", {"region": "SE"})]


def test_carbonrun_toml_beats_pyproject_in_same_dir(tmp_path: Path, env: Dict[str, str]) -> None:
    own = write(tmp_path / "carbonrun.toml", 'region = "PL"\n')
    write(tmp_path / "pyproject.toml", '[tool.carbonrun]\nregion = "NO"\n')

    s = settings.resolve({}, env, str(tmp_path))
    assert (s.region, s.sources["region"]) == ("PL", f"project {own}")


def test_dash_and_underscore_keys(tmp_path: Path, env: Dict[str, str]) -> None:
    write(tmp_path / "carbonrun.toml", 'intensity-file = "ci.csv"\nrapl_root = "/x"\n')
    [(_, table)] = config.load_layers(str(tmp_path), env)
    assert table == {"intensity_file": "ci.csv", "rapl_root": "/x"}

    write(tmp_path / "carbonrun.toml", 'intensity-file = "a.csv"\nintensity_file = "b.csv"\n')
    with pytest.raises(CarbonrunError, match=r"carbonrun.toml:2: intensity-file is set twice"):
        config.load_layers(str(tmp_path), env)


def test_malformed_file_names_file_and_line(tmp_path: Path, env: Dict[str, str]) -> None:
    path = write(tmp_path / "carbonrun.toml", 'region = "FR"\npue = 1.2\ninterval 0.5\n')
    with pytest.raises(CarbonrunError) as e:
        config.load_layers(str(tmp_path), env)
    msg = str(e.value)
    assert msg.startswith(f"{path}:3: invalid TOML")
    assert "\n" not in msg and "(at line" not in msg
    assert e.value.exit_code == 2


def test_malformed_user_file(tmp_path: Path, home: Path, env: Dict[str, str]) -> None:
    path = user_file(home, 'pue = [1.2\n')  # error "at end of document": reported as the last line
    with pytest.raises(CarbonrunError, match=rf"^{re.escape(str(path))}:1: invalid TOML: Unclosed array$"):
        config.load_layers(str(tmp_path), env)


def test_unknown_key_names_file_line_key_and_suggestion(tmp_path: Path, env: Dict[str, str]) -> None:
    path = write(tmp_path / "pyproject.toml", """
        [project]
        name = "demo"
        intervall = "not ours: another table may use any key"

        [tool.carbonrun]
        region = "FR"
        intervall = 0.5
    """)
    with pytest.raises(CarbonrunError) as e:
        config.load_layers(str(tmp_path), env)
    assert str(e.value) == (f"{path}:7: unknown setting 'intervall' in [tool.carbonrun]; "
                            "did you mean 'interval'?")
    assert e.value.exit_code == 2


def test_unknown_key_suggestion_keeps_spelling_and_finds_headers(tmp_path: Path, home: Path,
                                                                 env: Dict[str, str]) -> None:
    path = user_file(home, 'pue = 1.1\n\n[intensity-fil]\nx = 1\n')
    with pytest.raises(CarbonrunError, match=rf"^{re.escape(str(path))}:3: unknown setting 'intensity-fil' .*"
                                             r"did you mean 'intensity-file'\?$"):
        config.load_layers(str(tmp_path), env)

    user_file(home, 'zzzzzz = 1\n')
    with pytest.raises(CarbonrunError) as e:
        config.load_layers(str(tmp_path), env)
    assert "'zzzzzz'" in str(e.value) and "did you mean" not in str(e.value)


def test_tags_table_and_list(tmp_path: Path, home: Path, env: Dict[str, str]) -> None:
    write(tmp_path / "pyproject.toml", """
        [tool.carbonrun.tags]
        team = "ml"
        run = 3
    """)
    assert settings.resolve({}, env, str(tmp_path)).tags == {"team": "ml", "run": "3"}

    user_file(home, 'tags = ["a=1", "b=x=y"]\n')
    elsewhere = tmp_path / "elsewhere"  # no project file above it (home is under tmp_path too)
    write(elsewhere / "carbonrun.toml", "")
    assert settings.resolve({}, env, str(elsewhere)).tags == {"a": "1", "b": "x=y"}


def test_providers_pass_through(tmp_path: Path, env: Dict[str, str]) -> None:
    write(tmp_path / "pyproject.toml", """
        [tool.carbonrun]
        provider = "electricitymaps"

        [tool.carbonrun.providers.electricitymaps]
        token = "secret"
    """)
    env["CARBONRUN_TRUSTED_PROJECTS"] = str(tmp_path)  # a project may choose the provider only when trusted
    [(_, table)] = config.load_layers(str(tmp_path), env)
    assert table["providers"] == {"electricitymaps": {"token": "secret"}}

    s = settings.resolve({}, env, str(tmp_path))
    assert s.provider == "electricitymaps" and "providers" not in s.values and not s.warnings

    path = write(tmp_path / "pyproject.toml", '[tool.carbonrun]\nproviders = "uk"\n')
    with pytest.raises(CarbonrunError, match=rf"^{re.escape(str(path))}:2: providers must be a table"):
        config.load_layers(str(tmp_path), env)


def test_bad_value_error_names_the_layer(tmp_path: Path, env: Dict[str, str]) -> None:
    path = write(tmp_path / "carbonrun.toml", "[interval]\nevery = 1\n")
    with pytest.raises(CarbonrunError, match=rf"invalid interval .*\(project file {re.escape(str(path))}:1\)"):
        settings.resolve({}, env, str(tmp_path))


def test_xdg_config_home_overrides_home(tmp_path: Path, home: Path, env: Dict[str, str]) -> None:
    user_file(home, 'region = "US"\n')
    xdg = write(tmp_path / "xdg" / "carbonrun" / "config.toml", 'region = "JP"\n')
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    assert config.load_layers(str(tmp_path), env) == [(f"user {xdg}", {"region": "JP"})]

    env["XDG_CONFIG_HOME"] = "relative/dir"  # ignored, as the XDG spec says
    assert config.load_layers(str(tmp_path), env)[0][1] == {"region": "US"}


def test_no_files_means_no_layers_and_no_toml_import(tmp_path: Path, env: Dict[str, str]) -> None:
    # A pyproject that never mentions carbonrun is skipped without parsing.
    write(tmp_path / "pyproject.toml", '[project]\nname = "other"\n')
    assert config.load_layers(str(tmp_path), env) == []

    code = ("import sys; from carbonrun import config; "
            f"assert config.load_layers({str(tmp_path)!r}, {env!r}) == []; "
            "print(sorted(m for m in ('tomllib', 'tomli', 'difflib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "[]"


def test_explain_lists_every_setting_with_its_source(tmp_path: Path, env: Dict[str, str]) -> None:
    path = write(tmp_path / "carbonrun.toml", 'rapl-root = "/r"\n')
    rows = config.explain(settings.resolve({}, env, str(tmp_path)))
    assert len(rows) == len(settings.SPECS)
    assert ("rapl-root", "/r", f"project {path}") in rows
    assert ("pue", 1.0, "default") in rows
