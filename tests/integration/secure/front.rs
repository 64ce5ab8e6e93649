//! The secured cluster of the TLS + SASL tests.
//!
//! No broker here speaks TLS or SASL (librdkafka's mock cluster has neither), so the
//! test puts a front in front of the mock: it terminates TLS (rustls, a certificate
//! signed by a CA made with rcgen), answers `SaslHandshake` and `SaslAuthenticate`
//! itself (PLAIN; SCRAM-SHA-256 per RFC 5802/7677, verifying the client's proof and
//! sending the server signature that librdkafka checks), adds those two APIs to the
//! mock's `ApiVersions` answer, and once a login succeeded relays the connection's
//! bytes to the mock. The mock advertises the front's port, so every connection of
//! every client goes through TLS and a login; a request before a login closes the
//! connection, as Kafka does.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};


pub const USER: &str = "quant";
/// The test's own clients log in as another user, so the daemon's logins can be told apart.
const TESTER: &str = "tester";
pub const PASSWORD: &str = "s3cret-Pa55word";
const SALT: &[u8] = b"tickflare-test-salt";
const ITERATIONS: u32 = 4096;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

/// A CA and a server certificate for 127.0.0.1 / localhost, as PEM.
pub struct Pki {
    pub ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

pub fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "tickflare test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "broker");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki { ca_pem: ca.pem(), cert_der: cert.der().to_vec(), key_der: key.serialize_der() }
}

/// Logins the front accepted, as "MECHANISM user".
type Logins = Arc<Mutex<Vec<String>>>;

/// The mock cluster behind a TLS + SASL front. (Its brokers advertise the front, so
/// every client, the test's own included, goes through it.)
pub struct Secured {
    _client: BaseProducer,
    /// The front: TLS + SASL.
    pub front: String,
    logins: Logins,
    _task: tokio::task::JoinHandle<()>,
}

impl Secured {
    pub async fn start(pki: &Pki, topics: &[&str]) -> Secured {
        let client: BaseProducer = ClientConfig::new().set("test.mock.num.brokers", "1").create().unwrap();
        let mock = {
            let mock = client.client().mock_cluster().expect("a mock cluster");
            for t in topics {
                mock.create_topic(t, 1, 1).unwrap();
            }
            mock.bootstrap_servers()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: the cluster belongs to `client`, which `Secured` keeps alive; the
        // host string outlives the call (librdkafka copies it).
        unsafe {
            let mc = rdkafka::bindings::rd_kafka_handle_mock_cluster(client.client().native_ptr());
            assert!(!mc.is_null());
            let host = std::ffi::CString::new("127.0.0.1").unwrap();
            rdkafka::bindings::rd_kafka_mock_broker_set_host_port(mc, 1, host.as_ptr(), port as i32);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(pki.cert_der.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let logins: Logins = Default::default();
        let (up, l) = (mock.clone(), logins.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, up, l) = (acceptor.clone(), up.clone(), l.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, &up, &l).await;
                    }
                });
            }
        });
        Secured { _client: client, front: format!("127.0.0.1:{port}"), logins, _task: task }
    }

    pub fn logins(&self) -> Vec<String> {
        self.logins.lock().unwrap().clone()
    }

    /// A client of the test's own, logged in with PLAIN over TLS.
    fn client_config(&self, ca: &Path) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.front)
            .set("security.protocol", "SASL_SSL")
            .set("ssl.ca.location", ca.to_string_lossy())
            .set("sasl.mechanisms", "PLAIN")
            .set("sasl.username", TESTER)
            .set("sasl.password", PASSWORD);
        c
    }

    /// Produces `lines` to partition 0 of `topic`, in order, acknowledged.
    pub async fn produce(&self, ca: &Path, topic: &str, lines: &[String]) {
        let p: FutureProducer = self.client_config(ca).create().unwrap();
        for l in lines {
            p.send(FutureRecord::<[u8], [u8]>::to(topic).partition(0).key(b"k".as_slice()).payload(l.as_bytes()), Duration::from_secs(10)).await.unwrap();
        }
    }

    /// Every payload of partition 0 of `topic`, in offset order.
    pub fn payloads(&self, ca: &Path, topic: &str) -> Vec<String> {
        let c: BaseConsumer = self.client_config(ca).set("group.id", "secure-reader").create().unwrap();
        let (_, high) = c.fetch_watermarks(topic, 0, Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
        c.assign(&tpl).unwrap();
        drop(tpl);
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while (out.len() as i64) < high && std::time::Instant::now() < deadline {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
        }
        out
    }
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let n = s.read_i32().await?;
    let mut buf = vec![0u8; n.max(0) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, body: &[u8]) -> std::io::Result<()> {
    s.write_i32(body.len() as i32).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// A cursor over a request (big-endian, Kafka's encodings).
struct Cur<'a>(&'a [u8]);

impl Cur<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.i16();
        if n < 0 {
            return String::new();
        }
        String::from_utf8_lossy(self.take(n as usize)).into_owned()
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.i32().max(0) as usize;
        self.take(n).to_vec()
    }
}

