//! Save/load must make a restored model indistinguishable from one that never
//! stopped: after 150 updates, snapshot → fresh model → load, then both take the
//! same 100 further updates; parameters and predictions must be bit-identical.
use super::*;

fn cfg(extra: &str) -> ModelConfig {
    toml::from_str(&format!("features = [\"a\", \"b\", \"c\", \"d\"]\ntarget = \"y\"\nhorizon = 1\nseed = 4\n{extra}")).unwrap()
}

fn row(i: usize) -> ([f64; 4], f64) {
    let t = i as f64;
    let x = [(t * 0.37).sin(), (t * 0.11).cos(), (t * 0.05).sin() * 3.0, ((i * 7919) % 13) as f64 / 13.0];
    (x, 1.5 * x[0] - 0.7 * x[1] + 0.2 * x[2] * x[3] + if i > 200 { 2.0 } else { 0.0 })
}

fn check(extra: &str) {
    let c = cfg(extra);
    let n = 4;
    let mut a = build(&c, n, &Device::Cpu).unwrap();
    for i in 0..150 {
        let (x, y) = row(i);
        a.update(&x, y).unwrap();
    }
    let mut s = Snapshot::default();
    a.save(&mut s).unwrap();
    let mut b = build(&c, n, &Device::Cpu).unwrap();
    // (An HL-Gauss net not built yet has no parameters: its buffer is what matters.)
    if !a.parameters().unwrap().is_empty() {
        assert_ne!(a.parameters().unwrap(), b.parameters().unwrap(), "{extra}: the test must start from different states");
    }
    b.load(&mut s).unwrap();
    for i in 150..250 {
        let (x, y) = row(i);
        assert_eq!(a.predict(&x).unwrap().to_bits(), b.predict(&x).unwrap().to_bits(), "{extra}: row {i}");
        a.update(&x, y).unwrap();
        b.update(&x, y).unwrap();
    }
    assert_eq!(a.parameters().unwrap(), b.parameters().unwrap(), "{extra}");
    assert_eq!((a.updates(), a.drift_events()), (b.updates(), b.drift_events()), "{extra}");
}

#[test]
fn every_model_restores_exactly() {
    for extra in [
        "kind = \"linear\"\noptimizer = \"sgd\"\nlearning_rate = 0.05",
        "kind = \"linear\"\noptimizer = \"adamw\"\nlearning_rate = 0.05\nloss = \"huber\"",
        "kind = \"rls\"\nforgetting_factor = 0.99",
        "kind = \"mlp\"\nhidden = [8]\noptimizer = \"adamw\"\nlearning_rate = 0.01",
        "kind = \"mlp\"\nhidden = [8]\noptimizer = \"sgd\"\nlearning_rate = 0.01\nactivation = \"tanh\"",
        "kind = \"lstm\"\nwindow = 2\nhidden = [4]\noptimizer = \"adamw\"\nlearning_rate = 0.01",
        "kind = \"cnn1d\"\nwindow = 2\nkernel = 2\nhidden = [4]\noptimizer = \"adamw\"\nlearning_rate = 0.01",
        "kind = \"mlp\"\nhidden = [8]\nloss = \"hl_gauss\"\nhl_bins = 16\nhl_auto_n = 100\noptimizer = \"adamw\"\nlearning_rate = 0.01",
        "kind = \"mlp\"\nhidden = [8]\nloss = \"hl_gauss\"\nhl_bins = 16\nhl_auto_n = 200\noptimizer = \"adamw\"\nlearning_rate = 0.01",
        "kind = \"linear\"\noptimizer = \"adamw\"\nlearning_rate = 0.02\nnormalize = true\nreplay = 2\nreplay_capacity = 50\nreplay_policy = \"reservoir\"\nmixup = true\n\
         drift = \"page_hinkley\"\ndrift_action = \"raise_lr\"\ndrift_threshold = 2.0",
        "kind = \"linear\"\noptimizer = \"adamw\"\nlearning_rate = 0.02\nreplay = 1\nreplay_capacity = 30\ndrift = \"adwin\"\ndrift_action = \"reset_optimizer\"",
    ] {
        check(extra);
    }
}
