//! Integration tests, compiled into one binary (one link of the heavy dependencies).
//! Each module pins one capability; `common` has the shared helpers.

mod backtest;
mod common;
mod dead_letters;
mod end_to_end;
mod exactly_once;
mod features;
mod fuzz;
mod forecasting;
mod graceful;
mod processes;
mod s3;
mod secure;
mod series;
mod solar;
mod solar_crash;
mod telemetry;
