//! The reference is candle: `mlp::MlpModel` (candle-nn `Linear` layers, autograd's
//! gradients, `NetOptimizer`) from the same seed, fed the same stream.
use super::*;
use crate::model::linear::Optim;
use crate::model::mlp::{Activation, MlpModel};
use candle_core::Device;
use crate::model::close;

const D: usize = 3;
const HIDDEN: [usize; 2] = [16, 8];

fn training(loss: Loss, optim: Optim, lr: f64) -> Training {
    Training { loss, optim, learning_rate: lr, seed: 7 }
}

fn pair(act: Activation, loss: Loss, optim: Optim, lr: f64) -> (PlainMlp, MlpModel) {
    let t = training(loss, optim, lr);
    (PlainMlp::mlp(D, &HIDDEN, act, &t).unwrap(), MlpModel::new(D, &HIDDEN, act, &t, &Device::Cpu).unwrap())
}

/// A nonlinear target with some pre-activations on both sides of 0.
fn stream(i: usize) -> (Vec<f64>, f64) {
    let x: Vec<f64> = (0..D).map(|j| ((i * 7 + j * 13) % 29) as f64 / 14.5 - 1.0).collect();
    let y = (2.0 * x[0]).sin() + x[1] * x[2] - 0.3 * x[2] + 0.1 * ((i % 5) as f64);
    (x, y)
}

/// The next `rows` rows of the stream from `*i` on, as one mini-batch (inputs
/// row-major, targets); `*i` moves past them.
fn batch(i: &mut usize, rows: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..rows {
        let (x, y) = stream(*i);
        xs.extend(x);
        ys.push(y);
        *i += 1;
    }
    (xs, ys)
}

#[test]
fn starts_from_candles_weights() {
    for act in [Activation::Relu, Activation::Tanh] {
        let (ours, theirs) = pair(act, Loss::Mse, Optim::AdamW, 0.01);
        assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap());
    }
}

/// 400 predict-then-learn steps: forecasts, losses and final weights agree with
/// candle's to rounding (sums run in another order), for both activations, both
/// losses and both optimizers.
#[test]
fn learns_as_candles_mlp() {
    for act in [Activation::Relu, Activation::Tanh] {
        for (loss, optim, lr) in [(Loss::Mse, Optim::AdamW, 0.01), (Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.02), (Loss::Mse, Optim::Sgd, 0.05)] {
            let (mut ours, mut theirs) = pair(act, loss, optim, lr);
            let mut moved = 0.0f64;
            for i in 0..400 {
                let (x, y) = stream(i);
                let (p, q) = (ours.predict(&x).unwrap(), theirs.predict(&x).unwrap());
                assert!((p - q).abs() < 1e-10 * (1.0 + q.abs()), "{act:?} {loss:?} {optim:?} step {i}: predict {p} vs candle {q}");
                let (l, m) = (ours.update(&x, y).unwrap(), theirs.update(&x, y).unwrap());
                assert!((l - m).abs() < 1e-10 * (1.0 + m), "{act:?} {loss:?} {optim:?} step {i}: loss {l} vs candle {m}");
                moved = moved.max((p - y).abs());
            }
            let (a, b) = (ours.parameters().unwrap(), theirs.parameters().unwrap());
            assert!(close(&a, &b, 1e-9), "{act:?} {loss:?} {optim:?}: weights drifted from candle's");
            assert_eq!(ours.updates(), 400);
            // The comparison means something: the weights moved from their start.
            let start = PlainMlp::mlp(D, &HIDDEN, act, &training(loss, optim, lr)).unwrap().parameters().unwrap();
            assert!(a.iter().zip(&start).any(|(x, y)| (x - y).abs() > 1e-3), "{act:?} {loss:?} {optim:?}: nothing learned");
            assert!(moved > 0.0);
        }
    }
}