fn uvarint(b: &[u8]) -> (u64, usize) {
    let (mut v, mut shift) = (0u64, 0);
    for (i, x) in b.iter().enumerate() {
        v |= ((x & 0x7f) as u64) << shift;
        if x & 0x80 == 0 {
            return (v, i + 1);
        }
        shift += 7;
    }
    panic!("truncated varint");
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The mock's ApiVersions response with SaslHandshake (17) and SaslAuthenticate (36),
/// versions 0–1, added to its list (a compact array from version 3 on).
fn with_sasl_apis(resp: &[u8], version: i16) -> Vec<u8> {
    let (head, body) = resp.split_at(4); // correlation id
    if i16::from_be_bytes([body[0], body[1]]) != 0 {
        return resp.to_vec();
    }
    let mut out = head.to_vec();
    out.extend_from_slice(&body[..2]);
    let rest = &body[2..];
    let entry = |out: &mut Vec<u8>, key: i16| {
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&1i16.to_be_bytes());
        if version >= 3 {
            out.push(0); // no tagged fields
        }
    };
    let (count, used) = if version >= 3 {
        let (n, used) = uvarint(rest);
        (n - 1, used)
    } else {
        (i32::from_be_bytes(rest[..4].try_into().unwrap()) as u64, 4)
    };
    if version >= 3 {
        put_uvarint(&mut out, count + 3);
    } else {
        out.extend_from_slice(&((count + 2) as i32).to_be_bytes());
    }
    entry(&mut out, 17);
    entry(&mut out, 36);
    out.extend_from_slice(&rest[used..]);
    out
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg).as_ref().to_vec()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The server side of one SCRAM-SHA-256 login (RFC 5802): the client-first message in,
/// the server-first out; then the client-final message in, checked, and the
/// server-final out — `None` where the proof is wrong.
struct Scram {
    client_first_bare: String,
    server_first: String,
    user: String,
}

impl Scram {
    fn first(client_first: &str) -> Option<Scram> {
        let bare = client_first.strip_prefix("n,,")?;
        let mut user = None;
        let mut nonce = None;
        for part in bare.split(',') {
            if let Some(u) = part.strip_prefix("n=") {
                user = Some(u.to_string());
            } else if let Some(r) = part.strip_prefix("r=") {
                nonce = Some(r.to_string());
            }
        }
        let server_first = format!("r={}tickflare-server-nonce,s={},i={ITERATIONS}", nonce?, b64(SALT));
        Some(Scram { client_first_bare: bare.to_string(), server_first, user: user? })
    }

    fn last(&self, client_final: &str, password: &str) -> Option<String> {
        let (without_proof, proof) = client_final.rsplit_once(",p=")?;
        let proof = base64::engine::general_purpose::STANDARD.decode(proof).ok()?;
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, NonZeroU32::new(ITERATIONS).unwrap(), SALT, password.as_bytes(), &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = ring::digest::digest(&ring::digest::SHA256, &client_key);
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let signature = hmac(stored_key.as_ref(), auth_message.as_bytes());
        let expected: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if proof != expected || !without_proof.contains(&self.server_first[2..self.server_first.find(",s=")?]) {
            return None;
        }
        let server_key = hmac(&salted, b"Server Key");
        Some(format!("v={}", b64(&hmac(&server_key, auth_message.as_bytes()))))
    }
}

