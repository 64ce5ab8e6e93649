//! `[kafka]`: librdkafka properties for a real cluster — `security.protocol`,
//! `sasl.*`, `ssl.*`, timeouts — for every client (top-level keys) or only the
//! consumer (`[kafka.consumer]`) or the producers (`[kafka.producer]`).
//!
//! A value `"${env:NAME}"` is read from the environment and `"${file:PATH}"` from a
//! file (trailing newline dropped), so secrets stay out of the pipeline file; an
//! environment variable `TICKFLARE_KAFKA_<NAME>` (upper case, `_` for `.`) sets or
//! overrides property `<name>` for every client. Values are never logged or printed:
//! `Debug` shows the keys only. Not applied to the embedded broker.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Clone, Default, Deserialize)]
pub struct KafkaProps {
    #[serde(default)]
    pub consumer: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub producer: BTreeMap<String, toml::Value>,
    #[serde(flatten)]
    pub common: BTreeMap<String, toml::Value>,
}

impl std::fmt::Debug for KafkaProps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |m: &BTreeMap<String, toml::Value>| m.keys().cloned().collect::<Vec<_>>();
        f.debug_struct("KafkaProps")
            .field("common", &keys(&self.common))
            .field("consumer", &keys(&self.consumer))
            .field("producer", &keys(&self.producer))
            .finish_non_exhaustive()
    }
}

/// Which client a property set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "TICKFLARE_KAFKA_";

fn key_problem(key: &str, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("kafka.{key}: {message}"))
}

/// A property value: scalars as librdkafka's strings; `${env:…}` and `${file:…}` read.
fn value(key: &str, v: &toml::Value) -> Result<String> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => return Err(key_problem(key, "must be a string, number or boolean")),
    };
    resolve(key, &text)
}

fn resolve(key: &str, text: &str) -> Result<String> {
    if let Some(name) = text.strip_prefix("${env:").and_then(|r| r.strip_suffix('}')) {
        return std::env::var(name).map_err(|_| key_problem(key, format!("environment variable {name} is not set")));
    }
    if let Some(path) = text.strip_prefix("${file:").and_then(|r| r.strip_suffix('}')) {
        let s = std::fs::read_to_string(path).map_err(|e| key_problem(key, format!("reading {path}: {e}")))?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(text.to_string())
}

impl KafkaProps {
    /// The properties of `role`, in the order they apply: top-level, the role's
    /// table, then `TICKFLARE_KAFKA_*` from the environment (`env`).
    pub fn resolved_with(&self, role: Role, env: impl IntoIterator<Item = (String, String)>) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (k, v) in &self.common {
            out.push((k.clone(), value(k, v)?));
        }
        let (section, table) = match role {
            Role::Consumer => ("consumer", &self.consumer),
            Role::Producer => ("producer", &self.producer),
        };
        for (k, v) in table {
            out.push((k.clone(), value(&format!("{section}.{k}"), v)?));
        }
        for (name, v) in env {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                let key = rest.to_ascii_lowercase().replace('_', ".");
                let v = resolve(&key, &v)?;
                out.push((key, v));
            }
        }
        Ok(out)
    }

    /// [`KafkaProps::resolved_with`] the process environment.
    pub fn resolved(&self, role: Role) -> Result<Vec<(String, String)>> {
        self.resolved_with(role, std::env::vars())
    }

    /// Sets the properties of `role` on `c` (later ones win).
    pub fn apply(&self, c: &mut ClientConfig, role: Role) -> Result<()> {
        for (k, v) in self.resolved(role)? {
            c.set(k, v);
        }
        Ok(())
    }

    /// A client from `c` with the properties of `role` on top; a property librdkafka
    /// refuses is reported by name only ([`KafkaProps::redact`]). Every client that
    /// talks to a pipeline's cluster is made here or by [`KafkaProps::create_with`].
    pub fn create<T: rdkafka::config::FromClientConfig>(&self, c: &mut ClientConfig, role: Role) -> Result<T> {
        self.apply(c, role)?;
        c.create().map_err(Self::redact)
    }

    /// [`KafkaProps::create`] with a client context.
    pub fn create_with<X: rdkafka::ClientContext, T: rdkafka::config::FromClientConfigAndContext<X>>(
        &self,
        c: &mut ClientConfig,
        role: Role,
        context: X,
    ) -> Result<T> {
        self.apply(c, role)?;
        c.create_with_context(context).map_err(Self::redact)
    }

    /// A client's creation error without the property's value (rdkafka's own message
    /// repeats it, which could print a secret).
    pub fn redact(e: rdkafka::error::KafkaError) -> Error {
        match e {
            rdkafka::error::KafkaError::ClientConfig(_, desc, key, _) => Error::Config(format!("kafka: property {key:?}: {desc}")),
            e => Error::Kafka(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> KafkaProps {
        toml::from_str(text).unwrap()
    }

    /// Top-level keys reach both clients, a role's table only its client, the
    /// environment overrides both; secrets come from env and files.
    #[test]
    fn layers_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::env::set_var("TICKFLARE_TEST_KAFKA_USER", "alice");
        let p = props(&format!(
            "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.username\" = \"${{env:TICKFLARE_TEST_KAFKA_USER}}\"\n\"sasl.password\" = \"${{file:{}}}\"\n\"socket.timeout.ms\" = 30000\n[consumer]\n\"session.timeout.ms\" = 45000\n[producer]\n\"acks\" = \"all\"",
            secret.display()
        ));
        let env = vec![("TICKFLARE_KAFKA_SOCKET_TIMEOUT_MS".to_string(), "5000".to_string()), ("OTHER".to_string(), "x".to_string())];
        let c: BTreeMap<_, _> = p.resolved_with(Role::Consumer, env.clone()).unwrap().into_iter().collect();
        assert_eq!(c["security.protocol"], "SASL_SSL");
        assert_eq!(c["sasl.username"], "alice");
        assert_eq!(c["sasl.password"], "s3cret");
        assert_eq!(c["socket.timeout.ms"], "5000", "the environment wins");
        assert_eq!(c["session.timeout.ms"], "45000");
        assert!(!c.contains_key("acks"));
        let pr: BTreeMap<_, _> = p.resolved_with(Role::Producer, env).unwrap().into_iter().collect();
        assert_eq!(pr["acks"], "all");
        assert!(!pr.contains_key("session.timeout.ms"));
        // Values never show in Debug output.
        let shown = format!("{p:?}");
        assert!(shown.contains("sasl.password") && !shown.contains("s3cret") && !shown.contains("alice") && !shown.contains("TICKFLARE_TEST"), "{shown}");
    }

    #[test]
    fn missing_secrets_name_the_key() {
        let p = props("\"sasl.password\" = \"${env:TICKFLARE_SURELY_UNSET_VAR}\"");
        let e = p.resolved_with(Role::Consumer, vec![]).unwrap_err().to_string();
        assert!(e.contains("kafka.sasl.password") && e.contains("TICKFLARE_SURELY_UNSET_VAR"), "{e}");
        let p = props("\"ssl.key.password\" = \"${file:/nonexistent/pw}\"");
        assert!(p.resolved_with(Role::Producer, vec![]).unwrap_err().to_string().contains("kafka.ssl.key.password"));
    }
}
