#!/usr/bin/env python3
"""Fit carbonrun's server power model on SPECpower_ssj2008 results and write carbonrun/data/power_model.json.

Why a script: the coefficients that estimate a machine's power without a hardware counter must be
reproducible from the measurements and honest about their error. Standard library only.

The model, one ridge regression per load level L in 0, 10, ..., 100 %, on t = log(threads),
c = log(chips), d = log(TDP per chip), m = log(memory GB):
    log(wall watts at L) = b0 + b1 t + b2 c + b3 d + b4 m + b5 t^2 + b6 m^2 + b7 d^2
                           + b8 t d + b9 m t + b10 c d + offset(architecture)
then two shrunk offsets fitted on what is left: one per CPU model, one per system vendor
(mean log residual x n / (n + SHRINK): a model seen once moves two thirds of the way). The architecture
comes from the CPU model string by the same rules carbonrun applies at run time (RULES below), so
the cross-validation sees what a user's machine would. The range is the 5th and 95th percentile of
the out-of-fold ratio measured / predicted at each load level.

Outside its data a quadratic in logs can bend anywhere, so a prediction first clamps each input to the
range the fit saw (written to the JSON), and the curve is made non-decreasing in load with a load part
(full - idle) of at least that of the flattest measured server. carbonrun applies the same steps at
run time, and the cross-validation below scores the curve a user would get.

Cross-validation is 10-fold, grouped by system (all results of one system name in one fold); the
range is checked in a nested way (its quantiles come from an inner cross-validation of each outer
training set) so that the coverage printed is that of unseen systems.

    python scripts/fit_power_model.py [SPECPOWER_CSV] [--out carbonrun/data/power_model.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

Row = Dict[str, Any]  # one SPECpower result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from carbonrun.collectors.power_model import normalise  # noqa: E402  (one normalisation for fit and run)
DEFAULT_SRC = REPO.parent / "shared" / "data" / "specpower_servers.csv"
DEFAULT_OUT = REPO / "carbonrun" / "data" / "power_model.json"
LEVELS = list(range(0, 101, 10))
RIDGE = 1.0  # shrinks the architecture offsets of rare families towards the average
SHRINK = 0.5  # pseudo-count that pulls the CPU-model and vendor offsets towards 0
LOW_Q, HIGH_Q = 0.05, 0.95
FOLDS = 10
INPUTS = ("threads", "chips", "tdp_w", "memory_gb")  # clamped to the fitted data's range, in this order
# A VM whose CPU model names no architecture runs on a cloud host: assume one of these (2017 on).
RECENT = ("skylake", "cascadelake", "cooperlake", "icelake", "epyc-gen1", "epyc-gen2", "epyc-gen3")

# (regex on the normalised model string, architecture); first match wins. Mirrored at run time.
RULES: List[Tuple[str, str]] = [
    (r"epyc \w{3}1", "epyc-gen1"), (r"epyc \w{3}2", "epyc-gen2"), (r"epyc \w{3}3", "epyc-gen3"),
    (r"opteron", "opteron"),
    (r"(platinum|gold|silver|bronze) \d3\d\d\w*h", "cooperlake"),
    (r"(platinum|gold|silver|bronze) \d1\d\d", "skylake"), (r"(platinum|gold|silver|bronze) \d2\d\d", "cascadelake"),
    (r"(platinum|gold|silver|bronze) \d3\d\d", "icelake"),
    (r"\be3 1\d{3}\w*? ?v6", "kabylake"), (r"\be3 1\d{3}\w*? ?v5", "skylake"),
    (r"\be\d \d{4}\w*? ?v4", "broadwell"), (r"\be\d \d{4}\w*? ?v3", "haswell"), (r"\be\d \d{4}\w*? ?v2", "ivybridge"),
    (r"\be7 [248]8\d\d", "nehalem"), (r"\be[357] \d{4}", "sandybridge"),
    (r"\be 2[12]\d\d", "coffeelake"), (r"\be 23\d\d", "rocketlake"),
    (r"\bi\d \d{3}\b", "nehalem"), (r"\bi\d 2\d{3}", "sandybridge"), (r"\bi\d 3\d{3}", "ivybridge"),
    (r"\bi\d 4\d{3}", "haswell"), (r"\bi\d [67]\d{3}", "skylake"),
    (r"\b[xelw] ?(5[5-6]|3[4-6]|7[5-8])\d\d\b", "nehalem"),
    (r"\b([xelw] ?|xeon (processor )?)(5[0-4]|3[0-3]|7[0-4])\d\d\b", "core"),
]


VENDOR_ALIASES = {"super": "supermicro", "hp": "hewlett", "hpe": "hewlett"}
NUMERIC = ["intercept", "t", "c", "d", "m", "t*t", "m*m", "d*d", "t*d", "m*t", "c*d"]


def vendor(name: str) -> str:
    """First word of a system or DMI vendor name: 'Hewlett-Packard ProLiant' -> 'hewlett'."""
    words = re.findall("[a-z]+", name.lower())
    return VENDOR_ALIASES.get(words[0], words[0]) if words else ""


def architecture(model: str) -> str:
    text = normalise(model)
    for pattern, arch in RULES:
        if re.search(pattern, text):
            return arch
    return "unknown"


def load(path: Path) -> List[Row]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({"system": r["system"], "vendor": vendor(r["system"]), "model": r["cpu_model"],
                         "label": r["architecture"],
                         "arch": architecture(r["cpu_model"]), "chips": int(r["chips"]), "cores": int(r["cores"]),
                         "threads": int(r["threads"]), "tdp": float(r["tdp_w"]) if r["tdp_w"] else None,
                         "memory_gb": float(r["memory_gb"]), "w": [float(r[f"w_{lv}"]) for lv in LEVELS]})
    return rows


def defaults(rows: Sequence[Row]) -> Dict[str, Row]:
    """Per architecture: median TDP per chip and threads per chip (for unknown TDPs and VM hosts)."""
    out: Dict[str, Row] = {}
    for arch in sorted({r["arch"] for r in rows} | {"unknown"}):
        sel = [r for r in rows if r["arch"] == arch and arch != "unknown"] or list(rows)  # unknown: all systems
        tdps = [r["tdp"] for r in sel if r["tdp"]] or [r["tdp"] for r in rows if r["tdp"]]
        out[arch] = {"systems": sum(1 for r in rows if r["arch"] == arch),
                     "tdp_w": statistics.median(tdps),
                     "threads_per_chip": statistics.median(r["threads"] / r["chips"] for r in sel),
                     "memory_gb_per_thread": round(statistics.median(r["memory_gb"] / r["threads"] for r in sel), 2)}
    recent = [r for r in rows if r["arch"] in RECENT]
    out["recent"] = {"systems": len(recent), "tdp_w": statistics.median(r["tdp"] for r in recent if r["tdp"]),
                     "threads_per_chip": statistics.median(r["threads"] / r["chips"] for r in recent),
                     "memory_gb_per_thread": round(statistics.median(r["memory_gb"] / r["threads"] for r in recent), 2)}
    return out


def ranges(rows: Sequence[Row]) -> Dict[str, List[float]]:
    """The smallest and largest value of each input the fit saw."""
    values = {"threads": [r["threads"] for r in rows], "chips": [r["chips"] for r in rows],
              "tdp_w": [r["tdp"] for r in rows if r["tdp"]], "memory_gb": [r["memory_gb"] for r in rows]}
    return {k: [min(v), max(v)] for k, v in values.items()}


def dynamic_floor(rows: Sequence[Row]) -> float:
    """The flattest measured curve: min over systems of (full - idle) / idle."""
    return float(min((r["w"][-1] - r["w"][0]) / r["w"][0] for r in rows))


def shape(watts: List[float], floor: float) -> List[float]:
    """Non-decreasing in load, and a load part of at least floor x idle, linear in load (as run time does)."""
    out = list(watts)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return [out[0] + max(w - out[0], floor * out[0] * lv / 100) for w, lv in zip(out, LEVELS)]


def features(r: Dict[str, Any], archs: Sequence[str], dflt: Dict[str, Row],
             bounds: Optional[Dict[str, List[float]]] = None) -> List[float]:
    tdp = r["tdp"] or dflt.get(r["arch"], dflt["unknown"])["tdp_w"]
    given = dict(zip(INPUTS, (r["threads"], r["chips"], tdp, r["memory_gb"])))
    if bounds:
        given = {k: min(bounds[k][1], max(bounds[k][0], v)) for k, v in given.items()}
    t, c, d, m = (math.log(given[k]) for k in INPUTS)
    x = [1.0, t, c, d, m, t * t, m * m, d * d, t * d, m * t, c * d]
    return x + [1.0 if r["arch"] == a else 0.0 for a in archs]


def solve(a: List[List[float]], b: List[float]) -> List[float]:
    """Gaussian elimination with partial pivoting (the systems are small and well conditioned)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda i: abs(m[i][c]))
        m[c], m[p] = m[p], m[c]
        for i in range(c + 1, n):
            f = m[i][c] / m[c][c]
            for j in range(c, n + 1):
                m[i][j] -= f * m[c][j]
    x = [0.0] * n
    for i in range(n - 1, -1, -1):
        x[i] = (m[i][n] - sum(m[i][j] * x[j] for j in range(i + 1, n))) / m[i][i]
    return x


