//! The reference is candle: `seq::SeqModel` (candle-nn's LSTM cell, autograd's
//! gradients, `NetOptimizer`) from the same seed, fed the same stream.
use super::*;
use crate::model::linear::Optim;
use crate::model::seq::SeqModel;
use candle_core::Device;
use crate::model::close;

const WINDOW: usize = 5;
const D: usize = 3;
const H: usize = 4;

fn stream(i: usize) -> (Vec<f64>, f64) {
    let x: Vec<f64> = (0..WINDOW * D).map(|j| ((i * 7 + j * 13) % 29) as f64 / 14.5 - 1.0).collect();
    let y = 0.8 * x[x.len() - 1] - 0.3 * x[x.len() - 2] + 0.1 * ((i % 5) as f64);
    (x, y)
}

fn pair(loss: Loss, optim: Optim, lr: f64) -> (LstmModel, SeqModel) {
    let t = crate::model::net::Training { loss, optim, learning_rate: lr, seed: 11 };
    let ours = LstmModel::new(WINDOW, D, H, &t).unwrap();
    let shape = crate::model::seq::SeqShape { kind: crate::pipeline::config::choice::ModelKind::Lstm, window: WINDOW, d: D, hidden: H, kernel: 1 };
    let theirs = SeqModel::new(&shape, &t, candle_core::DType::F64, &Device::Cpu).unwrap();
    (ours, theirs)
}

/// The f32 model and candle's LSTM with F32 variables, from the same seed.
fn pair32(loss: Loss, optim: Optim, lr: f64) -> (LstmModel<f32>, SeqModel) {
    let t = crate::model::net::Training { loss, optim, learning_rate: lr, seed: 11 };
    let ours = LstmModel::<f32>::new(WINDOW, D, H, &t).unwrap();
    let shape = crate::model::seq::SeqShape { kind: crate::pipeline::config::choice::ModelKind::Lstm, window: WINDOW, d: D, hidden: H, kernel: 1 };
    let theirs = SeqModel::new(&shape, &t, candle_core::DType::F32, &Device::Cpu).unwrap();
    (ours, theirs)
}

#[test]
fn starts_from_candles_weights() {
    let (ours, theirs) = pair(Loss::Mse, Optim::AdamW, 0.01);
    assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap());
}

/// 300 predict-then-learn steps: forecasts, losses and weights agree with
/// candle's to rounding (sums run in a different order), for each loss and
/// optimizer.
#[test]
fn learns_as_candles_lstm() {
    for (loss, optim, lr) in [
        (Loss::Mse, Optim::AdamW, 0.01),
        (Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.02),
        (Loss::Mse, Optim::Sgd, 0.05),
    ] {
        let (mut ours, mut theirs) = pair(loss, optim, lr);
        for i in 0..300 {
            let (x, y) = stream(i);
            let (p, q) = (ours.predict(&x).unwrap(), theirs.predict(&x).unwrap());
            assert!((p - q).abs() < 1e-10, "{loss:?} {optim:?} step {i}: predict {p} vs candle {q}");
            let (l, m) = (ours.update(&x, y).unwrap(), theirs.update(&x, y).unwrap());
            assert!((l - m).abs() < 1e-10 * (1.0 + m), "{loss:?} {optim:?} step {i}: loss {l} vs candle {m}");
        }
        assert!(close(&ours.parameters().unwrap(), &theirs.parameters().unwrap(), 1e-9), "{loss:?} {optim:?}");
        // It learned something: the last forecasts beat predicting zero.
        let err = |m: &LstmModel| (300..340).map(|i| { let (x, y) = stream(i); (m.predict(&x).unwrap() - y).abs() }).sum::<f64>();
        let zero: f64 = (300..340).map(|i| stream(i).1.abs()).sum();
        assert!(err(&ours) < 0.5 * zero, "{loss:?} {optim:?}: {} vs {zero}", err(&ours));
    }
}

