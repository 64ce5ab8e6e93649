//! A bank's wave on a GPU as one kernel launch (`lstm_bank.cu`, compiled once per
//! process by NVRTC): a batched predict is one launch, a batched update — forward,
//! backpropagation through time and the AdamW/SGD step of every key of the wave —
//! another, one thread block per key, reading and writing the bank's own stacks in
//! place. candle's tensor form of the same wave is hundreds of small kernels and
//! temporaries; on an H200 this form ran 8.7 – 12× faster at 10,000 keys (README,
//! GPU). Inputs go up as f64 windows converted on the host, one copy per array.
//! `TICKFLARE_BANK_KERNEL=candle` keeps candle's form (for comparison).

use std::sync::{Arc, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDType, CudaDevice};
use candle_core::{DType, Device, Storage, Tensor, WithDType};

use super::{B_HH, B_IH, HEAD_B, HEAD_W, W_HH, W_IH};
use crate::error::{Error, Result};
use crate::model::linear::{BETA1, BETA2, EPS};
use crate::model::loss::Loss;

const SRC: &str = include_str!("lstm_bank.cu");
const MODULE: &str = "tickflare_lstm_bank";
/// Shared memory a block may use without opting in (bytes).
const SMEM_LIMIT: usize = 48 * 1024;

/// The PTX of `lstm_bank.cu`, compiled on first use (both precisions in one module).
/// `TICKFLARE_BANK_STEP_CHUNK=N` (1 – 64) compiles it with the update's optimizer step
/// taken N parameters at a time instead of one (the same results; an experiment to
/// measure on a GPU: more loads in flight, more registers).
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let r = PTX.get_or_init(|| {
        let var = std::env::var("TICKFLARE_BANK_STEP_CHUNK").ok();
        let chunk = var.as_deref().and_then(|v| v.parse::<u32>().ok()).filter(|c| (1..=64).contains(c));
        if let (Some(v), None) = (&var, chunk) {
            tracing::warn!(value = %v, "TICKFLARE_BANK_STEP_CHUNK is not a whole number from 1 to 64: ignored");
        }
        let options = chunk.map(|c| vec![format!("-DTF_STEP_CHUNK={c}")]).unwrap_or_default();
        let opts = CompileOptions { name: Some("lstm_bank.cu".into()), options, ..Default::default() };
        compile_ptx_with_opts(SRC, opts).map(|p| p.to_src()).map_err(|e| e.to_string())
    });
    r.as_deref().map_err(|e| Error::Internal(format!("compiling the LSTM bank's CUDA kernel: {e}")))
}

/// The kernels for one bank: its device, precision and sizes.
pub struct Fused {
    dev: CudaDevice,
    /// candle's stream for this device: the kernels run in order with its ops.
    stream: Arc<CudaStream>,
    predict: CudaFunction,
    update: CudaFunction,
    f64: bool,
    d: usize,
    h: usize,
    w: usize,
    smem: u32,
}

impl Fused {
    /// The kernels for a bank of `window` rows of `d` features and `hidden` units on
    /// `device`, or None where they do not apply (the CPU, `TICKFLARE_BANK_KERNEL=candle`,
    /// more than 256 hidden units or a window too long for a block's shared memory):
    /// the bank then runs candle's tensor form.
    pub fn new(device: &Device, dtype: DType, window: usize, d: usize, hidden: usize) -> Result<Option<Self>> {
        let Device::Cuda(dev) = device else { return Ok(None) };
        if std::env::var("TICKFLARE_BANK_KERNEL").is_ok_and(|v| v == "candle") {
            return Ok(None);
        }
        let elem = match dtype {
            DType::F32 => 4,
            DType::F64 => 8,
            _ => return Ok(None),
        };
        let g = 4 * hidden;
        let smem = (window * d + 2 * window * g + 3 * window * hidden + 2 * hidden + 2) * elem;
        if g > 1024 || smem > SMEM_LIMIT {
            return Ok(None);
        }
        let s = if dtype == DType::F64 { "f64" } else { "f32" };
        let ptx = ptx()?;
        let predict = dev.get_or_load_custom_func(&format!("lstm_bank_predict_{s}"), MODULE, ptx)?.into_cuda_function();
        let update = dev.get_or_load_custom_func(&format!("lstm_bank_update_{s}"), MODULE, ptx)?.into_cuda_function();
        Ok(Some(Fused { dev: dev.clone(), stream: dev.cuda_stream(), predict, update, f64: dtype == DType::F64, d, h: hidden, w: window, smem: smem as u32 }))
    }

