//! The bank against the plain-code LSTM, key by key.
use super::*;
use crate::model::rand::Draws;
use crate::model::OnlineModel;

const WINDOW: usize = 4;
const D: usize = 3;
const H: usize = 5;

fn row(key: usize, i: usize) -> (Vec<f64>, f64) {
    let x: Vec<f64> = (0..WINDOW * D).map(|j| (((key * 5 + i * 7 + j * 13) % 29) as f64 / 14.5 - 1.0) * (1.0 + key as f64 * 0.1)).collect();
    let y = 0.8 * x[x.len() - 1] - 0.3 * x[x.len() - 2] + 0.1 * ((i % 5) as f64) - 0.05 * key as f64;
    (x, y)
}

/// Keys' rows arrive interleaved in a shuffled order and are run in waves (the
/// i-th queued row of every key; within a wave, predictions then updates) of
/// every size: each key's forecasts and final weights equal those of its own
/// plain-code `LstmModel` fed only its rows, to rounding (candle's batched
/// matmuls sum in another order than the plain code's loops).
#[test]
fn each_key_learns_as_its_own_lstm() {
    for (loss, optim, lr) in [(Loss::Mse, Optim::AdamW, 0.01), (Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.02), (Loss::Mse, Optim::Sgd, 0.05)] {
        let t = Training { loss, optim, learning_rate: lr, seed: 9 };
        let keys = 6;
        // 40 rows per key, shuffled across keys (each key's own rows stay in order).
        let mut order: Vec<usize> = (0..keys).flat_map(|k| std::iter::repeat_n(k, 40)).collect();
        let mut d = Draws(3);
        for i in (1..order.len()).rev() {
            let j = ((d.symmetric(1.0) + 1.0) / 2.0 * (i + 1) as f64) as usize % (i + 1);
            order.swap(i, j);
        }
        let mut bank = LstmBank::new(keys, WINDOW, D, H, &t, DType::F64, &Device::Cpu).unwrap();
        let mut own: Vec<LstmModel> = (0..keys).map(|_| LstmModel::<f64>::new(WINDOW, D, H, &t).unwrap()).collect();
        let mut seen = vec![0usize; keys];
        let mut worst = 0f64;
        // Batches of 1, 7 and the rest, as the pipeline's fetches might cut them.
        let mut at = 0usize;
        for len in [1, 7, usize::MAX] {
            let batch = &order[at..at.saturating_add(len).min(order.len())];
            at += batch.len();
            let mut queues: Vec<Vec<usize>> = vec![Vec::new(); keys];
            for &k in batch {
                queues[k].push(seen[k]);
                seen[k] += 1;
            }
            let waves = queues.iter().map(Vec::len).max().unwrap_or(0);
            for wave in 0..waves {
                let (mut ks, mut xs, mut ys) = (Vec::new(), Vec::new(), Vec::new());
                for (k, q) in queues.iter().enumerate() {
                    if let Some(&i) = q.get(wave) {
                        let (x, y) = row(k, i);
                        ks.push(k as u32);
                        xs.extend(x);
                        ys.push(y);
                    }
                }
                let mut preds = Vec::new();
                bank.predict(&ks, &xs, &mut preds).unwrap();
                bank.update(&ks, &xs, &ys).unwrap();
                for (j, &k) in ks.iter().enumerate() {
                    let x = &xs[j * WINDOW * D..(j + 1) * WINDOW * D];
                    let p = own[k as usize].predict(x).unwrap();
                    worst = worst.max((p - preds[j]).abs());
                    assert!((p - preds[j]).abs() < 1e-10, "{loss:?} {optim:?} key {k}: {p} vs bank {}", preds[j]);
                    own[k as usize].update(x, ys[j]).unwrap();
                }
            }
        }
        assert_eq!(at, order.len());
        for (k, m) in own.iter().enumerate() {
            assert_eq!(bank.steps(k), 40);
            let (a, b) = (m.parameters().unwrap(), bank.parameters(k).unwrap());
            assert_eq!(a.len(), b.len());
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + y.abs())), "{loss:?} {optim:?} key {k}");
        }
        // The keys did diverge from one another (each learned its own rows).
        assert_ne!(bank.parameters(0).unwrap(), bank.parameters(1).unwrap());
        eprintln!("{loss:?} {optim:?}: worst forecast difference {worst:.1e}");
    }
}

