//! Window aggregates that are exact functions of the rows in their frame.
//!
//! DataFusion evaluates sliding frames (`ROWS BETWEEN n PRECEDING AND CURRENT ROW`)
//! incrementally: add the entering row, retract the leaving one. With floating point
//! the result then depends on where the accumulation started — i.e. on the batch
//! boundaries — and differs in the last bits. These replacements for `sum`, `avg`,
//! `stddev`, `stddev_pop`, `var` and `var_pop` keep the frame's values and compute
//! each result from them in row order (two-pass for variances), so a row's features
//! are bit-identical whatever the batching. Cost: O(frame) per row.
//!
//! Over a sliding frame, DataFusion drives an aggregate row by row: it slices the
//! argument arrays twice (entering and leaving rows) and calls `update_batch`,
//! `retract_batch` and `evaluate`. [`sliding_frames_read_in_place`] rewrites those
//! window calls into window functions of the same name whose evaluator reads each
//! row's frame straight out of the argument array — the same sums in the same order,
//! so the same bits, without the per-row slices.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, PartitionEvaluatorArgs, StateFieldsArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, LogicalPlan, PartitionEvaluator, Signature, Volatility,
    WindowFrame, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition, WindowUDF, WindowUDFImpl,
};
use datafusion::prelude::SessionContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Sum,
    Avg,
    VarSamp,
    VarPop,
    StddevSamp,
    StddevPop,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactAgg {
    name: &'static str,
    aliases: Vec<String>,
    kind: Kind,
    signature: Signature,
}

/// Registers the exact aggregates under the built-ins' names and aliases.
pub fn register(ctx: &SessionContext) {
    let all: [(&'static str, &[&str], Kind); 6] = [
        ("sum", &[], Kind::Sum),
        ("avg", &["mean"], Kind::Avg),
        ("var", &["var_samp", "var_sample"], Kind::VarSamp),
        ("var_pop", &["var_population"], Kind::VarPop),
        ("stddev", &["stddev_samp"], Kind::StddevSamp),
        ("stddev_pop", &[], Kind::StddevPop),
    ];
    for (name, aliases, kind) in all {
        ctx.register_udaf(AggregateUDF::from(ExactAgg {
            name,
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            kind,
            signature: Signature::uniform(1, vec![DataType::Float64], Volatility::Immutable),
        }));
    }
}

impl AggregateUDFImpl for ExactAgg {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ExactAcc { kind: self.kind, values: VecDeque::new() }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "values"),
            DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
            true,
        ))])
    }
}

/// Holds one entry per input row of the frame (NULLs included, so retraction stays
/// aligned); results ignore NULLs as SQL does.
#[derive(Debug)]
struct ExactAcc {
    kind: Kind,
    values: VecDeque<Option<f64>>,
}

fn floats(a: &ArrayRef) -> Result<Float64Array> {
    Ok(arrow::compute::cast(a, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
}

/// Appends `a`'s values (NULLs as `None`) to `out`. Sliding frames call this once per
/// row with a one-row slice: Float64 input (what the signature coerces to) is read in
/// place, without the cast's new array.
fn extend(out: &mut VecDeque<Option<f64>>, a: &ArrayRef) -> Result<()> {
    match a.as_primitive_opt::<Float64Type>() {
        Some(v) => out.extend(v.iter()),
        None => out.extend(floats(a)?.iter()),
    }
    Ok(())
}

impl Accumulator for ExactAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        extend(&mut self.values, &values[0])
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let n = values[0].len().min(self.values.len());
        self.values.drain(..n);
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(evaluate(self.kind, self.values.iter().flatten().copied())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * std::mem::size_of::<Option<f64>>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let vals: Vec<ScalarValue> = self.values.iter().flatten().map(|v| ScalarValue::Float64(Some(*v))).collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(&vals, &DataType::Float64))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                extend(&mut self.values, &lists.value(i))?;
            }
        }
        Ok(())
    }
}

