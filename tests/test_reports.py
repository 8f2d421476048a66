"""Report formats from real runs: CSV, Markdown, HTML and CodeCarbon's emissions.csv."""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from carbonrun.report import compare, csvfmt, html as htmlfmt, latex, markdown, statement, table, units
from tests.fakes.records import gpu_run

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
    legend = page[page.index('<div class="legend">'):page.index("<svg")]
    series = list(rec["timeline"]["watts"])
    assert series and len(rec["timeline"]["t"]) >= 5
    assert svg.count("<path") == len(series)
    for name in series:  # every series estimated here: dashed, and the legend says so
        assert re.search(rf">{name}  mean ~\d+\.\d W \(estimated\)<", legend), name
    assert svg.count('stroke-dasharray="6 4"') == len(series) and "Dashed lines are estimates" in page
    assert "time since start" in svg and "power (W)" in svg and ">1 s<" in svg
    assert "This work contributed an estimated" in page and "-specific" not in page
    assert "global social cost of carbon" in page
    assert rec["host"]["name"] in page and "Energy per component" in page
    assert all(htmlfmt.esc(n) in page for n in rec["notes"])


def test_html_one_series_per_device_shares_and_embodied():
    page = htmlfmt.render(gpu_run())
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert svg.count("<path") == 4 and "<title>gpu 0</title>" in svg and "<title>gpu 1</title>" in svg
    assert "stroke-dasharray" not in svg and "Dashed lines" not in page  # measured: solid lines
    assert re.search(r">gpu 0  mean 300\.\d W<", page) and re.search(r">gpu 1  mean 2\d\d\.\d W<", page)
    shares = [int(x) for x in re.findall(r"<b>(\d+)%</b>", page)]
    assert shares == [13, 2, 51, 35]  # the number on each share bar: cpu, dram, gpu 0, gpu 1 of 11,880 J
    assert "Embodied carbon" in page and "~520 mg CO2eq" in page and "not in the emissions above" in page


def test_html_names_whose_social_cost_it_is():
    rec = gpu_run()
    assert "US EPA global SCC $190/t" in htmlfmt.render(rec)
    rec["social_cost_usd"] = {**rec["social_cost_usd"], "basis": "user-supplied: $50/t (low), $100/t (central),"
                              " $150/t (high)"}
    page = htmlfmt.render(rec)
    assert "user-supplied SCC" in page and "US EPA global SCC" not in page


def test_html_without_timeline_says_so():
    rec = {"id": 1, "command": ["true"], "status": "completed", "energy": {"total_kwh": 0, "machine_kwh": 0},
           "emissions": {"kg": 0, "low_kg": 0, "high_kg": 0}, "timeline": {"t": [], "watts": {}}}
    page = htmlfmt.render(rec)
    assert "<svg" not in page and "No power timeline" in page


def test_nice_ticks_are_round_and_cover_the_peak():
    assert htmlfmt.nice_ticks(9.5) == [0, 2, 4, 6, 8, 10]
    assert htmlfmt.nice_ticks(312) == [0, 100, 200, 300, 400]
    assert htmlfmt.nice_ticks(0) == [0.0, 1.0]


def _chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--hide-scrollbars", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", *args],
                          capture_output=True, timeout=120)


def _png_size(path) -> tuple:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _pdf_pages(path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_in_a_browser_text_screenshot_and_one_printed_page(cli, tmp_path):
    measured(cli, "--region", "FR")
    page = tmp_path / "report.html"
    assert cli("report", "last", "-o", str(page)).returncode == 0  # html from the extension
    dom = _chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path).stdout.decode()
    assert "<svg" in dom and "Carbon impact statement" in dom and "This work contributed" in dom
    assert "<script" not in dom.lower()
    shot = tmp_path / "700.png"
    _chromium(f"--screenshot={shot}", "--window-size=700,1800", page.as_uri(), tmp_path=tmp_path)
    width, height = _png_size(shot)
    assert (width, height) == (700, 1800) and shot.stat().st_size > 40_000  # a page was drawn, not a blank
    pdf = tmp_path / "print.pdf"
    _chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri(), tmp_path=tmp_path)
    assert _pdf_pages(pdf) == 1  # the print stylesheet fits a simple run on one A4 page


