//! One key's model as a row of a shared [`LstmBank`]: what a pipeline's per-key
//! model slot holds under `model.bank = true` (`keyed::run_keys` runs a batch's bank
//! keys in waves; alone, a key's predict or update is a wave of one).

use std::sync::{Arc, Mutex, MutexGuard};

use super::LstmBank;
use crate::error::{Error, Result};
use crate::model::{OnlineModel, Snapshot};

/// A partition processor's bank, shared by its keys' models.
pub type SharedBank = Arc<Mutex<LstmBank>>;

pub fn lock(bank: &SharedBank) -> Result<MutexGuard<'_, LstmBank>> {
    bank.lock().map_err(|_| Error::Internal("a model bank's lock was poisoned by a panic".into()))
}

/// Key `key`'s row of `bank`; dropping it gives the row back.
pub struct BankKey {
    bank: SharedBank,
    key: u32,
}

impl BankKey {
    /// A new key at the starting weights.
    pub fn new(bank: &SharedBank) -> Result<Self> {
        let key = lock(bank)?.add_key()?;
        Ok(BankKey { bank: bank.clone(), key })
    }
}

impl Drop for BankKey {
    fn drop(&mut self) {
        if let Ok(mut b) = self.bank.lock() {
            b.free_key(self.key);
        }
    }
}

impl OnlineModel for BankKey {
    fn predict(&self, x: &[f64]) -> Result<f64> {
        let mut out = Vec::with_capacity(1);
        lock(&self.bank)?.predict(&[self.key], x, &mut out)?;
        Ok(out[0])
    }

    fn update(&mut self, x: &[f64], y: f64) -> Result<f64> {
        Ok(lock(&self.bank)?.update(&[self.key], x, &[y])?[0])
    }

    fn updates(&self) -> u64 {
        self.bank.lock().map(|b| b.updates(self.key as usize)).unwrap_or(0)
    }

    fn parameters(&self) -> Result<Vec<f64>> {
        lock(&self.bank)?.parameters(self.key as usize)
    }

    fn reset_optimizer(&mut self) -> Result<()> {
        lock(&self.bank)?.reset_optimizer(self.key as usize)
    }

    fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        lock(&self.bank)?.set_lr_scale(self.key as usize, scale);
        Ok(())
    }

    fn bank_key(&self) -> Option<(&SharedBank, u32)> {
        Some((&self.bank, self.key))
    }

    fn save(&self, s: &mut Snapshot) -> Result<()> {
        lock(&self.bank)?.save_key(self.key as usize, s)
    }

    fn load(&mut self, s: &mut Snapshot) -> Result<()> {
        lock(&self.bank)?.load_key(self.key as usize, s)
    }
}
