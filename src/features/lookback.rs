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
    // Rows kept so far per key; the previous row's key is looked up only when it changes.
    let mut seen: HashMap<Option<&str>, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut keep: Vec<u32> = Vec::new();
    let mut last: Option<(Option<&str>, usize)> = None;
    for i in (0..all.num_rows()).rev() {
        let k = if keys.is_null(i) { None } else { Some(keys.value(i)) };
        let mut c = match last {
            Some((lk, c)) if lk == k => c,
            Some((lk, c)) => {
                seen.insert(lk, c);
                seen.get(&k).copied().unwrap_or(0)
            }
            None => 0,
        };
        if c < n {
            c += 1;
            keep.push(i as u32);
        }
        last = Some((k, c));
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

    /// Seeded rows of four keys and NULL, in runs and interleaved: a row is kept
    /// exactly when fewer than `n` rows of its key (NULL being a key) come after it.
    #[test]
    fn keeps_the_rows_with_fewer_than_n_of_their_key_after_them() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let names = [Some("a"), Some("b"), Some("ab"), Some("c"), None];
        let mut draws = crate::model::rand::Draws(11);
        for case in 0..30u64 {
            let len = 1 + draws.below(60) as usize;
            let mut ks: Vec<Option<&str>> = Vec::with_capacity(len);
            while ks.len() < len {
                let k = names[draws.below(names.len() as u64) as usize];
                let run = 1 + draws.below(if case % 2 == 0 { 1 } else { 6 }) as usize;
                ks.extend(std::iter::repeat_n(k, run.min(len - ks.len())));
            }
            let split = draws.below(len as u64 + 1) as usize;
            let b = |r: std::ops::Range<usize>| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(StringArray::from(ks[r.clone()].to_vec())), Arc::new(Int64Array::from_iter_values(r.map(|i| i as i64)))],
                )
                .unwrap()
            };
            let n = draws.below(5) as usize;
            let out = retain_last_per_key(Some(&b(0..split)), &b(split..len), 0, n).unwrap();
            let got: Vec<i64> = out.column(1).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec();
            let want: Vec<i64> =
                (0..len).filter(|&i| ks[i + 1..].iter().filter(|k| **k == ks[i]).count() < n).map(|i| i as i64).collect();
            assert_eq!(got, want, "case {case}: n {n}, keys {ks:?}");
        }
    }
}