/// Replaces every call of an exact aggregate over a frame with a bounded start
/// (`n PRECEDING`, `CURRENT ROW`, `n FOLLOWING`) and without `DISTINCT` or `FILTER`
/// by the window function [`ExactFrame`] of the same kind, aliased to the call's
/// column name so the rest of the plan is unchanged. Frames from `UNBOUNDED
/// PRECEDING` keep the aggregate, which accumulates instead of re-reading the frame.
pub fn sliding_frames_read_in_place(plan: LogicalPlan) -> Result<LogicalPlan> {
    let t = plan.transform_up_with_subqueries(|node| {
        if !matches!(node, LogicalPlan::Window(_)) {
            return Ok(Transformed::no(node));
        }
        let t = node.map_expressions(|e| {
            let Expr::WindowFunction(w) = &e else { return Ok(Transformed::no(e)) };
            let WindowFunctionDefinition::AggregateUDF(udaf) = &w.fun else { return Ok(Transformed::no(e)) };
            let Some(agg) = udaf.inner().downcast_ref::<ExactAgg>() else { return Ok(Transformed::no(e)) };
            let p = &w.params;
            if p.distinct || p.filter.is_some() || p.window_frame.start_bound.is_unbounded() {
                return Ok(Transformed::no(e));
            }
            let name = e.schema_name().to_string();
            let rows = RowsFrame::of(&p.window_frame);
            let fun = WindowUDF::from(ExactFrame { name: agg.name, kind: agg.kind, rows, signature: agg.signature.clone() });
            let call = Expr::WindowFunction(Box::new(WindowFunction { fun: WindowFunctionDefinition::WindowUDF(Arc::new(fun)), params: p.clone() }));
            Ok(Transformed::yes(call.alias(name)))
        })?;
        if t.transformed {
            t.map_data(|p| p.recompute_schema())
        } else {
            Ok(t)
        }
    })?;
    Ok(t.data)
}

/// An exact aggregate as a window function: each row's result computed from its
/// frame's rows, read in place from the (Float64) argument array. A `ROWS` frame's
/// bounds are kept here ([`RowsFrame`]): then the evaluator places each row's frame
/// itself and a whole partition is evaluated in one call ([`PartitionEvaluator::evaluate_all`])
/// instead of one call and one `ScalarValue` per row; `RANGE` and `GROUPS` frames are
/// placed by DataFusion row by row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactFrame {
    name: &'static str,
    kind: Kind,
    rows: Option<RowsFrame>,
    signature: Signature,
}

/// One end of a `ROWS` frame, relative to the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RowsBound {
    Preceding(usize),
    Current,
    Following(usize),
    UnboundedFollowing,
}

/// A `ROWS` frame with a bounded start: each row's range computed from its index as
/// DataFusion's `WindowFrameContext` computes it for `ROWS` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RowsFrame {
    start: RowsBound,
    end: RowsBound,
}

impl RowsFrame {
    /// The frame's bounds if it is a `ROWS` frame with a bounded start (`None` for
    /// anything else, which is then left to DataFusion's frame placement).
    fn of(frame: &WindowFrame) -> Option<Self> {
        if frame.units != WindowFrameUnits::Rows {
            return None;
        }
        let bound = |b: &WindowFrameBound| match b {
            WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n))) => usize::try_from(*n).ok().map(RowsBound::Preceding),
            WindowFrameBound::CurrentRow => Some(RowsBound::Current),
            WindowFrameBound::Following(ScalarValue::UInt64(Some(n))) => usize::try_from(*n).ok().map(RowsBound::Following),
            WindowFrameBound::Following(ScalarValue::UInt64(None)) => Some(RowsBound::UnboundedFollowing),
            _ => None,
        };
        let start = bound(&frame.start_bound)?;
        let end = bound(&frame.end_bound)?;
        (start != RowsBound::UnboundedFollowing).then_some(RowsFrame { start, end })
    }

    /// Row `i`'s frame in a partition of `len` rows (empty where the end falls before the start).
    fn range(&self, i: usize, len: usize) -> Range<usize> {
        let start = match self.start {
            RowsBound::Preceding(n) => i.saturating_sub(n),
            RowsBound::Current => i,
            RowsBound::Following(n) => i.saturating_add(n).min(len),
            RowsBound::UnboundedFollowing => len,
        };
        let end = match self.end {
            RowsBound::Preceding(n) => (i + 1).saturating_sub(n),
            RowsBound::Current => i + 1,
            RowsBound::Following(n) => i.saturating_add(n).saturating_add(1).min(len),
            RowsBound::UnboundedFollowing => len,
        };
        start..end.max(start)
    }

    /// Whether a row's frame ends at or before the row itself.
    fn is_causal(&self) -> bool {
        matches!(self.end, RowsBound::Preceding(_) | RowsBound::Current | RowsBound::Following(0))
    }
}

impl WindowUDFImpl for ExactFrame {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(&self, _args: PartitionEvaluatorArgs) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(FrameEval { kind: self.kind, rows: self.rows }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::Float64, true)))
    }
}

#[derive(Debug)]
struct FrameEval {
    kind: Kind,
    rows: Option<RowsFrame>,
}

