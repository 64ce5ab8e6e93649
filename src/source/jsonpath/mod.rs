//! Single-pass JSON-pointer extraction without building a DOM, and a fast RFC 3339 parser.
//!
//! [`PointerSet`] compiles the pointers a topic schema reads (pre-split, unescaped
//! segments, as `schema::pointer_segments` gives them) into a trie, and
//! [`PointerSet::extract`] walks a payload once with serde_json's streaming
//! `Deserializer`, descending only into the branches of the trie. What it finds at each
//! pointer comes back as a [`Found`], with the meaning of `serde_json::from_slice::<Value>`
//! followed by a walk of the segments (an object key, or an array index where the value
//! is an array; the last of duplicate keys wins, as in `serde_json::Map`, unless
//! [`PointerSet::stop_when_found`] asks for the first and an early stop).
//!
//! Everything outside the pointers is skipped. With [`Skip::Validate`] (the default) it
//! is still parsed the way `serde_json::Value` parses it (the same deserializer calls,
//! minus the allocations), so a payload is rejected exactly when
//! `serde_json::from_slice::<Value>` rejects it, with the same error: bad syntax,
//! trailing characters, numbers out of range, invalid UTF-8 or lone surrogates in
//! strings, nesting deeper than 128. [`Skip::Lenient`] skips with `IgnoredAny` instead,
//! which saves time only where much of a payload is skipped, and lets the last four go
//! unnoticed inside skipped values.
//!
//! No allocation happens per payload once the [`Scratch`] buffers have grown to the
//! largest payload seen, except inside serde_json for strings with escape sequences
//! (its own per-`Deserializer` buffer).
//!
//! The byte scanner learns the shapes of the payloads it accepts and replays the
//! next payload of a known shape without walking the trie ([`tape`]).
//!
//! [`parse_rfc3339_nanos`] parses `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)` directly and hands
//! anything else to chrono; its result always equals
//! `DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt())`.

mod fast;
mod rfc3339;
mod skip;
mod tape;
mod walk;

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

pub use rfc3339::parse_rfc3339_nanos;
use skip::Skipper;
use walk::{At, Ctx};

/// How values outside the pointers are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Skip {
    /// Parse them as `serde_json::Value` would, without keeping them: errors are exactly
    /// those of `serde_json::from_slice::<Value>`.
    #[default]
    Validate,
    /// Skip them with `IgnoredAny`: syntax and nesting of brackets are checked, but not
    /// number ranges, UTF-8 or `\u` surrogates inside strings, nor the depth limit.
    /// Scalars at the pointers, and the keys of the objects on their paths, are still
    /// checked fully.
    Lenient,
}