fn sasl_response(corr: i32, version: i16, error: i16, message: Option<&str>, bytes: &[u8]) -> Vec<u8> {
    let mut out = corr.to_be_bytes().to_vec();
    out.extend_from_slice(&error.to_be_bytes());
    match message {
        Some(m) => {
            out.extend_from_slice(&(m.len() as i16).to_be_bytes());
            out.extend_from_slice(m.as_bytes());
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
    if version >= 1 {
        out.extend_from_slice(&0i64.to_be_bytes()); // session lifetime: none
    }
    out
}

/// One client connection: ApiVersions relayed (and extended), the SASL exchange
/// answered here, then — logged in — every byte relayed to the mock.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, upstream: &str, logins: &Logins) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut mechanism = String::new();
    let mut scram: Option<Scram> = None;
    loop {
        let req = read_frame(&mut s).await?;
        let mut r = Cur(&req);
        let (key, version, corr) = (r.i16(), r.i16(), r.i32());
        match key {
            18 => {
                write_frame(&mut up, &req).await?;
                let resp = read_frame(&mut up).await?;
                write_frame(&mut s, &with_sasl_apis(&resp, version)).await?;
            }
            17 => {
                let _client_id = r.string();
                mechanism = r.string();
                let ok = mechanism == "PLAIN" || mechanism == "SCRAM-SHA-256";
                let mut out = corr.to_be_bytes().to_vec();
                out.extend_from_slice(&(if ok { 0 } else { UNSUPPORTED_SASL_MECHANISM }).to_be_bytes());
                out.extend_from_slice(&2i32.to_be_bytes());
                for m in ["PLAIN", "SCRAM-SHA-256"] {
                    out.extend_from_slice(&(m.len() as i16).to_be_bytes());
                    out.extend_from_slice(m.as_bytes());
                }
                write_frame(&mut s, &out).await?;
            }
            36 => {
                let _client_id = r.string();
                let auth = String::from_utf8_lossy(&r.bytes()).into_owned();
                let fail = |m: &str| sasl_response(corr, version, SASL_AUTHENTICATION_FAILED, Some(m), &[]);
                let login = match (mechanism.as_str(), scram.take()) {
                    ("PLAIN", _) => {
                        let mut f = auth.split('\0').skip(1);
                        match (f.next(), f.next()) {
                            (Some(u), Some(p)) if (u == USER || u == TESTER) && p == PASSWORD => {
                                write_frame(&mut s, &sasl_response(corr, version, 0, None, &[])).await?;
                                Some(format!("PLAIN {u}"))
                            }
                            _ => {
                                write_frame(&mut s, &fail("Authentication failed: Invalid username or password")).await?;
                                return Ok(());
                            }
                        }
                    }
                    ("SCRAM-SHA-256", None) => match Scram::first(&auth) {
                        Some(st) if st.user == USER || st.user == TESTER => {
                            write_frame(&mut s, &sasl_response(corr, version, 0, None, st.server_first.as_bytes())).await?;
                            scram = Some(st);
                            None
                        }
                        _ => {
                            write_frame(&mut s, &fail("Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256")).await?;
                            return Ok(());
                        }
                    },
                    ("SCRAM-SHA-256", Some(st)) => match st.last(&auth, PASSWORD) {
                        Some(server_final) => {
                            write_frame(&mut s, &sasl_response(corr, version, 0, None, server_final.as_bytes())).await?;
                            Some(format!("SCRAM-SHA-256 {}", st.user))
                        }
                        None => {
                            write_frame(&mut s, &fail("Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256")).await?;
                            return Ok(());
                        }
                    },
                    _ => return Ok(()),
                };
                if let Some(l) = login {
                    logins.lock().unwrap().push(l);
                    tokio::io::copy_bidirectional(&mut s, &mut up).await?;
                    return Ok(());
                }
            }
            // Anything else before a login: the connection is closed, as Kafka does.
            _ => return Ok(()),
        }
    }
}
