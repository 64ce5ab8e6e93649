//! `cargo bench --bench decode`: the two JSON stages of a file backtest on one core —
//! the reader's placement walk (key and event time of each line) and the schema
//! decode into Arrow columns — over the Binance tick file (the full one in
//! `../shared/data` when present, else the shipped 10,000-event sample). Nanoseconds
//! per record, best of 25 rounds (the least disturbed by other work on the machine).

use std::path::Path;
use std::time::Instant;

use tickflare::source::decode::Decoder;
use tickflare::source::mapping::FileMessages;

const ROUNDS: usize = 25;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let built = match rt.block_on(tickflare::pipeline::build::build(&root.join("pipelines/market-ticks.toml"))) {
        Ok(b) => b,
        Err(p) => panic!("pipeline has problems: {p:?}"),
    };
    let (schema, src) = (built.schema.clone(), &built.config.source);
    let input = tickflare::cli::bench::bench_input(&built, None).expect("input");
    let lines = tickflare::source::sample::read_lines(&input).expect("input");
    let n = lines.len();

    let mut best_read = f64::INFINITY;
    for _ in 0..ROUNDS {
        let mut r = FileMessages::open(&input, &src.file, schema.clone(), &src.time, Some(&src.key)).expect("open");
        let t0 = Instant::now();
        let mut seen = 0usize;
        let mut keyed = 0usize;
        while let Some(m) = r.next_message() {
            let m = m.expect("readable");
            keyed += usize::from(m.key.is_some() && m.time_ms.is_some());
            seen += 1;
            if seen == n {
                break;
            }
        }
        best_read = best_read.min(t0.elapsed().as_secs_f64() * 1e9 / seen as f64);
        assert_eq!(keyed, n, "every line keyed and timed");
    }

    let mut d = Decoder::new(schema.clone());
    let mut best_decode = f64::INFINITY;
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let mut rows = 0;
        for (i, l) in lines.iter().enumerate() {
            d.push(Some(l), i as i64).expect("decodable");
            if d.len() == 8192 {
                rows += d.finish().num_rows();
            }
        }
        rows += d.finish().num_rows();
        best_decode = best_decode.min(t0.elapsed().as_secs_f64() * 1e9 / rows as f64);
    }
    println!("decode: {n} records of {} | reader (read, key, time) {best_read:.0} ns/record | decode to Arrow {best_decode:.0} ns/record", input.display());
}
