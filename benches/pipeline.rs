//! `cargo bench`: passthrough vs full market pipeline throughput on the embedded
//! broker (the same measurement as `tickflare bench`), in release mode.

fn main() {
    tickflare::model::init_cpu_threads();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let r = rt
        .block_on(tickflare::cli::bench::run_bench(&root.join("pipelines/market-ticks.toml"), None, 6))
        .expect("bench");
    println!(
        "pipeline_throughput: messages {} | passthrough {:.0} msg/s | pipeline {:.0} msg/s | ratio {:.3} | with checkpoints {:.0} msg/s",
        r.messages, r.passthrough_msgs_per_s, r.pipeline_msgs_per_s, r.ratio, r.checkpointed_msgs_per_s
    );
}
