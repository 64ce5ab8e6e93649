//! Reads a TOML config file into its typed form collecting, instead of stopping at,
//! the mistakes a user makes most: keys tickflare does not know and unknown words of
//! enum-valued settings — so `validate` can report them all at once, each at its key.

use serde::de::DeserializeOwned;

use super::choice;

/// A config that parsed, with what was wrong in it. A caller that runs the config
/// must refuse it when either list is not empty (an unknown word was read as the
/// key's default only so the rest of the file could be checked).
pub struct Read<T> {
    pub value: T,
    /// Dotted keys that no field reads, e.g. `source.max_batch_rowz`.
    pub unknown_keys: Vec<String>,
    /// `(key, message)` of each unknown word, e.g. `("model.kind", "\"svm\" is not one of …")`.
    pub unknown_words: Vec<(String, String)>,
}

impl<T> Read<T> {
    /// Every collected mistake as `(key, message)`.
    pub fn problems(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.unknown_keys.iter().map(|k| (k.clone(), "unknown key".to_string())).chain(self.unknown_words.iter().cloned())
    }
}

/// Parses `text`. An unknown word of an enum-valued setting is recorded at its key
/// and the key dropped (to its default), and parsing goes on; any other error stops
/// it, with its key.
pub fn read<T: DeserializeOwned>(text: &str) -> crate::error::Result<Read<T>> {
    let mut unknown_words = Vec::new();
    // The text is parsed into a table only once a word must be dropped (errors read
    // from the text keep their line numbers).
    let mut table: Option<toml::Table> = None;
    loop {
        let mut unknown_keys = Vec::new();
        let mut note = |path: serde_ignored::Path| unknown_keys.push(path.to_string());
        let parsed: Result<T, _> = match &table {
            None => serde_path_to_error::deserialize(serde_ignored::Deserializer::new(toml::Deserializer::new(text), &mut note)),
            Some(t) => serde_path_to_error::deserialize(serde_ignored::Deserializer::new(toml::Value::Table(t.clone()), &mut note)),
        };
        let e = match parsed {
            Ok(value) => return Ok(Read { value, unknown_keys, unknown_words }),
            Err(e) => e,
        };
        let (path, message) = (e.path().clone(), e.inner().message().to_string());
        let error = crate::error::Error::Toml(e.into_inner());
        let at = |error: crate::error::Error| match path.iter().next() {
            Some(_) => error.context(format!("at {path}")),
            None => error,
        };
        if !choice::is_unknown_word(&message) || unknown_words.len() > 64 {
            return Err(at(error));
        }
        let t = match &mut table {
            Some(t) => t,
            None => table.insert(text.parse::<toml::Table>()?),
        };
        if !remove_at(t, &path) {
            return Err(at(error));
        }
        unknown_words.push((path.to_string(), message));
    }
}

/// Removes the value at `path` from `t`; false when there is none.
fn remove_at(t: &mut toml::Table, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segs: Vec<&Segment> = path.iter().collect();
    let Some((last, inner)) = segs.split_last() else { return false };
    let mut v: &mut toml::Table = t;
    for seg in inner {
        let next = match seg {
            Segment::Map { key } => v.get_mut(key.as_str()),
            _ => None,
        };
        match next.and_then(toml::Value::as_table_mut) {
            Some(n) => v = n,
            None => return false,
        }
    }
    match last {
        Segment::Map { key } => v.remove(key.as_str()).is_some(),
        _ => false,
    }
}