impl FrameEval {
    /// The aggregate of `a`'s rows in `range`, NULLs skipped.
    fn over(&self, a: &Float64Array, range: Range<usize>) -> Option<f64> {
        if a.null_count() == 0 {
            evaluate(self.kind, a.values()[range].iter().copied())
        } else {
            evaluate(self.kind, range.filter(|&i| a.is_valid(i)).map(|i| a.value(i)))
        }
    }

    fn floats<'a>(&self, values: &'a [ArrayRef]) -> Result<&'a Float64Array> {
        match values[0].as_primitive_opt::<Float64Type>() {
            Some(a) => Ok(a),
            None => internal_err!("{:?} over a frame got {} instead of Float64", self.kind, values[0].data_type()),
        }
    }
}

impl PartitionEvaluator for FrameEval {
    /// A `ROWS` frame is placed by [`Self::get_range`]; other frames by DataFusion.
    fn uses_window_frame(&self) -> bool {
        self.rows.is_none()
    }

    fn supports_bounded_execution(&self) -> bool {
        true
    }

    fn get_range(&self, idx: usize, n_rows: usize) -> Result<Range<usize>> {
        match &self.rows {
            Some(f) => Ok(f.range(idx, n_rows)),
            None => internal_err!("a RANGE or GROUPS frame is placed by DataFusion"),
        }
    }

    fn is_causal(&self) -> bool {
        self.rows.is_some_and(|f| f.is_causal())
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let a = self.floats(values)?;
        Ok(ScalarValue::Float64(self.over(a, range.clone())))
    }

    /// A whole partition at once (`ROWS` frames): each row's frame from its index.
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let Some(f) = self.rows else {
            return internal_err!("a RANGE or GROUPS frame is evaluated row by row");
        };
        let a = self.floats(values)?;
        let out: Float64Array = (0..num_rows).map(|i| self.over(a, f.range(i, num_rows))).collect();
        Ok(Arc::new(out))
    }
}