/// In f32 the same holds to f32 rounding: 300 steps against candle's LSTM with F32
/// variables (its own f32 matmuls and sums in another order), each loss and
/// optimizer; and the f32 model stays near the f64 one.
#[test]
fn learns_as_candles_lstm_in_f32() {
    let mut worst = [0.0f64; 3];
    for (loss, optim, lr) in [
        (Loss::Mse, Optim::AdamW, 0.01),
        (Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.02),
        (Loss::Mse, Optim::Sgd, 0.05),
    ] {
        let (mut ours, mut theirs) = pair32(loss, optim, lr);
        let (mut wide, _) = pair(loss, optim, lr);
        assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap(), "the same f32 start");
        for i in 0..300 {
            let (x, y) = stream(i);
            let (p, q, r) = (ours.predict(&x).unwrap(), theirs.predict(&x).unwrap(), wide.predict(&x).unwrap());
            worst[0] = worst[0].max((p - q).abs());
            worst[1] = worst[1].max((p - r).abs());
            let (l, m) = (ours.update(&x, y).unwrap(), theirs.update(&x, y).unwrap());
            wide.update(&x, y).unwrap();
            worst[2] = worst[2].max((l - m).abs() / (1.0 + m));
        }
        assert!(close(&ours.parameters().unwrap(), &theirs.parameters().unwrap(), 1e-4), "{loss:?} {optim:?}");
        let err = |m: &LstmModel<f32>| (300..340).map(|i| { let (x, y) = stream(i); (m.predict(&x).unwrap() - y).abs() }).sum::<f64>();
        let zero: f64 = (300..340).map(|i| stream(i).1.abs()).sum();
        assert!(err(&ours) < 0.5 * zero, "{loss:?} {optim:?}: {} vs {zero}", err(&ours));
    }
    eprintln!("f32 vs candle f32: forecast {:.2e}, loss {:.2e}; vs our f64: forecast {:.2e}", worst[0], worst[2], worst[1]);
    assert!(worst[0] < 1e-5 && worst[2] < 1e-5, "{worst:?}");
    assert!(worst[1] < 1e-5, "{worst:?}");
}

/// An f32 checkpoint restores into candle's F32 LSTM and back (values stored as f64,
/// exactly), and the two go on to the same weights to f32 rounding.
#[test]
fn f32_checkpoints_cross_load() {
    let (mut ours, mut theirs) = pair32(Loss::Mse, Optim::AdamW, 0.01);
    for i in 0..50 {
        let (x, y) = stream(i);
        ours.update(&x, y).unwrap();
        theirs.update(&x, y).unwrap();
    }
    let mut from_ours = Snapshot::default();
    ours.save(&mut from_ours).unwrap();
    let (mut restored, mut back) = pair32(Loss::Mse, Optim::AdamW, 0.01);
    back.load(&mut from_ours.clone()).unwrap();
    assert_eq!(back.parameters().unwrap(), ours.parameters().unwrap());
    restored.load(&mut from_ours).unwrap();
    assert_eq!(restored.p.theta, ours.p.theta);
    assert_eq!((restored.p.m.clone(), restored.p.v.clone()), (ours.p.m.clone(), ours.p.v.clone()));
    for i in 50..100 {
        let (x, y) = stream(i);
        restored.update(&x, y).unwrap();
        back.update(&x, y).unwrap();
    }
    assert!(close(&restored.parameters().unwrap(), &back.parameters().unwrap(), 1e-4));
}

/// A checkpoint of either implementation restores the other: the same forecasts
/// and, after more learning, the same weights (to rounding).
#[test]
fn checkpoints_cross_load() {
    let (mut ours, mut theirs) = pair(Loss::Mse, Optim::AdamW, 0.01);
    for i in 0..50 {
        let (x, y) = stream(i);
        ours.update(&x, y).unwrap();
        theirs.update(&x, y).unwrap();
    }
    let mut from_candle = Snapshot::default();
    theirs.save(&mut from_candle).unwrap();
    let (mut restored, mut back) = pair(Loss::Mse, Optim::AdamW, 0.01);
    restored.load(&mut from_candle.clone()).unwrap();
    assert_eq!(restored.parameters().unwrap(), theirs.parameters().unwrap());
    assert_eq!(restored.updates(), 50);
    let mut from_ours = Snapshot::default();
    ours.save(&mut from_ours).unwrap();
    back.load(&mut from_ours).unwrap();
    assert_eq!(back.parameters().unwrap(), ours.parameters().unwrap());
    for i in 50..100 {
        let (x, y) = stream(i);
        restored.update(&x, y).unwrap();
        theirs.update(&x, y).unwrap();
    }
    assert!(close(&restored.parameters().unwrap(), &theirs.parameters().unwrap(), 1e-9));
}

