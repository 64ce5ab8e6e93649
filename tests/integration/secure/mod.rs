//! A secured cluster: TLS with a certificate authority the test makes, SASL PLAIN and
//! SCRAM-SHA-256 logins, through librdkafka's own TLS and SASL code, against the
//! mock cluster behind a TLS + SASL front ([`front`]).

mod front;

use std::path::Path;

use front::{pki, Secured, PASSWORD, USER};
use super::common::*;
use tickflare::pipeline::RunOptions;

const SQL: &str = "SELECT _offset, symbol, ts, price, \
    price - LAG(price, 1) OVER (PARTITION BY symbol ORDER BY _offset) AS d1, size AS x2 FROM ticks";
const MODEL: &str = r#"kind = "linear"
optimizer = "sgd"
learning_rate = 0.05
features = ["d1", "x2"]
target = "d1"
horizon = 1
scope = "per_key""#;

/// The flat pipeline in `dir`, with a `[kafka]` table when `kafka` is given.
async fn pipeline(dir: &Path, kafka: Option<String>) -> tickflare::pipeline::build::Built {
    let p = flat_pipeline(dir, SQL, MODEL, 1);
    if let Some(k) = kafka {
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(&k);
        std::fs::write(&p, text).unwrap();
    }
    built(&p).await
}

/// `[kafka]` for SASL over TLS; the password from a file, as a deployment would.
fn kafka_table(dir: &Path, ca: &Path, mechanism: &str, password: &str) -> String {
    let pw = dir.join(format!("password-{mechanism}"));
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    format!(
        r#"
[kafka]
"security.protocol" = "SASL_SSL"
"ssl.ca.location" = "{}"
"sasl.mechanisms" = "{mechanism}"
"sasl.username" = "{USER}"
"sasl.password" = "${{file:{}}}"
"#,
        ca.display(),
        pw.display()
    )
}

fn lines() -> Vec<String> {
    (0..120i64).map(|i| tick(["A", "B", "C"][(i % 3) as usize], 1_000 + i * 10, 100.0 + ((i * 7) % 13) as f64 * 0.1, 1.0 + (i % 4) as f64)).collect()
}

fn payloads(brokers: &str, topic: &str) -> Vec<String> {
    read(brokers, topic).iter().map(|m| String::from_utf8(m.payload.clone().unwrap()).unwrap()).collect()
}

