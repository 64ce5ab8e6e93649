//! One partition's state as checkpoint files, and back.
//!
//! - `state.json`: offsets, counters, error accumulators, and per key the pending
//!   predictions, their feature rows, the sequence window, the seasonal history.
//! - `models.safetensors`: every model's [`Snapshot`] — arrays as F64 tensors named
//!   `global.…` or `k<i>.…` (`i` indexes `state.json`'s keys), integers in the
//!   safetensors metadata.
//! - `lookback.arrow`: the feature look-back rows (Arrow IPC stream), if any.

use std::collections::{BTreeMap, HashMap};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::score::{ErrorStats, Rolling};
use super::{Counters, KeyState, PartitionState, Pending, UpdateBlock};
use crate::error::{Error, Result};
use crate::model::aggregate::Aggregator;
use crate::model::{OnlineModel, Snapshot};

/// Bumped whenever the files' layout or meaning changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Names a complete checkpoint; written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub pipeline: String,
    pub partition: i32,
    /// The next input offset to process after restoring.
    pub next_offset: i64,
    /// Hash of what makes state meaningful (model config, feature SQL, schema): a
    /// checkpoint from another configuration is refused, not misapplied.
    pub fingerprint: String,
    /// Model updates over the partition's models (for `checkpoint ls`).
    pub model_updates: u64,
    pub messages_in: u64,
    /// Per output topic, the output partition's end offset when the checkpoint was
    /// taken: on restore, the output is scanned from there for already published
    /// records.
    pub outputs: BTreeMap<String, i64>,
    /// Highest source offsets known to be in the prediction and dead-letter topics
    /// *ahead* of this state (outputs that were being suppressed when it was taken —
    /// they sit before `outputs`' positions, where a later tail read does not look).
    pub published_ahead: [Option<i64>; 2],
    /// `delivery = "transactional"`: whether this checkpoint's transaction is known
    /// to have committed, and which outputs it carried.
    #[serde(default)]
    pub txn: Option<crate::sink::txn::TxnMark>,
    /// The writer epoch of the process that wrote it (see `CheckpointStore::claim_epoch`).
    #[serde(default)]
    pub writer_epoch: u64,
    pub created_at_ms: i64,
    pub files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    key: String,
    rows: u64,
    last_used: u64,
    max_time: Option<i64>,
    pending: Vec<Pending>,
    #[serde(with = "floats")]
    pending_x: Vec<f64>,
    #[serde(with = "floats")]
    window: Vec<f64>,
    #[serde(with = "floats")]
    history: Vec<f64>,
    errors: [ErrorStats; 3],
    rolling: Rolling,
    has_model: bool,
    /// NaN where an expert had no forecast (a seasonal one before a season of history).
    #[serde(default, with = "floats")]
    pending_e: Vec<f64>,
    #[serde(default)]
    agg: Option<Aggregator>,
    #[serde(default)]
    expert_errors: BTreeMap<String, ErrorStats>,
    #[serde(default)]
    base_abs: f64,
    #[serde(default)]
    base_n: u64,
}

/// f64 lists in `state.json` with their non-finite values kept: JSON numbers cannot
/// be NaN or infinite (serde_json writes them as `null`, then refuses to read `null`
/// back as a number), so these are the strings "NaN", "inf" and "-inf". A `null`
/// (what versions before this wrote for any of them) reads as NaN.
mod floats {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Float {
        Number(f64),
        Text(String),
        Null(()),
    }

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&x| match x {
            x if x.is_nan() => Float::Text("NaN".into()),
            f64::INFINITY => Float::Text("inf".into()),
            f64::NEG_INFINITY => Float::Text("-inf".into()),
            x => Float::Number(x),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Float>::deserialize(d)?
            .into_iter()
            .map(|f| match f {
                Float::Number(x) => Ok(x),
                Float::Null(()) => Ok(f64::NAN),
                Float::Text(t) => match t.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "inf" => Ok(f64::INFINITY),
                    "-inf" => Ok(f64::NEG_INFINITY),
                    _ => Err(serde::de::Error::custom(format!("{t:?} is not a number"))),
                },
            })
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    partition: i32,
    next_offset: i64,
    tick: u64,
    counters: Counters,
    model_error: ErrorStats,
    persistence_error: ErrorStats,
    seasonal_error: ErrorStats,
    #[serde(default)]
    expert_error: BTreeMap<String, ErrorStats>,
    rolling: Rolling,
    has_model: bool,
    keys: Vec<KeyFile>,
    #[serde(default)]
    block: UpdateBlock,
}

/// A checkpoint's files as (name, bytes), before the store writes them.
pub type Files = Vec<(String, Vec<u8>)>;

