//! The reference is candle: `seq::SeqModel`'s CNN (candle-nn `Conv1d`, ReLU, linear
//! head; autograd's gradients, `NetOptimizer`) from the same seed, fed the same stream.
use super::*;
use crate::model::linear::Optim;
use crate::model::seq::{SeqModel, SeqShape};
use crate::pipeline::config::choice::ModelKind;
use candle_core::{DType, Device};
use crate::model::close;

const WINDOW: usize = 6;
const D: usize = 3;
const H: usize = 5;

fn training(loss: Loss, optim: Optim, lr: f64) -> Training {
    Training { loss, optim, learning_rate: lr, seed: 11 }
}

fn pair(kernel: usize, loss: Loss, optim: Optim, lr: f64) -> (PlainCnn, SeqModel) {
    let t = training(loss, optim, lr);
    let shape = SeqShape { kind: ModelKind::Cnn1d, window: WINDOW, d: D, hidden: H, kernel };
    (PlainCnn::cnn(WINDOW, D, H, kernel, &t).unwrap(), SeqModel::new(&shape, &t, DType::F64, &Device::Cpu).unwrap())
}

/// Windows whose filters' pre-activations fall on both sides of 0.
fn stream(i: usize) -> (Vec<f64>, f64) {
    let x: Vec<f64> = (0..WINDOW * D).map(|j| ((i * 7 + j * 13) % 29) as f64 / 14.5 - 1.0).collect();
    let y = 0.8 * x[x.len() - 1] - 0.3 * x[x.len() - 5] * x[2] + 0.1 * ((i % 5) as f64);
    (x, y)
}

#[test]
fn starts_from_candles_weights() {
    for kernel in [1, 3, WINDOW] {
        let (ours, theirs) = pair(kernel, Loss::Mse, Optim::AdamW, 0.01);
        assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap(), "kernel {kernel}");
    }
}

/// 400 predict-then-learn steps: forecasts, losses and final weights agree with
/// candle's to rounding, for kernels of 1, 3 and the whole window, both losses and
/// both optimizers.
#[test]
fn learns_as_candles_cnn() {
    for kernel in [1, 3, WINDOW] {
        for (loss, optim, lr) in [(Loss::Mse, Optim::AdamW, 0.01), (Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.02), (Loss::Mse, Optim::Sgd, 0.05)] {
            let (mut ours, mut theirs) = pair(kernel, loss, optim, lr);
            let start = ours.parameters().unwrap();
            for i in 0..400 {
                let (x, y) = stream(i);
                let (p, q) = (ours.predict(&x).unwrap(), theirs.predict(&x).unwrap());
                assert!((p - q).abs() < 1e-10 * (1.0 + q.abs()), "kernel {kernel} {loss:?} {optim:?} step {i}: predict {p} vs candle {q}");
                let (l, m) = (ours.update(&x, y).unwrap(), theirs.update(&x, y).unwrap());
                assert!((l - m).abs() < 1e-10 * (1.0 + m), "kernel {kernel} {loss:?} {optim:?} step {i}: loss {l} vs candle {m}");
            }
            let a = ours.parameters().unwrap();
            assert!(close(&a, &theirs.parameters().unwrap(), 1e-9), "kernel {kernel} {loss:?} {optim:?}: weights drifted from candle's");
            assert!(a.iter().zip(&start).any(|(x, y)| (x - y).abs() > 1e-3), "kernel {kernel} {loss:?} {optim:?}: nothing learned");
        }
    }
}

/// As candle's sequence nets, `update_batch` takes a step per row.
#[test]
fn batches_step_per_row_as_candle() {
    let (mut ours, mut theirs) = pair(2, Loss::Mse, Optim::AdamW, 0.01);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..7 {
        let (x, y) = stream(i);
        xs.extend(x);
        ys.push(y);
    }
    let (mut p, mut q) = (Vec::new(), Vec::new());
    ours.predict_batch(&xs, WINDOW * D, &mut p).unwrap();
    theirs.predict_batch(&xs, WINDOW * D, &mut q).unwrap();
    assert!(close(&p, &q, 1e-10) && p.len() == 7);
    ours.update_batch(&xs, WINDOW * D, &ys).unwrap();
    theirs.update_batch(&xs, WINDOW * D, &ys).unwrap();
    assert_eq!((ours.updates(), theirs.updates()), (7, 7));
    assert!(close(&ours.parameters().unwrap(), &theirs.parameters().unwrap(), 1e-10));
}

