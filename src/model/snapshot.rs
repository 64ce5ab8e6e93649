//! A model's state as named f64 arrays and integers — what a checkpoint stores of it.
//!
//! Every model and wrapper writes everything its future outputs depend on (weights,
//! optimizer moments and step counts, running statistics, buffers, random-number
//! state) and reads it back into a freshly built model of the same configuration.
//! Names are dotted paths (`inner.theta`); wrappers nest their inner model's state.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    prefix: String,
    pub arrays: BTreeMap<String, Vec<f64>>,
    pub ints: BTreeMap<String, u64>,
}

impl Snapshot {
    fn name(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    pub fn put(&mut self, name: &str, v: Vec<f64>) {
        self.arrays.insert(self.name(name), v);
    }

    pub fn put_f64(&mut self, name: &str, v: f64) {
        self.put(name, vec![v]);
    }

    pub fn put_int(&mut self, name: &str, v: u64) {
        self.ints.insert(self.name(name), v);
    }

    /// Writes a tensor's values (flattened, as f64).
    pub fn put_tensor(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let v = t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        self.put(name, v);
        Ok(())
    }

    pub fn array(&self, name: &str) -> Result<&[f64]> {
        let full = self.name(name);
        self.arrays.get(&full).map(Vec::as_slice).ok_or_else(|| missing(&full))
    }

    pub fn f64(&self, name: &str) -> Result<f64> {
        match self.array(name)? {
            [v] => Ok(*v),
            other => Err(Error::Checkpoint(format!("{}{name}: expected one value, found {}", self.prefix, other.len()))),
        }
    }

    pub fn int(&self, name: &str) -> Result<u64> {
        let full = self.name(name);
        self.ints.get(&full).copied().ok_or_else(|| missing(&full))
    }

    pub fn has_int(&self, name: &str) -> bool {
        self.ints.contains_key(&self.name(name))
    }

    /// The array `name` as a tensor shaped like `like` (same dtype and device).
    pub fn tensor_like(&self, name: &str, like: &Tensor) -> Result<Tensor> {
        self.tensor(name, like.dims(), like.dtype(), like.device())
    }

    pub fn tensor(&self, name: &str, dims: &[usize], dtype: candle_core::DType, device: &Device) -> Result<Tensor> {
        let v = self.array_shaped(name, dims)?;
        Ok(Tensor::from_slice(v, dims, device)?.to_dtype(dtype)?)
    }

    /// The array `name`, which must hold exactly the values of shape `dims` (else a
    /// checkpoint error naming both sizes).
    pub fn array_shaped(&self, name: &str, dims: &[usize]) -> Result<&[f64]> {
        let v = self.array(name)?;
        let want: usize = dims.iter().product();
        if v.len() != want {
            return Err(Error::Checkpoint(format!(
                "{}{name}: {} values stored, the model needs {want} (shape {dims:?}) — was the checkpoint written by another model configuration?",
                self.prefix,
                v.len()
            )));
        }
        Ok(v)
    }

    /// Overwrites a variable with the stored array of the same shape.
    pub fn set_var(&self, name: &str, var: &Var) -> Result<()> {
        let t = self.tensor_like(name, var.as_tensor())?;
        var.set(&t)?;
        Ok(())
    }

    /// Runs `f` with names prefixed by `p.` (a wrapper's inner model).
    pub fn nested<R>(&mut self, p: &str, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let len = self.prefix.len();
        self.prefix.push_str(p);
        self.prefix.push('.');
        let r = f(self);
        self.prefix.truncate(len);
        r
    }
}

fn missing(name: &str) -> Error {
    Error::Checkpoint(format!("{name} is missing — was the checkpoint written by another model configuration?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_names_and_errors() {
        let mut s = Snapshot::default();
        s.nested("inner", |s| {
            s.put_f64("lr", 0.5);
            s.put_int("t", 3);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.arrays.keys().collect::<Vec<_>>(), ["inner.lr"]);
        assert_eq!(s.nested("inner", |s| s.f64("lr")).unwrap(), 0.5);
        assert_eq!(s.nested("inner", |s| s.int("t")).unwrap(), 3);
        let e = s.f64("lr").unwrap_err().to_string();
        assert!(e.contains("lr is missing"), "{e}");
        let e = s.nested("inner", |s| s.tensor("lr", &[2], candle_core::DType::F64, &Device::Cpu)).unwrap_err().to_string();
        assert!(e.contains("1 values stored, the model needs 2"), "{e}");
    }
}
