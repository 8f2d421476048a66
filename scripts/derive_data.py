#!/usr/bin/env python3
"""Derive carbonrun's packaged tables (carbonrun/data/) from the shared reference tables.

Why a script: the packaged CSVs must be reproducible from the sources, keep each row's (or each file's)
source and licence, and stay small. Nothing in carbonrun reads the shared tables at run or test time;
run this once after the shared data changes and commit its outputs.

    python scripts/derive_data.py [SHARED_DATA_DIR] [--out carbonrun/data]
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Dict, Iterable, List

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "carbonrun" / "data"

COUNTRY_COLUMNS = ["iso2", "iso3", "country", "year", "g_co2e_per_kwh", "basis", "source"]
CLOUD_COLUMNS = ["provider", "region", "location", "year", "g_co2e_per_kwh", "basis", "source"]
# What each cloud source's figure counts. Google's region figures are "average operational gross
# emissions per unit of energy from the grid"; Cloud Carbon Footprint's AWS and Azure factors are
# combustion (operational) emission factors (eGRID, EEA and national inventories). Ember's country
# figures are lifecycle: they add upstream and construction emissions, so they run higher.
CLOUD_BASIS = {"gcp": "operational", "aws": "operational", "azure": "operational"}
CPU_COLUMNS = ["model", "tdp_w"]

MIT_NOTICE = (
    "Copyright (c) the CodeCarbon authors.\n\n"
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
    "associated documentation files (the \"Software\"), to deal in the Software without restriction, including "
    "without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell "
    "copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the "
    "following conditions:\n\n"
    "The above copyright notice and this permission notice shall be included in all copies or substantial "
    "portions of the Software.\n\n"
    "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT "
    "LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO "
    "EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER "
    "IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE "
    "USE OR OTHER DEALINGS IN THE SOFTWARE."
)

# (file, which rows, source, licence, url, detail)
SOURCES = [
    ("countries.csv", "all",
     "Ember yearly electricity data, as published by Our World in Data (`carbon_intensity_elec`)",
     "CC BY 4.0", "https://ourworldindata.org/grapher/carbon-intensity-electricity",
     "Annual grid carbon intensity by country, g CO2eq/kWh, lifecycle basis (the `basis` column), latest "
     "year available (the `year` column). Figures unchanged."),
    ("cloud_regions.csv", "gcp",
     "Google Cloud region-carbon-info (rows with provider `gcp`, 2024 grid intensity)",
     "Apache-2.0", "https://github.com/GoogleCloudPlatform/region-carbon-info",
     "Grid carbon intensity of each Google Cloud region, g CO2eq/kWh, operational basis (Google: average "
     "operational gross emissions per kWh from the grid); `basis` column added. Figures unchanged."),
    ("cloud_regions.csv", "aws, azure",
     "Cloud Carbon Footprint emission factors (rows with provider `aws` and `azure`)",
     "Apache-2.0", "https://github.com/cloud-carbon-footprint/cloud-carbon-footprint",
     "Grid emission factors per AWS and Azure region, g CO2eq/kWh, operational (combustion) basis; `basis` "
     "column added. Figures unchanged."),
    ("power_model.json", "all",
     "SPECpower_ssj2008 results (SPEC), via Green Coding Solutions' cloud-energy dataset "
     "(`data/spec_data_cleaned_unmelted.csv`, commit 1f8befc)",
     "MIT (dataset); measurements published by SPEC", "https://github.com/green-coding-solutions/cloud-energy",
     "Coefficients of a wall-power model fitted by `scripts/fit_power_model.py` on the measured average wall "
     "power of servers at active idle and 10-100 % of target load; the figures are derived, no measurement "
     "is shipped. SPECpower_ssj2008 is a trademark of the Standard Performance Evaluation Corporation (SPEC); "
     "cite SPEC's results (https://www.spec.org/power_ssj2008/results/) as the source of the measurements."),
    ("cpu_tdp.csv", "all",
     "CodeCarbon CPU power table (compiled from vendor specification sheets)",
     "MIT", "https://github.com/mlco2/codecarbon",
     "Thermal design power of CPU models, watts. Changes: exact duplicate rows dropped.\n\n" + MIT_NOTICE),
]


def read_rows(path: Path) -> List[Dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def number(text: str, where: str) -> float:
    """Parse a figure, refusing blanks and nonsense so a broken source never ships silently."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: bad figure {text!r}")
    return value