/// In F32 each key follows its own f32 `LstmModel` to f32 rounding (one wave of
/// all keys per step, 60 steps).
#[test]
fn f32_bank_follows_the_f32_lstm() {
    let t = Training { loss: Loss::Mse, optim: Optim::AdamW, learning_rate: 0.01, seed: 4 };
    let keys = 3;
    let mut bank = LstmBank::new(keys, WINDOW, D, H, &t, DType::F32, &Device::Cpu).unwrap();
    let mut own: Vec<LstmModel<f32>> = (0..keys).map(|_| LstmModel::<f32>::new(WINDOW, D, H, &t).unwrap()).collect();
    let ks: Vec<u32> = (0..keys as u32).collect();
    let mut preds = Vec::new();
    for i in 0..60 {
        let rows: Vec<(Vec<f64>, f64)> = (0..keys).map(|k| row(k, i)).collect();
        let xs: Vec<f64> = rows.iter().flat_map(|r| r.0.clone()).collect();
        let ys: Vec<f64> = rows.iter().map(|r| r.1).collect();
        bank.predict(&ks, &xs, &mut preds).unwrap();
        bank.update(&ks, &xs, &ys).unwrap();
        for (k, (x, y)) in rows.iter().enumerate() {
            let p = own[k].predict(x).unwrap();
            assert!((p - preds[k]).abs() < 1e-5, "step {i} key {k}: {p} vs bank {}", preds[k]);
            own[k].update(x, *y).unwrap();
        }
    }
    for (k, m) in own.iter().enumerate() {
        let (a, b) = (m.parameters().unwrap(), bank.parameters(k).unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs())), "key {k}");
    }
}

/// A wave names each key once and only keys of the bank.
#[test]
fn refuses_a_key_twice_or_out_of_range() {
    let t = Training { loss: Loss::Mse, optim: Optim::AdamW, learning_rate: 0.01, seed: 1 };
    let mut bank = LstmBank::new(2, WINDOW, D, H, &t, DType::F64, &Device::Cpu).unwrap();
    let (x, y) = row(0, 0);
    let xs: Vec<f64> = x.iter().chain(&x).copied().collect();
    assert!(bank.update(&[1, 1], &xs, &[y, y]).is_err());
    let rows = bank.keys() as u32;
    assert!(bank.predict(&[0, rows], &xs, &mut Vec::new()).is_err());
    assert!(bank.update(&[0], &x, &[y]).is_ok());
    assert_eq!((bank.steps(0), bank.steps(1)), (1, 0));
}

fn shared(t: &Training) -> SharedBank {
    std::sync::Arc::new(std::sync::Mutex::new(LstmBank::new(0, WINDOW, D, H, t, DType::F64, &Device::Cpu).unwrap()))
}

