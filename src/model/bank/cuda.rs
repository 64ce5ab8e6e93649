//! A bank's wave on a GPU as one kernel launch (`lstm_bank.cu`, compiled once per
//! process by NVRTC): a batched predict is one launch, a batched update — forward,
//! backpropagation through time and the AdamW/SGD step of every key of the wave —
//! another, one thread block per key, reading and writing the bank's own stacks in
//! place. candle's tensor form of the same wave is hundreds of small kernels and
//! temporaries; on an H200 this form ran 8.7 – 12× faster at 10,000 keys (README,
//! GPU). Inputs go up as f64 windows converted on the host, one copy per array —
//! or, under `TICKFLARE_BANK_STAGING=pinned`, packed into one reused page-locked
//! buffer (`staging.rs`) and copied up in one go into a reused device buffer, the
//! results back through another (no allocation per wave; an experiment for a GPU to
//! judge: `scripts/gpu-check.sh` runs both). `TICKFLARE_BANK_KERNEL=candle` keeps
//! candle's form (for comparison).

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr, HostSlice, LaunchConfig, PinnedHostSlice, PushKernelArg, SyncOnDrop, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDType, CudaDevice};
use candle_core::{DType, Device, Storage, Tensor, WithDType};

use super::staging::{pack_predict, pack_update, packed_len};
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
    /// `TICKFLARE_BANK_STAGING=pinned`: waves go through the reused buffers below.
    staged: bool,
    stage32: Mutex<Option<Stage<f32>>>,
    stage64: Mutex<Option<Stage<f64>>>,
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
        let staged = match std::env::var("TICKFLARE_BANK_STAGING").ok().as_deref() {
            None | Some("") | Some("pageable") => false,
            Some("pinned") => true,
            Some(v) => {
                tracing::warn!(value = %v, "TICKFLARE_BANK_STAGING is neither \"pinned\" nor \"pageable\": the default (pageable) is used");
                false
            }
        };
        Ok(Some(Fused {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            predict,
            update,
            f64: dtype == DType::F64,
            d,
            h: hidden,
            w: window,
            smem: smem as u32,
            staged,
            stage32: Mutex::new(None),
            stage64: Mutex::new(None),
        }))
    }

    /// The staging buffers for waves of `T`, grown to hold `n` keys.
    fn stage<T: Real>(&self, n: usize) -> Result<std::sync::MutexGuard<'_, Option<Stage<T>>>> {
        let mut guard = T::stage(self).lock().map_err(|_| Error::Internal("the LSTM bank's staging buffers were poisoned".into()))?;
        if guard.as_ref().is_none_or(|s| s.keys < n) {
            // Dropped first: the old buffers are freed before the larger ones exist.
            *guard = None;
            *guard = Some(Stage::new(&self.stream, n.next_power_of_two().max(256), self.w * self.d)?);
        }
        Ok(guard)
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
        if self.staged {
            return self.predict_staged::<T>(params, keys, xs, out);
        }
        let t0 = std::time::Instant::now();
        let n = keys.len();
        let ids = self.dev.clone_htod(keys)?;
        let x = self.dev.clone_htod(xs.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>().as_slice())?;
        let mut res = self.dev.alloc_zeros::<T>(n)?;
        self.launch_predict(n, &ids.slice(..), &x.slice(..), &mut res.slice_mut(..), params)?;
        let (t1, t2) = self.profiled_wait(t0)?;
        out.clear();
        out.extend(self.dev.clone_dtoh(&res)?.into_iter().map(|v| v.to_f64()));
        PROFILE.add(0, n, t0, t1, t2);
        Ok(())
    }

    /// [`Fused::predict`] through the reused staging buffers: the windows packed into
    /// page-locked memory, one copy up for them and one for the ids, one copy back.
    fn predict_staged<T: Real>(&self, params: &[Tensor], keys: &[u32], xs: &[f64], out: &mut Vec<f64>) -> Result<()> {
        let t0 = std::time::Instant::now();
        let n = keys.len();
        let mut guard = self.stage::<T>(n)?;
        let st = guard.as_mut().expect("staging buffers just made");
        let xr = pack_predict(st.up.as_mut_slice().map_err(cuda_err)?, xs, T::from_f64);
        st.upload(&self.stream, keys, xr.end)?;
        self.launch_predict(n, &st.d_ids.slice(..n), &st.d_up.slice(xr), &mut st.d_out.slice_mut(..n), params)?;
        let (t1, t2) = self.profiled_wait(t0)?;
        out.clear();
        out.extend(st.download(&self.stream, n)?.iter().map(|v| v.to_f64()));
        PROFILE.add(0, n, t0, t1, t2);
        Ok(())
    }

    /// Launches the predict kernel on a wave of `n` keys whose inputs are on the
    /// device; the forecasts go to `res`.
    fn launch_predict<T: Real>(&self, n: usize, ids: &CudaView<'_, u32>, x: &CudaView<'_, T>, res: &mut CudaViewMut<'_, T>, params: &[Tensor]) -> Result<()> {
        let guards: Vec<_> = params.iter().map(|t| t.storage_and_layout()).collect();
        let p = slices::<T>(&guards)?;
        let (d, h, w) = (self.d as i32, self.h as i32, self.w as i32);
        let mut b = self.stream.launch_builder(&self.predict);
        b.arg(ids).arg(x).arg(res);
        for j in [W_IH, W_HH, B_IH, B_HH, HEAD_W, HEAD_B] {
            b.arg(p[j]);
        }
        b.arg(&d).arg(&h).arg(&w);
        // SAFETY: the arguments match lstm_bank_predict_{f32,f64}'s signature; every
        // key id was checked to be a row of the stacks.
        unsafe { b.launch(self.config(n)) }.map_err(cuda_err)?;
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
        if self.staged {
            return self.update_staged::<T>(params, moments, keys, xs, ys, per_key, loss);
        }
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
        let mut losses = dev.alloc_zeros::<T>(n)?;
        let inputs = [&x.slice(..), &y.slice(..), &lr.slice(..), &sm.slice(..), &sv.slice(..)];
        self.launch_update(n, &ids.slice(..), inputs, &mut losses.slice_mut(..), params, moments, loss)?;
        let (t1, t2) = self.profiled_wait(t0)?;
        let out = dev.clone_dtoh(&losses)?.into_iter().map(|v| v.to_f64()).collect();
        PROFILE.add(1, n, t0, t1, t2);
        Ok(out)
    }

    /// [`Fused::update`] through the reused staging buffers: windows, targets,
    /// learning rates and scales packed into page-locked memory (`staging.rs`), one
    /// copy up for them and one for the ids, one copy back.
    #[allow(clippy::too_many_arguments)]
    fn update_staged<T: Real>(&self, params: &[Tensor], moments: Option<(&[Tensor], &[Tensor])>, keys: &[u32], xs: &[f64], ys: &[f64], per_key: &[(f64, f64, f64)], loss: Loss) -> Result<Vec<f64>> {
        let t0 = std::time::Instant::now();
        let n = keys.len();
        let mut guard = self.stage::<T>(n)?;
        let st = guard.as_mut().expect("staging buffers just made");
        let parts = pack_update(st.up.as_mut_slice().map_err(cuda_err)?, xs, ys, per_key, T::from_f64);
        st.upload(&self.stream, keys, parts.sv.end)?;
        let up = &st.d_up;
        let inputs = [&up.slice(parts.x), &up.slice(parts.y), &up.slice(parts.lr), &up.slice(parts.sm), &up.slice(parts.sv)];
        self.launch_update(n, &st.d_ids.slice(..n), inputs, &mut st.d_out.slice_mut(..n), params, moments, loss)?;
        let (t1, t2) = self.profiled_wait(t0)?;
        let out = st.download(&self.stream, n)?.iter().map(|v| v.to_f64()).collect();
        PROFILE.add(1, n, t0, t1, t2);
        Ok(out)
    }

    /// Launches the update kernel on a wave of `n` keys whose inputs are on the
    /// device — `inputs`: windows, targets, learning rates, AdamW's scales of m and
    /// of v — and the losses before the step going to `losses`.
    #[allow(clippy::too_many_arguments)]
    fn launch_update<T: Real>(
        &self,
        n: usize,
        ids: &CudaView<'_, u32>,
        inputs: [&CudaView<'_, T>; 5],
        losses: &mut CudaViewMut<'_, T>,
        params: &[Tensor],
        moments: Option<(&[Tensor], &[Tensor])>,
        loss: Loss,
    ) -> Result<()> {
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
        let [x, y, lr, sm, sv] = inputs;
        let mut b = self.stream.launch_builder(&self.update);
        b.arg(ids).arg(x).arg(y).arg(lr).arg(sm).arg(sv).arg(losses);
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
        Ok(())
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
pub trait Real: WithDType + CudaDType + DeviceRepr + ValidAsZeroBits {
    /// The bank's staging buffers for this precision.
    fn stage(f: &Fused) -> &Mutex<Option<Stage<Self>>>;
}
impl Real for f32 {
    fn stage(f: &Fused) -> &Mutex<Option<Stage<f32>>> {
        &f.stage32
    }
}
impl Real for f64 {
    fn stage(f: &Fused) -> &Mutex<Option<Stage<f64>>> {
        &f.stage64
    }
}

/// Buffers reused from wave to wave under `TICKFLARE_BANK_STAGING=pinned`, sized for
/// `keys` keys: the packed inputs (`staging.rs`) and the key ids in page-locked
/// host memory (write-combined: the host only writes them) and on the device, and
/// the results on the device and in page-locked memory the host reads.
pub struct Stage<T> {
    keys: usize,
    up: PinnedHostSlice<T>,
    ids: PinnedHostSlice<u32>,
    down: PinnedHostSlice<T>,
    d_up: CudaSlice<T>,
    d_ids: CudaSlice<u32>,
    d_out: CudaSlice<T>,
}

impl<T: Real> Stage<T> {
    fn new(stream: &Arc<CudaStream>, keys: usize, win: usize) -> Result<Self> {
        let ctx = stream.context();
        let len = packed_len(keys, win, true);
        // SAFETY: nothing is read from these buffers before it is written: the inputs
        // are packed and copied up, the kernel writes its results before they come back.
        unsafe {
            Ok(Stage {
                keys,
                up: ctx.alloc_pinned(len).map_err(cuda_err)?,
                ids: ctx.alloc_pinned(keys).map_err(cuda_err)?,
                down: ctx.alloc_pinned_with_flags(keys, 0).map_err(cuda_err)?,
                d_up: stream.alloc(len).map_err(cuda_err)?,
                d_ids: stream.alloc(keys).map_err(cuda_err)?,
                d_out: stream.alloc(keys).map_err(cuda_err)?,
            })
        }
    }

    /// Copies the wave's ids `keys` and the first `packed` values of its packed inputs
    /// (already in `up`) to the device.
    fn upload(&mut self, stream: &Arc<CudaStream>, keys: &[u32], packed: usize) -> Result<()> {
        self.ids.as_mut_slice().map_err(cuda_err)?[..keys.len()].copy_from_slice(keys);
        stream.memcpy_htod(&Prefix { all: &mut self.up, len: packed }, &mut self.d_up).map_err(cuda_err)?;
        stream.memcpy_htod(&Prefix { all: &mut self.ids, len: keys.len() }, &mut self.d_ids).map_err(cuda_err)
    }

    /// Copies the first `n` results back and waits for them.
    fn download(&mut self, stream: &Arc<CudaStream>, n: usize) -> Result<&[T]> {
        stream.memcpy_dtoh(&self.d_out.slice(..n), &mut Prefix { all: &mut self.down, len: n }).map_err(cuda_err)?;
        // The stream's wait, as the default form's copy back (the buffer's own event
        // would block-sync: a sleep and a wake-up per wave).
        stream.synchronize().map_err(cuda_err)?;
        Ok(&self.down.as_slice().map_err(cuda_err)?[..n])
    }
}

/// The first `len` values of a page-locked buffer as one side of a copy (cudarc's
/// copies take a whole `HostSlice`; a wave fills only part of its buffers).
struct Prefix<'a, T> {
    all: &'a mut PinnedHostSlice<T>,
    len: usize,
}

impl<T> HostSlice<T> for Prefix<'_, T> {
    fn len(&self) -> usize {
        self.len
    }

    unsafe fn stream_synced_slice<'b>(&'b self, stream: &'b CudaStream) -> (&'b [T], SyncOnDrop<'b>) {
        // SAFETY: as the caller's: the slice is used with `stream` only.
        let (s, record) = unsafe { self.all.stream_synced_slice(stream) };
        (&s[..self.len], record)
    }

    unsafe fn stream_synced_mut_slice<'b>(&'b mut self, stream: &'b CudaStream) -> (&'b mut [T], SyncOnDrop<'b>) {
        // SAFETY: as the caller's: the slice is used with `stream` only.
        let (s, record) = unsafe { self.all.stream_synced_mut_slice(stream) };
        (&mut s[..self.len], record)
    }
}

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
