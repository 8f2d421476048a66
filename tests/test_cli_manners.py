"""Terminal manners: colour only on a terminal without NO_COLOR, one-line errors, --version, examples."""
from __future__ import annotations

import json
import os
import pty
import subprocess

import pytest

from carbonrun import __version__
from carbonrun.cli.app import COMMANDS, LazyGroup

ESC = b"\x1b["


def in_terminal(cli, *args: str, no_color: bool, timeout: float = 120) -> bytes:
    """Run carbonrun with stdout and stderr on a pseudo-terminal; returns what the terminal showed."""
    env = {k: v for k, v in cli.env.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"
    if no_color:
        env["NO_COLOR"] = "1"
    master, slave = pty.openpty()
    proc = subprocess.Popen(cli.argv(*args), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env,
                            cwd=cli.home)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.wait(timeout)
    return out


# ------------------------------------------------------------------------------------------ colour


def test_summary_colour_only_on_a_terminal_without_no_color(cli):
    no_env = {k: v for k, v in cli.env.items() if k != "NO_COLOR"}
    piped = subprocess.run(cli.argv("--no-live", "true"), capture_output=True, env=no_env, cwd=cli.home)
    assert piped.returncode == 0 and b"CO2eq" in piped.stderr and ESC not in piped.stderr  # not a terminal
    assert ESC in in_terminal(cli, "--no-live", "true", no_color=False)  # so the test can tell
    shown = in_terminal(cli, "--no-live", "true", no_color=True)
    assert b"CO2eq" in shown and ESC not in shown


def test_report_table_colour(cli):
    assert cli("--quiet", "true").returncode == 0
    piped = cli("report", "last")
    assert piped.returncode == 0 and b"emissions" in piped.stdout and ESC not in piped.stdout
    assert ESC in in_terminal(cli, "report", "last", no_color=False)
    shown = in_terminal(cli, "report", "last", no_color=True)
    assert b"emissions" in shown and ESC not in shown


def test_doctor_colour(cli):
    piped = cli("doctor", "--gpus", "none")
    assert b"Energy sources" in piped.stdout and ESC not in piped.stdout
    assert ESC in in_terminal(cli, "doctor", "--gpus", "none", no_color=False)
    shown = in_terminal(cli, "doctor", "--gpus", "none", no_color=True)
    assert b"Run store" in shown and ESC not in shown


# ------------------------------------------------------------------------------------------ errors


def one_line_error(p: subprocess.CompletedProcess, code: int = 2) -> str:
    err = p.stderr.decode()
    assert p.returncode == code, err
    assert b"Traceback" not in p.stderr
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carbonrun: error: "), err
    return lines[0]


def test_unknown_region(cli):
    line = one_line_error(cli("--region", "Atlantis", "--quiet", "true"))
    assert "unknown region 'Atlantis'" in line and "carbonrun intensity --list" in line
    assert cli("report", "last").returncode != 0  # nothing ran, nothing stored


def test_near_miss_region_suggests(cli):
    line = one_line_error(cli("--region", "Frence", "--quiet", "true"))
    assert "did you mean" in line and "FR" in line


@pytest.mark.parametrize("value, says", [("abc", "invalid interval 'abc' (flag)"), ("0", "at least 0.001")])
def test_bad_interval(cli, value, says):
    line = one_line_error(cli("--interval", value, "--quiet", "true"))
    assert says in line


def test_bad_interval_from_env_names_the_variable(cli):
    line = one_line_error(cli("--quiet", "true", env={"CARBONRUN_INTERVAL": "soon"}))
    assert "env CARBONRUN_INTERVAL" in line


@pytest.mark.parametrize("command", [["--quiet", "true"], ["config"], ["doctor"]])
def test_corrupt_config_names_file_and_line(cli, command):
    path = cli.home / "carbonrun.toml"
    path.write_text('region = "FR"\ninterval = [\n')
    line = one_line_error(cli(*command))
    assert f"{path}:" in line and "invalid TOML" in line


def test_misspelt_config_key_suggests(cli):
    (cli.home / "carbonrun.toml").write_text('regoin = "FR"\n')
    line = one_line_error(cli("config"))
    assert "carbonrun.toml:1: unknown setting 'regoin'" in line and "'region'" in line


def test_debug_shows_the_traceback(cli):
    p = cli("--debug", "--region", "Atlantis", "--quiet", "true")
    assert p.returncode != 0 and b"Traceback" in p.stderr and b"Atlantis" in p.stderr


def test_usage_error_exits_2(cli):
    p = cli("doctor", "--no-such-option")
    assert p.returncode == 2 and b"No such option" in p.stderr and b"Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------ help


def test_version(cli):
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.decode().strip() == f"carbonrun, version {__version__}"


def test_group_help_has_examples(cli):
    p = cli("--help")
    assert p.returncode == 0, p.stderr.decode()
    assert b"Examples" in p.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_help_has_examples(cli, name):
    if LazyGroup._load(name) is None:
        pytest.skip(f"`carbonrun {name}` is not built yet")
    p = cli(name, "--help")
    assert p.returncode == 0, p.stderr.decode()
    assert b"Examples" in p.stdout, f"`carbonrun {name} --help` has no Examples section"


# ------------------------------------------------------------------------------------------ usage manners


@pytest.mark.parametrize("args, says", [
    (["report", "--format"], "'carbonrun report --help'"),
    (["report", "--format", "nope"], "choose from table, json"),
    (["compare", "1"], "Missing argument 'B'"),
    (["rm"], "Missing argument"),
    (["--pue", "1.1", "--bogus", "true"], "'carbonrun run --help'"),
    (["history", "--status", "lost"], "'carbonrun history --help'"),
    (["prune", "--older-than", "1d"], "'1d' is not a valid number"),
    (["history", "--limit", "x"], "'x' is not a valid integer ("),
])
def test_click_usage_errors_are_one_line_with_where_to_look(cli, args, says):
    line = one_line_error(cli(*args))
    assert says in line and "Usage:" not in line and "--help" in line


def test_bare_carbonrun_and_a_bad_tag_are_one_clear_line(cli):
    assert "nothing to run" in one_line_error(cli()) and "carbonrun --help" in one_line_error(cli())
    line = one_line_error(cli("--tag", "novalue", "--", "true"))
    assert "'novalue' is not K=V" in line and "***" not in line  # not mistaken for a secret by the redaction
    assert "is not K=V" in one_line_error(cli("history", "--tag", "novalue"))


def test_unknown_run_id_exits_2_with_a_hint(cli):
    assert cli("--quiet", "true").returncode == 0
    line = one_line_error(cli("report", "99"))
    assert "no run '99'" in line and "carbonrun history" in line


def test_options_before_a_subcommand(cli, tmp_path):
    store = str(tmp_path / "elsewhere.sqlite")
    p = cli("--quiet", "run", "--", "true")
    assert p.returncode == 0 and len(p.stderr.decode().splitlines()) == 1, p.stderr.decode()  # the one-line summary
    assert cli("--store", store, "--quiet", "run", "true").returncode == 0
    shown = cli("--store", store, "report", "last", "--format", "json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["command"] == ["true"]
    assert cli.record()["command"] == ["true"]  # the default store got the first run only
    line = one_line_error(cli("--region", "FR", "report", "last"))
    assert "does not take --region" in line


def test_a_near_subcommand_that_is_no_program_suggests_it_and_stores_nothing(cli):
    line = one_line_error(cli("reprot", "last"))
    assert "did you mean 'carbonrun report'" in line and "carbonrun run -- reprot" in line
    assert "no runs stored yet" in one_line_error(cli("report", "last"), code=1)


def test_a_command_that_never_started_is_not_the_last_run_intensity_compares(cli):
    assert cli("--quiet", "--region", "FR", "true").returncode == 0
    missing = cli("--quiet", "run", "--", "no-such-program-carbonrun")
    assert missing.returncode == 127
    assert cli.record()["exit_code"] == 127  # stored, as every run is
    p = cli("intensity", "--compare", "FR", "DE", "--json")
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout)["run"] == cli.record("-2")["id"]


def test_report_format_from_the_output_extension(cli):
    assert cli("--quiet", "true").returncode == 0
    for name, check in (("run.html", "<!DOCTYPE html>"), ("run.json", '"schema"'), ("run.md", "| Energy |"),
                        ("run.csv", "id,uuid,"), ("run.tex", "\\footnote{")):
        assert cli("report", "-o", name).returncode == 0
        assert check in (cli.home / name).read_text(), name
    assert cli("report", "-o", "run.html", "--format", "json").returncode == 0  # an explicit format wins
    assert (cli.home / "run.html").read_text().startswith("{")
    for args, name, check in ((["history"], "runs.csv", "id,uuid,"), (["history"], "runs.json", '"schema"'),
                              (["compare", "last", "last"], "c.json", '"metrics"')):
        assert cli(*args, "-o", name).returncode == 0
        assert check in (cli.home / name).read_text(), name


def test_config_shows_effective_defaults(cli):
    p = cli("config")
    assert p.returncode == 0, p.stderr.decode()
    assert "(not set)" not in p.stdout.decode()
    rows = {line.split()[0]: line for line in p.stdout.decode().splitlines() if line.strip()}
    assert "120,190,340 (US EPA)" in rows["scc"] and "runs.sqlite" in rows["store"]
    assert "time zone" in rows["region"]
