//! The embedded broker of a self-contained solar run: topics created, seeded with a
//! synthetic sequence made from a shipped real frame (whose exact truth scores the
//! tracker), its labels, and optionally corrupt frames and unknown-event labels.

use std::time::Duration;

use crate::error::Context;
use rdkafka::producer::FutureRecord;

use super::config::SolarConfig;
use super::frame::{decode, encode_ipc};
use super::synth::{labels as synth_labels, synthesize, Truth};
use crate::broker::EmbeddedBroker;
use crate::sink::kafka::producer;

pub struct Seeded {
    pub broker: EmbeddedBroker,
    pub truth: Vec<Truth>,
}

/// Creates the topics and publishes the synthetic sequence and its labels.
pub async fn seed(cfg: &SolarConfig) -> crate::error::Result<Seeded> {
    let syn = cfg.source.synthetic.as_ref().context("the embedded broker needs [source.synthetic]")?;
    let bytes = std::fs::read(cfg.resolve(&syn.from)).with_context(|| format!("reading {}", syn.from.display()))?;
    let src = decode(&bytes, usize::MAX).map_err(|e| crate::error::Error::Input(format!("{}: {e}", syn.from.display())))?;
    let seq = synthesize(&src, &syn.synth);
    let b = EmbeddedBroker::start()?;
    b.create_topic(&cfg.source.frames_topic, cfg.source.frame_partitions.max(1))?;
    for t in [&cfg.source.labels_topic, &cfg.sink.topic, &cfg.sink.dead_letter_topic] {
        b.create_topic(t, 1)?;
    }
    let parts = cfg.source.frame_partitions.max(1);
    let mut sent = 0i32;
    let prod = producer(b.bootstrap_servers())?;
    let mut labels = synth_labels(&seq);
    for i in 0..syn.unknown_labels {
        let t = seq.label_times_ms.get(1 + i).or(seq.label_times_ms.first()).copied().unwrap_or(src.time_ms);
        let c = syn.synth.size as f64 / 2.0;
        labels.push(serde_json::json!({"event_id": format!("UNKNOWN-{}", i + 1), "event_type": "AR", "time": crate::source::file::rfc3339_ms(t), "bbox": {"px": [c - 8.0, c - 8.0, c + 8.0, c + 8.0]}}));
    }
    labels.sort_by_key(|l| crate::source::file::parse_time_ms(&l["time"]).unwrap_or(0));
    for l in &labels {
        let t = crate::source::file::parse_time_ms(&l["time"]);
        let payload = serde_json::to_vec(l)?;
        let mut r = FutureRecord::<[u8], [u8]>::to(&cfg.source.labels_topic).partition(0).payload(&payload).key(l["event_id"].as_str().unwrap_or("").as_bytes());
        if let Some(t) = t {
            r = r.timestamp(t);
        }
        prod.send(r, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
    }
    let every = (seq.frames.len() / (syn.corrupt_frames + 1)).max(1);
    for (i, fr) in seq.frames.iter().enumerate() {
        if syn.corrupt_frames > 0 && i > 0 && i % every == 0 && i / every <= syn.corrupt_frames {
            let junk = b"SIMPLE  =                    T / but nothing else".to_vec();
            prod.send(FutureRecord::<[u8], [u8]>::to(&cfg.source.frames_topic).partition(sent % parts).payload(&junk).timestamp(fr.time_ms), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)?;
            sent += 1;
        }
        let payload = encode_ipc(fr)?;
        prod.send(FutureRecord::<[u8], [u8]>::to(&cfg.source.frames_topic).partition(sent % parts).payload(&payload).timestamp(fr.time_ms), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
        sent += 1;
    }
    b.check_retained(&cfg.source.frames_topic)?;
    tracing::info!(frames = seq.frames.len(), labels = labels.len(), regions = seq.regions.len(), "seeded the embedded broker with a synthetic sequence");
    Ok(Seeded { broker: b, truth: seq.truth })
}

