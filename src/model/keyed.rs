//! The model work of one key in a batch, queued while the batch is planned and run
//! after: the key's updates and predictions in its own row order. Keys share nothing,
//! so a partition's keys run key by key — each key's model hot in cache for all its
//! rows of the batch — on several threads, and every key's results are those of
//! processing the rows one at a time (tested with shuffled interleavings). Keys that
//! are rows of one stacked bank (`model.bank`) run in waves instead: the i-th queued
//! op of every key, one batched update and one batched predict per wave.

use std::time::{Duration, Instant};

use std::sync::Arc;

use super::bank::{self, SharedBank};
use super::OnlineModel;
use crate::error::{Error, Result};

/// One op in this many, drawn, is timed (see [`KeyOps::run`]).
const SAMPLE: u32 = 32;

thread_local! {
    /// This thread's sampling draws (xorshift64; the seed only has to be non-zero).
    static DRAW: std::cell::Cell<u64> = const { std::cell::Cell::new(0x9E37_79B9_7F4A_7C15) };
}

/// Whether this op is one of the timed ones: each with probability 1/SAMPLE, drawn
/// on this thread. Drawn, not every SAMPLE-th: a fixed period lines up with the ops'
/// own patterns — counted per key it timed every key's first op (cold in cache, and
/// where its model is built), and counted per thread it still hit the same op of a
/// key whenever a key's ops per batch divide SAMPLE — and read the models' time 1.5 –
/// 5× high in `bench-models --keys 1000`.
fn sampled() -> bool {
    DRAW.with(|c| {
        let mut x = c.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x % u64::from(SAMPLE) == 0
    })
}

/// Builds a fresh model (the same configuration for every key).
pub type Build<'a> = &'a (dyn Fn() -> Result<Box<dyn OnlineModel>> + Sync);

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Learn from the row with this target.
    Learn(f64),
    Predict,
}

/// One key's queued work and its forecasts.
#[derive(Default)]
pub struct KeyOps {
    ops: Vec<Op>,
    /// Each op's input row (`stride` values).
    xs: Vec<f64>,
    /// Ops already run.
    done: usize,
    /// Per prediction: the raw forecast and the model's update count when made.
    results: Vec<(f64, u64)>,
    /// Predictions handed out by [`KeyOps::next_forecast`].
    read: usize,
}

/// What running queued work did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Models built (a key's first, or one replacing a diverged model).
    pub built: usize,
    /// Models dropped because a forecast was not finite (the weights blew up).
    pub diverged: usize,
    pub update: Duration,
    pub predict: Duration,
}

impl Outcome {
    pub fn add(&mut self, o: Outcome) {
        self.built += o.built;
        self.diverged += o.diverged;
        self.update += o.update;
        self.predict += o.predict;
    }
}

impl KeyOps {
    pub fn learn(&mut self, x: &[f64], y: f64) {
        self.ops.push(Op::Learn(y));
        self.xs.extend_from_slice(x);
    }

    pub fn predict(&mut self, x: &[f64]) {
        self.ops.push(Op::Predict);
        self.xs.extend_from_slice(x);
    }

    /// Work queued and not yet run.
    pub fn queued(&self) -> bool {
        self.done < self.ops.len()
    }

    /// Ops queued and not yet run.
    fn left(&self) -> usize {
        self.ops.len() - self.done
    }

    /// Runs the queued ops in order on the model in `slot` (built when empty). A
    /// forecast that is not finite empties the slot: the next op starts afresh.
    pub fn run(&mut self, slot: &mut Option<Box<dyn OnlineModel>>, build: Build<'_>) -> Result<Outcome> {
        let mut o = Outcome::default();
        let stride = if self.ops.is_empty() { 0 } else { self.xs.len() / self.ops.len() };
        // Stage times are sampled: one op in SAMPLE, drawn (`sampled`), is timed and
        // stands for SAMPLE (a clock read here costs ~20 ns, a fifth of a linear
        // model's predict and update).
        while self.done < self.ops.len() {
            let x = &self.xs[self.done * stride..(self.done + 1) * stride];
            let op = self.ops[self.done];
            let kind = matches!(op, Op::Predict) as usize;
            let t0 = sampled().then(Instant::now);
            if slot.is_none() {
                *slot = Some(build()?);
                o.built += 1;
            }
            let m = slot.as_mut().expect("just built");
            match op {
                Op::Learn(y) => {
                    m.update(x, y)?;
                }
                Op::Predict => {
                    let raw = m.predict(x)?;
                    self.results.push((raw, m.updates()));
                    if !raw.is_finite() {
                        *slot = None;
                        o.diverged += 1;
                    }
                }
            }
            if let Some(t0) = t0 {
                *if kind == 0 { &mut o.update } else { &mut o.predict } += t0.elapsed() * SAMPLE;
            }
            self.done += 1;
        }
        Ok(o)
    }