def ridge(xs: List[List[float]], ys: List[float], numeric: int) -> List[float]:
    """Least squares with a small penalty on the architecture offsets (not the intercept or slopes)."""
    k = len(xs[0])
    a = [[sum(x[i] * x[j] for x in xs) for j in range(k)] for i in range(k)]
    for i in range(numeric, k):
        a[i][i] += RIDGE
    b = [sum(x[i] * y for x, y in zip(xs, ys)) for i in range(k)]
    return solve(a, b)


def fit(rows: Sequence[Row]) -> Dict[str, Any]:
    dflt = defaults(rows)
    archs = sorted({r["arch"] for r in rows} - {"unknown"})
    xs = [features(r, archs, dflt) for r in rows]
    coefs = [ridge(xs, [math.log(r["w"][i]) for r in rows], len(NUMERIC)) for i in range(len(LEVELS))]
    model: Dict[str, Any] = {"archs": archs, "defaults": dflt, "coefs": coefs, "offsets": {},
                             "ranges": ranges(rows), "floor": dynamic_floor(rows)}
    for key in ("cpu_model", "vendor"):
        residuals: Dict[str, List[List[float]]] = {}
        for r in rows:
            residuals.setdefault(_key(r, key), []).append([math.log(w) - p for w, p in zip(r["w"], logs(model, r))])
        model["offsets"][key] = {k: [sum(v[i] for v in vs) / (len(vs) + SHRINK) for i in range(len(LEVELS))]
                                 for k, vs in residuals.items() if k and (key == "vendor" or re.search(r"\d", k))}
    return model