# -- figures: precision and units ------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-12, max_value=1e12, allow_nan=False), st.integers(min_value=2, max_value=4))
def test_figures_never_use_exponents_and_keep_their_significant_digits(x, digits):
    text = units.sig(x, digits)
    assert "e" not in text.lower()
    shown = text.replace(",", "")
    assert float(shown) == pytest.approx(x, rel=10 ** (1 - digits))
    for fmt in (units.energy, units.mass):
        out = fmt(x, digits)
        assert "e" not in out.split()[0].lower() and out.split()[1] in ("J", "Wh", "kWh", "mg", "g", "kg")


def test_units_scale_and_precision_follow_uncertainty():
    assert units.joules(396.0, 2) == "400 J" and units.joules(3600.0) == "1.000 Wh"
    assert units.energy(12.3456) == "12.35 kWh" and units.mass(0.0000000469) == "0.04690 mg"
    assert units.mass(0.5, 2) == "500 g" and units.mass(1234.6) == "1,235 kg"
    assert units.digits_for(1.0, 0.5, 1.5) == 2 and units.digits_for(1.0, 1.0, 1.0) == 4
    assert units.usd(1.6e-9) == "< $0.000001" and units.usd(0.0000384) == "$0.000038" and units.usd(2.5) == "$2.50"
    assert units.span(units.energy, 0.00011, 0.000055, 0.000165, 2) == "~400 J (200 to 590 J)"
    assert units.span(units.mass, 0.0011, 0.0011, 0.0011, 4) == "1.100 g"  # an exact figure has no range
    assert [units.duration(s) for s in (9.999, 59.99, 60, 3599.6)] == ["10.0 s", "1m00s", "1m00s", "1h00m00s"]


# -- the carbon impact statement -------------------------------------------------------------------------
def test_statement_of_an_estimated_run_says_estimate_and_names_the_global_scc(cli):
    measured(cli, "--region", "FR")
    text = report(cli, "statement")
    sentence, method = text.split("\n\n")
    assert "This work contributed an estimated" in sentence and " to " in sentence  # the range
    assert "less than $0.000001" in sentence and "e-0" not in text and "e+" not in text
    assert "-specific" not in text and "US EPA's global social cost of carbon (December 2023" in method
    assert "$190 per tonne CO2 at a 2.0% discount rate (central), $120 at 2.5% and $340 at 1.5%" in method
    assert "estimated from utilisation" in method and "PUE 1" in method and "for France" in method


def test_statement_of_a_measured_run_with_embodied_carbon_in_every_format():
    rec = gpu_run()
    f = statement.facts(rec)
    sentence, method = statement.sentence(f), statement.method(f)
    assert sentence.startswith("This work contributed 203.3 mg of CO2eq to the atmosphere and used 3.630 Wh")
    assert "estimated" not in sentence.split(". Its share")[0]  # counters: exact, no range
    assert "embodied carbon, not included above) is an estimated 520 mg" in sentence
    assert "RAPL energy counters (CPU package, DRAM)" in method and "2 x NVIDIA A100-SXM4-80GB" in method
    assert "PUE 1.10" in method and "Embodied carbon: SCI M" in method
    tex = latex.render(rec)
    assert "\\footnote{" in tex and "CO$_2$eq" in tex and "\\$0.000039" in tex and "520~mg" in tex
    assert "Embodied" in markdown.render(rec) and "~520 mg" in htmlfmt.render(rec)


def test_statement_of_a_failed_and_a_never_started_run(cli):
    p = cli("--quiet", "--", "python3", "-c", "raise SystemExit(3)")
    assert p.returncode == 3
    assert "(a run that failed with exit code 3 after" in report(cli, "statement")
    assert cli("--quiet", "run", "--", "no-such-program-carbonrun").returncode == 127
    text = report(cli, "statement")
    assert text.startswith("The command never started (exit code 127: not found)") and "unknown" not in text
    assert "never started" in report(cli, "table")
    md = report(cli, "markdown")
    assert "never started (not found, exit 127)" in md and "| Energy |" not in md  # no table of zeros
    assert "exact counters" not in report(cli, "html")
    cmp = cli("compare", "-2", "last").stdout.decode()
    assert "B #2 not started: no-such-program-carbonrun" in cmp and "A #1 failed" in cmp, cmp