/// `update_batch` is one step on the mean loss of its rows and `predict_batch` every
/// row's forecast, as candle's batched passes, for batches of 1, 3 and 7 rows.
#[test]
fn batches_as_candles_mlp() {
    for act in [Activation::Relu, Activation::Tanh] {
        let (mut ours, mut theirs) = pair(act, Loss::Huber { delta: 0.5 }, Optim::AdamW, 0.01);
        let mut i = 0;
        for rows in [1usize, 3, 7, 3, 1, 7, 7] {
            let (xs, ys) = batch(&mut i, rows);
            let (mut p, mut q) = (Vec::new(), Vec::new());
            ours.predict_batch(&xs, D, &mut p).unwrap();
            theirs.predict_batch(&xs, D, &mut q).unwrap();
            assert_eq!(p.len(), rows);
            assert!(close(&p, &q, 1e-10), "{act:?} {rows} rows: {p:?} vs {q:?}");
            ours.update_batch(&xs, D, &ys).unwrap();
            theirs.update_batch(&xs, D, &ys).unwrap();
        }
        assert_eq!(ours.updates(), 7);
        assert!(close(&ours.parameters().unwrap(), &theirs.parameters().unwrap(), 1e-10), "{act:?}");
    }
}

/// The AVX2 / AVX-512 builds of the passes give the baseline's bits (no FMA).
#[test]
fn simd_builds_give_the_baseline_bits() {
    let simd = Simd::detect();
    for act in [Activation::Relu, Activation::Tanh] {
        let (mut base, _) = pair(act, Loss::Mse, Optim::AdamW, 0.01);
        let (mut wide, _) = pair(act, Loss::Mse, Optim::AdamW, 0.01);
        let (mut p, mut q) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let (x, y) = stream(i);
            base.predict_into(&x, &mut p, Simd::Base);
            wide.predict_into(&x, &mut q, simd);
            assert_eq!(p[0].to_bits(), q[0].to_bits(), "{act:?} {simd:?} step {i}");
            base.learn_rows(&x, &[y], Simd::Base);
            wide.learn_rows(&x, &[y], simd);
        }
        let bits = |m: &PlainMlp| m.p.theta.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&base), bits(&wide), "{act:?} {simd:?}");
        // And in f32.
        let t = training(Loss::Mse, Optim::AdamW, 0.01);
        let (mut base, mut wide) = (Plain::<_, f32>::mlp(D, &HIDDEN, act, &t).unwrap(), Plain::<_, f32>::mlp(D, &HIDDEN, act, &t).unwrap());
        for i in 0..300 {
            let (x, y) = stream(i);
            base.predict_into(&x, &mut p, Simd::Base);
            wide.predict_into(&x, &mut q, simd);
            assert_eq!(p[0].to_bits(), q[0].to_bits(), "f32 {act:?} {simd:?} step {i}");
            base.learn_rows(&x, &[y], Simd::Base);
            wide.learn_rows(&x, &[y], simd);
        }
        let bits = |m: &Plain<mlp::MlpNet, f32>| m.p.theta.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&base), bits(&wide), "f32 {act:?} {simd:?}");
    }
}

/// A checkpoint written by either implementation loads into the other, and both
/// continue as one model.
#[test]
fn checkpoints_cross_load_with_candles_mlp() {
    let (mut ours, mut theirs) = pair(Activation::Tanh, Loss::Mse, Optim::AdamW, 0.01);
    for i in 0..50 {
        let (x, y) = stream(i);
        ours.update(&x, y).unwrap();
    }
    let mut s = Snapshot::default();
    ours.save(&mut s).unwrap();
    theirs.load(&mut s).unwrap();
    assert!(close(&ours.parameters().unwrap(), &theirs.parameters().unwrap(), 0.0));
    assert_eq!(theirs.updates(), 50);
    for i in 50..120 {
        let (x, y) = stream(i);
        ours.update(&x, y).unwrap();
        theirs.update(&x, y).unwrap();
    }
    assert!(close(&ours.parameters().unwrap(), &theirs.parameters().unwrap(), 1e-10));
    // And back: candle's checkpoint into a fresh plain model.
    let mut s = Snapshot::default();
    theirs.save(&mut s).unwrap();
    let (mut back, _) = pair(Activation::Tanh, Loss::Mse, Optim::AdamW, 0.01);
    back.load(&mut s).unwrap();
    assert_eq!(back.parameters().unwrap(), theirs.parameters().unwrap());
    let (x, _) = stream(200);
    assert!((back.predict(&x).unwrap() - theirs.predict(&x).unwrap()).abs() < 1e-12);
}

