"""Report formats from real runs: CSV, Markdown, HTML and CodeCarbon's emissions.csv."""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tempfile

import pytest

from carbonrun.report import csvfmt, html as htmlfmt, markdown

EVIL = "<script>alert(1)</script>"
# The columns of CodeCarbon's emissions.csv (CodeCarbon 2.x docs, "Data Fields Logged for Each Experiment",
# and the file it writes), in the file's order.
CODECARBON_COLUMNS = [
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate", "cpu_power", "gpu_power",
    "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed", "country_name", "country_iso_code",
    "region", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version", "cpu_count",
    "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude", "ram_total_size", "tracking_mode", "on_cloud",
    "pue",
]


def measured(cli, *options: str, script: str = "import time; t = time.time()\nwhile time.time() - t < 1.2: pass",
             cwd=None) -> dict:
    """A real run whose command line carries markup, pipes and backticks."""
    p = cli("--quiet", *options, "--", "python3", "-c", script + f"  # {EVIL} | `x` |", cwd=cwd)
    assert p.returncode == 0, p.stderr.decode()
    return cli.record()


def report(cli, fmt: str, *extra: str) -> str:
    p = cli("report", "last", "--format", fmt, *extra)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


# -- CSV -------------------------------------------------------------------------------------------------
def test_csv_has_a_stable_header_and_the_run(cli):
    rec = measured(cli, "--region", "FR", "--tag", "project=paper")
    rows = list(csv.DictReader(io.StringIO(report(cli, "csv"))))
    assert len(rows) == 1
    row = rows[0]
    assert list(row)[:8] == ["id", "uuid", "started_at", "ended_at", "duration_s", "status", "exit_code", "command"]
    assert list(row) == list(csvfmt.COLUMNS)
    assert row["command"] == " ".join(rec["command"]) and row["tags"] == "project=paper"
    assert float(row["total_kwh"]) == rec["energy"]["total_kwh"] and row["region"] == "FR"
    counted = sum(float(row[f"{c}_kwh"]) for c in csvfmt.COMPONENTS)
    assert counted == pytest.approx(rec["energy"]["job_kwh"], rel=1e-3)


# -- Markdown --------------------------------------------------------------------------------------------
def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_markdown_escapes_the_command_line(cli):
    measured(cli, "--region", "FR")
    text = report(cli, "markdown")
    assert "CO2eq" in text and "| Energy |" in text
    command_line = next(line for line in text.splitlines() if line.startswith("Command:"))
    assert _unescaped_pipes(command_line) == 0 and re.search(r"(?<!\\)`", command_line) is None
    assert "<script>" not in text and "&lt;script&gt;" in text
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        assert len({_unescaped_pipes(ln) for ln in lines}) <= 1, block  # every row has the header's cells


def test_markdown_cell_escaping():
    assert markdown.cell("a|b`c`\nd") == "a\\|b\\`c\\` d"


# -- CodeCarbon ------------------------------------------------------------------------------------------
def test_codecarbon_export_has_exactly_the_documented_columns_and_units(cli):
    rec = measured(cli, "--region", "FR", "--pue", "1.5", "--tag", "project=paper")
    reader = csv.DictReader(io.StringIO(report(cli, "codecarbon")))
    assert reader.fieldnames == CODECARBON_COLUMNS
    (row,) = list(reader)
    assert row["run_id"] == rec["uuid"] and row["project_name"] == "paper"
    assert float(row["duration"]) == rec["duration_s"]
    assert float(row["emissions"]) == pytest.approx(rec["emissions"]["kg"])
    assert float(row["emissions_rate"]) == pytest.approx(rec["emissions"]["kg"] / rec["duration_s"])
    energy = float(row["energy_consumed"])  # kWh, PUE included, as CodeCarbon's
    assert energy == pytest.approx(rec["energy"]["total_kwh"], rel=1e-3)
    assert energy == pytest.approx(sum(float(row[f"{k}_energy"]) for k in ("cpu", "gpu", "ram")))
    cpu_j = sum(c["job_j"] for c in rec["components"] if c["component"] == "cpu")
    assert float(row["cpu_power"]) == pytest.approx(cpu_j / rec["duration_s"])  # mean W
    assert (row["country_name"], row["country_iso_code"], row["on_cloud"]) == ("France", "FRA", "N")
    assert row["tracking_mode"] == "process" and float(row["pue"]) == 1.5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", row["timestamp"])


def test_codecarbon_cloud_region(cli):
    measured(cli, "--region", "aws:us-east-1", script="pass")
    (row,) = list(csv.DictReader(io.StringIO(report(cli, "codecarbon"))))
    assert (row["cloud_provider"], row["cloud_region"], row["on_cloud"]) == ("aws", "us-east-1", "Y")


# -- HTML ------------------------------------------------------------------------------------------------
def test_html_escapes_everything_from_the_record(cli, tmp_path):
    cwd = tmp_path / "<b onmouseover=alert(3)>cwd"
    cwd.mkdir()
    measured(cli, "--tag", "k=<img src=x onerror=alert(2)>", cwd=cwd)
    page = report(cli, "html")
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<b onmouseover" not in page and "&lt;b onmouseover=alert(3)&gt;cwd" in page


def test_html_is_self_contained(cli):
    measured(cli)
    page = report(cli, "html").lower()
    for outside in ("<script", "<link", "src=", "url(", "@import", "http://", "https://", "<iframe"):
        assert outside not in page, outside
    assert page.startswith("<!doctype html>") and "<style>" in page


def test_html_chart_axes_legend_and_sections(cli):
    rec = measured(cli, "--region", "FR")
    page = report(cli, "html")
    svg = page[page.index("<svg"):page.index("</svg>")]
    comps = list(rec["timeline"]["watts"])
    assert comps and len(rec["timeline"]["t"]) >= 5
    assert svg.count("<path") == len(comps)
    for comp in comps:
        assert re.search(rf">{comp}  mean \d+\.\d W<", svg), comp  # legend entry with its mean power
    assert "time since start" in svg and "power (W)" in svg and ">1 s<" in svg
    assert "This work contributed" in page and "France-specific" in page
    assert rec["host"]["name"] in page and "Energy per component" in page
    assert all(htmlfmt.esc(n) in page for n in rec["notes"])


def test_html_without_timeline_says_so():
    rec = {"id": 1, "command": ["true"], "status": "completed", "energy": {"total_kwh": 0, "machine_kwh": 0},
           "emissions": {"kg": 0, "low_kg": 0, "high_kg": 0}, "timeline": {"t": [], "watts": {}}}
    page = htmlfmt.render(rec)
    assert "<svg" not in page and "No power timeline" in page


def test_nice_ticks_are_round_and_cover_the_peak():
    assert htmlfmt.nice_ticks(9.5) == [0, 2, 4, 6, 8, 10]
    assert htmlfmt.nice_ticks(312) == [0, 100, 200, 300, 400]
    assert htmlfmt.nice_ticks(0) == [0.0, 1.0]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_html_parses_in_a_browser_without_script_nodes(cli, tmp_path):
    measured(cli)
    page = tmp_path / "report.html"
    assert cli("report", "last", "-f", "html", "-o", str(page)).returncode == 0
    p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--dump-dom", page.as_uri()],
                       capture_output=True, timeout=120)
    dom = p.stdout.decode()
    assert "<svg" in dom and "Carbon impact statement" in dom
    assert "<script" not in dom.lower()
