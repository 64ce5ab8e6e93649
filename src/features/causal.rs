//! Refuses feature SQL whose windows look at later rows. A window over later rows
//! (`LEAD`, a frame ending `n FOLLOWING` or `UNBOUNDED FOLLOWING` — which is also the
//! frame of an aggregate with no `ORDER BY` — `NTILE`, `PERCENT_RANK`, `CUME_DIST`)
//! sees whatever later rows the micro-batch happens to hold: the last rows of each
//! batch see none, so the features — and the forecasts — would depend on where
//! batches end, and a forecast would use values from after its own time. Windows
//! over earlier rows are what look-back serves.
//!
//! Also refused: two-column aggregates (`corr`, `covar_*`, `regr_*`) over a sliding
//! frame. DataFusion slides them by adding the entering row and retracting the
//! leaving one, so their last bits depend on where accumulation started — on the
//! batch boundaries (`exact` replaces the one-column ones — `sum`, `avg`, variances —
//! with versions that read each frame; these have none yet).
//!
//! Not checked: the peers of a `RANGE` frame's `CURRENT ROW` (rows tied on the
//! `ORDER BY` value; order by `_offset`, which has no ties), and joins or subqueries
//! over the batch.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Expr, LogicalPlan, WindowFrameBound, WindowFunctionDefinition};

use crate::error::{Error, Result};

/// Window functions that need rows after the current one, whatever their frame.
const LOOK_AHEAD: [&str; 4] = ["lead", "ntile", "percent_rank", "cume_dist"];

/// Window functions (besides aggregates) whose value comes from their frame.
const FRAMED: [&str; 3] = ["first_value", "last_value", "nth_value"];

/// Aggregates DataFusion slides by add and retract in floating point (`regr_count`
/// counts, exactly).
const SLID: [&str; 12] = [
    "corr", "covar", "covar_samp", "covar_pop", "regr_slope", "regr_intercept", "regr_r2", "regr_avgx", "regr_avgy", "regr_sxx",
    "regr_syy", "regr_sxy",
];

/// An error naming the first window of `plan` that reads later rows or slides an
/// aggregate that is not exact.
pub fn only_earlier_rows(plan: &LogicalPlan) -> Result<()> {
    let mut found: Option<String> = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Window(w) = node {
            for e in &w.window_expr {
                e.apply(|x| {
                    if let Expr::WindowFunction(f) = x {
                        found = refusal(f);
                    }
                    Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
                })?;
            }
        }
        Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })?;
    match found {
        None => Ok(()),
        Some(why) => Err(Error::Config(format!("the feature SQL's window {why}"))),
    }
}

/// Why the window call `f` cannot be a feature, if it cannot.
fn refusal(f: &WindowFunction) -> Option<String> {
    let name = f.fun.name().to_ascii_lowercase();
    if let Some(why) = later_rows(&f.fun, &name, &f.params.window_frame.end_bound) {
        return Some(format!(
            "{name} {why}: a feature must come from the row and earlier ones (a micro-batch holds some later rows \
             and not others, so such a feature would change with the batch boundaries, and a forecast would see values \
             from after its time); use LAG, or frames that end at CURRENT ROW or n PRECEDING, with an ORDER BY"
        ));
    }
    if SLID.contains(&name.as_str()) && !f.params.window_frame.start_bound.is_unbounded() {
        return Some(format!(
            "{name} over a sliding frame is computed by adding and retracting rows, so its last bits would depend on \
             the batch boundaries (not exact here yet; for a covariance, avg(x * y) - avg(x) * avg(y) over the frame is)"
        ));
    }
    None
}

/// Why the window function `fun` (named `name`, lower case) over a frame ending at
/// `end` reads later rows, if it does.
fn later_rows(fun: &WindowFunctionDefinition, name: &str, end: &WindowFrameBound) -> Option<&'static str> {
    if LOOK_AHEAD.contains(&name) {
        return Some("reads the rows after the current one");
    }
    let framed = matches!(fun, WindowFunctionDefinition::AggregateUDF(_)) || FRAMED.contains(&name);
    match end {
        WindowFrameBound::Following(v) if framed && v.is_null() => Some("has a frame that runs to the partition's end (UNBOUNDED FOLLOWING, or no ORDER BY)"),
        WindowFrameBound::Following(v) if framed && !is_zero(v) => Some("has a frame that ends after the current row (n FOLLOWING)"),
        _ => None,
    }
}

fn is_zero(v: &ScalarValue) -> bool {
    ScalarValue::new_zero(&v.data_type()).is_ok_and(|z| z == *v)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use crate::features::FeatureEngine;

    async fn plan(sql: &str) -> crate::error::Result<FeatureEngine> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("_offset", DataType::Int64, false),
            Field::new("symbol", DataType::Utf8, false),
            Field::new("ts", DataType::Float64, false),
            Field::new("price", DataType::Float64, false),
        ]));
        FeatureEngine::plan(sql, "ticks", schema).await
    }

    /// Windows over later rows are refused when the pipeline is planned, each with
    /// what reads them; windows over the row and earlier ones plan as before.
    #[tokio::test]
    async fn windows_over_later_rows_are_refused() {
        let w = "OVER (PARTITION BY symbol ORDER BY _offset";
        for (f, what) in [
            (format!("lead(price, 1) {w})"), "lead reads the rows after"),
            (format!("sum(price) {w} ROWS BETWEEN 1 FOLLOWING AND 3 FOLLOWING)"), "ends after the current row"),
            (format!("avg(price) {w} ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING)"), "ends after the current row"),
            (format!("max(price) {w} ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)"), "partition's end"),
            ("avg(price) OVER (PARTITION BY symbol)".to_string(), "partition's end"),
            (format!("last_value(price) {w} RANGE BETWEEN CURRENT ROW AND 5 FOLLOWING)"), "ends after the current row"),
            (format!("ntile(4) {w})"), "ntile reads the rows after"),
            (format!("cume_dist() {w})"), "cume_dist reads the rows after"),
            (format!("price - lead(price) {w})"), "lead reads"),
            (format!("corr(price, ts) {w} ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)"), "corr over a sliding frame"),
            (format!("regr_slope(price, ts) {w} ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)"), "regr_slope over a sliding frame"),
        ] {
            let sql = format!("SELECT _offset, {f} AS x FROM ticks");
            let e = plan(&sql).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(what) && e.contains("batch boundaries"), "{sql}: {e}");
        }
        for f in [
            format!("lag(price, 2) {w})"),
            format!("sum(price) {w} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)"),
            format!("avg(price) {w} ROWS BETWEEN 5 PRECEDING AND 1 PRECEDING)"),
            format!("sum(price) {w} ROWS BETWEEN 1 PRECEDING AND 0 FOLLOWING)"),
            format!("sum(price) {w})"),
            format!("row_number() {w})"),
            "row_number() OVER (PARTITION BY symbol)".to_string(),
            format!("first_value(price) {w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"),
            format!("covar_pop(price, ts) {w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"),
            format!("regr_count(price, ts) {w} ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)"),
        ] {
            let sql = format!("SELECT _offset, {f} AS x FROM ticks");
            assert!(plan(&sql).await.is_ok(), "{sql}");
        }
    }
}