/// The pipeline — consumer, sink producer, and with checkpoints the restart's tail
/// read of the outputs — over SASL_SSL with PLAIN and with SCRAM-SHA-256 publishes
/// exactly what it publishes over plaintext to a plain broker; every client logged
/// in through the front (its log names the mechanisms); a second run with more input
/// adds only the new predictions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_over_tls_with_sasl_plain_and_scram_publishes_what_it_does_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let lines = lines();

    // The reference: plaintext, a plain broker.
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let reference = pipeline(&plain_dir, None).await;
    let broker = broker_for(&reference);
    let bs = broker.bootstrap_servers().to_string();
    let recs: Vec<(i32, Option<&[u8]>)> = lines.iter().map(|l| (0, Some(l.as_bytes()))).collect();
    produce(&bs, "in", &recs).await;
    let s = run_to_end(&reference, &bs, 17).await;
    assert_eq!(s.messages_in, lines.len() as u64);
    let want = payloads(&bs, "out");
    assert!(want.len() > 90, "{} predictions", want.len());

    let pki = pki();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let d = dir.path().join(mechanism);
        std::fs::create_dir_all(&d).unwrap();
        let b = pipeline(&d, Some(kafka_table(&d, &ca, mechanism, PASSWORD))).await;
        let cluster = Secured::start(&pki, &["in", "out", "dlq"]).await;
        // Seeded in two parts. The second run starts without the first's checkpoint
        // (as after a crash before its first one): it recomputes everything, and its
        // start-up read of the outputs' tail — through the front too — is what keeps
        // the first run's predictions from being published twice.
        let opts = |ck: &Path| RunOptions {
            brokers: Some(cluster.front.clone()),
            stop_at_end: true,
            assign: true,
            max_batch_rows: Some(17),
            checkpoint_dir: Some(ck.to_string_lossy().into_owned()),
            ..Default::default()
        };
        cluster.produce(&ca, "in", &lines[..70]).await;
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let s1 = tickflare::pipeline::run(&b, opts(&d.join("ck1")), rx).await.unwrap_or_else(|e| panic!("{mechanism}: {e:#}"));
        cluster.produce(&ca, "in", &lines[70..]).await;
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let s2 = tickflare::pipeline::run(&b, opts(&d.join("ck2")), rx).await.unwrap_or_else(|e| panic!("{mechanism}: {e:#}"));
        assert_eq!((s1.messages_in, s2.messages_in), (70, lines.len() as u64), "{mechanism}");
        let got = cluster.payloads(&ca, "out");
        assert_eq!(got.len(), want.len(), "{mechanism}: prediction count");
        assert!(got == want, "{mechanism}: predictions differ from the plaintext run's");
        let logins = cluster.logins();
        // The daemon's clients (consumer, producer, tail reads) logged in with the
        // pipeline's mechanism.
        assert!(logins.iter().filter(|l| **l == format!("{mechanism} {USER}")).count() >= 4, "{mechanism}: logins {logins:?}");
    }

    // A refused login stops `run` with librdkafka's reason, not a bare "broker
    // transport failure", and without the password.
    let d = dir.path().join("refused");
    std::fs::create_dir_all(&d).unwrap();
    let b = pipeline(&d, Some(kafka_table(&d, &ca, "SCRAM-SHA-256", "wrong-password"))).await;
    let cluster = Secured::start(&pki, &["in", "out", "dlq"]).await;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let opts = RunOptions { brokers: Some(cluster.front.clone()), stop_at_end: true, assign: true, ..Default::default() };
    let e = tickflare::pipeline::run(&b, opts, rx).await.expect_err("a refused login must stop the run");
    let text = format!("{e:#}");
    assert!(text.contains("Authentication failed during authentication due to invalid credentials"), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");
}

/// `validate --brokers` on a secured cluster: a right login passes; a wrong
/// password, an untrusted certificate and a missing password file are each reported
/// at their key with librdkafka's reason — and the password is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_a_refused_login_and_an_untrusted_certificate_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let cluster = Secured::start(&pki, &["in", "out", "dlq"]).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, self::pki().ca_pem).unwrap();
    let validate = |kafka: String, name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let p = flat_pipeline(&d, SQL, MODEL, 1);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(&kafka);
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(bin()).arg("validate").arg(&p).arg("--brokers").arg(&cluster.front).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("validate ({name}): {text}");
        (out.status.code(), text)
    };
    let run = |k: String, n: &'static str| {
        let v = &validate;
        async move { tokio::task::block_in_place(|| v(k, n)) }
    };

    let (code, text) = run(kafka_table(dir.path(), &ca, "SCRAM-SHA-256", PASSWORD), "good").await;
    assert_eq!(code, Some(0), "{text}");

    let (code, text) = run(kafka_table(dir.path(), &ca, "SCRAM-SHA-256", "wrong-password"), "bad-scram").await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("source.brokers") && text.contains("Authentication failed"), "{text}");
    assert!(!text.contains("wrong-password") && !text.contains(PASSWORD), "{text}");

    let (code, text) = run(kafka_table(dir.path(), &ca, "PLAIN", "wrong-password"), "bad-plain").await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("Invalid username or password"), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");

    let (code, text) = run(kafka_table(dir.path(), &other_ca, "PLAIN", PASSWORD), "untrusted").await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    let missing = kafka_table(dir.path(), &ca, "PLAIN", PASSWORD).replace("password-PLAIN", "no-such-file");
    let (code, text) = run(missing, "missing").await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("kafka.sasl.password") && text.contains("no-such-file"), "{text}");
    assert!(cluster.logins().iter().any(|l| l == &format!("SCRAM-SHA-256 {USER}")), "{:?}", cluster.logins());
}