    /// The next forecast in row order: (raw forecast, model updates when made).
    pub fn next_forecast(&mut self) -> (f64, u64) {
        let r = self.results[self.read];
        self.read += 1;
        r
    }

    /// Forgets the batch's work (buffers keep their capacity).
    pub fn clear(&mut self) {
        self.ops.clear();
        self.xs.clear();
        self.results.clear();
        self.done = 0;
        self.read = 0;
    }
}

/// Runs every key's queued work, keys spread over up to `threads` threads (each key
/// on one thread, in its own order). Returns the summed outcome.
pub fn run_keys(mut keys: Vec<(&mut KeyOps, &mut Option<Box<dyn OnlineModel>>)>, threads: usize, build: Build<'_>) -> Result<Outcome> {
    // Keys that are rows of one stacked bank run in waves. Which kind of model the
    // keys hold shows on the first one (built here when it has none yet: it would be
    // built before its first op anyway).
    let mut first = Outcome::default();
    if let Some((_, slot)) = keys.iter_mut().find(|(k, _)| k.queued()) {
        if slot.is_none() {
            **slot = Some(build()?);
            first.built += 1;
        }
        let bank = slot.as_ref().and_then(|m| m.bank_key()).map(|(b, _)| b.clone());
        if let Some(bank) = bank {
            let mut o = run_waves(keys, &bank, build)?;
            o.add(first);
            return Ok(o);
        }
    }
    let mut o = run_each(keys, threads, build)?;
    o.add(first);
    Ok(o)
}

/// The i-th queued op of every key forms wave i: its learn ops are one batched
/// update of the bank, its predictions one batched predict. Each key's ops run in
/// its own order, so every key sees what it would row at a time.
fn run_waves(mut keys: Vec<(&mut KeyOps, &mut Option<Box<dyn OnlineModel>>)>, bank: &SharedBank, build: Build<'_>) -> Result<Outcome> {
    let mut o = Outcome::default();
    let (mut learn_k, mut learn_x, mut learn_y) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pred_k, mut pred_x, mut pred_at, mut out, mut stepped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    loop {
        learn_k.clear();
        learn_x.clear();
        learn_y.clear();
        pred_k.clear();
        pred_x.clear();
        pred_at.clear();
        stepped.clear();
        for (i, (ops, slot)) in keys.iter_mut().enumerate() {
            if !ops.queued() {
                continue;
            }
            if slot.is_none() {
                **slot = Some(build()?);
                o.built += 1;
            }
            let Some((b, k)) = slot.as_ref().and_then(|m| m.bank_key()) else {
                return Err(Error::Internal("a model bank's keys mixed with other models".into()));
            };
            if !Arc::ptr_eq(b, bank) {
                return Err(Error::Internal("one batch's keys in two model banks".into()));
            }
            let stride = ops.xs.len() / ops.ops.len();
            let x = &ops.xs[ops.done * stride..(ops.done + 1) * stride];
            match ops.ops[ops.done] {
                Op::Learn(y) => {
                    learn_k.push(k);
                    learn_x.extend_from_slice(x);
                    learn_y.push(y);
                }
                Op::Predict => {
                    pred_k.push(k);
                    pred_x.extend_from_slice(x);
                    pred_at.push(i);
                }
            }
            stepped.push(i);
        }
        if stepped.is_empty() {
            return Ok(o);
        }
        {
            let mut b = bank::lock(bank)?;
            if !learn_k.is_empty() {
                let t0 = Instant::now();
                b.update(&learn_k, &learn_x, &learn_y)?;
                o.update += t0.elapsed();
            }
            if !pred_k.is_empty() {
                let t0 = Instant::now();
                b.predict(&pred_k, &pred_x, &mut out)?;
                o.predict += t0.elapsed();
                // (forecast, the key's updates when made), as `KeyOps::run` records.
                for ((&raw, &k), &i) in out.iter().zip(&pred_k).zip(&pred_at) {
                    keys[i].0.results.push((raw, b.updates(k as usize)));
                }
            }
        }
        // A forecast that is not finite drops the key's model (after the lock: the
        // dropped key gives its row back to the bank); its next op builds anew.
        for &i in &pred_at {
            let (ops, slot) = &mut keys[i];
            if !ops.results.last().is_some_and(|r| r.0.is_finite()) {
                **slot = None;
                o.diverged += 1;
            }
        }
        for &i in &stepped {
            keys[i].0.done += 1;
        }
    }
}

