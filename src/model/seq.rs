//! Sequence regressors over a window of the last N feature rows of a key: an LSTM
//! (candle-nn's, last hidden state → linear head) and a 1-D CNN (Conv1d over time,
//! ReLU, flatten → linear head), as in the stock-price papers' "one week prior
//! → next" setting. The window arrives flattened, oldest row first (N × d values).
//!
//! Layers are built through a `VarBuilder` (names: `lstm.*` / `conv.*`, `head.*`),
//! then every variable is overwritten from a seeded generator (uniform ±1/√fan_in) so
//! runs and restarts start identically whatever candle's own random state is.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::rnn::{LSTMConfig, RNN};
use candle_nn::{Conv1d, Conv1dConfig, Linear, VarBuilder, VarMap, LSTM};

use super::loss::Loss;
use super::net::{Arch, NetModel, Training};
use super::rand::Draws;
use crate::error::{Error, Result};
use crate::pipeline::config::choice::ModelKind;

enum Net {
    Lstm(LSTM),
    Cnn(Conv1d),
}

/// The candle LSTM (last hidden state → linear head) or 1-D CNN (Conv1d over time,
/// ReLU, flatten → linear head) over a window of `window` rows of `d` features.
pub struct Seq {
    net: Net,
    head: Linear,
    window: usize,
    d: usize,
    /// The variables' float type (F64, or F32 for `model.precision = "f32"`).
    dtype: DType,
}

/// A sequence network as an online model.
pub type SeqModel = NetModel<Seq>;

/// The shape of a sequence network.
#[derive(Debug, Clone, Copy)]
pub struct SeqShape {
    /// `Lstm` or `Cnn1d`.
    pub kind: ModelKind,
    pub window: usize,
    /// Features per row.
    pub d: usize,
    pub hidden: usize,
    /// The CNN's kernel (time steps).
    pub kernel: usize,
}

/// Overwrites every variable (in name order) with seeded uniform ±1/√fan_in values.
fn seed_vars(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| Error::Internal("varmap lock".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut draws = Draws(seed);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let dims = shape.dims();
        let fan_in: usize = if dims.len() >= 2 { dims[1..].iter().product() } else { dims[0] };
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let vals: Vec<f64> = (0..shape.elem_count()).map(|_| draws.symmetric(bound)).collect();
        var.set(&Tensor::from_vec(vals, shape, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

impl NetModel<Seq> {
    /// `dtype`: F64, or F32 (the seeded values rounded to f32).
    pub fn new(shape: &SeqShape, t: &Training, dtype: DType, device: &Device) -> Result<Self> {
        let SeqShape { kind, window, d, hidden, kernel } = *shape;
        if window == 0 || hidden == 0 {
            return Err(Error::Config("sequence models need model.window ≥ 1 and a hidden size ≥ 1".into()));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let net = match kind {
            ModelKind::Lstm => Net::Lstm(candle_nn::lstm(d, hidden, LSTMConfig::default(), vb.pp("lstm"))?),
            ModelKind::Cnn1d => {
                if kernel == 0 || kernel > window {
                    return Err(Error::Config(format!("model.kernel {kernel} must be in 1..=window ({window})")));
                }
                Net::Cnn(candle_nn::conv1d(d, hidden, kernel, Conv1dConfig::default(), vb.pp("conv"))?)
            }
            other => return Err(Error::Internal(format!("{other:?} is not a sequence model"))),
        };
        let head_in = match net {
            Net::Lstm(_) => hidden,
            Net::Cnn(_) => hidden * (window - kernel + 1),
        };
        let head = candle_nn::linear(head_in, 1, vb.pp("head"))?;
        seed_vars(&varmap, t.seed)?;
        NetModel::from_parts(Seq { net, head, window, d, dtype }, varmap, t, device)
    }
}

impl Arch for Seq {
    fn estimate(&self, x: &[f64], device: &Device) -> Result<Tensor> {
        if x.len() != self.window * self.d {
            return Err(Error::Internal(format!("expected {}×{} window values, got {}", self.window, self.d, x.len())));
        }
        let seq = Tensor::from_slice(x, (1, self.window, self.d), device)?.to_dtype(self.dtype)?;
        let h = match &self.net {
            Net::Lstm(l) => {
                let states = l.seq(&seq)?;
                states.last().expect("window ≥ 1").h().clone()
            }
            // Conv1d wants (batch, channels = features, time).
            // then flatten (channels × positions) so the head sees where in the window
            // each pattern occurred.
            Net::Cnn(c) => c.forward(&seq.transpose(1, 2)?.contiguous()?)?.relu()?.flatten_from(1)?,
        };
        Ok(self.head.forward(&h)?)
    }

    fn loss(&self, xs: &[f64], ys: &[f64], loss: &Loss, device: &Device) -> Result<Tensor> {
        let pred = self.estimate(xs, device)?;
        let target = Tensor::new(&[[ys[0]]], device)?.to_dtype(self.dtype)?;
        loss.apply(&pred, &target)
    }
}
