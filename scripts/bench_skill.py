#!/usr/bin/env python3
"""Skill scoreboard: tickflare's forecasts against persistence, seasonal naive and River.

Regenerates the README's skill table (issue 12, item 6). For every shipped real stream it
runs `tickflare backtest PIPELINE --input FILE --report DIR --labels`, reads DIR/labels.csv
(one row per labelled prediction of every lane), runs every River configuration that
../shared/peers/river_series.py defines (imported from its path, never copied) to get River's
per-row predictions, keeps the rows both scored (matched by series key and target timestamp,
UTC ns) and computes on exactly those rows MAE, RMSE, SMAPE and Theil's U (RMSE / RMSE of
persistence) of: tickflare's default forecaster (lane `base`), every [[compare]] lane,
persistence, seasonal naive and River's best configuration (lowest MAE on the common rows).
Ticks have no River peer on the same target: their yardsticks (zero change, microprice, the
learner alone) come from report.json.

Run (River's venv: python3 -m venv ~/venvs/river && ~/venvs/river/bin/pip install river pandas numpy):
  ~/venvs/river/bin/python scripts/bench_skill.py --md /tmp/skill.md [--json /tmp/skill.json]
Options: --streams births,demand,eurusd,sp500,ticks,series-eurusd,series-sp500,series-births,
  series-demand (default all); --tickflare PATH; --out DIR (backtest reports, default
  /tmp/tickflare-skill); --reuse-reports (read existing DIR/labels.csv, skip the backtests);
  --cache DIR (River's per-row predictions, default ~/.cache/tickflare/river, keyed by series,
  data file size/mtime and river_series.py); --skip-river (cache only); --river-budget SECONDS
  (river_series' --budget: per model; a model past it is truncated and left out of "best").
Deterministic: the JSON holds no wall-clock values; only the printed timings vary.
"""
import argparse, importlib.util, json, math, os, subprocess, sys, time
import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.abspath(os.path.join(ROOT, "..", "shared", "peers", "river_series.py"))
SH = "../shared/data/"
# River series -> its data file under river_series.SHARED (for the cache key).
RIVER_FILES = {"us_births_daily": "demand/us_births_daily_2000_2014.csv",
               "bikesharing_daily": "demand/bikesharing_hourly_2010_2019.csv",
               "eurusd_hourly": "market/eurusd_1h_2017.csv",
               "sp500_daily_1999_2018": "market/sp500_daily_1999_2018.csv.gz"}
DEMAND = {"us_births": ("us_births_daily", "US births (daily_demand.jsonl)"),
          "bikesharing": ("bikesharing_daily", "bikeshare daily (daily_demand.jsonl)")}
# name: (pipeline, input, extra args, {tickflare key or "*": (River series, row label)})
STREAMS = {
    "births": ("daily-demand", SH + "demand/us_births_daily_2000_2014.csv", [],
               {"*": ("us_births_daily", "US births (csv)")}),
    "demand": ("daily-demand", "data/daily_demand.jsonl", [], DEMAND),
    "eurusd": ("market-bars", SH + "market/eurusd_1h_2017.csv", [], {"*": ("eurusd_hourly", "EUR/USD hourly 2017")}),
    "sp500": ("market-bars", SH + "market/sp500_daily_1999_2018.csv.gz", [],
              {"*": ("sp500_daily_1999_2018", "S&P 500 daily 1999-2018")}),
    "ticks": ("market-ticks", "data/binance_ticks_sample.jsonl", [], None),
    "series-eurusd": ("series", SH + "market/eurusd_1h_2017.csv", ["--column", "Close"],
                      {"*": ("eurusd_hourly", "series.toml: EUR/USD Close")}),
    "series-sp500": ("series", SH + "market/sp500_daily_1999_2018.csv.gz", ["--column", "Close"],
                     {"*": ("sp500_daily_1999_2018", "series.toml: S&P 500 Close")}),
    "series-births": ("series", SH + "demand/us_births_daily_2000_2014.csv",
                      ["--column", "births", "--time-column", "{year}-{month}-{date_of_month}"],
                      {"*": ("us_births_daily", "series.toml: US births")}),
    "series-demand": ("series", "data/daily_demand.jsonl", ["--column", "value"],
                      {k: (s, "series.toml: " + l.split(" (")[0] + " (jsonl)") for k, (s, l) in DEMAND.items()}),
}


