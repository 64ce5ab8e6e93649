#!/usr/bin/env python3
"""Compares two backtests' predictions.parquet row by row (with pyarrow), or, where
pyarrow is not installed (a GPU machine that cannot reach PyPI), their labels.csv
(`tickflare backtest --labels`: every labelled forecast; the standard library reads it).

Used by scripts/gpu-check.sh to put a number on how far a CUDA run's forecasts are
from the CPU run's of the same pipeline and input: rows are matched by (partition,
offset), every numeric field of the JSON payloads is compared, and the largest
absolute and relative differences are printed per field (relative to 1 + |cpu|).
Non-numeric fields (keys, labels, times) must be equal; rows present in one file only
are counted. With --json the summary is also written as JSON. Exit status 1 when the
files do not line up (different rows or a differing non-numeric field), or when
--rtol is given and a numeric field differs by more than it.

In the CSV form rows are matched by (lane, key, time, offset predicted at) and the
numeric columns (predicted, persistence, seasonal_naive, actual) compared; given a
predictions.parquet path it reads the labels.csv beside it.

Usage: compare_predictions.py CPU.parquet|CPU.csv OTHER.parquet|OTHER.csv [--json OUT] [--rtol X]
"""
import argparse
import csv
import json
import math
import os
import sys

try:
    import pyarrow.parquet as pq
except ImportError:
    pq = None


def labels_rows(path):
    """labels.csv as {(lane, key, time_ns, offset): (key, {column: number or None})}."""
    out = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            ident = (r["lane"], r["key"], r["time_ns"], r["predicted_at_offset"])
            vals = {}
            for c in ("predicted", "persistence", "seasonal_naive", "actual"):
                v = r.get(c, "")
                vals[c] = float(v) if v not in ("", None) else None
            out[ident] = (r["key"], vals)
    return out


def labels_path(path):
    """The labels.csv to read for `path`, or None to read its predictions.parquet."""
    if path.endswith(".csv"):
        return path
    return os.path.join(os.path.dirname(path), "labels.csv") if pq is None else None


def rows(path):
    csv_path = labels_path(path)
    if csv_path is not None:
        if not os.path.exists(csv_path):
            sys.exit(f"pyarrow is not installed and {csv_path} does not exist (run the backtest with --labels)")
        return labels_rows(csv_path)
    t = pq.read_table(path, columns=["partition", "offset", "key", "payload"]).to_pydict()
    out = {}
    for p, o, k, v in zip(t["partition"], t["offset"], t["key"], t["payload"]):
        if isinstance(v, (bytes, bytearray)):
            v = v.decode()
        out[(p, o)] = (k, json.loads(v) if v else None)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--json")
    ap.add_argument("--rtol", type=float)
    a = ap.parse_args()
    forms = {labels_path(a.reference) is None, labels_path(a.other) is None}
    if len(forms) > 1:
        sys.exit("one labels.csv and one predictions.parquet: their rows are not comparable")
    if False in forms:
        print("comparing labels.csv: labelled forecasts only (pyarrow not installed or CSV given)")
    ref, oth = rows(a.reference), rows(a.other)
    common = sorted(set(ref) & set(oth))
    fields = {}
    mismatched = 0
    for key in common:
        (k1, v1), (k2, v2) = ref[key], oth[key]
        if k1 != k2 or (v1 is None) != (v2 is None):
            mismatched += 1
            continue
        if v1 is None:
            continue
        for name in set(v1) | set(v2):
            x, y = v1.get(name), v2.get(name)
            num = lambda z: isinstance(z, (int, float)) and not isinstance(z, bool)
            if num(x) and num(y):
                f = fields.setdefault(name, {"n": 0, "max_abs": 0.0, "max_rel": 0.0, "sum_abs": 0.0})
                d = abs(float(x) - float(y))
                if math.isnan(d):
                    d = 0.0 if (math.isnan(float(x)) and math.isnan(float(y))) else math.inf
                f["n"] += 1
                f["sum_abs"] += d
                f["max_abs"] = max(f["max_abs"], d)
                f["max_rel"] = max(f["max_rel"], d / (1.0 + abs(float(x))))
            elif x != y:
                mismatched += 1
    summary = {
        "reference": a.reference,
        "other": a.other,
        "rows_reference": len(ref),
        "rows_other": len(oth),
        "rows_compared": len(common),
        "rows_in_one_only": len(set(ref) ^ set(oth)),
        "non_numeric_mismatches": mismatched,
        "fields": {n: {"n": f["n"], "max_abs": f["max_abs"], "mean_abs": f["sum_abs"] / max(f["n"], 1), "max_rel": f["max_rel"]} for n, f in sorted(fields.items())},
    }
    print(f"rows: {len(ref)} vs {len(oth)}, compared {len(common)}, in one only {summary['rows_in_one_only']}, non-numeric mismatches {mismatched}")
    for n, f in summary["fields"].items():
        print(f"  {n:<24} n={f['n']:<7} max|d|={f['max_abs']:.3e}  mean|d|={f['mean_abs']:.3e}  max|d|/(1+|ref|)={f['max_rel']:.3e}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    bad = summary["rows_in_one_only"] > 0 or mismatched > 0
    if a.rtol is not None and any(f["max_rel"] > a.rtol for f in summary["fields"].values()):
        bad = True
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
