//! tickflare: a streaming daemon for online regression.
//!
//! Data flows source → features → model → sink, one folder each; `state` holds what a
//! partition carries between batches, `pipeline` wires the stages, `cli` is the
//! command line, `broker` the embedded Kafka-protocol broker and `report` the
//! backtest reports.

pub mod analysis;
pub mod broker;
pub mod cli;
pub mod error;
pub mod features;
pub mod model;
pub mod pipeline;
pub mod report;
pub mod sink;
pub mod solar;
pub mod source;
pub mod state;
pub mod telemetry;
