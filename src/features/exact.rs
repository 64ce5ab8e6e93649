//! Window aggregates that are exact functions of the rows in their frame.
//!
//! DataFusion evaluates sliding frames (`ROWS BETWEEN n PRECEDING AND CURRENT ROW`)
//! incrementally: add the entering row, retract the leaving one. With floating point
//! the result then depends on where the accumulation started — i.e. on the batch
//! boundaries — and differs in the last bits. These replacements for `sum`, `avg`,
//! `stddev`, `stddev_pop`, `var` and `var_pop` keep the frame's values and compute
//! each result from them in row order (two-pass for variances), so a row's features
//! are bit-identical whatever the batching. Cost: O(frame) per row.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};
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
}