/// One thread's keys in [`run_each`].
type Share<'k, 'm> = Vec<(&'k mut KeyOps, &'m mut Option<Box<dyn OnlineModel>>)>;

/// Every key's ops key by key, spread over up to `threads` threads.
fn run_each(keys: Vec<(&mut KeyOps, &mut Option<Box<dyn OnlineModel>>)>, threads: usize, build: Build<'_>) -> Result<Outcome> {
    let work: usize = keys.iter().map(|(k, _)| k.left()).sum();
    // Below this much work a thread costs more than it saves.
    let threads = if work < 64 { 1 } else { threads.clamp(1, keys.len().max(1)) };
    let mut total = Outcome::default();
    if threads == 1 {
        for (ops, slot) in keys {
            total.add(ops.run(slot, build)?);
        }
        return Ok(total);
    }
    // Consecutive keys per thread, cut where the queued work (ops) reaches the next
    // 1/threads of the total: shares balanced to one key's work, and no two threads
    // writing neighbouring keys' queues (dealt round-robin, they shared cache lines).
    let mut shares: Vec<Share<'_, '_>> = (0..threads).map(|_| Vec::new()).collect();
    let mut before = 0;
    for k in keys {
        let w = k.0.left();
        shares[(before * threads / work.max(1)).min(threads - 1)].push(k);
        before += w;
    }
    // The calling thread runs the first share itself while rayon's pool (started
    // once, not threads spawned per batch) runs the others. (Handing every share to
    // the pool left the caller asleep until all were done: a pool thread's wake-up
    // at the start and the caller's at the end cost more than a batch of linear
    // models' work, and two threads ran slower than one.)
    let run = |share: Share<'_, '_>| {
        share.into_iter().try_fold(Outcome::default(), |mut o, (ops, slot)| {
            o.add(ops.run(slot, build)?);
            Ok::<Outcome, Error>(o)
        })
    };
    let mut results: Vec<Result<Outcome>> = (0..shares.len()).map(|_| Ok(Outcome::default())).collect();
    let mut shares = shares.into_iter();
    let (mine, theirs) = (shares.next().expect("two shares or more"), shares);
    let (first, rest) = results.split_first_mut().expect("two shares or more");
    rayon::in_place_scope(|s| {
        for (share, result) in theirs.zip(rest.iter_mut()) {
            s.spawn(move |_| *result = run(share));
        }
        *first = run(mine);
    });
    for r in results {
        total.add(r?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One op in 32 is timed, drawn: over 64,000 ops on a fresh thread 2,000 are
    /// expected (binomial sd ≈ 44), and none of the 32 phases of a period-32 pattern
    /// is favoured (each expects 62.5: within ±25 all).
    #[test]
    fn sampling_is_drawn_one_in_32() {
        let (total, phases) = std::thread::spawn(|| {
            let mut phases = [0u32; 32];
            for i in 0..64_000usize {
                phases[i % 32] += u32::from(sampled());
            }
            (phases.iter().sum::<u32>(), phases)
        })
        .join()
        .unwrap();
        assert!((1850..=2150).contains(&total), "{total}");
        assert!(phases.iter().all(|&p| (37..=88).contains(&p)), "{phases:?}");
    }
    use crate::model::linear::{LinearModel, Optim};
    use candle_core::Device;

    /// One key's rows: (x, y).
    fn rows(key: usize, n: usize) -> Vec<([f64; 2], f64)> {
        (0..n).map(|i| {
            let a = ((key * 31 + i * 7) % 23) as f64 / 11.0 - 1.0;
            let b = ((key * 17 + i * 5) % 19) as f64 / 9.0 - 1.0;
            ([a, b], 2.0 * a - b + 0.1 * key as f64)
        }).collect()
    }

    /// Keys' rows interleaved in several orders and cut into batches of 1, 7 and
    /// 1000 rows, run queued (2 threads) vs one row at a time: every key's forecasts
    /// and weights are the same bits.
    #[test]
    fn queued_equals_row_at_a_time_for_any_interleaving() {
        let linear = || -> Result<Box<dyn OnlineModel>> { Ok(Box::new(LinearModel::new(2, Optim::AdamW, 0.05, &Device::Cpu)?)) };
        check(&linear);
        // The LSTM keeps per-thread scratch buffers: they must not leak between keys.
        let lstm = || -> Result<Box<dyn OnlineModel>> {
            Ok(Box::new(crate::model::lstm::LstmModel::<f64>::new(1, 2, 3, &crate::model::net::Training { loss: crate::model::loss::Loss::Mse, optim: Optim::AdamW, learning_rate: 0.05, seed: 3 })?))
        };
        check(&lstm);
    }

    /// A shuffled interleaving of `keys` keys' `per_key` rows (order 0: key after key)
    /// that keeps each key's own order.
    fn interleaving(keys: usize, per_key: usize, order: u64, draws: &mut crate::model::rand::Draws) -> Vec<usize> {
        let mut seq: Vec<usize> = (0..keys).flat_map(|k| std::iter::repeat_n(k, per_key)).collect();
        if order > 0 {
            for i in (1..seq.len()).rev() {
                seq.swap(i, draws.below(i as u64 + 1) as usize);
            }
        }
        seq
    }

    /// Each key's (forecast, updates when made), and each key's model.
    type Queued = (Vec<Vec<(f64, u64)>>, Vec<Option<Box<dyn OnlineModel>>>);

    /// Runs `seq` (each entry: a key's next row, predicted then learned) queued in
    /// batches of `batch` rows through `run_keys` on 2 threads; returns each key's
    /// (forecast, updates when made) and its model.
    fn run_queued(seq: &[usize], keys: usize, per_key: usize, batch: usize, build: Build<'_>) -> Queued {
        let mut ops: Vec<KeyOps> = (0..keys).map(|_| KeyOps::default()).collect();
        let mut slots: Vec<Option<Box<dyn OnlineModel>>> = (0..keys).map(|_| None).collect();
        let mut next = vec![0; keys];
        let mut got: Vec<Vec<(f64, u64)>> = vec![Vec::new(); keys];
        let all = (0..keys).map(|k| rows(k, per_key)).collect::<Vec<_>>();
        for chunk in seq.chunks(batch) {
            for &k in chunk {
                let (x, y) = all[k][next[k]];
                next[k] += 1;
                ops[k].predict(&x);
                ops[k].learn(&x, y);
            }
            let pairs = ops.iter_mut().zip(slots.iter_mut()).filter(|(o, _)| o.queued()).collect();
            let o = run_keys(pairs, 2, build).unwrap();
            assert_eq!(o.diverged, 0);
            for (k, o) in ops.iter_mut().enumerate() {
                while o.read < o.results.len() {
                    got[k].push(o.next_forecast());
                }
                o.clear();
            }
        }
        (got, slots)
    }

    fn check(build: Build<'_>) {
        let (keys, per_key) = (9, 120);
        // Row at a time, key by key: the reference.
        let mut want: Vec<Vec<u64>> = Vec::new();
        let mut want_w = Vec::new();
        for k in 0..keys {
            let mut m = build().unwrap();
            let mut f = Vec::new();
            for (x, y) in rows(k, per_key) {
                f.push(m.predict(&x).unwrap().to_bits());
                m.update(&x, y).unwrap();
            }
            want.push(f);
            want_w.push(m.parameters().unwrap());
        }
        let mut draws = crate::model::rand::Draws(5);
        for (order, batch) in [(0, 1), (1, 7), (2, 1000), (3, 7)] {
            let seq = interleaving(keys, per_key, order, &mut draws);
            let (got, slots) = run_queued(&seq, keys, per_key, batch, build);
            let got: Vec<Vec<u64>> = got.iter().map(|g| g.iter().map(|f| f.0.to_bits()).collect()).collect();
            assert_eq!(got, want, "interleaving {order}, batches of {batch}");
            let w: Vec<_> = slots.iter().map(|s| s.as_ref().unwrap().parameters().unwrap()).collect();
            assert_eq!(w, want_w, "interleaving {order}, batches of {batch}");
        }
    }

    /// Bank keys (`model.bank`) run in waves: every key's forecasts and weights are
    /// its own plain-code LSTM's fed row at a time (to rounding: candle's batched
    /// matmuls sum in another order), and the same bits whatever the interleaving and
    /// batch cuts (so a backtest equals the live run on this CPU).
    #[test]
    fn bank_keys_run_in_waves_as_their_own_lstms() {
        let cfg: crate::pipeline::config::ModelConfig = toml::from_str(
            "kind = \"lstm\"\noptimizer = \"adamw\"\nlearning_rate = 0.05\nhidden = [3]\nwindow = 1\nseed = 3\nscope = \"per_key\"\nbank = true\n\
             features = [\"a\", \"b\"]\ntarget = \"y\"\nhorizon = 1",
        )
        .unwrap();
        let bank = crate::model::new_bank(&cfg, 2, &Device::Cpu).unwrap();
        let build = || -> Result<Box<dyn OnlineModel>> { Ok(Box::new(crate::model::bank::BankKey::new(&bank)?)) };
        let plain = || crate::model::lstm::LstmModel::<f64>::new(1, 2, 3, &crate::model::net::Training { loss: crate::model::loss::Loss::Mse, optim: Optim::AdamW, learning_rate: 0.05, seed: 3 }).unwrap();
        let (keys, per_key) = (7, 60);
        let mut want: Vec<Vec<f64>> = Vec::new();
        for k in 0..keys {
            let mut m = plain();
            want.push(rows(k, per_key).iter().map(|(x, y)| { let p = m.predict(x).unwrap(); m.update(x, *y).unwrap(); p }).collect());
        }
        let mut first: Option<Vec<Vec<u64>>> = None;
        let mut draws = crate::model::rand::Draws(8);
        for (order, batch) in [(0, 1), (1, 7), (2, 1000)] {
            let seq = interleaving(keys, per_key, order, &mut draws);
            let (got, slots) = run_queued(&seq, keys, per_key, batch, &build);
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), per_key);
                assert!(g.iter().enumerate().all(|(i, f)| f.1 == i as u64), "updates when key {k} forecast");
                assert!(g.iter().zip(w).all(|(a, b)| (a.0 - b).abs() < 1e-10), "key {k}, interleaving {order}, batches of {batch}");
            }
            let bits: Vec<Vec<u64>> = got.iter().map(|g| g.iter().map(|p| p.0.to_bits()).collect()).collect();
            match &first {
                None => first = Some(bits),
                Some(f) => assert_eq!(&bits, f, "interleaving {order}, batches of {batch}"),
            }
            // The models go; their rows go back to the bank for the next round.
            drop(slots);
        }
        assert_eq!(crate::model::bank::lock(&bank).unwrap().keys(), 16, "rows reused, not grown");
    }

    /// A forecast that is not finite drops the model; the key's next op builds anew.
    #[test]
    fn a_diverged_model_is_replaced() {
        let build = || -> Result<Box<dyn OnlineModel>> { Ok(Box::new(LinearModel::new(1, Optim::Sgd, 0.1, &Device::Cpu)?)) };
        let mut ops = KeyOps::default();
        let mut slot = None;
        ops.learn(&[1.0], 1.0);
        ops.predict(&[f64::INFINITY]);
        ops.predict(&[1.0]);
        let o = ops.run(&mut slot, &build).unwrap();
        assert_eq!((o.built, o.diverged), (2, 1));
        assert!(!ops.next_forecast().0.is_finite());
        // The fresh model (zero weights, no updates) forecasts 0.
        assert_eq!(ops.next_forecast(), (0.0, 0));
    }
}