def load_peer():
    spec = importlib.util.spec_from_file_location("river_series", PEER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def find_tickflare():
    tdir = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/tickflare/target")
    dbg, rel = os.path.join(tdir, "debug", "tickflare"), os.path.join(tdir, "release", "tickflare")
    if os.path.exists(rel) and (not os.path.exists(dbg) or os.path.getmtime(rel) > os.path.getmtime(dbg)):
        return rel
    return dbg


def sh(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.strip()


# ------------------------------------------------------------------------------ River side

def river_preds(rs, series, cache_dir, budget, skip):
    """{"ts_ns", "y", "persistence", "seasonal", "models": {config: preds}, "info": {...}} for rows W..n-1."""
    path = os.path.join(rs.SHARED, RIVER_FILES[series])
    st, pst = os.stat(path), os.stat(PEER)
    key = f"{series}-{st.st_size}-{int(st.st_mtime)}-peer{pst.st_size}-{int(pst.st_mtime)}"
    cpath = os.path.join(cache_dir, key + ".json")
    if os.path.exists(cpath):
        with open(cpath) as f:
            c = json.load(f)
        if skip or not any(i.get("truncated") for i in c["info"].values()) or c["budget"] >= budget:
            print(f"# River {series}: cached {cpath}", flush=True)
            return c
    if skip:
        raise SystemExit(f"--skip-river: no River cache for {series} ({cpath})")
    _, loader, freq, is_price, _ = next(s for s in rs.SERIES if s[0] == series)
    t0 = time.perf_counter()
    ts, y, _ = loader()
    W, n, yarr = rs.W, len(y), np.asarray(y)
    season = 7 if freq == "daily" else 24
    X = rs.build_features(ts, y, freq)
    models, info = {}, {}
    for delta in (False, True):
        tgt = "delta" if delta else "level"
        for lr in rs.LRS:
            models[f"linreg_{tgt}_lr{lr}"], info[f"linreg_{tgt}_lr{lr}"] = rs.run_feature_model(rs.make_linreg(lr), X, y, delta, budget)
        models[f"pa_{tgt}"], info[f"pa_{tgt}"] = rs.run_feature_model(rs.make_pa, X, y, delta, budget)
        models[f"hatr_{tgt}"], info[f"hatr_{tgt}"] = rs.run_feature_model(rs.make_hatr, X, y, delta, budget)
    models["snarimax"], info["snarimax"] = rs.run_snarimax(y, season, budget)
    idx = pd.DatetimeIndex(ts)
    idx = (idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx).as_unit("ns")  # naive = UTC
    c = {"series": series, "kind": "price" if is_price else "demand", "season": season, "budget": budget,
         "ts_ns": [int(v) for v in idx.asi8[W:]], "y": yarr[W:].tolist(),
         "persistence": yarr[W - 1:n - 1].tolist(), "seasonal": yarr[W - season:n - season].tolist(),
         "models": {k: v.tolist() for k, v in models.items()},
         "info": {k: {a: v[a] for a in ("diverged", "truncated", "steps")} for k, v in info.items()}}
    os.makedirs(cache_dir, exist_ok=True)
    with open(cpath + ".tmp", "w") as f:
        json.dump(c, f)
    os.replace(cpath + ".tmp", cpath)
    print(f"# River {series}: {len(models)} configurations in {time.perf_counter() - t0:.1f}s -> {cpath}", flush=True)
    return c


# ------------------------------------------------------------------------------ scoring

def metrics(y, p, rmse_p):
    e = p - y
    ae = np.abs(e)
    den = np.abs(y) + np.abs(p)
    sm = np.where(den > 0, 200.0 * ae / np.where(den > 0, den, 1.0), 0.0)
    rmse = float(np.sqrt(np.mean(e * e)))
    return {"mae": float(np.mean(ae)), "rmse": rmse, "smape": float(np.mean(sm)),
            "theil_u": rmse / rmse_p if rmse_p > 0 else None}


def mismatches(a, b):
    bad = ~np.isclose(a, b, rtol=1e-9, atol=0.0)
    return {"n": int(bad.sum()), "max_abs_diff": float(np.max(np.abs(a - b))) if len(a) else 0.0}


def score_key(lab, tf_key, rv, label):
    lanes = list(dict.fromkeys(lab.lane))
    rows = {ln: g.set_index("time_ns") for ln, g in lab[lab.key == tf_key].groupby("lane", sort=False)}
    for ln, g in rows.items():
        if g.index.duplicated().any():
            raise SystemExit(f"{label}: lane {ln} has duplicate target times")
    base = rows["base"]
    river = pd.DataFrame({"y": rv["y"], "persistence": rv["persistence"], "seasonal": rv["seasonal"],
                          **{"r:" + k: v for k, v in rv["models"].items()}}, index=pd.Index(rv["ts_ns"], dtype="int64"))
    common = base.index.intersection(river.index)
    for g in rows.values():
        common = common.intersection(g.index)
    has_sn = base.seasonal_naive.notna().any()
    if has_sn:
        common = common[base.seasonal_naive.reindex(common).notna().to_numpy()]
    common = common.sort_values()
    b, r = base.loc[common], river.loc[common]
    y, pers = b.actual.to_numpy(), b.persistence.to_numpy()
    demand = rv["kind"] == "demand"
    checks = {"actual_vs_river_y": mismatches(y, r.y.to_numpy()),
              "persistence_vs_river": mismatches(pers, r.persistence.to_numpy()),
              "lanes_actual_differ": int(sum(mismatches(rows[ln].loc[common].actual.to_numpy(), y)["n"] for ln in lanes))}
    if has_sn and demand:
        checks["seasonal_vs_river"] = mismatches(b.seasonal_naive.to_numpy(), r.seasonal.to_numpy())
    rmse_p = float(np.sqrt(np.mean((pers - y) ** 2)))
    m = {}
    for ln in lanes:
        m["tickflare " + ("default" if ln == "base" else ln)] = metrics(y, rows[ln].loc[common].predicted.to_numpy(), rmse_p)
    m["persistence"] = metrics(y, pers, rmse_p)
    if has_sn:
        m["seasonal naive"] = metrics(y, b.seasonal_naive.to_numpy(), rmse_p)
    elif demand:
        m["seasonal naive"] = metrics(y, r.seasonal.to_numpy(), rmse_p)
    river_m, left_out = {}, []
    for k in rv["models"]:
        p = r["r:" + k].to_numpy()
        if np.isfinite(p).all():
            river_m[k] = metrics(y, p, rmse_p)
        else:
            left_out.append(k)
    best = min(river_m, key=lambda k: river_m[k]["mae"]) if river_m else None
    if best:
        m["River best"] = dict(river_m[best], config=best)
    d, goals = m["tickflare default"], {}
    ratios = {"default_over_persistence": d["mae"] / m["persistence"]["mae"],
              "default_over_river_best": d["mae"] / river_m[best]["mae"] if best else None}
    goals["mae_le_river_best"] = bool(best) and d["mae"] <= river_m[best]["mae"]
    goals["mae_le_1.01_persistence"] = d["mae"] <= 1.01 * m["persistence"]["mae"]
    if demand and "seasonal naive" in m:
        goals["mae_lt_seasonal_naive"] = d["mae"] < m["seasonal naive"]["mae"]
    return {"row": label, "tickflare_key": tf_key, "river_series": rv["series"], "kind": rv["kind"],
            "n_common": len(common), "n_tickflare": len(base), "n_river": len(river),
            "checks": checks, "metrics": m, "river_all": river_m, "river_left_out": left_out,
            "ratios": ratios, "goals": goals}


def score_ticks(report):
    ms = report["models"]
    mm = ms[0]["metrics"]
    m = {"tickflare default": mm["model"]}
    for other in ms[1:]:
        m["tickflare " + other["name"]] = other["metrics"]["model"]
    for k in ("learner", "zero", "microprice", "persistence"):
        if k in mm:
            m[k if k != "learner" else "learner alone"] = mm[k]
    m = {k: {a: v.get(a) for a in ("mae", "rmse", "smape", "theil_u", "n")} for k, v in m.items()}
    d = m["tickflare default"]["mae"]
    goals = {f"mae_lt_{k}": d is not None and m[k]["mae"] is not None and d < m[k]["mae"] for k in ("zero", "microprice") if k in m}
    return {"row": "Binance ticks: mid change over 1 s (bps)", "kind": "ticks", "n_common": m["tickflare default"]["n"],
            "metrics": m, "goals": goals, "ratios": {k: d / m[k]["mae"] if d and m.get(k, {}).get("mae") else None
                                                     for k in ("zero", "microprice")}, "river": "n/a (different target: river_ticks.py forecasts the next row's "
            "log return of a series mixing L1 mids and trade prints)"}


# ------------------------------------------------------------------------------ output

def f(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    a = abs(v)
    return "0" if a == 0 else f"{v:.4g}" if a < 1000 else f"{v:,.0f}"


GOALS = {"mae_le_river_best": "> River best", "mae_le_1.01_persistence": "> 1.01×persistence",
         "mae_lt_seasonal_naive": "≥ seasonal naive", "mae_lt_zero": "≥ zero", "mae_lt_microprice": "≥ microprice"}


def write_md(res, meta):
    L = ["| stream | n | default MAE (U) | persistence | seasonal naive | River best MAE (config) | other lanes MAE | "
         "default / persistence | default / River best | goals |", "|---" * 10 + "|"]
    for s in res:
        m, g = s["metrics"], s["goals"]
        d = m["tickflare default"]
        fails = [GOALS.get(k, k) for k, ok in g.items() if not ok]
        goal = "pass" if not fails else "FAIL: " + ", ".join(fails)
        others = "; ".join(f"{k[10:]} {f(v['mae'])}" for k, v in m.items() if k.startswith("tickflare ") and k != "tickflare default")
        if s["kind"] == "ticks":
            sn = f"zero {f(m['zero']['mae'])}; microprice {f(m['microprice']['mae'])}" if "microprice" in m else "—"
            L.append(f"| {s['row']} | {s['n_common']} | {f(d['mae'])} ({f(d['theil_u'])}) | {f(m.get('persistence', {}).get('mae'))} "
                     f"| {sn} | n/a (different target) | {others or '—'} | {f(s['ratios']['zero'])} (vs zero) | — | {goal} |")
            continue
        rb, rt = m.get("River best"), s["ratios"]
        L.append(f"| {s['row']} | {s['n_common']} | {f(d['mae'])} ({f(d['theil_u'])}) | {f(m['persistence']['mae'])} | "
                 f"{f(m['seasonal naive']['mae']) if 'seasonal naive' in m else '— (price)'} | "
                 f"{f(rb['mae']) + ' (' + rb['config'] + ')' if rb else 'n/a'} | {others or '—'} | "
                 f"{rt['default_over_persistence']:.3f} | {'—' if rt['default_over_river_best'] is None else format(rt['default_over_river_best'], '.3f')} | {goal} |")
    L += ["", "All forecasters, same rows (MAE / RMSE / SMAPE % / Theil U):", "",
          "| stream | forecaster | MAE | RMSE | SMAPE % | Theil U |", "|---|---|---|---|---|---|"]
    for s in res:
        for k, v in s["metrics"].items():
            name = k + (f" ({v['config']})" if "config" in v else "")
            L.append(f"| {s['row']} | {name} | {f(v['mae'])} | {f(v['rmse'])} | {f(v['smape'])} | {f(v['theil_u'])} |")
    L += ["", f"tickflare {meta['commit']}, River {meta['versions']['river']} (numpy {meta['versions']['numpy']}, "
          f"pandas {meta['versions']['pandas']}); `{meta['command']}`. Rows: the targets both tickflare and River "
          "scored (same series key and target timestamp; where tickflare has seasonal naive, only rows where it "
          "has one); every number is computed by the script on those rows. Theil U = RMSE / RMSE of persistence "
          "on the same rows; SMAPE = mean 200|e|/(|y|+|ŷ|), 0/0 = 0. River best = the lowest-MAE of River's "
          f"{meta['n_river_configs']} configurations in river_series.py on the common rows: a hindsight choice, a "
          "generous yardstick. Goals: default MAE ≤ River best and ≤ 1.01 × persistence; daily demand below "
          "seasonal naive; ticks below zero change and microprice (from report.json; no River peer forecasts "
          "the same target; their SMAPE is of a change that is mostly 0, so read MAE / RMSE)."]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--tickflare", default=find_tickflare())
    ap.add_argument("--out", default="/tmp/tickflare-skill")
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/tickflare/river"))
    ap.add_argument("--skip-river", action="store_true")
    ap.add_argument("--reuse-reports", action="store_true")
    ap.add_argument("--river-budget", type=float, default=300.0)
    a = ap.parse_args()
    asked = [s for s in a.streams.split(",") if s]
    for s in asked:
        if s not in STREAMS:
            raise SystemExit(f"unknown stream {s!r}; known: {', '.join(STREAMS)}")
    want = [s for s in STREAMS if s in asked]
    if not a.reuse_reports and not os.path.exists(a.tickflare):
        raise SystemExit(f"no tickflare binary at {a.tickflare} (cargo build, or --tickflare PATH)")
    rs = load_peer()
    import river
    versions = {"river": river.__version__, "numpy": np.__version__, "pandas": pd.__version__}
    dirty = bool(sh(["git", "status", "--porcelain", "--untracked-files=no"]))
    commit = sh(["git", "rev-parse", "--short", "HEAD"]) + ("-dirty" if dirty else "")
    print(f"# tickflare {commit}, binary {a.tickflare}; River {versions['river']}; peer {PEER}", flush=True)
    has_series = "--column" in sh([a.tickflare, "backtest", "--help"]) if not a.reuse_reports else True
    res, problems, cmds, rcache = [], [], [], {}
    for name in want:
        pipe, inp, extra, keys = STREAMS[name]
        if pipe == "series" and (not has_series or not os.path.exists(os.path.join(ROOT, "pipelines/series.toml"))):
            problems.append(f"{name}: skipped (no pipelines/series.toml or no --column flag in this binary)")
            continue
        rdir = os.path.join(a.out, name)
        cmd = ["nice", a.tickflare, "backtest", f"pipelines/{pipe}.toml", "--input", inp, "--report", rdir, "--labels"] + extra
        cmds.append(" ".join(c if " " not in c and "{" not in c else f"'{c}'" for c in cmd[1:]))
        print("$ " + cmds[-1], flush=True)
        if not a.reuse_reports:
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            print(f"#   rc {p.returncode}, {time.perf_counter() - t0:.1f}s", flush=True)
            if p.returncode != 0:
                problems.append(f"{name}: backtest failed (rc {p.returncode}): {p.stderr.strip()[-400:]}")
                print(p.stderr[-2000:], file=sys.stderr)
                continue
        if keys is None:
            with open(os.path.join(rdir, "report.json")) as fh:
                res.append(dict(score_ticks(json.load(fh)), stream=name))
            continue
        lab = pd.read_csv(os.path.join(rdir, "labels.csv"), dtype=str, keep_default_na=False)
        lab["time_ns"] = lab.time_ns.astype("int64")
        for c in ("predicted", "persistence", "seasonal_naive", "actual"):  # Python's parser: exact round trip
            lab[c] = np.array([float(v) if v else np.nan for v in lab[c]], dtype=float)
        tf_keys = sorted(set(lab.key))
        if "*" in keys:
            if len(tf_keys) != 1:
                problems.append(f"{name}: expected one series key, got {tf_keys}")
                continue
            keys = {tf_keys[0]: keys["*"]}
        for k in tf_keys:
            if k not in keys:
                problems.append(f"{name}: key {k!r} in labels.csv has no River series (not scored)")
        for k, (series, label) in keys.items():
            if k not in tf_keys:
                problems.append(f"{name}: key {k!r} missing from labels.csv")
                continue
            if series not in rcache:
                rcache[series] = river_preds(rs, series, a.cache, a.river_budget, a.skip_river)
            s = dict(score_key(lab, k, rcache[series], label), stream=name)
            res.append(s)
            c = s["checks"]
            print(f"#   {label}: n common {s['n_common']} (tickflare {s['n_tickflare']}, River {s['n_river']}); "
                  f"actual != River y: {c['actual_vs_river_y']['n']}; persistence != River: {c['persistence_vs_river']['n']}"
                  + (f"; seasonal != River: {c['seasonal_vs_river']['n']}" if "seasonal_vs_river" in c else ""), flush=True)
            if s["n_common"] < 0.9 * min(s["n_tickflare"], s["n_river"]):
                problems.append(f"{label}: only {s['n_common']} common rows (timestamps or keys do not line up)")
            for ck, v in c.items():
                if (v["n"] if isinstance(v, dict) else v):
                    problems.append(f"{label}: {ck} mismatches {v}")
            if s["river_left_out"]:
                problems.append(f"{label}: River configurations not finite on all common rows (left out of best): {s['river_left_out']}")
    n_cfg = max((len(rv["models"]) for rv in rcache.values()), default=0)
    command = "~/venvs/river/bin/python scripts/bench_skill.py " + " ".join(sys.argv[1:])
    meta = {"commit": commit, "dirty": dirty, "versions": versions, "command": command.strip(),
            "backtests": cmds, "n_river_configs": n_cfg, "river_budget_s": a.river_budget}
    md = write_md(res, meta) + "".join(f"\n- problem: {p}" for p in problems) + ("\n" if problems else "")
    print("\n" + md)
    if a.md:
        with open(a.md, "w") as fh:
            fh.write(md)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({**meta, "streams": res, "problems": problems}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
