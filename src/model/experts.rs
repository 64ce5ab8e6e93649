//! The forecasters behind a published forecast: the learned model (on a
//! baseline-relative target), the reference forecasts it is judged against
//! (persistence, seasonal naive, zero change, a forecast column such as the
//! microprice) and, with `model.aggregate`, their online mixture.
//!
//! Everything here works in the target's own units ("levels"); `output = "change"`
//! only shifts what is published and scored by the value at prediction time.

use arrow::datatypes::Schema;

use super::aggregate::{AggLoss, Method};
use crate::error::{Error, Result};
use crate::pipeline::config::choice::{BaselineChoice, Output};
use crate::pipeline::config::ModelConfig;

/// What the model learns relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    None,
    Persistence,
    Seasonal,
    /// A forecast column of the feature SQL output, in the published units (e.g. the
    /// microprice's gap to the mid with `output = "change"`); persistence where NULL.
    Column(usize),
}

/// One forecaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expert {
    /// The learned model (plus its baseline).
    Model,
    Persistence,
    Seasonal,
    /// No change in the published units: 0 for levels, the last value for changes.
    Zero,
    /// A feature-SQL output column (index), read in the published units.
    Column(usize),
}

fn bad(key: &'static str, message: String) -> Error {
    Error::ConfigKey { key, message }
}

/// The configured forecasters, resolved once per pipeline.
#[derive(Debug, Clone)]
pub struct Experts {
    pub baseline: Baseline,
    /// `output = "change"`.
    pub change: bool,
    /// The aggregated experts (`model.experts`); with aggregation off, only `Model`.
    pub list: Vec<Expert>,
    /// Their names as metrics and reports show them (`learner` for the model).
    pub names: Vec<String>,
    /// Experts scored beside the published forecast, by name (all of `list` but
    /// persistence and seasonal naive, which are always scored; plus `zero` for
    /// changes), with their index in `list` (None: not aggregated).
    pub scored: Vec<(String, Option<usize>)>,
    pub method: Option<Method>,
    pub loss: AggLoss,
    /// The divergence guard's multiple (0 = off).
    pub guard: f64,
}

impl Experts {
    /// Resolves `model.baseline`, `output`, `aggregate`, `experts` against the feature
    /// SQL's output schema.
    pub fn new(cfg: &ModelConfig, out: &Schema) -> Result<Self> {
        let baseline = match &cfg.baseline {
            BaselineChoice::None => Baseline::None,
            BaselineChoice::Persistence => Baseline::Persistence,
            BaselineChoice::Seasonal if cfg.season.is_some() => Baseline::Seasonal,
            BaselineChoice::Seasonal => return Err(bad("model.baseline", "\"seasonal\" needs model.season".into())),
            BaselineChoice::Column(col) => match out.index_of(col) {
                Ok(i) if out.field(i).data_type().is_numeric() => Baseline::Column(i),
                _ => {
                    return Err(bad(
                        "model.baseline",
                        format!("{col:?} is not none, persistence, seasonal or a numeric column of the feature SQL output"),
                    ))
                }
            },
        };
        let change = cfg.output == Output::Change;
        let method = Method::of(cfg.aggregate);
        let loss = cfg.aggregate_loss;
        if !(cfg.guard >= 0.0 && cfg.guard.is_finite()) {
            return Err(bad("model.guard", "must be a non-negative number".into()));
        }
        let mut list = vec![Expert::Model];
        let mut names = vec!["learner".to_string()];
        if method.is_some() {
            list.clear();
            names.clear();
            for name in &cfg.experts {
                let e = match name.as_str() {
                    "model" => Expert::Model,
                    "persistence" => Expert::Persistence,
                    // Without a season there is no seasonal naive: skipped, so the
                    // default list serves every pipeline.
                    "seasonal" if cfg.season.is_none() => continue,
                    "seasonal" => Expert::Seasonal,
                    "zero" => Expert::Zero,
                    col => match out.index_of(col) {
                        Ok(i) if out.field(i).data_type().is_numeric() => Expert::Column(i),
                        Ok(_) => return Err(bad("model.experts", format!("column {col:?} is not numeric"))),
                        Err(_) => {
                            return Err(bad(
                                "model.experts",
                                format!("{col:?} is not model, persistence, seasonal, zero or a column of the feature SQL output"),
                            ))
                        }
                    },
                };
                if list.contains(&e) {
                    return Err(bad("model.experts", format!("lists {name:?} twice")));
                }
                list.push(e);
                names.push(if e == Expert::Model { "learner".into() } else { name.clone() });
            }
            if !list.contains(&Expert::Model) {
                return Err(bad("model.experts", "must include \"model\"".into()));
            }
        }
        let mut scored: Vec<(String, Option<usize>)> = list
            .iter()
            .zip(&names)
            .enumerate()
            .filter(|(_, (e, _))| !matches!(e, Expert::Persistence | Expert::Seasonal) && (method.is_some() || **e != Expert::Model))
            .map(|(i, (_, n))| (n.clone(), Some(i)))
            .collect();
        if change && !list.contains(&Expert::Zero) {
            // Zero change is persistence in level terms: scored, never aggregated twice.
            scored.push(("zero".into(), None));
        }
        Ok(Experts { baseline, change, list, names, scored, method, loss, guard: cfg.guard })
    }

    /// The baseline's level for a row whose target is `y`, seasonal-naive forecast
    /// `seasonal` and columns `column`.
    pub fn base(&self, y: f64, seasonal: Option<f64>, column: impl Fn(usize) -> Option<f64>) -> f64 {
        match self.baseline {
            Baseline::None => 0.0,
            Baseline::Persistence => y,
            Baseline::Seasonal => seasonal.unwrap_or(y),
            Baseline::Column(i) => column(i).filter(|v| v.is_finite()).map_or(y, |v| v + self.offset(y)),
        }
    }

    /// What the guard falls back to, and the forecast its scale is measured from: the
    /// baseline `base`, or persistence (`y`) without one.
    pub fn fallback(&self, base: f64, y: f64) -> f64 {
        match self.baseline {
            Baseline::None => y,
            _ => base,
        }
    }

    /// Output columns the baseline and the experts read.
    pub fn columns(&self) -> Vec<usize> {
        let mut c: Vec<usize> = self.list.iter().filter_map(|e| if let Expert::Column(i) = e { Some(*i) } else { None }).collect();
        if let Baseline::Column(i) = self.baseline {
            if !c.contains(&i) {
                c.push(i);
            }
        }
        c
    }

    /// The shift between levels and published units for a row whose target is `y`.
    pub fn offset(&self, y: f64) -> f64 {
        if self.change {
            y
        } else {
            0.0
        }
    }

    /// One expert's forecast (level; NaN when it has none for this row).
    pub fn level(&self, e: Expert, model: f64, y: f64, seasonal: Option<f64>, column: impl Fn(usize) -> Option<f64>) -> f64 {
        match e {
            Expert::Model => model,
            Expert::Persistence => y,
            Expert::Seasonal => seasonal.unwrap_or(f64::NAN),
            Expert::Zero => self.offset(y),
            Expert::Column(i) => column(i).filter(|v| v.is_finite()).map_or(f64::NAN, |v| v + self.offset(y)),
        }
    }
}