    fn config(&self, n: usize) -> LaunchConfig {
        LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: ((4 * self.h) as u32, 1, 1), shared_mem_bytes: self.smem }
    }

    /// One forecast per key of the wave into `out`.
    pub fn predict(&self, params: &[Tensor], keys: &[u32], xs: &[f64], out: &mut Vec<f64>) -> Result<()> {
        if self.f64 {
            self.predict_as::<f64>(params, keys, xs, out)
        } else {
            self.predict_as::<f32>(params, keys, xs, out)
        }
    }

    fn predict_as<T: Real>(&self, params: &[Tensor], keys: &[u32], xs: &[f64], out: &mut Vec<f64>) -> Result<()> {
        let t0 = std::time::Instant::now();
        let n = keys.len();
        let ids = self.dev.clone_htod(keys)?;
        let x = self.dev.clone_htod(xs.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>().as_slice())?;
        let res = self.dev.alloc_zeros::<T>(n)?;
        let guards: Vec<_> = params.iter().map(|t| t.storage_and_layout()).collect();
        let p = slices::<T>(&guards)?;
        let (d, h, w) = (self.d as i32, self.h as i32, self.w as i32);
        let mut b = self.stream.launch_builder(&self.predict);
        b.arg(&ids).arg(&x).arg(&res);
        for j in [W_IH, W_HH, B_IH, B_HH, HEAD_W, HEAD_B] {
            b.arg(p[j]);
        }
        b.arg(&d).arg(&h).arg(&w);
        // SAFETY: the arguments match lstm_bank_predict_{f32,f64}'s signature; every
        // key id was checked to be a row of the stacks.
        unsafe { b.launch(self.config(n)) }.map_err(cuda_err)?;
        drop(guards);
        let (t1, t2) = self.profiled_wait(t0)?;
        out.clear();
        out.extend(self.dev.clone_dtoh(&res)?.into_iter().map(|v| v.to_f64()));
        PROFILE.add(0, n, t0, t1, t2);
        Ok(())
    }

    /// One optimizer step of every key of the wave on its own row; returns each row's
    /// loss before the step. `per_key`: (learning rate, AdamW's two bias scales).
    #[allow(clippy::too_many_arguments)]
    pub fn update(&self, params: &[Tensor], moments: Option<(&[Tensor], &[Tensor])>, keys: &[u32], xs: &[f64], ys: &[f64], per_key: &[(f64, f64, f64)], loss: Loss) -> Result<Vec<f64>> {
        if self.f64 {
            self.update_as::<f64>(params, moments, keys, xs, ys, per_key, loss)
        } else {
            self.update_as::<f32>(params, moments, keys, xs, ys, per_key, loss)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn update_as<T: Real>(&self, params: &[Tensor], moments: Option<(&[Tensor], &[Tensor])>, keys: &[u32], xs: &[f64], ys: &[f64], per_key: &[(f64, f64, f64)], loss: Loss) -> Result<Vec<f64>> {
        let t0 = std::time::Instant::now();
        let n = keys.len();
        let dev = &self.dev;
        let of = |v: &mut dyn Iterator<Item = f64>| -> Vec<T> { v.map(T::from_f64).collect() };
        let ids = dev.clone_htod(keys)?;
        let x = dev.clone_htod(of(&mut xs.iter().copied()).as_slice())?;
        let y = dev.clone_htod(of(&mut ys.iter().copied()).as_slice())?;
        let lr = dev.clone_htod(of(&mut per_key.iter().map(|p| p.0)).as_slice())?;
        let sm = dev.clone_htod(of(&mut per_key.iter().map(|p| p.1)).as_slice())?;
        let sv = dev.clone_htod(of(&mut per_key.iter().map(|p| p.2)).as_slice())?;
        let losses = dev.alloc_zeros::<T>(n)?;
        let pg: Vec<_> = params.iter().map(|t| t.storage_and_layout()).collect();
        let (mg, vg): (Vec<_>, Vec<_>) = match moments {
            Some((m, v)) => (m.iter().map(|t| t.storage_and_layout()).collect(), v.iter().map(|t| t.storage_and_layout()).collect()),
            None => (Vec::new(), Vec::new()),
        };
        let p = slices::<T>(&pg)?;
        // SGD has no moments: the kernel never touches them (adam = 0); the parameters
        // stand in as pointers.
        let (m, v) = if moments.is_some() { (slices::<T>(&mg)?, slices::<T>(&vg)?) } else { (p.clone(), p.clone()) };
        let (d, h, w) = (self.d as i32, self.h as i32, self.w as i32);
        let (huber, delta) = match loss {
            Loss::Mse => (0i32, T::from_f64(0.0)),
            Loss::Huber { delta } => (1i32, T::from_f64(delta)),
        };
        let adam = i32::from(moments.is_some());
        // As LstmModel::apply: the constants rounded once to T.
        let (b1, b2, c1, c2, eps) = (T::from_f64(BETA1), T::from_f64(BETA2), T::from_f64(1.0 - BETA1), T::from_f64(1.0 - BETA2), T::from_f64(EPS));
        let mut b = self.stream.launch_builder(&self.update);
        b.arg(&ids).arg(&x).arg(&y).arg(&lr).arg(&sm).arg(&sv).arg(&losses);
        for set in [&p, &m, &v] {
            for j in [W_IH, W_HH, B_IH, B_HH, HEAD_W, HEAD_B] {
                b.arg(set[j]);
            }
        }
        b.arg(&d).arg(&h).arg(&w).arg(&huber).arg(&delta).arg(&adam).arg(&b1).arg(&b2).arg(&c1).arg(&c2).arg(&eps);
        // SAFETY: the arguments match lstm_bank_update_{f32,f64}'s signature; the wave's
        // keys are distinct rows of the stacks (LstmBank::check_keys), so no two blocks
        // write the same parameters.
        unsafe { b.launch(self.config(n)) }.map_err(cuda_err)?;
        drop((pg, mg, vg));
        let (t1, t2) = self.profiled_wait(t0)?;
        let out = dev.clone_dtoh(&losses)?.into_iter().map(|v| v.to_f64()).collect();
        PROFILE.add(1, n, t0, t1, t2);
        Ok(out)
    }

    /// Under `TICKFLARE_BANK_PROFILE=1`: the time the launch was issued, and the time
    /// the kernel had finished (the stream synchronised: the copy back then only
    /// copies). Otherwise both are `t0` (and nothing waits here).
    fn profiled_wait(&self, t0: std::time::Instant) -> Result<(std::time::Instant, std::time::Instant)> {
        if !PROFILE.on() {
            return Ok((t0, t0));
        }
        let t1 = std::time::Instant::now();
        self.stream.synchronize().map_err(cuda_err)?;
        Ok((t1, std::time::Instant::now()))
    }
}

/// Where a wave's time goes (`TICKFLARE_BANK_PROFILE=1`): per kind (predict, update),
/// waves, keys and nanoseconds in the host's preparation (conversions, copies up,
/// allocations, the launch), the kernel (launch to the stream's synchronisation) and
/// the copy back.
struct Profile {
    on: OnceLock<bool>,
    counts: [[std::sync::atomic::AtomicU64; 5]; 2],
}

static PROFILE: Profile = Profile { on: OnceLock::new(), counts: [const { [const { std::sync::atomic::AtomicU64::new(0) }; 5] }; 2] };

impl Profile {
    fn on(&self) -> bool {
        *self.on.get_or_init(|| std::env::var("TICKFLARE_BANK_PROFILE").is_ok_and(|v| v == "1"))
    }

    fn add(&self, kind: usize, keys: usize, t0: std::time::Instant, t1: std::time::Instant, t2: std::time::Instant) {
        if !self.on() {
            return;
        }
        use std::sync::atomic::Ordering::Relaxed;
        let end = std::time::Instant::now();
        let c = &self.counts[kind];
        c[0].fetch_add(1, Relaxed);
        c[1].fetch_add(keys as u64, Relaxed);
        c[2].fetch_add((t1 - t0).as_nanos() as u64, Relaxed);
        c[3].fetch_add((t2 - t1).as_nanos() as u64, Relaxed);
        c[4].fetch_add((end - t2).as_nanos() as u64, Relaxed);
    }
}

/// The profile since the last report, as text, and a fresh start (None unless
/// `TICKFLARE_BANK_PROFILE=1`).
pub fn profile_report() -> Option<String> {
    if !PROFILE.on() {
        return None;
    }
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::from("bank kernel profile (TICKFLARE_BANK_PROFILE=1; seconds):");
    for (kind, c) in ["predict", "update"].iter().zip(&PROFILE.counts) {
        let v: Vec<u64> = c.iter().map(|a| a.swap(0, Relaxed)).collect();
        let s = |ns: u64| ns as f64 * 1e-9;
        out.push_str(&format!(
            "\n  {kind}: {} waves, {} keys; host preparation {:.4}, kernel {:.4}, copy back {:.4}",
            v[0],
            v[1],
            s(v[2]),
            s(v[3]),
            s(v[4])
        ));
    }
    Some(out)
}

/// The precisions the kernels come in.
pub trait Real: WithDType + CudaDType + DeviceRepr + ValidAsZeroBits {}
impl Real for f32 {}
impl Real for f64 {}

type Guard<'a> = (candle_core::StorageRef<'a>, &'a candle_core::Layout);

/// The device slices behind the six stacks (each contiguous from its start).
fn slices<'a, T: Real>(guards: &'a [Guard<'_>]) -> Result<Vec<&'a CudaSlice<T>>> {
    guards
        .iter()
        .map(|(s, l)| {
            if !l.is_contiguous() || l.start_offset() != 0 {
                return Err(Error::Internal("an LSTM bank stack is not contiguous".into()));
            }
            match &**s {
                Storage::Cuda(c) => Ok(c.as_cuda_slice::<T>()?),
                _ => Err(Error::Internal("an LSTM bank stack is not on the GPU".into())),
            }
        })
        .collect()
}

fn cuda_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("launching the LSTM bank's CUDA kernel: {e}"))
}