def countries(rows: Iterable[Dict[str, str]]) -> List[List[str]]:
    out, seen = [], set()
    for r in rows:
        where = f"countries row {r.get('iso2')}"
        if r.get("basis", "lifecycle") != "lifecycle":
            raise ValueError(f"{where}: basis {r['basis']!r}; the packaged table assumes lifecycle")
        if r["iso2"] in seen or len(r["iso2"]) != 2 or len(r["iso3"]) != 3:
            raise ValueError(f"{where}: bad or duplicate code")
        seen.add(r["iso2"])
        number(r["g_co2e_per_kwh"], where)
        out.append([r.get(c) or "lifecycle" if c == "basis" else r[c] for c in COUNTRY_COLUMNS])
    return out


def cloud_regions(rows: Iterable[Dict[str, str]]) -> List[List[str]]:
    out, seen = [], set()
    for r in rows:
        key = (r["provider"], r["region"])
        if key in seen or r["provider"] not in ("aws", "gcp", "azure"):
            raise ValueError(f"cloud row {key}: bad or duplicate region")
        seen.add(key)
        number(r["g_co2e_per_kwh"], f"cloud row {key}")
        out.append([CLOUD_BASIS[r["provider"]] if c == "basis" else r[c] for c in CLOUD_COLUMNS])
    return out


def cpus(rows: Iterable[Dict[str, str]]) -> List[List[str]]:
    out, seen = [], set()
    for r in rows:
        row = (r["model"].strip(), r["tdp_w"].strip())
        if row in seen or not row[0]:
            continue
        seen.add(row)
        number(row[1], f"cpu row {row[0]!r}")
        out.append(list(row))
    return out


def write_csv(path: Path, header: List[str], rows: List[List[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def attribution(counts: Dict[str, int]) -> str:
    lines = [
        "# Attribution of the packaged data",
        "",
        "Generated by `scripts/derive_data.py` from the project's shared reference tables; do not edit by hand.",
        "Each row of `countries.csv` and `cloud_regions.csv` also names its source and licence in its",
        "`source` column. Keep this attribution wherever these figures ship (docs, reports' footers).",
        "",
        "| file | which rows | count | source | licence |",
        "|---|---|---|---|---|",
    ]
    for name, which, source, licence, url, _ in SOURCES:
        n = counts[name if which == "all" else f"{name}:{which}"]
        lines.append(f"| {name} | {which} | {n} | [{source}]({url}) | {licence} |")
    lines.append("")
    for name, _, source, licence, url, detail in SOURCES:
        lines += [f"## {name}: {source}", "", f"Licence: {licence}. <{url}>", "", detail, ""]
    lines += [
        "## Reference figures used in code",
        "",
        "World average grid intensity 480 g CO2eq/kWh, 2023, lifecycle basis (Ember, Global Electricity Review 2024).",
        "",
    ]
    return "\n".join(lines)


def derive(src: Path, out: Path) -> Dict[str, int]:
    tables = {
        "countries.csv": (COUNTRY_COLUMNS, countries(read_rows(src / "grid_intensity_countries.csv"))),
        "cloud_regions.csv": (CLOUD_COLUMNS, cloud_regions(read_rows(src / "grid_intensity_cloud_regions.csv"))),
        "cpu_tdp.csv": (CPU_COLUMNS, cpus(read_rows(src / "cpu_tdp.csv"))),
    }
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, (header, rows) in tables.items():
        write_csv(out / name, header, rows)
        counts[name] = len(rows)
    cloud = tables["cloud_regions.csv"][1]
    counts["cloud_regions.csv:gcp"] = sum(1 for r in cloud if r[0] == "gcp")
    counts["cloud_regions.csv:aws, azure"] = sum(1 for r in cloud if r[0] in ("aws", "azure"))
    counts["power_model.json"] = len(read_rows(src / "specpower_servers.csv"))  # fitted by fit_power_model.py
    (out / "ATTRIBUTION.md").write_text(attribution(counts), encoding="utf-8")
    return counts


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default=str(DEFAULT_SRC), help="shared data directory")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="packaged data directory")
    args = ap.parse_args(argv)
    counts = derive(Path(args.src), Path(args.out))
    for name, n in counts.items():
        print(f"{name}: {n} rows" if ":" not in name else f"  of which {name.split(':')[1]}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