/// A bank key's checkpoint is its own `LstmModel`'s: each restores the other to the
/// same parameters and counters, and both then go on alike (to rounding).
#[test]
fn a_keys_checkpoint_cross_loads_with_the_plain_lstm() {
    let t = Training { loss: Loss::Huber { delta: 0.3 }, optim: Optim::AdamW, learning_rate: 0.02, seed: 6 };
    let bank = shared(&t);
    let (mut a, mut b) = (BankKey::new(&bank).unwrap(), BankKey::new(&bank).unwrap());
    let mut plain = LstmModel::<f64>::new(WINDOW, D, H, &t).unwrap();
    for i in 0..30 {
        let (x, y) = row(1, i);
        a.update(&x, y).unwrap();
        plain.update(&x, y).unwrap();
        let (x, y) = row(2, i);
        b.update(&x, y).unwrap();
    }
    plain.set_lr_scale(2.0).unwrap();
    a.set_lr_scale(2.0).unwrap();
    let mut from_bank = Snapshot::default();
    a.save(&mut from_bank).unwrap();
    let mut restored = LstmModel::<f64>::new(WINDOW, D, H, &t).unwrap();
    restored.load(&mut from_bank.clone()).unwrap();
    assert_eq!(restored.parameters().unwrap(), a.parameters().unwrap());
    assert_eq!(restored.updates(), 30);
    let mut from_plain = Snapshot::default();
    plain.save(&mut from_plain).unwrap();
    // Into the other key's row: b becomes the plain model's copy.
    b.load(&mut from_plain).unwrap();
    assert_eq!(b.parameters().unwrap(), plain.parameters().unwrap());
    assert_eq!(b.updates(), 30);
    for i in 30..60 {
        let (x, y) = row(1, i);
        for m in [&mut a as &mut dyn OnlineModel, &mut b, &mut plain, &mut restored] {
            m.update(&x, y).unwrap();
        }
    }
    let p = plain.parameters().unwrap();
    for m in [&a as &dyn OnlineModel, &b, &restored] {
        assert!(m.parameters().unwrap().iter().zip(&p).all(|(u, v)| (u - v).abs() <= 1e-9 * (1.0 + v.abs())));
    }
}

/// A dropped key's row goes back to the bank; the next key takes it at the starting
/// weights with no optimizer state; resetting one key's optimizer leaves the others.
#[test]
fn rows_are_reused_from_the_start() {
    let t = Training { loss: Loss::Mse, optim: Optim::AdamW, learning_rate: 0.01, seed: 2 };
    let bank = shared(&t);
    let start = LstmModel::<f64>::new(WINDOW, D, H, &t).unwrap().parameters().unwrap();
    let mut a = BankKey::new(&bank).unwrap();
    let mut b = BankKey::new(&bank).unwrap();
    for i in 0..10 {
        let (x, y) = row(0, i);
        a.update(&x, y).unwrap();
        b.update(&x, y).unwrap();
    }
    let ka = a.bank_key().unwrap().1;
    drop(a);
    let c = BankKey::new(&bank).unwrap();
    assert_eq!(c.bank_key().unwrap().1, ka, "the freed row");
    assert_eq!((c.parameters().unwrap(), c.updates()), (start.clone(), 0));
    // b's optimizer reset: the next step is a first AdamW step from b's weights.
    b.reset_optimizer().unwrap();
    let mut fresh_opt = LstmModel::<f64>::new(WINDOW, D, H, &t).unwrap();
    let mut snap = Snapshot::default();
    b.save(&mut snap).unwrap();
    fresh_opt.load(&mut snap).unwrap();
    let (x, y) = row(0, 10);
    b.update(&x, y).unwrap();
    fresh_opt.update(&x, y).unwrap();
    assert!(b.parameters().unwrap().iter().zip(&fresh_opt.parameters().unwrap()).all(|(u, v)| (u - v).abs() <= 1e-12 * (1.0 + v.abs())));
    assert_eq!(lock(&bank).unwrap().steps(c.bank_key().unwrap().1 as usize), 0);
}

/// `model.bank` is refused where a bank cannot hold the models, at its key.
#[test]
fn bank_settings_are_checked() {
    let cfg = |extra: &str| -> crate::pipeline::config::ModelConfig {
        toml::from_str(&format!("kind = \"lstm\"\noptimizer = \"adamw\"\nwindow = 2\nscope = \"per_key\"\nbank = true\n{extra}\nfeatures = [\"a\"]\ntarget = \"y\"\nhorizon = 1")).unwrap()
    };
    assert!(crate::model::new_bank(&cfg(""), 2, &Device::Cpu).is_ok());
    for extra in ["normalize = true", "replay = 4", "mixup = true", "drift = \"adwin\""] {
        let e = crate::model::new_bank(&cfg(extra), 2, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("model.bank"), "{extra}: {e}");
    }
    let mut global = cfg("");
    global.scope = crate::pipeline::config::choice::Scope::Global;
    let e = crate::model::build(&global, 2, &Device::Cpu).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("per_key"), "{e}");
}