/// A checkpoint of another shape is refused and leaves the model as it was.
#[test]
fn a_checkpoint_of_another_shape_is_refused() {
    let t = training(Loss::Mse, Optim::AdamW, 0.01);
    let mut small = PlainMlp::mlp(D, &[4], Activation::Relu, &t).unwrap();
    let (x, y) = stream(1);
    small.update(&x, y).unwrap();
    let mut s = Snapshot::default();
    small.save(&mut s).unwrap();
    let (mut ours, _) = pair(Activation::Relu, Loss::Mse, Optim::AdamW, 0.01);
    let before = ours.parameters().unwrap();
    let err = ours.load(&mut s).unwrap_err().to_string();
    assert!(err.contains("values stored"), "{err}");
    assert_eq!(ours.parameters().unwrap(), before);
    assert_eq!(ours.updates(), 0);
}

#[test]
fn bad_rows_are_errors() {
    let (mut ours, _) = pair(Activation::Relu, Loss::Mse, Optim::Sgd, 0.01);
    assert!(ours.predict(&[1.0, 2.0]).is_err());
    assert!(ours.update(&[1.0; 4], 0.0).is_err());
    assert!(ours.predict_batch(&[1.0; 7], D, &mut Vec::new()).is_err());
    assert!(ours.update_batch(&[1.0; 6], D, &[0.0]).is_err());
    assert!(PlainMlp::mlp(D, &[0], Activation::Relu, &training(Loss::Mse, Optim::Sgd, 0.1)).is_err());
    assert!(PlainMlp::mlp(D, &[4], Activation::Relu, &training(Loss::Mse, Optim::Nlms, 0.1)).is_err());
}

/// `Plain<_, f32>` against candle's MLP with F32 variables from the same seed: 400
/// steps of forecasts and losses within f32 rounding (sums run in another order), and
/// every weight an f32 value.
#[test]
fn f32_learns_as_candles_f32_mlp() {
    for act in [Activation::Relu, Activation::Tanh] {
        let t = training(Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.01);
        let mut ours = Plain::<_, f32>::mlp(D, &HIDDEN, act, &t).unwrap();
        let mut theirs = MlpModel::with_head(D, &HIDDEN, act, None, &t, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap(), "{act:?}: the same f32 start");
        let mut worst = 0.0f64;
        for i in 0..400 {
            let (x, y) = stream(i);
            let (p, q) = (ours.predict(&x).unwrap(), theirs.predict(&x).unwrap());
            worst = worst.max((p - q).abs());
            assert!((p - q).abs() < 2e-6 * (1.0 + q.abs()), "{act:?} step {i}: predict {p} vs candle {q}");
            let (l, m) = (ours.update(&x, y).unwrap(), theirs.update(&x, y).unwrap());
            assert!((l - m).abs() < 2e-6 * (1.0 + m), "{act:?} step {i}: loss {l} vs candle {m}");
        }
        let a = ours.parameters().unwrap();
        assert!(a.iter().all(|&v| (v as f32) as f64 == v), "{act:?}: f32 weights");
        assert!(close(&a, &theirs.parameters().unwrap(), 1e-4), "{act:?}: weights drifted from candle's");
        // f32 is not f64: the f64 net's forecasts differ beyond f64 rounding.
        let mut wide = PlainMlp::mlp(D, &HIDDEN, act, &t).unwrap();
        let mut apart = 0.0f64;
        for i in 0..400 {
            let (x, y) = stream(i);
            apart = apart.max((wide.predict(&x).unwrap() - ours.predict(&x).unwrap()).abs());
            wide.update(&x, y).unwrap();
        }
        assert!(apart > 1e-9, "{act:?}: the f32 net computes in f64? ({apart})");
        eprintln!("{act:?}: f32 vs candle F32 worst forecast difference {worst:e}");
    }
}