/// The AVX2 / AVX-512 builds of the passes give the baseline's bits (no FMA).
#[test]
fn simd_builds_give_the_baseline_bits() {
    let simd = Simd::detect();
    let (mut base, _) = pair(3, Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.01);
    let (mut wide, _) = pair(3, Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.01);
    let (mut p, mut q) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let (x, y) = stream(i);
        base.predict_into(&x, &mut p, Simd::Base);
        wide.predict_into(&x, &mut q, simd);
        assert_eq!(p[0].to_bits(), q[0].to_bits(), "{simd:?} step {i}");
        base.learn_rows(&x, &[y], Simd::Base);
        wide.learn_rows(&x, &[y], simd);
    }
    let bits = |m: &PlainCnn| m.p.theta.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&base), bits(&wide), "{simd:?}");
}

/// A checkpoint written by either implementation loads into the other.
#[test]
fn checkpoints_cross_load_with_candles_cnn() {
    let (mut ours, mut theirs) = pair(3, Loss::Mse, Optim::AdamW, 0.01);
    for i in 0..40 {
        let (x, y) = stream(i);
        theirs.update(&x, y).unwrap();
    }
    let mut s = Snapshot::default();
    theirs.save(&mut s).unwrap();
    ours.load(&mut s).unwrap();
    assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap());
    for i in 40..100 {
        let (x, y) = stream(i);
        ours.update(&x, y).unwrap();
        theirs.update(&x, y).unwrap();
    }
    assert!(close(&ours.parameters().unwrap(), &theirs.parameters().unwrap(), 1e-10));
    let mut s = Snapshot::default();
    ours.save(&mut s).unwrap();
    let (_, mut back) = pair(3, Loss::Mse, Optim::AdamW, 0.01);
    back.load(&mut s).unwrap();
    assert_eq!(back.parameters().unwrap(), ours.parameters().unwrap());
    assert_eq!(back.updates(), 100);
}

#[test]
fn bad_shapes_are_errors() {
    let t = training(Loss::Mse, Optim::Sgd, 0.1);
    assert!(PlainCnn::cnn(WINDOW, D, H, 0, &t).is_err());
    assert!(PlainCnn::cnn(WINDOW, D, H, WINDOW + 1, &t).is_err());
    assert!(PlainCnn::cnn(WINDOW, 0, H, 2, &t).is_err());
    let (mut ours, _) = pair(2, Loss::Mse, Optim::Sgd, 0.1);
    assert!(ours.predict(&[0.0; WINDOW * D - 1]).is_err());
    assert!(ours.update(&[0.0; WINDOW * D + 1], 1.0).is_err());
}

/// `Plain<_, f32>` against candle's CNN with F32 variables from the same seed: 400
/// steps within f32 rounding, every weight an f32 value.
#[test]
fn f32_learns_as_candles_f32_cnn() {
    let t = training(Loss::Mse, Optim::AdamW, 0.01);
    let shape = SeqShape { kind: ModelKind::Cnn1d, window: WINDOW, d: D, hidden: H, kernel: 3 };
    let mut ours = Plain::<_, f32>::cnn(WINDOW, D, H, 3, &t).unwrap();
    let mut theirs = SeqModel::new(&shape, &t, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap());
    let mut worst = 0.0f64;
    for i in 0..400 {
        let (x, y) = stream(i);
        let (p, q) = (ours.predict(&x).unwrap(), theirs.predict(&x).unwrap());
        worst = worst.max((p - q).abs());
        assert!((p - q).abs() < 2e-6 * (1.0 + q.abs()), "step {i}: predict {p} vs candle {q}");
        let (l, m) = (ours.update(&x, y).unwrap(), theirs.update(&x, y).unwrap());
        assert!((l - m).abs() < 2e-6 * (1.0 + m), "step {i}: loss {l} vs candle {m}");
    }
    let a = ours.parameters().unwrap();
    assert!(a.iter().all(|&v| (v as f32) as f64 == v));
    assert!(close(&a, &theirs.parameters().unwrap(), 1e-4));
    eprintln!("f32 CNN vs candle F32 worst forecast difference {worst:e}");
}