fn cp_err(what: impl std::fmt::Display) -> Error {
    Error::Checkpoint(what.to_string())
}

/// Serialises `state` into checkpoint files and a manifest (checksums are filled in
/// by the store).
pub fn encode(
    state: &PartitionState,
    pipeline: &str,
    fingerprint: &str,
    outputs: BTreeMap<String, i64>,
) -> Result<(Manifest, Files)> {
    let mut names: Vec<&String> = state.keys.keys().collect();
    names.sort();
    let mut snaps: Vec<(String, Snapshot)> = Vec::new();
    let mut updates = 0;
    let mut save = |prefix: String, m: &dyn OnlineModel| -> Result<()> {
        let mut s = Snapshot::default();
        m.save(&mut s)?;
        updates += m.updates();
        snaps.push((prefix, s));
        Ok(())
    };
    if let Some(m) = &state.model {
        save("global".into(), m.as_ref())?;
    }
    let mut keys = Vec::with_capacity(names.len());
    for (i, k) in names.iter().enumerate() {
        let ks = &state.keys[*k];
        if let Some(m) = &ks.model {
            save(format!("k{i}"), m.as_ref())?;
        }
        keys.push(KeyFile {
            key: (*k).clone(),
            rows: ks.rows,
            last_used: ks.last_used,
            max_time: ks.max_time,
            pending: ks.pending.iter().copied().collect(),
            pending_x: ks.pending_x.iter().copied().collect(),
            window: ks.window.iter().copied().collect(),
            history: ks.history.iter().copied().collect(),
            errors: ks.errors,
            rolling: ks.rolling.clone(),
            has_model: ks.model.is_some(),
            pending_e: ks.pending_e.iter().copied().collect(),
            agg: ks.agg.clone(),
            expert_errors: ks.expert_errors.clone(),
            base_abs: ks.base_abs,
            base_n: ks.base_n,
        });
    }
    let sf = StateFile {
        partition: state.partition,
        next_offset: state.next_offset,
        tick: state.tick,
        counters: state.counters.clone(),
        model_error: state.model_error,
        persistence_error: state.persistence_error,
        seasonal_error: state.seasonal_error,
        expert_error: state.expert_error.clone(),
        rolling: state.rolling.clone(),
        has_model: state.model.is_some(),
        keys,
        block: state.block.clone(),
    };
    let mut files = vec![("state.json".to_string(), serde_json::to_vec(&sf).map_err(cp_err)?)];
    files.push(("models.safetensors".to_string(), snapshots_to_safetensors(&snaps)?));
    if let Some(lb) = &state.lookback {
        let mut buf = Vec::new();
        let mut w = StreamWriter::try_new(&mut buf, &lb.schema())?;
        w.write(lb)?;
        w.finish()?;
        drop(w);
        files.push(("lookback.arrow".to_string(), buf));
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        pipeline: pipeline.to_string(),
        partition: state.partition,
        next_offset: state.next_offset,
        fingerprint: fingerprint.to_string(),
        model_updates: updates,
        messages_in: state.counters.messages_in,
        outputs,
        published_ahead: [None, None],
        txn: None,
        writer_epoch: 0,
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        files: vec![],
    };
    Ok((manifest, files))
}

