//! Source stage: Kafka records → per-partition micro-batches of Arrow rows.
//!
//! [`batch::PartitionInput`] decodes records as they arrive and keeps their original
//! bytes for the batch's lifetime (for dead letters raised later in the pipeline);
//! [`gather`] is the one consume loop (live runs, topic backtests and the solar
//! tracker take their records through it), [`kafka`] makes and probes the clients and
//! [`sample`] seeds the embedded broker.

pub mod batch;
pub mod context;
pub mod decode;
pub mod file;
pub mod gather;
pub mod jsonpath;
pub mod kafka;
pub mod mapping;
pub mod rows;
pub mod sample;
pub mod schema;
