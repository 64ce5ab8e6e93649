//! Tests of the linear models: optimizers, losses, closed-form references.

use super::*;
use candle_core::{DType, Tensor};

/// A plain-f64 reference written out here: z·θ summed left to right, then the
/// optimizer's formula per coordinate. The model must match it bit for bit over
/// a stream of rows, for each optimizer and loss.
#[test]
fn bit_equal_to_a_plain_f64_reference() {
    for (optim, loss) in [
        (Optim::Sgd, Loss::Mse),
        (Optim::Nlms, Loss::Huber { delta: 0.3 }),
        (Optim::AdamW, Loss::Mse),
        (Optim::Sgd, Loss::Huber { delta: 0.5 }),
    ] {
        let lr = 0.05;
        let mut m = LinearModel::with_loss(3, optim, lr, loss, &Device::Cpu).unwrap();
        let (mut th, mut am, mut av) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
        for i in 0..300 {
            let t = i as f64;
            let x = [(t * 0.37).sin(), (t * 0.11).cos() * 2.0, ((i * 7) % 5) as f64 - 2.0];
            let y = 0.8 * x[0] - 1.3 * x[1] + 0.4 * x[2] + 0.1 + 0.3 * (t * 1.7).sin();
            let pred = x[0] * th[0] + x[1] * th[1] + x[2] * th[2] + th[3];
            assert_eq!(m.predict(&x).unwrap().to_bits(), pred.to_bits(), "{optim:?} row {i}");
            let r = pred - y;
            let g = match (loss, optim) {
                (Loss::Mse, Optim::Nlms) => r,
                (Loss::Mse, _) => r * 2.0,
                (Loss::Huber { delta }, _) => r.clamp(-delta, delta),
            };
            let z = [x[0], x[1], x[2], 1.0];
            match optim {
                Optim::Sgd => (0..4).for_each(|j| th[j] -= z[j] * g * lr),
                Optim::Nlms => {
                    let zz = x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + 1.0;
                    (0..4).for_each(|j| th[j] -= z[j] * g * (lr / zz))
                }
                Optim::AdamW => {
                    let k = i + 1;
                    for j in 0..4 {
                        let gj = z[j] * g;
                        am[j] = am[j] * BETA1 + gj * (1.0 - BETA1);
                        av[j] = av[j] * BETA2 + gj * gj * (1.0 - BETA2);
                        let mh = am[j] * (1.0 / (1.0 - BETA1.powi(k)));
                        let vh = av[j] * (1.0 / (1.0 - BETA2.powi(k)));
                        th[j] -= mh / (vh.sqrt() + EPS) * lr;
                    }
                }
            }
            m.update(&x, y).unwrap();
        }
        let p = m.parameters().unwrap();
        assert_eq!(p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), th.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{optim:?}");
    }
}

/// Normalised LMS by hand (lr = 0.5, θ = 0): x = (1, 2), y = 3 → z = (1, 2, 1),
/// ‖z‖² = 6, r = −3, θ = 0.5·3·z/6 = (0.25, 0.5, 0.25) (half the residual closed:
/// ŷ = 1.5). Then x = (0, 1), y = 1: z = (0, 1, 1), ŷ = 0.75, r = −0.25, ‖z‖² = 2,
/// θ += 0.5·0.25·z/2 → (0.25, 0.5625, 0.3125). The same targets ×1000 give θ ×1000
/// (scale-free in the target).
#[test]
fn nlms_by_hand() {
    for scale in [1.0, 1000.0] {
        let mut m = LinearModel::new(2, Optim::Nlms, 0.5, &Device::Cpu).unwrap();
        m.update(&[1.0, 2.0], 3.0 * scale).unwrap();
        assert!((m.predict(&[1.0, 2.0]).unwrap() - 1.5 * scale).abs() < 1e-9 * scale);
        m.update(&[0.0, 1.0], 1.0 * scale).unwrap();
        let p = m.parameters().unwrap();
        for (got, want) in p.iter().zip([0.25, 0.5625, 0.3125]) {
            assert!((got - want * scale).abs() < 1e-12 * scale, "{p:?}");
        }
    }
}

/// Two SGD steps worked out by hand (lr = 0.1, w = b = 0 at start).
/// Step 1: x = (1, 2), y = 3: ŷ = 0, g = 2(0 − 3) = −6,
///   w = (0.6, 1.2), b = 0.6.
/// Step 2: x = (2, −1), y = 1: ŷ = 1.2 − 1.2 + 0.6 = 0.6, g = 2(0.6 − 1) = −0.8,
///   w = (0.6 + 0.16, 1.2 − 0.08) = (0.76, 1.12), b = 0.6 + 0.08 = 0.68.
#[test]
fn sgd_matches_hand_computation() {
    let mut m = LinearModel::new(2, Optim::Sgd, 0.1, &Device::Cpu).unwrap();
    assert_eq!(m.update(&[1.0, 2.0], 3.0).unwrap(), 9.0);
    assert!((m.predict(&[2.0, -1.0]).unwrap() - 0.6).abs() < 1e-12);
    m.update(&[2.0, -1.0], 1.0).unwrap();
    let p = m.parameters().unwrap();
    for (a, b) in p.iter().zip([0.76, 1.12, 0.68]) {
        assert!((a - b).abs() < 1e-12, "{p:?}");
    }
    assert_eq!(m.updates(), 2);
}