# -- the terminal summary --------------------------------------------------------------------------------
def test_default_summary_is_short_unwrapped_and_says_each_fact_once(cli):
    p = cli("--no-live", "--", "python3", "-c", "sum(range(10**6))")
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stderr.decode().splitlines()
    assert len(lines) <= 12, lines
    assert all(line == line.rstrip() for line in lines)  # no hard wrapping with trailing spaces in a log
    text = "\n".join(lines)
    assert text.count("g/kWh") == 1 and text.count("world average") == 1
    assert "basis" not in text.lower() and "2.5%" not in text  # the SCC basis is for --verbose and report
    assert sum(line.startswith("notes") for line in lines) == 1 and "carbonrun report" in text
    verbose = cli("--no-live", "--verbose", "true").stderr.decode()
    assert "SCC basis" in verbose and "usage" in verbose and "intensity" in verbose
    assert re.search(r"whole machine ~\d", verbose), verbose  # the machine's figure is an estimate too
    assert "SCC basis" in report(cli, "table")


def test_summary_at_40_columns_shows_every_value_whole():
    rec = gpu_run()
    wide, narrow = table.render(rec, width=0), table.render(rec, width=40)
    assert all(len(line) <= 40 for line in narrow.splitlines()), narrow
    assert "\u2026" not in narrow and "..." not in narrow
    for figure in ("1,500 J", "6,000 J", "4,200 J", "3.630 Wh", "203.3 mg", "$0.000039", "~520 mg"):
        assert figure in wide and figure in narrow, figure  # never cut or wrapped inside a figure


def test_brief_notes_never_cut_inside_parentheses_nor_hide_where_the_record_went():
    rec = gpu_run()
    rec["id"] = None
    rec["notes"] = ["the run store postgresql://u:***@db/x was unreachable (connection failed: refused);"
                    " the run was kept in /home/u/spool until `carbonrun sync` sends it",
                    "tool broke (error: bad thing) here: the long details nobody needs in a summary"]
    text = table.render(rec, width=0)
    assert "kept in /home/u/spool until `carbonrun sync`" in text
    assert text.startswith("carbonrun run (kept for `carbonrun sync`) completed") and "not stored" not in text
    from carbonrun.report import oneline

    assert oneline.render(rec).endswith("run kept for `carbonrun sync`")
    rec["notes"] = []  # --no-store: kept nowhere
    assert "run (not stored)" in table.render(rec, width=0) and oneline.render(rec).endswith("run not stored")
    assert "tool broke (error: bad thing) here" in text and "nobody needs" not in text


def test_compare_puts_each_row_in_one_unit_and_marks_estimates():
    a, b = gpu_run(), gpu_run()
    b["id"] = 8
    b["energy"]["total_kwh"] = a["energy"]["total_kwh"] * 1000
    for c in b["components"]:
        c.update(estimated=True, low_j=c["job_j"] * 0.5, high_j=c["job_j"] * 1.5)
    rows = {line.split("  ")[0]: line.split() for line in compare.render_table(a, b, width=0).splitlines()[3:]}
    assert rows["energy"][1:] == ["3.630", "Wh", "~3,600", "Wh", "1,000x"]  # one unit per row, B an estimate
    assert compare.render_table(a, b, width=0).rstrip().endswith("~ estimated")
    assert "~" not in compare.render_table(a, gpu_run(), width=0)


def test_the_readme_summary_is_what_the_tool_prints(cli):
    """The README shows a plain estimated run: the same lines, in the same order, as a run here prints."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("$ carbonrun --region FR python3 -c", 1)[1].split("\n$ ", 1)[0].splitlines()[1:]
    p = cli("--no-live", "--region", "FR", "--", "python3", "-c", "sum(i * i for i in range(3 * 10**6))")
    assert p.returncode == 0, p.stderr.decode()
    printed = p.stderr.decode().splitlines()

    def heads(lines):
        return [line.split()[0] for line in lines if line and not line.startswith(" ")]

    assert heads(printed) == heads(block), (printed, block)
