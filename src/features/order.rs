//! Batches handed to the feature plan in (key, `_offset`) order, so a plan whose
//! windows partition by the key and order by `_offset` needs no sort of its own.
//!
//! DataFusion sorts a window's input on (partition keys, order keys), comparing
//! strings row against row. The input table can instead declare that order
//! ([`declared`]) and each batch be put in it here: a batch arrives in `_offset`
//! order, so a stable counting sort on the key (distinct keys ranked bytewise,
//! NULL last, as `ORDER BY key ASC NULLS LAST` ranks them) gives exactly that order
//! with one key comparison per row and one take.

use std::cmp::Ordering;
use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use arrow::datatypes::{DataType, Int64Type, Schema};
use datafusion::logical_expr::{col, SortExpr};

use crate::error::Result;
use crate::source::schema::OFFSET_COLUMN;

/// The order [`sort`] puts batches in, as the input table's declared sort order:
/// `key ASC NULLS LAST, _offset ASC NULLS LAST`. `None` unless `key` is a Utf8 column
/// of `schema` (other key types keep DataFusion's own sort).
pub fn declared(schema: &Schema, key: &str) -> Option<Vec<SortExpr>> {
    let f = schema.field_with_name(key).ok()?;
    (f.data_type() == &DataType::Utf8 && schema.index_of(OFFSET_COLUMN).is_ok())
        .then(|| vec![col(key).sort(true, false), col(OFFSET_COLUMN).sort(true, false)])
}

/// Key order: bytewise, NULL last.
fn key_order(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// `batch` in (key, `_offset`) order, the key being Utf8 column `key` (see
/// [`declared`]). Rows of one key keep their order, which is `_offset` order when the
/// batch arrives in it; a batch that does not is sorted on both columns.
pub fn sort(batch: RecordBatch, key: usize, offset: usize) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let offsets = batch.column(offset).as_primitive::<Int64Type>();
    if offsets.null_count() > 0 || !offsets.values().windows(2).all(|w| w[0] < w[1]) {
        let asc = SortOptions { descending: false, nulls_first: false };
        let cols = [
            SortColumn { values: batch.column(key).clone(), options: Some(asc) },
            SortColumn { values: batch.column(offset).clone(), options: Some(asc) },
        ];
        let idx = lexsort_to_indices(&cols, None)?;
        return Ok(take_record_batch(&batch, &idx)?);
    }
    let keys = batch.column(key).as_string::<i32>();
    // Each row's group: its key's index among the distinct keys in order of appearance.
    let mut ids: HashMap<Option<&str>, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut distinct: Vec<Option<&str>> = Vec::new();
    let mut group: Vec<u32> = Vec::with_capacity(n);
    let mut last: Option<(Option<&str>, u32)> = None;
    for i in 0..n {
        let k = keys.is_valid(i).then(|| keys.value(i));
        let g = match last {
            Some((lk, g)) if lk == k => g,
            _ => *ids.entry(k).or_insert_with(|| {
                distinct.push(k);
                (distinct.len() - 1) as u32
            }),
        };
        last = Some((k, g));
        group.push(g);
    }
    // Each group's first position in the output: groups ranked by key.
    let mut ranked: Vec<u32> = (0..distinct.len() as u32).collect();
    ranked.sort_by(|&a, &b| key_order(distinct[a as usize], distinct[b as usize]));
    let mut size = vec![0u32; distinct.len()];
    for &g in &group {
        size[g as usize] += 1;
    }
    let mut at = vec![0u32; distinct.len()];
    let mut next = 0u32;
    for &g in &ranked {
        at[g as usize] = next;
        next += size[g as usize];
    }
    let mut idx = vec![0u32; n];
    let mut moved = false;
    for (i, &g) in group.iter().enumerate() {
        let p = &mut at[g as usize];
        idx[*p as usize] = i as u32;
        moved |= *p as usize != i;
        *p += 1;
    }
    if !moved {
        return Ok(batch);
    }
    Ok(take_record_batch(&batch, &UInt32Array::from(idx))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;
    use std::sync::Arc;

    fn batch(keys: Vec<Option<&str>>, offsets: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(keys)), Arc::new(Int64Array::from(offsets))]).unwrap()
    }

    fn rows(b: &RecordBatch) -> Vec<(Option<String>, i64)> {
        let k = b.column(0).as_string::<i32>();
        let o = b.column(1).as_primitive::<Int64Type>();
        (0..b.num_rows()).map(|i| (k.is_valid(i).then(|| k.value(i).to_string()), o.value(i))).collect()
    }

    /// Against a comparison sort of the (key, offset) pairs with Rust's own ordering
    /// (`None` mapped last): keys interleaved, NULLs, a prefix key ("B" < "BA"), a
    /// non-ASCII key, batches in offset order and not.
    #[test]
    fn equals_a_comparison_sort_on_key_then_offset() {
        let keys = [Some("BA"), Some("B"), None, Some("é"), Some("A"), Some("B"), None, Some("BA"), Some("A"), Some("Z")];
        let mut draws = crate::model::rand::Draws(7);
        for case in 0..40 {
            let n = 1 + (case * 7) % 50;
            let ks: Vec<Option<&str>> = (0..n).map(|_| keys[draws.below(keys.len() as u64) as usize]).collect();
            let mut offs: Vec<i64> = (0..n as i64).map(|i| 10 + 3 * i).collect();
            if case % 4 == 3 {
                offs.reverse();
            }
            let b = batch(ks.clone(), offs.clone());
            let mut want: Vec<(Option<String>, i64)> = ks.iter().map(|k| k.map(str::to_string)).zip(offs).collect();
            want.sort_by(|a, b| (a.0.is_none(), &a.0, a.1).cmp(&(b.0.is_none(), &b.0, b.1)));
            assert_eq!(rows(&sort(b, 0, 1).unwrap()), want, "case {case}");
        }
    }
}
