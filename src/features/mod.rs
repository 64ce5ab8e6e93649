//! Feature SQL: planned once per pipeline with DataFusion, executed per micro-batch.
//!
//! The input table is a [`StreamingTable`] whose only partition reads a shared slot, so
//! the physical plan is built once and each batch just fills the slot, resets the
//! plan's run state and executes it. Each partition's per-key look-back rows
//! ([`lookback`]) are prepended to the batch so window functions see the same history
//! whatever the batch boundaries; only rows of the new batch are returned. Windows
//! run a whole partition at a time ([`whole_partition_windows`], [`exact`]), and where
//! they partition by the records' key the batch is put in key order beforehand
//! ([`order`]) instead of DataFusion sorting it.

pub mod causal;
pub mod exact;
pub mod lookback;
pub mod order;

use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::SortExpr;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{collect, ExecutionPlan, InputOrderMode, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::source::schema::OFFSET_COLUMN;

/// The single partition of the input table: yields whatever batch is in the slot.
#[derive(Debug)]
struct SlotStream {
    schema: SchemaRef,
    slot: Arc<Mutex<Option<RecordBatch>>>,
}

impl PartitionStream for SlotStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batch = self.slot.lock().expect("slot lock").take();
        let items = batch.into_iter().map(Ok);
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(items)))
    }
}

/// Swaps each streaming window operator (`BoundedWindowAggExec`) that reads its
/// input sorted on the partition keys for the whole-partition one (`WindowAggExec`).
/// Every execution of a feature plan reads one finite batch, so the streaming
/// operator's per-row machinery (frame state, one evaluator call and one
/// `ScalarValue` per row) buys nothing; the whole-partition operator evaluates
/// `LAG`/`LEAD`, ranks and the exact `ROWS` frames one partition at a time. Operators
/// in another input order mode are kept (the whole-partition one needs sorted input).
pub(crate) fn whole_partition_windows(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let t = plan.transform_up(|p| {
        let Some(b) = p.downcast_ref::<BoundedWindowAggExec>() else { return Ok(Transformed::no(p)) };
        if b.input_order_mode != InputOrderMode::Sorted {
            return Ok(Transformed::no(p));
        }
        let w = WindowAggExec::try_new(b.window_expr().to_vec(), b.input().clone(), false)?;
        Ok(Transformed::yes(Arc::new(w) as Arc<dyn ExecutionPlan>))
    })?;
    Ok(t.data)
}

/// Sort operators in a physical plan.
fn sorts(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut n = 0;
    let _ = plan.apply(|p| {
        n += p.downcast_ref::<SortExec>().is_some() as usize;
        Ok(TreeNodeRecursion::Continue)
    });
    n
}

/// One planning of the query: its context, physical plan and input slot.
struct Planned {
    task_ctx: Arc<TaskContext>,
    plan: Arc<dyn ExecutionPlan>,
    slot: Arc<Mutex<Option<RecordBatch>>>,
}

impl Planned {
    /// Plans `sql` over a table whose batches come in `order` (none: any order).
    async fn new(sql: &str, table: &str, input_schema: &SchemaRef, order: Vec<SortExpr>) -> Result<Self> {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(8192)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        exact::register(&ctx);
        let slot = Arc::new(Mutex::new(None));
        let stream = SlotStream { schema: input_schema.clone(), slot: slot.clone() };
        let provider = StreamingTable::try_new(input_schema.clone(), vec![Arc::new(stream)])?.with_sort_order(order);
        ctx.register_table(table, Arc::new(provider))?;
        let (state, logical) = ctx.sql(sql).await?.into_parts();
        causal::only_earlier_rows(&logical)?;
        let plan = state.create_physical_plan(&exact::sliding_frames_read_in_place(logical)?).await?;
        Ok(Planned { task_ctx: ctx.task_ctx(), plan: whole_partition_windows(plan)?, slot })
    }
}

/// A planned feature query.
pub struct FeatureEngine {
    sql: String,
    table: String,
    key: Option<String>,
    task_ctx: Arc<TaskContext>,
    plan: Arc<dyn ExecutionPlan>,
    slot: Arc<Mutex<Option<RecordBatch>>>,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    offset_out: usize,
    /// Batches are put in (key, `_offset`) order before they run ([`order`]): the
    /// key's and `_offset`'s input columns.
    presort: Option<(usize, usize)>,
}

