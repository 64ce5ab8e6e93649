//! tickflare: a streaming daemon for online regression.
//!
//! Data flows source → features → model → sink, one folder each; `state` holds what a
//! partition carries between batches, `pipeline` wires the stages, `cli` is the
//! command line and `broker` the embedded Kafka-protocol broker.

pub mod analysis;
pub mod broker;
pub mod cli;
pub mod error;
pub mod features;
pub mod model;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