/// What a pointer leads to in one payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found<'s> {
    /// The pointer leads nowhere (absent key, index out of range, or through a scalar).
    Missing,
    Null,
    Bool(bool),
    Number(&'s Number),
    Str(&'s str),
    Array,
    /// An object; `single_key` is its only key when it has exactly one (after merging
    /// duplicate keys, as `serde_json::Map` does).
    Object {
        single_key: Option<&'s str>,
    },
}

impl<'s> Found<'s> {
    /// True for [`Found::Missing`] and [`Found::Null`].
    pub fn is_missing_or_null(&self) -> bool {
        matches!(self, Found::Missing | Found::Null)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Found::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&'s str> {
        match *self {
            Found::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<&'s Number> {
        match *self {
            Found::Number(n) => Some(n),
            _ => None,
        }
    }

    /// Describes the value for error messages, as the DOM decoder did: `null`,
    /// `a boolean`, `the number 1.5`, `the string "abc"` (up to 40 bytes, else
    /// `a long string`), `an array`, `an object`; `nothing` for [`Found::Missing`].
    pub fn type_name(&self) -> String {
        match self {
            Found::Missing => "nothing".into(),
            Found::Null => "null".into(),
            Found::Bool(_) => "a boolean".into(),
            Found::Number(n) => format!("the number {n}"),
            Found::Str(s) if s.len() <= 40 => format!("the string {s:?}"),
            Found::Str(_) => "a long string".into(),
            Found::Array => "an array".into(),
            Found::Object { .. } => "an object".into(),
        }
    }
}

/// Appends `n`'s text — what its `Display` writes — to `out`. Integers (instrument
/// ids, say, read as keys or text once per record) are written digit by digit rather
/// than through `fmt`.
pub fn push_number(out: &mut String, n: &Number) {
    let mut digits = crate::sink::Itoa::default();
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => out.push_str(digits.magnitude(false, u)),
        (None, Some(i)) => out.push_str(digits.fmt(i)),
        _ => {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
    }
}

/// Reusable buffers for [`PointerSet::extract`]; keep one per decoder.
#[derive(Debug, Default)]
pub struct Scratch {
    slots: Vec<Slot>,
    /// Text of the strings and single keys found, referred to by byte ranges.
    text: String,
    /// Stack of active trie-node sets, one run per nesting level.
    stack: Vec<u32>,
    /// Per trie node, the last `pass` that entered it (to spot repeated keys).
    entered: Vec<u32>,
    pass: u32,
    /// The shapes of payloads learned (for one pointer set at a time).
    tapes: tape::Tapes,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The result of one [`PointerSet::extract`], valid until the scratch is reused.
#[derive(Debug, Clone, Copy)]
pub struct Extracted<'s> {
    slots: &'s [Slot],
    text: &'s str,
    /// The payload itself, where the byte scanner leaves plain strings.
    payload: &'s [u8],
}

impl<'s> Extracted<'s> {
    /// What the `i`-th pointer (in the order given to [`PointerSet::new`]) leads to.
    pub fn get(&self, i: usize) -> Found<'s> {
        let text = self.text;
        match &self.slots[i] {
            Slot::Missing => Found::Missing,
            Slot::Null => Found::Null,
            Slot::Bool(b) => Found::Bool(*b),
            Slot::Number(n) => Found::Number(n),
            Slot::Str(a, b) => Found::Str(&text[*a..*b]),
            // SAFETY: `Slot::Raw` is only set by the byte scanner, for the contents of
            // a string whose every byte it checked is printable ASCII (`fast::PLAIN`).
            Slot::Raw(a, b) => Found::Str(unsafe { std::str::from_utf8_unchecked(&self.payload[*a..*b]) }),
            Slot::Array => Found::Array,
            Slot::Object { keys: 1, key: (a, b) } => Found::Object { single_key: Some(&text[*a..*b]) },
            Slot::Object { .. } => Found::Object { single_key: None },
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Found<'s>> + '_ {
        (0..self.slots.len()).map(move |i| self.get(i))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Missing,
    Null,
    Bool(bool),
    Number(Number),
    /// Byte range in `Scratch::text`.
    Str(usize, usize),
    /// Byte range in the payload: a string without escapes, all printable ASCII
    /// (the byte scanner's, which leaves it where it is rather than copying it).
    Raw(usize, usize),
    Array,
    /// `keys`: distinct keys seen, capped at 2; `key`: the first one's range in the text.
    Object {
        keys: u8,
        key: (usize, usize),
    },
}

#[derive(Debug, Clone)]
struct Node {
    children: Vec<Child>,
    /// Pointers that end at this node.
    slots: Vec<u32>,
    /// Pointers that end at this node or below it (reset when the node is entered).
    subtree: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Child {
    key: Box<str>,
    /// The key's first 8 bytes, zero-padded, for a quick mismatch test.
    head: u64,
    /// For a key of 9 to 16 bytes, its last 8 (see [`tail`]): with `head`, all of it.
    tail: u64,
    /// The segment as an array index, parsed as the DOM walk does (`str::parse::<usize>`).
    index: Option<usize>,
    node: u32,
}

const ROOT: u32 = 0;

/// The first 8 bytes of a key, zero-padded, as one word.
#[inline]
fn head(k: &[u8]) -> u64 {
    // Built in a register: a variable-length copy into a buffer read back as a word
    // was a `memcpy` call and a stalled load, per key of every payload.
    if let Some(w) = k.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    k.iter().rev().fold(0, |h, &b| h << 8 | b as u64)
}

/// The last 8 bytes of a key of 9 to 16 bytes as one word (overlapping [`head`]'s, so
/// that the two words together compare every byte); 0 for other lengths.
#[inline]
fn tail(k: &[u8]) -> u64 {
    match k.len() {
        9..=16 => u64::from_le_bytes(k[k.len() - 8..].try_into().expect("8 bytes")),
        _ => 0,
    }
}

/// A compiled set of JSON pointers; see the module docs.
#[derive(Debug, Clone)]
pub struct PointerSet {
    nodes: Vec<Node>,
    len: usize,
    skip: Skip,
    stop_when_found: bool,
    /// Tells sets apart, for the tapes a scratch learns with one (clones walk alike).
    id: u64,
}

/// A [`PointerSet`] `id` no set has had (never 0).
fn new_set_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl PointerSet {
    /// Compiles pre-split pointers (RFC 6901 segments, already unescaped; `[]` is the
    /// whole document). Pointer `i` is read back with [`Extracted::get`]`(i)`; the same
    /// pointer may appear more than once.
    pub fn new<P, S>(pointers: impl IntoIterator<Item = P>) -> Self
    where
        P: AsRef<[S]>,
        S: AsRef<str>,
    {
        let mut nodes = vec![Node { children: vec![], slots: vec![], subtree: vec![] }];
        let mut len = 0;
        for (i, segments) in pointers.into_iter().enumerate() {
            let slot = u32::try_from(i).expect("fewer than 2^32 pointers");
            let mut at = ROOT as usize;
            nodes[at].subtree.push(slot);
            for seg in segments.as_ref() {
                let seg = seg.as_ref();
                let next = match nodes[at].children.iter().find(|c| &*c.key == seg) {
                    Some(c) => c.node as usize,
                    None => {
                        let id = nodes.len();
                        nodes.push(Node { children: vec![], slots: vec![], subtree: vec![] });
                        nodes[at].children.push(Child {
                            key: seg.into(),
                            head: head(seg.as_bytes()),
                            tail: tail(seg.as_bytes()),
                            index: seg.parse::<usize>().ok(),
                            node: id as u32,
                        });
                        id
                    }
                };
                at = next;
                nodes[at].subtree.push(slot);
            }
            nodes[at].slots.push(slot);
            len = i + 1;
        }
        PointerSet { nodes, len, skip: Skip::default(), stop_when_found: false, id: new_set_id() }
    }

    /// Chooses how values outside the pointers are checked (default [`Skip::Validate`]).
    pub fn with_skip(mut self, skip: Skip) -> Self {
        self.skip = skip;
        self.id = new_set_id();
        self
    }

    /// Reads each pointer's *first* occurrence (a later duplicate key changes
    /// nothing), and lets the byte scanner stop once every pointer has found a value:
    /// the rest of the payload is then neither read nor checked (the serde walk, where
    /// the scanner declines, still reads it all). For placing records by key and time
    /// ahead of their full decode, whose errors are what reject a payload.
    pub fn stop_when_found(mut self) -> Self {
        self.stop_when_found = true;
        self.id = new_set_id();
        self
    }

    /// Number of pointers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parses `payload` (one JSON value, surrounded by whitespace at most) in one pass and
    /// reports what each pointer leads to. Fails where `serde_json::from_slice::<Value>`
    /// fails (see [`Skip`]), with serde_json's error.
    pub fn extract<'s>(
        &self,
        payload: &'s [u8],
        scratch: &'s mut Scratch,
    ) -> Result<Extracted<'s>, serde_json::Error> {
        // A learned shape first; else the byte scanner (learning the shape of what it
        // accepts); where it declines, serde_json from the start.
        let tapes = scratch.tapes.ready(self.id);
        let taken = (tapes && self.walk(scratch, |cx, t| t.replay(payload, cx)))
            || self.walk(scratch, |cx, t| {
                if !(tapes && t.learning()) {
                    return fast::Scan::new(payload).document(cx).is_some();
                }
                let mut rec = t.recorder();
                let taken = fast::Scan::recording(payload, &mut rec).document(cx).is_some();
                t.learn(payload, rec, cx.text, taken && !cx.repeated);
                taken
            });
        if taken {
            return Ok(Extracted { slots: &scratch.slots, text: &scratch.text, payload });
        }
        self.extract_serde(payload, scratch)
    }

    /// [`PointerSet::extract`] by serde_json's deserializer alone (the reference the
    /// byte scanner is tested against).
    pub(super) fn extract_serde<'s>(
        &self,
        payload: &'s [u8],
        scratch: &'s mut Scratch,
    ) -> Result<Extracted<'s>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        self.walk(scratch, |cx, _| At { cx, lo: 0, hi: 1 }.deserialize(&mut de))?;
        de.end()?;
        Ok(Extracted { slots: &scratch.slots, text: &scratch.text, payload })
    }

    /// Resets `scratch` and runs `walk` over it (and its tapes).
    fn walk<T>(&self, scratch: &mut Scratch, walk: impl FnOnce(&mut Ctx<'_>, &mut tape::Tapes) -> T) -> T {
        scratch.slots.clear();
        scratch.slots.resize(self.len, Slot::Missing);
        scratch.text.clear();
        scratch.stack.clear();
        scratch.stack.push(ROOT);
        if scratch.entered.len() < self.nodes.len() {
            scratch.entered.resize(self.nodes.len(), 0);
        }
        // A stale match after wrap-around (or from another set, or an abandoned walk)
        // only costs a needless reset.
        scratch.pass = scratch.pass.wrapping_add(1);
        let mut cx = Ctx {
            nodes: &self.nodes,
            skip: self.skip,
            slots: &mut scratch.slots,
            text: &mut scratch.text,
            stack: &mut scratch.stack,
            entered: &mut scratch.entered,
            pass: scratch.pass,
            first: self.stop_when_found,
            repeated: false,
        };
        walk(&mut cx, &mut scratch.tapes)
    }
}

#[cfg(test)]
mod tests;