/// Rebuilds a partition's state from checkpoint files; `fresh_model` builds an
/// empty model of the pipeline's configuration to load each snapshot into.
pub fn decode(
    manifest: &Manifest,
    files: &BTreeMap<String, Bytes>,
    fingerprint: &str,
    fresh_model: &dyn Fn() -> Result<Box<dyn OnlineModel>>,
) -> Result<PartitionState> {
    if manifest.fingerprint != fingerprint {
        return Err(Error::Config(format!(
            "the checkpoint of partition {} (offset {}) was written by a different pipeline configuration \
             (model, features or schema changed); use a new checkpoint location or delete the old one",
            manifest.partition, manifest.next_offset
        )));
    }
    let file = |n: &str| files.get(n).ok_or_else(|| cp_err(format!("checkpoint p{}: {n} is missing", manifest.partition)));
    let sf: StateFile = serde_json::from_slice(file("state.json")?).map_err(|e| cp_err(format!("state.json: {e}")))?;
    let mut snaps = safetensors_to_snapshots(file("models.safetensors")?)?;
    let mut load = |prefix: &str| -> Result<Box<dyn OnlineModel>> {
        let mut m = fresh_model()?;
        let mut s = snaps.remove(prefix).ok_or_else(|| cp_err(format!("model {prefix} is missing from models.safetensors")))?;
        m.load(&mut s)?;
        Ok(m)
    };
    let mut live = 0;
    let model = if sf.has_model {
        live += 1;
        Some(load("global")?)
    } else {
        None
    };
    let mut keys = super::KeyMap::with_capacity_and_hasher(sf.keys.len(), Default::default());
    for (i, k) in sf.keys.into_iter().enumerate() {
        let model = if k.has_model {
            live += 1;
            Some(load(&format!("k{i}"))?)
        } else {
            None
        };
        keys.insert(
            k.key,
            KeyState {
                rows: k.rows,
                last_used: k.last_used,
                max_time: k.max_time,
                pending: k.pending.into(),
                pending_x: k.pending_x.into(),
                window: k.window.into(),
                model,
                history: k.history.into(),
                errors: k.errors,
                rolling: k.rolling,
                pending_e: k.pending_e.into(),
                agg: k.agg,
                expert_errors: k.expert_errors,
                base_abs: k.base_abs,
                base_n: k.base_n,
                ops: Default::default(),
            },
        );
    }
    let lookback = match files.get("lookback.arrow") {
        None => None,
        Some(b) => {
            let mut r = StreamReader::try_new(std::io::Cursor::new(b.as_ref()), None)?;
            Some(r.next().ok_or_else(|| cp_err("lookback.arrow holds no batch"))??)
        }
    };
    Ok(PartitionState {
        partition: sf.partition,
        next_offset: sf.next_offset,
        lookback,
        keys,
        model,
        counters: sf.counters,
        model_error: sf.model_error,
        persistence_error: sf.persistence_error,
        seasonal_error: sf.seasonal_error,
        expert_error: sf.expert_error,
        rolling: sf.rolling,
        tick: sf.tick,
        live_models: live,
        labels: None,
        score_from: None,
        block: sf.block,
    })
}

pub(crate) fn snapshots_to_safetensors(snaps: &[(String, Snapshot)]) -> Result<Vec<u8>> {
    let mut bufs: Vec<(String, Vec<u8>, usize)> = Vec::new();
    let mut meta = HashMap::new();
    for (prefix, s) in snaps {
        for (name, v) in &s.arrays {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            bufs.push((format!("{prefix}.{name}"), bytes, v.len()));
        }
        for (name, v) in &s.ints {
            meta.insert(format!("{prefix}.{name}"), v.to_string());
        }
    }
    let views = bufs
        .iter()
        .map(|(n, b, len)| Ok((n.clone(), TensorView::new(Dtype::F64, vec![*len], b).map_err(cp_err)?)))
        .collect::<Result<Vec<_>>>()?;
    // (safetensors 0.8 writes a header it cannot read back for no tensors and an
    // empty metadata map: leave the map out then.)
    let meta = if meta.is_empty() { None } else { Some(meta) };
    safetensors::serialize(views, meta).map_err(cp_err)
}

