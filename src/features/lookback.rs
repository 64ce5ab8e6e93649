//! Per-key look-back: the last N input rows of every key, kept per partition between
//! batches and prepended to the next batch before the feature SQL runs.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::DataType;

use crate::error::Result;

/// Returns the rows of `history ++ new` that are among the last `n` of their key
/// (column `key_col`), in their original order.
pub fn retain_last_per_key(
    history: Option<&RecordBatch>,
    new: &RecordBatch,
    key_col: usize,
    n: usize,
) -> Result<RecordBatch> {
    let all = match history {
        Some(h) if h.num_rows() > 0 => concat_batches(&new.schema(), [h, new])?,
        _ => new.clone(),
    };
    if n == 0 {
        return Ok(all.slice(0, 0));
    }
    let keys = cast(all.column(key_col), &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let mut seen: HashMap<Option<&str>, usize> = HashMap::new();
    let mut keep: Vec<u32> = Vec::new();
    for i in (0..all.num_rows()).rev() {
        let k = if keys.is_null(i) { None } else { Some(keys.value(i)) };
        let c = seen.entry(k).or_insert(0);
        if *c < n {
            *c += 1;
            keep.push(i as u32);
        }
    }
    if keep.len() == all.num_rows() {
        return Ok(all);
    }
    keep.reverse();
    Ok(take_record_batch(&all, &UInt32Array::from(keep))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn keeps_last_n_of_each_key_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let b = |k: Vec<&str>, v: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(k)), Arc::new(Int64Array::from(v))],
            )
            .unwrap()
        };
        let h = b(vec!["a", "b", "a"], vec![1, 2, 3]);
        let n = b(vec!["a", "c", "b", "b"], vec![4, 5, 6, 7]);
        let out = retain_last_per_key(Some(&h), &n, 0, 2).unwrap();
        let v: Vec<i64> = out.column(1).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec();
        assert_eq!(v, vec![3, 4, 5, 6, 7]);
    }
}