def _key(r: Dict[str, Any], key: str) -> str:
    return normalise(r["model"]) if key == "cpu_model" else r["vendor"]


def logs(model: Dict[str, Any], r: Dict[str, Any]) -> List[float]:
    """The regression's log watts at each level, inputs clamped to the fitted range, offsets added."""
    x = features(r, model["archs"], model["defaults"], model["ranges"])
    out = [sum(c * v for c, v in zip(coef, x)) for coef in model["coefs"]]
    for key, table in model["offsets"].items():
        out = [a + b for a, b in zip(out, table.get(_key(r, key), [0.0] * len(out)))]
    return out


def predict(model: Dict[str, Any], r: Dict[str, Any]) -> List[float]:
    """The curve a user gets: the regression's watts, shaped non-decreasing with a load part."""
    return shape([math.exp(v) for v in logs(model, r)], model["floor"])


def folds(rows: Sequence[Row], k: int) -> List[List[int]]:
    """Systems dealt round-robin in order of first appearance: every result of a system in one fold."""
    systems = list(dict.fromkeys(r["system"] for r in rows))
    fold_of = {s: i % k for i, s in enumerate(systems)}
    return [[i for i, r in enumerate(rows) if fold_of[r["system"]] == f] for f in range(k)]


def out_of_fold(rows: Sequence[Row], k: int) -> List[List[float]]:
    """Predictions for every row from a model that never saw its system."""
    preds: List[List[float]] = [[] for _ in rows]
    for test in folds(rows, k):
        held = set(test)
        model = fit([r for i, r in enumerate(rows) if i not in held])
        for i in test:
            preds[i] = predict(model, rows[i])
    return preds


def quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def band(rows: Sequence[Row], preds: Sequence[Sequence[float]]) -> List[Tuple[float, float]]:
    """Per load level, the 5th and 95th percentile of measured / predicted."""
    out = []
    for i in range(len(LEVELS)):
        ratios = [r["w"][i] / p[i] for r, p in zip(rows, preds)]
        out.append((quantile(ratios, LOW_Q), quantile(ratios, HIGH_Q)))
    return out