impl FeatureEngine {
    /// Plans `sql` against a table `table` of `input_schema` (which must contain
    /// `_offset`). The output must contain `_offset` too.
    pub async fn plan(sql: &str, table: &str, input_schema: SchemaRef) -> Result<Self> {
        Self::plan_keyed(sql, table, input_schema, None).await
    }

    /// [`FeatureEngine::plan`]; with `key`, the records' key column, the query is also
    /// planned over input declared in (key, `_offset`) order ([`order::declared`]),
    /// and that plan is kept if it sorts less — typically windows `PARTITION BY key
    /// ORDER BY _offset`, whose sort it drops; each batch is then put in that order
    /// by [`order::sort`] before it runs.
    pub async fn plan_keyed(sql: &str, table: &str, input_schema: SchemaRef, key: Option<&str>) -> Result<Self> {
        let mut planned = Planned::new(sql, table, &input_schema, Vec::new()).await?;
        let mut presort = None;
        if let Some((key, order)) = key.and_then(|k| Some((k, order::declared(&input_schema, k)?))) {
            let ordered = Planned::new(sql, table, &input_schema, order).await?;
            if sorts(&ordered.plan) < sorts(&planned.plan) {
                planned = ordered;
                presort = Some((input_schema.index_of(key)?, input_schema.index_of(OFFSET_COLUMN)?));
            }
        }
        let output_schema = planned.plan.schema();
        let offset_out = output_schema.index_of(OFFSET_COLUMN).map_err(|_| {
            Error::Config(format!(
                "the feature SQL must select the {OFFSET_COLUMN} column (it ties each feature row to its record)"
            ))
        })?;
        Ok(FeatureEngine {
            sql: sql.to_string(),
            table: table.to_string(),
            key: key.map(str::to_string),
            task_ctx: planned.task_ctx,
            plan: planned.plan,
            slot: planned.slot,
            input_schema,
            output_schema,
            offset_out,
            presort,
        })
    }

    /// The same query planned again: its own plan and input slot, for another worker.
    pub async fn replica(&self) -> Result<Self> {
        Self::plan_keyed(&self.sql, &self.table, self.input_schema.clone(), self.key.as_deref()).await
    }

    /// Whether batches are put in key order before they run (the plan then has no
    /// sort of its own for the windows).
    pub fn presorted(&self) -> bool {
        self.presort.is_some()
    }

    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    pub fn input_schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    /// Runs the query over `history` followed by `new` and returns the output rows of
    /// records in `new`, ordered by `_offset`. Rows the query filtered out are absent.
    pub async fn compute(&self, history: Option<&RecordBatch>, new: &RecordBatch) -> Result<RecordBatch> {
        if new.num_rows() == 0 {
            return Ok(RecordBatch::new_empty(self.output_schema.clone()));
        }
        let first_new = new
            .column_by_name(OFFSET_COLUMN)
            .ok_or_else(|| Error::Internal("input batch lacks _offset".into()))?
            .as_primitive::<Int64Type>()
            .value(0);
        let input = match history {
            Some(h) if h.num_rows() > 0 => concat_batches(&self.input_schema, [h, new])?,
            _ => new.clone(),
        };
        let input = match self.presort {
            Some((key, offset)) => order::sort(input, key, offset)?,
            None => input,
        };
        *self.slot.lock().expect("slot lock") = Some(input);
        let plan = reset_plan_states(self.plan.clone())?;
        let out = collect(plan, self.task_ctx.clone()).await?;
        let out = concat_batches(&self.output_schema, &out)?;
        // Keep rows of the new records, in offset order.
        let offsets = out.column(self.offset_out).as_primitive::<Int64Type>();
        if offsets.null_count() > 0 {
            return Err(Error::Config("the feature SQL produced a NULL _offset".into()));
        }
        let sorted = sort_to_indices(offsets, None, None)?;
        let first = sorted.values().partition_point(|&i| offsets.value(i as usize) < first_new);
        let keep = sorted.slice(first, sorted.len() - first);
        let out = take_record_batch(&out, &keep)?;
        let offs = out.column(self.offset_out).as_primitive::<Int64Type>().values();
        if let Some(w) = offs.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config(format!(
                "the feature SQL produced more than one row for offset {}; it must keep at most one row per record",
                w[0]
            )));
        }
        Ok(out)
    }
}