/// Under an HL-Gauss head (16 bins over [−2, 3]), with a hidden layer and as a linear
/// trunk: 300 predict-then-learn steps and mini-batches of 1, 3 and 7 rows agree with
/// candle's `MlpModel::with_head` (softmax, cross-entropy with the target histogram,
/// autograd) to rounding; checkpoints load both ways.
#[test]
fn hl_gauss_head_learns_as_candles() {
    use crate::model::mlp::HlGauss;
    let hl = HlGauss { lo: -2.0, hi: 3.0, bins: 16 };
    for hidden in [&[8usize][..], &[][..]] {
        let t = training(Loss::Mse, Optim::AdamW, 0.01);
        let mut ours = PlainHl::new(D, hidden, Activation::Relu, hl.clone(), &t).unwrap();
        let mut theirs = MlpModel::with_head(D, hidden, Activation::Relu, Some(hl.clone()), &t, candle_core::DType::F64, &Device::Cpu).unwrap();
        assert_eq!(ours.parameters().unwrap(), theirs.parameters().unwrap(), "{hidden:?}");
        for i in 0..300 {
            let (x, y) = stream(i);
            let (p, q) = (ours.predict(&x).unwrap(), theirs.predict(&x).unwrap());
            assert!((p - q).abs() < 1e-10 * (1.0 + q.abs()), "{hidden:?} step {i}: predict {p} vs candle {q}");
            let (l, m) = (ours.update(&x, y).unwrap(), theirs.update(&x, y).unwrap());
            assert!((l - m).abs() < 1e-10 * (1.0 + m), "{hidden:?} step {i}: loss {l} vs candle {m}");
        }
        let mut i = 300;
        for rows in [1usize, 3, 7] {
            let (xs, ys) = batch(&mut i, rows);
            let (mut p, mut q) = (Vec::new(), Vec::new());
            ours.predict_batch(&xs, D, &mut p).unwrap();
            theirs.predict_batch(&xs, D, &mut q).unwrap();
            assert!(close(&p, &q, 1e-10), "{hidden:?} {rows} rows");
            ours.update_batch(&xs, D, &ys).unwrap();
            theirs.update_batch(&xs, D, &ys).unwrap();
        }
        let (a, b) = (ours.parameters().unwrap(), theirs.parameters().unwrap());
        assert!(close(&a, &b, 1e-9), "{hidden:?}: weights drifted from candle's");
        let start = PlainHl::new(D, hidden, Activation::Relu, hl.clone(), &t).unwrap().parameters().unwrap();
        assert!(a.iter().zip(&start).any(|(x, y)| (x - y).abs() > 1e-3), "{hidden:?}: nothing learned");
        let mut s = Snapshot::default();
        theirs.save(&mut s).unwrap();
        let mut back = PlainHl::new(D, hidden, Activation::Relu, hl.clone(), &t).unwrap();
        back.load(&mut s).unwrap();
        assert_eq!(back.parameters().unwrap(), theirs.parameters().unwrap());
        assert_eq!(back.updates(), theirs.updates());
    }
}

/// The head's `backward` (the gradient of the prediction itself, Σ softmaxₖ·cₖ)
/// against central differences of `forward`.
#[test]
fn hl_gauss_prediction_gradient_by_differences() {
    use crate::model::mlp::HlGauss;
    let net = mlp::HlNet::new(D, &[5], Activation::Tanh, HlGauss { lo: -1.0, hi: 2.0, bins: 6 });
    let t = training(Loss::Mse, Optim::Sgd, 0.1);
    let m = PlainHl::new(D, &[5], Activation::Tanh, HlGauss { lo: -1.0, hi: 2.0, bins: 6 }, &t).unwrap();
    let theta = m.p.theta.clone();
    let (x, _) = stream(3);
    let mut s = Bufs::default();
    let mut grad = vec![0.0; theta.len()];
    net.forward(&theta, &x, &mut s);
    net.backward(&theta, &x, 1.0, &mut s, &mut grad);
    let h = 1e-6;
    for j in 0..theta.len() {
        let (mut up, mut down) = (theta.clone(), theta.clone());
        up[j] += h;
        down[j] -= h;
        let numeric = (net.forward(&up, &x, &mut s) - net.forward(&down, &x, &mut s)) / (2.0 * h);
        assert!((numeric - grad[j]).abs() < 1e-7, "θ[{j}]: {} vs differences {numeric}", grad[j]);
    }
}