/// The aggregate of `xs` (NULLs already removed), summing in the given order.
fn evaluate(kind: Kind, xs: impl Iterator<Item = f64> + Clone) -> Option<f64> {
    let (n, sum) = xs.clone().fold((0usize, 0.0f64), |(n, s), x| (n + 1, s + x));
    let var = |ddof: usize| {
        if n <= ddof {
            return None;
        }
        let mean = sum / n as f64;
        let ss: f64 = xs.clone().map(|x| (x - mean) * (x - mean)).sum();
        Some(ss / (n - ddof) as f64)
    };
    match kind {
        Kind::Sum => (n > 0).then_some(sum),
        Kind::Avg => (n > 0).then(|| sum / n as f64),
        Kind::VarSamp => var(1),
        Kind::VarPop => var(0),
        Kind::StddevSamp => var(1).map(f64::sqrt),
        Kind::StddevPop => var(0).map(f64::sqrt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::Schema;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::ExecutionPlan;

    /// By hand: xs = 2, 4, 4, 4, 5, 5, 7, 9 → sum 40, mean 5, Σ(x−5)² = 32,
    /// population variance 4 (σ = 2), sample variance 32/7.
    #[test]
    fn hand_computed() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let it = || xs.iter().copied();
        assert_eq!(evaluate(Kind::Sum, it()), Some(40.0));
        assert_eq!(evaluate(Kind::Avg, it()), Some(5.0));
        assert_eq!(evaluate(Kind::VarPop, it()), Some(4.0));
        assert_eq!(evaluate(Kind::StddevPop, it()), Some(2.0));
        assert_eq!(evaluate(Kind::VarSamp, it()), Some(32.0 / 7.0));
        assert_eq!(evaluate(Kind::StddevSamp, [1.0].into_iter()), None);
        assert_eq!(evaluate(Kind::Avg, std::iter::empty()), None);
    }

    /// Window functions in `plan`'s Window nodes that are [`ExactFrame`]s.
    fn frames_in(plan: &LogicalPlan) -> usize {
        let mut n = 0;
        plan.apply_with_subqueries(|p| {
            if let LogicalPlan::Window(w) = p {
                for e in &w.window_expr {
                    let e = if let Expr::Alias(a) = e { a.expr.as_ref() } else { e };
                    if let Expr::WindowFunction(f) = e {
                        if let WindowFunctionDefinition::WindowUDF(u) = &f.fun {
                            n += u.inner().downcast_ref::<ExactFrame>().is_some() as usize;
                        }
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        n
    }

    /// Rows of two keys, 37 each interleaved, with NULLs (`x`), without (`y`) and an
    /// integer column (`i`); `t` jumps so that RANGE frames hold varying numbers of rows.
    fn table() -> (Vec<Option<f64>>, Vec<&'static str>, Vec<i64>, RecordBatch) {
        let n = 74;
        let x: Vec<Option<f64>> = (0..n).map(|i| (i % 7 != 3).then(|| ((i * 37) % 11) as f64 * 0.1 + i as f64 * 0.013 - 0.4)).collect();
        let k: Vec<&str> = (0..n).map(|i| if i % 2 == 0 { "A" } else { "B" }).collect();
        let t: Vec<i64> = (0..n as i64).map(|i| i + (i / 10) * 5).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("o", DataType::Int64, false),
            Field::new("k", DataType::Utf8, false),
            Field::new("t", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("i", DataType::Int64, false),
            Field::new("y", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(StringArray::from(k.clone())),
                Arc::new(Int64Array::from(t.clone())),
                Arc::new(Float64Array::from(x.clone())),
                Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| (i * 13) % 9 - 4))),
                Arc::new(Float64Array::from_iter_values(x.iter().map(|v| v.unwrap_or(0.7)))),
            ],
        )
        .unwrap();
        (x, k, t, batch)
    }

    /// Streaming and whole-partition window operators in a physical plan.
    fn operators(plan: &Arc<dyn ExecutionPlan>) -> (usize, usize) {
        use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
        let mut n = (0, 0);
        plan.apply(|p| {
            n.0 += p.downcast_ref::<BoundedWindowAggExec>().is_some() as usize;
            n.1 += p.downcast_ref::<WindowAggExec>().is_some() as usize;
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        n
    }

    /// Runs `sql` over [`table`]: with the frames rewritten to be read in place or
    /// not, and with the streaming window operators swapped for whole-partition ones
    /// (what a feature plan runs) or not. Also returns the number of rewritten frames.
    async fn run_with(sql: &str, rewrite: bool, whole: bool) -> (RecordBatch, usize) {
        let ctx = SessionContext::new();
        register(&ctx);
        let (_, _, _, batch) = table();
        ctx.register_table("w", Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap())).unwrap();
        let (state, plan) = ctx.sql(sql).await.unwrap().into_parts();
        let plan = if rewrite { sliding_frames_read_in_place(plan).unwrap() } else { plan };
        let frames = frames_in(&plan);
        let phys = state.create_physical_plan(&plan).await.unwrap();
        let before = operators(&phys);
        let phys = if whole { crate::features::whole_partition_windows(phys).unwrap() } else { phys };
        if whole {
            assert_eq!(operators(&phys), (0, before.0 + before.1), "every streaming window operator swapped");
        }
        let out = datafusion::physical_plan::collect(phys, ctx.task_ctx()).await.unwrap();
        (arrow::compute::concat_batches(&out[0].schema(), &out).unwrap(), frames)
    }

    async fn run(sql: &str, rewrite: bool) -> (RecordBatch, usize) {
        run_with(sql, rewrite, false).await
    }

    fn column(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
        let c = b.column_by_name(name).unwrap().as_primitive::<Float64Type>();
        (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
    }

    /// Read in place, every kind over ROWS and RANGE frames (NULLs among the rows,
    /// integers cast, a call inside arithmetic) gives the aggregate path's bits and
    /// the values of a direct loop over each row's frame; unbounded frames are left
    /// to the aggregate.
    #[tokio::test]
    async fn frames_read_in_place_equal_the_aggregate_and_a_direct_loop() {
        let sql = "SELECT o, \
          sum(x) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS s4, \
          avg(x) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING) AS a4, \
          var(x) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS v5, \
          var_pop(x) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS vp5, \
          stddev(x) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS sd5, \
          stddev_pop(x) OVER (PARTITION BY k ORDER BY t RANGE BETWEEN 6 PRECEDING AND CURRENT ROW) AS sdr, \
          avg(i) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) - x AS gap, \
          sum(y) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS ys6, \
          var(y) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS yv6, \
          sum(x) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum, \
          sum(y) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 1 FOLLOWING AND 3 FOLLOWING) AS yf, \
          avg(x) OVER (PARTITION BY k ORDER BY o ROWS BETWEEN 4 PRECEDING AND 2 PRECEDING) AS xp, \
          lag(x, 2) OVER (PARTITION BY k ORDER BY o) AS lag2, \
          lead(y, 1) OVER (PARTITION BY k ORDER BY o) AS lead1 \
          FROM w ORDER BY o";
        let (fast, frames) = run(sql, true).await;
        let (slow, none) = run(sql, false).await;
        assert_eq!((frames, none), (11, 0), "all but the unbounded frame are read in place");
        assert_eq!(fast, slow, "the same bits as the aggregate path");
        // What a feature plan runs: whole partitions, the ROWS frames placed by the
        // evaluator; RANGE frames and the unbounded aggregate row by row as before.
        let (whole, _) = run_with(sql, true, true).await;
        assert_eq!(whole, fast, "whole-partition operators give the streaming ones' bits");

        let (x, k, t, input) = table();
        let i_col: Vec<f64> = input.column_by_name("i").unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().iter().map(|&v| v as f64).collect();
        let y = column(&input, "y");
        // The rows of row r's key from `a` to `b` rows after it (negative: before),
        // both included, clipped to the key's rows.
        let rows_between = |r: usize, a: isize, b: isize| -> Vec<usize> {
            let same: Vec<usize> = (0..x.len()).filter(|&j| k[j] == k[r]).collect();
            let p = same.iter().position(|&j| j == r).unwrap() as isize;
            let (lo, hi) = ((p + a).max(0), (p + b).min(same.len() as isize - 1));
            if lo > hi {
                return Vec::new();
            }
            same[lo as usize..=hi as usize].to_vec()
        };
        // Each row's frame: the rows of its key from `lo` rows before to `hi` after.
        let rows_frame = |r: usize, lo: usize, hi: usize| rows_between(r, -(lo as isize), hi as isize);
        let vals = |idx: &[usize]| -> Vec<f64> { idx.iter().filter_map(|&j| x[j]).collect() };
        let sum = |v: &[f64]| v.iter().fold(0.0, |s, x| s + x);
        let var = |v: &[f64], ddof: usize| {
            let m = sum(v) / v.len() as f64;
            (v.len() > ddof).then(|| v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - ddof) as f64)
        };
        for r in 0..x.len() {
            let w4 = vals(&rows_frame(r, 3, 0));
            assert_eq!(column(&fast, "s4")[r], (!w4.is_empty()).then(|| sum(&w4)), "s4 row {r}");
            let a4 = vals(&rows_frame(r, 2, 1));
            assert_eq!(column(&fast, "a4")[r], (!a4.is_empty()).then(|| sum(&a4) / a4.len() as f64), "a4 row {r}");
            let w5 = vals(&rows_frame(r, 4, 0));
            assert_eq!(column(&fast, "v5")[r], var(&w5, 1), "v5 row {r}");
            assert_eq!(column(&fast, "vp5")[r], var(&w5, 0), "vp5 row {r}");
            assert_eq!(column(&fast, "sd5")[r], var(&w5, 1).map(f64::sqrt), "sd5 row {r}");
            let ranged: Vec<usize> = (0..x.len()).filter(|&j| k[j] == k[r] && t[j] <= t[r] && t[j] >= t[r] - 6).collect();
            assert_eq!(column(&fast, "sdr")[r], var(&vals(&ranged), 0).map(f64::sqrt), "sdr row {r}");
            let ii: Vec<f64> = rows_frame(r, 2, 0).iter().map(|&j| i_col[j]).collect();
            let want_gap = x[r].map(|xr| sum(&ii) / ii.len() as f64 - xr);
            assert_eq!(column(&fast, "gap")[r], want_gap, "gap row {r}");
            let y6: Vec<f64> = rows_frame(r, 5, 0).iter().map(|&j| y[j].unwrap()).collect();
            assert_eq!(column(&fast, "ys6")[r], Some(sum(&y6)), "ys6 row {r}");
            assert_eq!(column(&fast, "yv6")[r], var(&y6, 1), "yv6 row {r}");
            let yf: Vec<f64> = rows_between(r, 1, 3).iter().map(|&j| y[j].unwrap()).collect();
            assert_eq!(column(&whole, "yf")[r], (!yf.is_empty()).then(|| sum(&yf)), "yf row {r}");
            let xp = vals(&rows_between(r, -4, -2));
            assert_eq!(column(&whole, "xp")[r], (!xp.is_empty()).then(|| sum(&xp) / xp.len() as f64), "xp row {r}");
            let back2 = rows_between(r, -2, 0);
            let lag2 = if back2.len() == 3 { x[back2[0]] } else { None };
            assert_eq!(column(&whole, "lag2")[r], lag2, "lag2 row {r}");
            let next = rows_between(r, 0, 1);
            assert_eq!(column(&whole, "lead1")[r], next.get(1).map(|&j| y[j].unwrap()), "lead1 row {r}");
        }
    }
}
