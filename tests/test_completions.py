"""Shell completion: the committed scripts are current, and click's protocol completes run ids."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gen():
    spec = importlib.util.spec_from_file_location("gen_completions", ROOT / "scripts" / "gen_completions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_completions_are_current():
    g = gen()
    files = g.expected()
    assert sorted(p.name for p in files) == ["_carbonrun", "carbonrun.bash", "carbonrun.fish"]
    for path, text in files.items():
        assert path.is_file(), f"{path} missing: run python scripts/gen_completions.py"
        assert path.read_text() == text, f"{path.name} is stale: run python scripts/gen_completions.py"


def test_scripts_call_back_into_carbonrun():
    comp = ROOT / "completions"
    assert (comp / "_carbonrun").read_text().startswith("#compdef carbonrun")
    assert "complete -o nosort -F _carbonrun_completion carbonrun" in (comp / "carbonrun.bash").read_text()
    assert "--command carbonrun" in (comp / "carbonrun.fish").read_text()
    for name in ("_carbonrun", "carbonrun.bash", "carbonrun.fish"):
        assert "_CARBONRUN_COMPLETE=" in (comp / name).read_text()


def test_check_mode_flags_a_stale_file(tmp_path):
    g = gen()
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("same\n")
    bad.write_text("old\n")
    assert g.stale({good: "same\n", bad: "new\n", tmp_path / "missing": "x"}) == [bad, tmp_path / "missing"]


def complete(cli, words: str, cword: int, shell: str = "bash") -> list:
    p = cli(env={"_CARBONRUN_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode().splitlines()


def test_run_ids_complete_after_runs(cli):
    assert "plain,last" in complete(cli, "carbonrun report ", 2)  # nothing stored: still no error
    for _ in range(2):
        assert cli("--quiet", "true").returncode == 0
    out = complete(cli, "carbonrun report ", 2)
    assert {"plain,1", "plain,2", "plain,last"} <= set(out)
    assert complete(cli, "carbonrun report 2", 2) == ["plain,2"]


def test_run_ids_complete_in_zsh(cli):
    cli("--quiet", "true")
    out = complete(cli, "carbonrun report ", 2, shell="zsh")
    assert "1" in out and "last" in out


@pytest.mark.parametrize("prefix, expected", [("doc", "plain,doctor"), ("conf", "plain,config")])
def test_subcommands_complete(cli, prefix, expected):
    assert expected in complete(cli, f"carbonrun {prefix}", 1)


def test_top_level_completes_the_run_options(cli):
    out = complete(cli, "carbonrun --re", 1)
    assert "plain,--region" in out
    after = complete(cli, "carbonrun --region FR --pu", 3)
    assert {"plain,--pue", "plain,--pushgateway"} <= set(after)


def test_report_formats_and_sweep_objectives_complete(cli):
    formats = complete(cli, "carbonrun report --format ", 3)
    assert {"plain,html", "plain,statement", "plain,latex", "plain,codecarbon"} <= set(formats)
    assert complete(cli, "carbonrun report --format h", 3) == ["plain,html"]
    objectives = complete(cli, "carbonrun sweep --objective ", 3)
    assert {"plain,energy", "plain,time", "plain,edp"} <= set(objectives)