/// The AVX2 and AVX-512 builds of the step and the baseline build give the same
/// bits (each where the CPU has it). Only an optimised build vectorises: run it with
/// `cargo test --release --lib lstm` too (done for this change: equal).
#[cfg(target_arch = "x86_64")]
#[test]
fn simd_builds_and_baseline_agree_bit_for_bit() {
    let t = crate::model::net::Training { loss: Loss::Huber { delta: 0.3 }, optim: Optim::AdamW, learning_rate: 0.01, seed: 11 };
    simd_agree::<f64>(&t);
    simd_agree::<f32>(&t);
}

#[cfg(target_arch = "x86_64")]
fn simd_agree<F: Real + WithScratch>(t: &crate::model::net::Training) {
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let make = || LstmModel::<F>::new(WINDOW, D, H, t).unwrap();
    let (mut a, mut b, mut c) = (make(), make(), make());
    let mut s = Scratch::<F>::default();
    let bits = |v: F| v.f64().to_bits();
    for i in 0..200 {
        let (x, y) = stream(i);
        s.take_input(&x);
        let xs = s.xs.clone();
        let p = a.forward(&xs, &mut s);
        let l = a.learn(&x, y, &mut s);
        if avx2 {
            // SAFETY: AVX2 checked above.
            let q = unsafe { b.forward_avx2(&x, &mut s) };
            assert_eq!(bits(p), bits(q), "avx2 step {i}");
            let m = unsafe { b.learn_avx2(&x, y, &mut s) };
            assert_eq!(l.to_bits(), m.to_bits(), "avx2 step {i}");
        }
        if avx512 {
            // SAFETY: AVX-512F checked above.
            let q = unsafe { c.forward_avx512(&x, &mut s) };
            assert_eq!(bits(p), bits(q), "avx512 step {i}");
            let m = unsafe { c.learn_avx512(&x, y, &mut s) };
            assert_eq!(l.to_bits(), m.to_bits(), "avx512 step {i}");
        }
    }
    for (on, m) in [(avx2, &b), (avx512, &c)] {
        if on {
            assert_eq!(a.p.theta, m.p.theta);
            assert_eq!((a.p.m.clone(), a.p.v.clone()), (m.p.m.clone(), m.p.v.clone()));
        }
    }
}

/// The update reuses the forward pass of a prediction just made on the same row
/// (same weights): the weights end the same, bit for bit, as with no prediction
/// (the pass recomputed); another model's pass or a changed input is not reused.
#[test]
fn a_kept_forward_pass_changes_nothing() {
    let (mut a, _) = pair(Loss::Mse, Optim::AdamW, 0.01);
    let (mut b, _) = pair(Loss::Mse, Optim::AdamW, 0.01);
    let (mut c, _) = pair(Loss::Mse, Optim::AdamW, 0.01);
    for i in 0..100 {
        let (x, y) = stream(i);
        a.predict(&x).unwrap();
        a.update(&x, y).unwrap();
        b.update(&x, y).unwrap();
        // c predicts the next row, then learns this one: the kept pass is for
        // another input and must not be used.
        c.predict(&stream(i + 1).0).unwrap();
        c.update(&x, y).unwrap();
    }
    assert_eq!(a.p.theta, b.p.theta);
    assert_eq!(c.p.theta, b.p.theta);
    // After an update the kept pass (of the old weights) is not reused: b's
    // forecast of the row it just learned equals a restored copy's.
    let (x, y) = stream(100);
    b.update(&x, y).unwrap();
    let p = b.predict(&x).unwrap();
    let mut snap = Snapshot::default();
    b.save(&mut snap).unwrap();
    let (mut d, _) = pair(Loss::Mse, Optim::AdamW, 0.01);
    d.load(&mut snap).unwrap();
    assert_eq!(p.to_bits(), d.predict(&x).unwrap().to_bits());
}

#[test]
fn rejects_a_wrong_window() {
    let (ours, _) = pair(Loss::Mse, Optim::AdamW, 0.01);
    assert!(ours.predict(&[0.0; WINDOW * D - 1]).is_err());
}