def cross_validate(rows: Sequence[Row]) -> Dict[str, Any]:
    """Outer 10-fold grouped by system; the range of each outer fold from an inner 5-fold on its training set."""
    errors, covered, total = [], 0, 0
    for test in folds(rows, FOLDS):
        held = set(test)
        train = [r for i, r in enumerate(rows) if i not in held]
        model = fit(train)
        rng = band(train, out_of_fold(train, 5))
        for i in test:
            for lv, (p, m) in enumerate(zip(predict(model, rows[i]), rows[i]["w"])):
                errors.append(abs(p - m) / m)
                covered += rng[lv][0] * p <= m <= rng[lv][1] * p
                total += 1
    return {"mean_abs_error": statistics.mean(errors), "median_abs_error": statistics.median(errors),
            "range_coverage": covered / total, "points": total, "systems": len({r["system"] for r in rows}),
            "folds": FOLDS}


def baselines(rows: Sequence[Row]) -> Dict[str, float]:
    """Mean absolute error of the constant models this replaces, on the same points: Cloud Carbon
    Footprint's 0.74-3.5 W per thread, and TDP x load; both with 0.375 W per GB of memory."""
    def per_vcpu(r: Row, lv: int) -> float:
        return float(r["threads"] * (0.74 + 2.76 * lv / 100))

    def tdp_x_load(r: Row, lv: int) -> float:
        return float(r["chips"] * (r["tdp"] or 0) * lv / 100)

    out = {}
    for name, watts in (("per_vcpu_0.74_3.5_w", per_vcpu), ("tdp_x_load", tdp_x_load)):
        errs = [abs(watts(r, lv) + 0.375 * r["memory_gb"] - w) / w
                for r in rows if r["tdp"] for lv, w in zip(LEVELS, r["w"])]
        out[name] = round(statistics.mean(errs), 4)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    rows = load(args.src)
    agree = sum(r["arch"] == {"kabylabe": "kabylake", "epyc": "epyc-gen3"}.get(r["label"], r["label"])
                for r in rows if r["label"])
    cv = cross_validate(rows)
    model = fit(rows)
    rng = band(rows, out_of_fold(rows, FOLDS))
    names = NUMERIC
    out = {
        "about": "Wall power of a server at 0-100 % load (one entry per level): log(W) = sum(coefficient x feature) "
                 "+ offsets of the architecture, CPU model and vendor, where t = log(threads), c = log(chips), "
                 "d = log(TDP W per chip), m = log(memory GB). Fitted by scripts/fit_power_model.py; see "
                 "ATTRIBUTION.md.",
        "source": "SPECpower_ssj2008 results (SPEC), via Green Coding Solutions' cloud-energy dataset (MIT)",
        "levels": LEVELS,
        "features": names,
        "coefficients": [[round(c, 5) for c in coef[:len(names)]] for coef in model["coefs"]],
        "arch_offsets": {a: [round(coef[len(names) + j], 5) for coef in model["coefs"]]
                         for j, a in enumerate(model["archs"])},
        "cpu_model_offsets": {k: [round(v, 3) for v in vs] for k, vs in sorted(model["offsets"]["cpu_model"].items())},
        "vendor_offsets": {k: [round(v, 3) for v in vs] for k, vs in sorted(model["offsets"]["vendor"].items())},
        "vendor_aliases": VENDOR_ALIASES,
        "input_ranges": {**model["ranges"], "about": "smallest and largest threads, chips, TDP W per chip and "
                         "memory GB of the fitted systems: inputs beyond are clamped, and the estimate flagged"},
        "dynamic_floor": {"full_over_idle_minus_1": round(model["floor"], 4),
                          "about": "the flattest measured server's (full - idle) / idle: no curve is flatter"},
        "range": {"low": [round(lo, 4) for lo, _ in rng], "high": [round(hi, 4) for _, hi in rng],
                  "about": "5th and 95th percentile of measured / predicted, out of fold"},
        "arch_defaults": model["defaults"],
        "rules": [[p, a] for p, a in RULES],
        "cross_validation": {k: round(v, 4) if isinstance(v, float) else v for k, v in cv.items()},
        "replaced_models_mean_abs_error": baselines(rows),
    }
    text = json.dumps(out, indent=1)
    # each list of numbers on one line
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    args.out.write_text(text + "\n")
    print(f"{len(rows)} results of {cv['systems']} systems; architecture rules agree with the labels on "
          f"{agree}/{sum(1 for r in rows if r['label'])}")
    print(f"cross-validated ({FOLDS}-fold, grouped by system): mean absolute error {cv['mean_abs_error']:.1%}, "
          f"median {cv['median_abs_error']:.1%}; range covers {cv['range_coverage']:.1%} of {cv['points']} points")
    print("the models this replaces, same points: " + ", ".join(f"{k} {v:.1%}" for k, v in baselines(rows).items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
