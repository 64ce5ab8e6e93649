//! `report.html`: one self-contained page (inline CSS, plots as data URLs) with the
//! metrics tables and the plots; it needs no network and no other file to view.

use std::fmt::Write;
use std::path::Path;

use base64::Engine;

use super::Report;
use crate::state::score::ErrorSummary;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) => format!("{x:.4e}"),
        Some(x) => format!("{x:.4}"),
    }
}

const HEAD: [&str; 9] = ["forecaster", "n", "MAE", "RMSE", "MAPE %", "SMAPE %", "R²", "direction", "Theil U"];

fn row(out: &mut String, name: &str, s: &ErrorSummary) {
    let _ = write!(out, "<tr><td>{}</td><td>{}</td>", esc(name), s.n);
    for v in [s.mae, s.rmse, s.mape, s.smape, s.r2, s.directional_accuracy, s.theil_u] {
        let _ = write!(out, "<td>{}</td>", num(v));
    }
    out.push_str("</tr>\n");
}

fn table_head(out: &mut String, cols: &[&str]) {
    out.push_str("<table><tr>");
    for c in cols {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr>\n");
}

/// The page for `report`, embedding the plots found in `dir`.
pub fn page(r: &Report, dir: &Path) -> crate::error::Result<String> {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tickflare backtest: {}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;max-width:1250px}} table{{border-collapse:collapse;margin:0.5em 0 1.5em}}\
         td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}}\
         th{{background:#eee}} img{{max-width:100%;border:1px solid #ddd;margin:0.5em 0}} code{{background:#f4f4f4}}\
         </style></head><body>\n",
        esc(&r.pipeline)
    );
    let _ = writeln!(o, "<h1>Backtest: {}</h1>", esc(&r.pipeline));
    let _ = writeln!(
        o,
        "<p>Input: <code>{}</code> (topic <code>{}</code>); range {} – {}; {} records scored in range, {} before and {} after it not scored. Periods: {:?}.</p>",
        esc(r.input_file.as_deref().unwrap_or("topic")),
        esc(&r.input_topic),
        esc(r.from.as_deref().unwrap_or("start")),
        esc(r.to.as_deref().unwrap_or("end")),
        r.records_in_range,
        r.records_before_range,
        r.records_after_range,
        r.period
    );
    o.push_str("<h2>Overall</h2>\n");
    table_head(&mut o, &HEAD);
    if let Some(m0) = r.models.first() {
        row(&mut o, "persistence", &m0.metrics.persistence);
        if let Some(s) = &m0.metrics.seasonal_naive {
            row(&mut o, "seasonal naive", s);
        }
    }
    for m in &r.models {
        row(&mut o, &format!("model {} ({})", m.name, m.kind), &m.metrics.model);
        for (name, e) in &m.metrics.experts {
            row(&mut o, &format!("  {} · {name}", m.name), e);
        }
    }
    o.push_str("</table>\n");
    for m in r.models.iter().filter(|m| !m.weights.is_empty()) {
        let w: Vec<String> = m.weights.iter().map(|(k, v)| format!("{} {v:.3}", esc(k))).collect();
        let _ = writeln!(o, "<p>Aggregation weights of <b>{}</b> at the end (mean over keys): {}.</p>", esc(&m.name), w.join(", "));
    }
    o.push_str("<table><tr><th>model</th><th>records</th><th>predictions</th><th>labelled</th><th>pending</th><th>warm-up</th><th>dead letters</th><th>updates</th><th>drift events</th><th>guard fallbacks</th><th>shadow topic</th></tr>\n");
    for m in &r.models {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.name),
            m.messages_in,
            m.predictions_out,
            m.labelled,
            m.pending,
            m.warmup,
            m.dead_letters,
            m.model_updates,
            m.drift_events,
            m.model_fallbacks,
            esc(&m.shadow_topic)
        );
    }
    o.push_str("</table>\n");
    // Walk-forward: MAE and Theil's U per period, every model beside the baselines.
    if let Some(m0) = r.models.first() {
        o.push_str("<h2>Walk-forward (per period)</h2>\n");
        let mut cols = vec!["period".to_string(), "n".into(), "MAE persistence".into()];
        let seasonal = m0.metrics.seasonal_naive.is_some();
        if seasonal {
            cols.push("MAE seasonal naive".into());
        }
        for m in &r.models {
            cols.push(format!("MAE {}", m.name));
            cols.push(format!("Theil U {}", m.name));
        }
        table_head(&mut o, &cols.iter().map(String::as_str).collect::<Vec<_>>());
        for (i, p) in m0.periods.iter().enumerate() {
            let _ = write!(o, "<tr><td>{}</td><td>{}</td><td>{}</td>", esc(&p.period), p.metrics.model.n, num(p.metrics.persistence.mae));
            if seasonal {
                let _ = write!(o, "<td>{}</td>", num(p.metrics.seasonal_naive.as_ref().and_then(|s| s.mae)));
            }
            for m in &r.models {
                let q = m.periods.get(i).filter(|q| q.period == p.period);
                let _ = write!(o, "<td>{}</td><td>{}</td>", num(q.and_then(|q| q.metrics.model.mae)), num(q.and_then(|q| q.metrics.model.theil_u)));
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</table>\n");
        if m0.per_key.len() > 1 {
            o.push_str("<h2>Per key</h2>\n");
            table_head(&mut o, &HEAD);
            for (k, m) in &m0.per_key {
                row(&mut o, &format!("{k}: persistence"), &m.persistence);
                for mr in &r.models {
                    if let Some(mk) = mr.per_key.get(k) {
                        row(&mut o, &format!("{k}: model {}", mr.name), &mk.model);
                    }
                }
            }
            o.push_str("</table>\n");
        }
    }
    o.push_str("<h2>Plots</h2>\n");
    for p in &r.plots {
        let bytes = std::fs::read(dir.join(p))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = writeln!(o, "<p><img alt=\"{}\" src=\"data:image/png;base64,{b64}\"></p>", esc(p));
    }
    o.push_str("<p><small>Written by tickflare backtest. MAPE skips labels equal to 0; direction = share of non-zero realised changes whose sign the forecast matched; Theil U = RMSE / persistence RMSE.</small></p>\n</body></html>\n");
    Ok(o)
}
