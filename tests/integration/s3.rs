//! Checkpoints in an S3 API server: the crash test (exact faults, SIGKILLs at seeded
//! random times, a corrupted newest checkpoint) with `--checkpoint-dir s3://…` against
//! moto's server (PyPI `moto[server]`, which `.ci/run` installs in a venv), started by
//! the test on a free loopback port and stopped after it. The daemons reach it the way
//! a deployment reaches S3: `AWS_*` variables in their environment.

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::*;
use super::exactly_once::{block, crash_equivalence_in, Checkpoints, IDEMPOTENT, NAME, TOPICS};
use object_store::ObjectStoreExt;
use tickflare::state::store::CheckpointStore;

const BUCKET: &str = "tickflare-checkpoints";
const PREFIX: &str = "crash";

struct Moto {
    _child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let child = Child(child);
        // Ready when it answers; the bucket is made by that answer.
        let t = Instant::now();
        while http(port, "PUT", &format!("/{BUCKET}")).ok() != Some(200) {
            assert!(t.elapsed() < Duration::from_secs(60), "moto_server did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        Moto { _child: child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap();
        Arc::new(s3)
    }
}

/// One unsigned HTTP/1.1 request; its status code.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("not HTTP: {buf:?}")))
}

impl Checkpoints for Moto {
    fn location(&self) -> OsString {
        format!("s3://{BUCKET}/{PREFIX}").into()
    }

    fn env(&self) -> Vec<(String, String)> {
        let vars = [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ];
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn store(&self, name: &str) -> CheckpointStore {
        CheckpointStore::on(self.object_store(), PREFIX, &self.location().to_string_lossy(), name, 3)
    }

    fn corrupt_newest(&self, name: &str) {
        let (store, os) = (self.store(name), self.object_store());
        block(async {
            let Ok(ids) = store.ids(0, true).await else { return };
            let (Some(&id), true) = (ids.iter().max(), ids.len() >= 2) else { return };
            let path = object_store::path::Path::from(format!("{PREFIX}/{name}/p0/{id:020}/models.safetensors"));
            let Ok(got) = os.get(&path).await else { return };
            let mut b = got.bytes().await.unwrap().to_vec();
            let n = b.len();
            for x in &mut b[n - 16..] {
                *x ^= 0xFF;
            }
            os.put(&path, b.into()).await.unwrap();
            eprintln!("corrupted s3://{BUCKET}/{path}");
        });
    }
}

/// Exactly-once with the checkpoints in S3: outputs (keys, payloads, headers,
/// timestamps), final offsets, state and every model array equal an uninterrupted
/// run's (which keeps its checkpoints on disk); then `checkpoint ls` lists the
/// bucket's checkpoints, all verified.
#[test]
#[cfg_attr(not(moto), ignore = "needs moto_server on the PATH (pip install 'moto[server]'; .ci/run installs it in a venv)")]
fn s3_checkpoints_survive_the_crash_test() {
    let moto = Moto::start();
    let faults = ["after_checkpoint:2", "after_publish:3", "after_checkpoint:1"];
    crash_equivalence_in(IDEMPOTENT, &faults, 4, &|| broker_process_with(&TOPICS), &moto);
    let ls = Command::new(bin()).args(["checkpoint", "ls"]).arg(moto.location()).args(["--pipeline", NAME]).envs(moto.env()).output().unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{}", String::from_utf8_lossy(&ls.stderr));
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!(rows.len() >= 3 && rows.iter().all(|l| l.ends_with("ok")), "{text}");
}