/// `lstm_bank_host.cpp` with the kernel source pasted in, compiled once per test run
/// and chunk size (`TF_STEP_CHUNK`: parameters stepped together; None the kernel's
/// default): the path of the program.
fn kernel_host(chunk: Option<u32>) -> std::path::PathBuf {
    static HOSTS: std::sync::Mutex<Vec<(Option<u32>, std::path::PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut hosts = HOSTS.lock().unwrap();
    if let Some((_, exe)) = hosts.iter().find(|(c, _)| *c == chunk) {
        return exe.clone();
    }
    let dir = std::env::temp_dir().join(format!("tickflare-lstm-bank-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = include_str!("lstm_bank_host.cpp").replace("// @KERNEL@", include_str!("lstm_bank.cu"));
    std::fs::write(dir.join("host.cpp"), src).unwrap();
    let exe = dir.join(format!("host-{}", chunk.map_or("default".to_string(), |c| c.to_string())));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut cmd = std::process::Command::new(&cxx);
    cmd.args(["-std=c++20", "-O2", "-pthread"]);
    if let Some(c) = chunk {
        cmd.arg(format!("-DTF_STEP_CHUNK={c}"));
    }
    let o = cmd
        .arg("-o")
        .arg(&exe)
        .arg(dir.join("host.cpp"))
        .output()
        .unwrap_or_else(|e| panic!("{cxx} (a C++20 compiler, for the CUDA kernel's CPU host) could not run: {e}"));
    assert!(o.status.success(), "compiling the kernel's CPU host: {}", String::from_utf8_lossy(&o.stderr));
    hosts.push((chunk, exe.clone()));
    exe
}

/// The CUDA kernels of the bank (`lstm_bank.cu`: one launch per wave, one block per
/// key), run on the CPU by `lstm_bank_host.cpp` — every GPU thread an OS thread,
/// `__syncthreads` a barrier — give the forecasts, losses, weights and AdamW moments
/// of the bank's candle form, wave by wave, for waves of changing keys in changing
/// order: so CI, which has no GPU, tests the kernel's arithmetic (forward, loss
/// derivative, backpropagation through time, AdamW and SGD) and the stacks' layouts
/// it assumes. (On an H200 the GPU's forecasts agreed with the CPU's to 7.3e-12 in
/// f64: README, GPU.) The update's optimizer step taken a chunk of parameters at a
/// time (`TF_STEP_CHUNK`: loads, then stores; an experiment for a GPU run) gives the
/// default one-at-a-time form's bits, with chunks of three and of eight.
#[test]
fn the_cuda_kernels_run_on_the_cpu_follow_the_bank() {
    let host = kernel_host(None);
    let others = [kernel_host(Some(3)), kernel_host(Some(8))];
    for (prec, dtype, tol) in [("f64", DType::F64, 1e-13), ("f32", DType::F32, 1e-5)] {
        for (loss, optim, lr) in [(Loss::Huber { delta: 0.3 }, Optim::AdamW, 0.02), (Loss::Mse, Optim::AdamW, 0.01), (Loss::Mse, Optim::Sgd, 0.05)] {
            let t = Training { loss, optim, learning_rate: lr, seed: 9 };
            let keys = 6;
            let mut bank = LstmBank::new(keys, WINDOW, D, H, &t, dtype, &Device::Cpu).unwrap();
            let values = |s: &Tensor| s.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            let stacks = |b: &LstmBank| -> Vec<Vec<f64>> {
                let mut out: Vec<Vec<f64>> = b.params.iter().map(values).collect();
                match &b.moments {
                    Some((m, v)) => out.extend(m.iter().chain(v).map(values)),
                    None => out.extend(b.params.iter().chain(&b.params).map(|p| vec![0.0; p.elem_count()])),
                }
                out
            };
            let (delta, huber) = match loss {
                Loss::Huber { delta } => (delta, 1.0),
                Loss::Mse => (0.0, 0.0),
            };
            let adam = if optim == Optim::AdamW { 1.0 } else { 0.0 };
            let waves = 16;
            let mut input = vec![bank.keys() as f64, D as f64, H as f64, WINDOW as f64, huber, delta, adam, BETA1, BETA2, 1.0 - BETA1, 1.0 - BETA2, EPS, 2.0 * waves as f64];
            let start = stacks(&bank).concat();
            input.extend(&start);
            let mut want: Vec<f64> = Vec::new();
            for i in 0..waves {
                // Four or five of the six keys, in an order that changes wave to wave.
                let mut ks: Vec<u32> = (0..keys as u32).filter(|k| !(*k as usize + i).is_multiple_of(4)).collect();
                let turn = i % ks.len();
                ks.rotate_left(turn);
                if i % 2 == 1 {
                    ks.reverse();
                }
                let rows: Vec<(Vec<f64>, f64)> = ks.iter().map(|&k| row(k as usize, i)).collect();
                let xs: Vec<f64> = rows.iter().flat_map(|r| r.0.clone()).collect();
                let ys: Vec<f64> = rows.iter().map(|r| r.1).collect();
                let per_key: Vec<(f64, f64, f64)> = ks
                    .iter()
                    .map(|&k| {
                        let (m, v) = if adam > 0.0 { adam_scales(bank.steps(k as usize) + 1) } else { (1.0, 1.0) };
                        (bank.lrs[k as usize], m, v)
                    })
                    .collect();
                let n = ks.len() as f64;
                let ids: Vec<f64> = ks.iter().map(|&k| k as f64).collect();
                input.extend([0.0, n]);
                input.extend(&ids);
                input.extend(&xs);
                input.extend([1.0, n]);
                input.extend(&ids);
                input.extend(&xs);
                input.extend(&ys);
                input.extend(per_key.iter().map(|p| p.0));
                input.extend(per_key.iter().map(|p| p.1));
                input.extend(per_key.iter().map(|p| p.2));
                let mut preds = Vec::new();
                bank.predict(&ks, &xs, &mut preds).unwrap();
                want.extend(preds);
                want.extend(bank.update(&ks, &xs, &ys).unwrap());
            }
            want.extend(stacks(&bank).concat());
            let dir = tempfile::tempdir().unwrap();
            let (inp, out) = (dir.path().join("in"), dir.path().join("out"));
            std::fs::write(&inp, input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
            let run = |exe: &std::path::Path| -> Vec<f64> {
                let o = std::process::Command::new(exe).arg(prec).arg(&inp).arg(&out).output().unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                std::fs::read(&out).unwrap().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
            };
            let got = run(&host);
            for other in &others {
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(bits(&run(other)) == bits(&got), "{prec} {loss:?} {optim:?}: {} gives other bits", other.display());
            }
            assert_eq!(got.len(), want.len(), "{prec} {loss:?} {optim:?}");
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0, f64::max);
            eprintln!("{prec} {loss:?} {optim:?}: largest difference {worst:.2e} over {} values", got.len());
            assert!(worst <= tol, "{prec} {loss:?} {optim:?}: the kernel differs from the bank by {worst:e}");
            // The learners moved: the comparison is not of two untouched starts.
            let moved = start.iter().zip(&want[want.len() - start.len()..]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(moved > 1e-3, "{prec} {loss:?} {optim:?}: the weights hardly moved ({moved:e})");
        }
    }
}