/// Huber (δ = 1), lr = 0.1, x = (1, 2), y = 3 from w = b = 0: e = −3 is outside
/// ±δ, so the gradient is δ·sign(e) = −1 per unit input: w = (0.1, 0.2), b = 0.1.
/// Then x = (1, 0), y = 0.5: ŷ = 0.2, e = −0.3 inside ±δ → gradient e:
/// w₁ = 0.1 + 0.03 = 0.13, b = 0.1 + 0.03 = 0.13.
#[test]
fn huber_sgd_matches_hand_computation() {
    let mut m = LinearModel::with_loss(2, Optim::Sgd, 0.1, Loss::Huber { delta: 1.0 }, &Device::Cpu).unwrap();
    m.update(&[1.0, 2.0], 3.0).unwrap();
    m.update(&[1.0, 0.0], 0.5).unwrap();
    let p = m.parameters().unwrap();
    for (a, b) in p.iter().zip([0.13, 0.2, 0.13]) {
        assert!((a - b).abs() < 1e-12, "{p:?}");
    }
}

/// A mini-batch step uses the mean gradient: by hand (lr 0.1, from zero) rows
/// x = (1, 0), y = 2 and x = (0, 1), y = 4: ŷ = 0, g = 2(ŷ − y) = (−4, −8), mean
/// over rows → w = (0.1·4/2, 0.1·8/2) = (0.2, 0.4), b = 0.1·12/2 = 0.6.
#[test]
fn batch_step_uses_the_mean_gradient() {
    let mut m = LinearModel::new(2, Optim::Sgd, 0.1, &Device::Cpu).unwrap();
    m.update_batch(&[1.0, 0.0, 0.0, 1.0], 2, &[2.0, 4.0]).unwrap();
    let p = m.parameters().unwrap();
    for (a, b) in p.iter().zip([0.2, 0.4, 0.6]) {
        assert!((a - b).abs() < 1e-12, "{p:?}");
    }
}

/// The hand-written AdamW equals candle-nn's `AdamW` driven by autograd on the
/// same stream (an independent implementation of the same update).
#[test]
fn adamw_matches_candle_nn() {
    use candle_core::Var;
    use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
    let dev = Device::Cpu;
    let mut ours = LinearModel::new(2, Optim::AdamW, 0.05, &dev).unwrap();
    let w = Var::zeros((2, 1), DType::F64, &dev).unwrap();
    let b = Var::zeros((1, 1), DType::F64, &dev).unwrap();
    let mut theirs =
        AdamW::new(vec![w.clone(), b.clone()], ParamsAdamW { lr: 0.05, weight_decay: 0.0, ..Default::default() }).unwrap();
    for i in 0..50 {
        let x = [(i as f64 * 0.3).sin(), (i as f64 * 0.7).cos()];
        let y = 1.5 * x[0] - 0.5 * x[1] + 0.2;
        ours.update(&x, y).unwrap();
        let xt = Tensor::new(&[x], &dev).unwrap();
        let pred = xt.matmul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap();
        let loss = pred.sub(&Tensor::new(&[[y]], &dev).unwrap()).unwrap().sqr().unwrap().mean_all().unwrap();
        theirs.backward_step(&loss).unwrap();
    }
    let mut want = w.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    want.extend(b.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap());
    let got = ours.parameters().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

/// AdamW's first step moves every parameter with a non-zero gradient by
/// lr·m̂/(√v̂+ε) = lr·g/(|g|+ε) ≈ lr·sign(g) (Kingma & Ba 2015, bias-corrected).
#[test]
fn adamw_first_step_is_lr_times_sign() {
    let mut m = LinearModel::new(2, Optim::AdamW, 0.01, &Device::Cpu).unwrap();
    m.update(&[1.0, -2.0], 3.0).unwrap();
    let p = m.parameters().unwrap();
    for (a, b) in p.iter().zip([0.01, -0.01, 0.01]) {
        assert!((a - b).abs() < 1e-9, "{p:?}");
    }
}

/// The bias corrections from the table of squarings equal the ones from the
/// standard library's `powi` (the reference candle-nn's AdamW uses), bit for bit,
/// at every step up to 2²⁰ and around 2³¹ (where `powi`'s i32 exponent ends).
#[test]
fn adam_scales_equal_powi() {
    let by_powi = |t: i32| (1.0 / (1.0 - BETA1.powi(t)), 1.0 / (1.0 - BETA2.powi(t)));
    let steps = (0..=1i32 << 20).chain([i32::MAX - 2, i32::MAX - 1, i32::MAX]);
    for t in steps {
        let (a, b) = (super::adam_scales(t as u64), by_powi(t));
        assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()), "t = {t}");
    }
    // Past i32's range the exponent saturates (βᵗ is 0 there: both scales are 1).
    assert_eq!(super::adam_scales(1 << 40), (1.0, 1.0));
}