pub(crate) fn safetensors_to_snapshots(b: &[u8]) -> Result<HashMap<String, Snapshot>> {
    let (_, md) = safetensors::SafeTensors::read_metadata(b).map_err(|e| cp_err(format!("models.safetensors: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(b).map_err(|e| cp_err(format!("models.safetensors: {e}")))?;
    let mut out: HashMap<String, Snapshot> = HashMap::new();
    let split = |full: &str| -> Result<(String, String)> {
        let (p, n) = full.split_once('.').ok_or_else(|| cp_err(format!("models.safetensors: bad name {full:?}")))?;
        Ok((p.to_string(), n.to_string()))
    };
    for (full, t) in st.tensors() {
        if t.dtype() != Dtype::F64 {
            return Err(cp_err(format!("models.safetensors: {full} is {:?}, expected F64", t.dtype())));
        }
        let v: Vec<f64> = t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        let (p, n) = split(&full)?;
        out.entry(p).or_default().arrays.insert(n, v);
    }
    if let Some(md) = md.metadata() {
        for (full, v) in md {
            let (p, n) = split(full)?;
            let v = v.parse::<u64>().map_err(|e| cp_err(format!("models.safetensors: {full}: {e}")))?;
            out.entry(p).or_default().ints.insert(n, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OnlineModel;

    fn fresh() -> Result<Box<dyn OnlineModel>> {
        Ok(Box::new(crate::model::linear::LinearModel::new(2, crate::model::linear::Optim::AdamW, 0.1, &candle_core::Device::Cpu)?))
    }

    fn files_of(v: Files) -> BTreeMap<String, Bytes> {
        v.into_iter().map(|(n, b)| (n, Bytes::from(b))).collect()
    }

    /// A partition that has seen nothing yet (no model, no keys) round-trips.
    #[test]
    fn empty_state_round_trips() {
        let st = PartitionState::new(4);
        let (m, files) = encode(&st, "p", "fp", BTreeMap::new()).unwrap();
        let back = decode(&m, &files_of(files), "fp", &fresh).unwrap();
        assert_eq!((back.partition, back.next_offset, back.keys.len()), (4, 0, 0));
        assert!(back.model.is_none());
    }

    /// Keys, pending predictions and a model come back equal; another fingerprint
    /// is refused.
    #[test]
    fn state_round_trips_and_fingerprint_is_checked() {
        let mut st = PartitionState::new(1);
        st.next_offset = 42;
        let mut m = fresh().unwrap();
        m.update(&[1.0, 2.0], 3.0).unwrap();
        let mut ks = KeyState { rows: 7, max_time: Some(99), ..Default::default() };
        ks.pending.push_back(Pending { offset: 40, due_row: 8, due_time: 0, predicted: 0.5, persistence: 0.25, seasonal: None, base: 0.25 });
        ks.pending_x.extend([1.5, -2.0]);
        ks.pending_e.extend([0.5, 0.25]);
        let mut agg = Aggregator::new(2);
        let mut w = [0.0; 2];
        for (e, y) in [([1.0, 2.0], 1.5), ([0.5, 3.0], 2.9), ([1.0, 1.0], 0.1)] {
            agg.update(crate::model::aggregate::Method::MlPoly, crate::model::aggregate::AggLoss::Absolute, &e, y, &mut w);
        }
        ks.agg = Some(agg.clone());
        ks.base_abs = 0.75;
        ks.base_n = 3;
        ks.model = Some(m);
        st.keys.insert("BTC".into(), ks);
        st.counters.messages_in = 42;
        st.block = UpdateBlock { block: 3, xs: vec![0.5, -1.25], ys: vec![0.1] };
        let (man, files) = encode(&st, "p", "fp", BTreeMap::new()).unwrap();
        assert_eq!(man.model_updates, 1);
        let files = files_of(files);
        let back = decode(&man, &files, "fp", &fresh).unwrap();
        let k = &back.keys["BTC"];
        assert_eq!((k.rows, k.max_time, k.pending.len()), (7, Some(99), 1));
        assert_eq!(k.pending[0].predicted, 0.5);
        assert_eq!(k.pending_x.iter().copied().collect::<Vec<_>>(), vec![1.5, -2.0]);
        assert_eq!(k.pending_e.iter().copied().collect::<Vec<_>>(), vec![0.5, 0.25]);
        assert_eq!(k.agg.as_ref(), Some(&agg), "aggregation weights' state round-trips bit for bit");
        assert_eq!((k.base_abs, k.base_n), (0.75, 3));
        assert_eq!(back.block, st.block, "an unfinished update block round-trips");
        assert_eq!(k.model.as_ref().unwrap().parameters().unwrap(), st.keys["BTC"].model.as_ref().unwrap().parameters().unwrap());
        assert_eq!(back.counters.messages_in, 42);
        assert_eq!(back.live_models, 1);
        let e = decode(&man, &files, "other", &fresh).err().unwrap().to_string();
        assert!(e.contains("different pipeline configuration"), "{e}");
    }

    /// Values that are not numbers come back as they went: an expert with nothing
    /// to say yet (a seasonal one before a season of history) is a NaN in
    /// `pending_e`, which JSON cannot write as a number. A checkpoint an earlier
    /// version wrote with such a NaN (as `null`) restores, the null as NaN.
    #[test]
    fn non_finite_values_round_trip() {
        let mut st = PartitionState::new(0);
        let mut ks = KeyState::default();
        let odd = [f64::NAN, 0.5, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e-310];
        ks.pending_e.extend(odd);
        ks.pending_x.extend(odd);
        ks.window.extend(odd);
        ks.history.extend(odd);
        st.keys.insert("k".into(), ks);
        let (man, files) = encode(&st, "p", "fp", BTreeMap::new()).unwrap();
        let mut files = files_of(files);
        let back = decode(&man, &files, "fp", &fresh).unwrap();
        let bits = |v: &std::collections::VecDeque<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let want: Vec<u64> = odd.iter().map(|x| x.to_bits()).collect();
        let k = &back.keys["k"];
        for (name, got) in [("pending_e", &k.pending_e), ("pending_x", &k.pending_x), ("window", &k.window), ("history", &k.history)] {
            assert_eq!(bits(got), want, "{name}");
        }
        // The earlier form: the NaN written as null.
        let text = String::from_utf8(files["state.json"].to_vec()).unwrap();
        let old = text.replace(r#""pending_e":["NaN",0.5"#, r#""pending_e":[null,0.5"#);
        assert_ne!(old, text, "{text}");
        files.insert("state.json".into(), Bytes::from(old));
        let back = decode(&man, &files, "fp", &fresh).unwrap();
        assert!(back.keys["k"].pending_e[0].is_nan());
    }
}
