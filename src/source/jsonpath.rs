//! Single-pass JSON-pointer extraction without building a DOM, and a fast RFC 3339 parser.
//!
//! [`PointerSet`] compiles the pointers a topic schema reads (pre-split, unescaped
//! segments, as `schema::pointer_segments` gives them) into a trie, and
//! [`PointerSet::extract`] walks a payload once with serde_json's streaming
//! `Deserializer`, descending only into the branches of the trie. What it finds at each
//! pointer comes back as a [`Found`], with the meaning of `serde_json::from_slice::<Value>`
//! followed by a walk of the segments (an object key, or an array index where the value
//! is an array; the last of duplicate keys wins, as in `serde_json::Map`).
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
//! [`parse_rfc3339_nanos`] parses `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)` directly and hands
//! anything else to chrono; its result always equals
//! `DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt())`.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

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

#[derive(Debug, Clone)]
enum Slot {
    Missing,
    Null,
    Bool(bool),
    Number(Number),
    /// Byte range in `Scratch::text`.
    Str(usize, usize),
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
    /// The segment as an array index, parsed as the DOM walk does (`str::parse::<usize>`).
    index: Option<usize>,
    node: u32,
}

const ROOT: u32 = 0;

/// The first 8 bytes of a key, zero-padded, as one word.
#[inline]
fn head(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k[..n]);
    u64::from_le_bytes(b)
}

/// A compiled set of JSON pointers; see the module docs.
#[derive(Debug, Clone)]
pub struct PointerSet {
    nodes: Vec<Node>,
    len: usize,
    skip: Skip,
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
        PointerSet { nodes, len, skip: Skip::default() }
    }

    /// Chooses how values outside the pointers are checked (default [`Skip::Validate`]).
    pub fn with_skip(mut self, skip: Skip) -> Self {
        self.skip = skip;
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
        payload: &[u8],
        scratch: &'s mut Scratch,
    ) -> Result<Extracted<'s>, serde_json::Error> {
        scratch.slots.clear();
        scratch.slots.resize(self.len, Slot::Missing);
        scratch.text.clear();
        scratch.stack.clear();
        scratch.stack.push(ROOT);
        if scratch.entered.len() < self.nodes.len() {
            scratch.entered.resize(self.nodes.len(), 0);
        }
        // A stale match after wrap-around (or from another set) only costs a needless reset.
        scratch.pass = scratch.pass.wrapping_add(1);
        let mut de = serde_json::Deserializer::from_slice(payload);
        {
            let mut cx = Ctx {
                nodes: &self.nodes,
                skip: self.skip,
                slots: &mut scratch.slots,
                text: &mut scratch.text,
                stack: &mut scratch.stack,
                entered: &mut scratch.entered,
                pass: scratch.pass,
            };
            At { cx: &mut cx, lo: 0, hi: 1 }.deserialize(&mut de)?;
        }
        de.end()?;
        Ok(Extracted { slots: &scratch.slots, text: &scratch.text })
    }
}

struct Ctx<'a> {
    nodes: &'a [Node],
    skip: Skip,
    slots: &'a mut Vec<Slot>,
    text: &'a mut String,
    stack: &'a mut Vec<u32>,
    entered: &'a mut [u32],
    pass: u32,
}

impl Ctx<'_> {
    /// Sets the slots of the pointers ending at the active nodes `stack[lo..hi]`.
    #[inline]
    fn set(&mut self, lo: usize, hi: usize, v: Slot) {
        if hi == lo + 1 {
            // The usual case: one active node, with at most one pointer ending there.
            let slots = &self.nodes[self.stack[lo] as usize].slots;
            if let [s] = slots[..] {
                self.slots[s as usize] = v;
                return;
            }
        }
        for &n in &self.stack[lo..hi] {
            for &s in &self.nodes[n as usize].slots {
                self.slots[s as usize] = v.clone();
            }
        }
    }

    fn has_slots(&self, lo: usize, hi: usize) -> bool {
        self.stack[lo..hi].iter().any(|&n| !self.nodes[n as usize].slots.is_empty())
    }

    fn push_text(&mut self, s: &str) -> (usize, usize) {
        let a = self.text.len();
        self.text.push_str(s);
        (a, self.text.len())
    }

    /// Pushes the children of the active nodes `stack[lo..hi]` that `matches` accepts;
    /// returns the new run's bounds (empty when nothing matched).
    fn descend(&mut self, lo: usize, hi: usize, matches: impl Fn(&Child) -> bool) -> (usize, usize) {
        let start = self.stack.len();
        for i in lo..hi {
            let n = self.stack[i] as usize;
            for c in &self.nodes[n].children {
                if matches(c) {
                    self.stack.push(c.node);
                }
            }
        }
        (start, self.stack.len())
    }
}

/// The value at the active trie nodes `cx.stack[lo..hi]` (a non-empty run).
struct At<'c, 'a> {
    cx: &'c mut Ctx<'a>,
    lo: usize,
    hi: usize,
}

impl<'de> DeserializeSeed<'de> for At<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // A repeated key replaces everything found below its earlier occurrence (below a
        // node entered for the first time, everything is still missing).
        let cx = &mut *self.cx;
        for &n in &cx.stack[self.lo..self.hi] {
            let n = n as usize;
            if cx.entered[n] == cx.pass {
                for &s in &cx.nodes[n].subtree {
                    cx.slots[s as usize] = Slot::Missing;
                }
            }
            cx.entered[n] = cx.pass;
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.cx.set(self.lo, self.hi, Slot::Null);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.cx.set(self.lo, self.hi, Slot::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.cx.set(self.lo, self.hi, Slot::Number(v.into()));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.cx.set(self.lo, self.hi, Slot::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // As `serde_json::Value`: a non-finite float (never produced by the parser) is null.
        let slot = Number::from_f64(v).map_or(Slot::Null, Slot::Number);
        self.cx.set(self.lo, self.hi, slot);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.cx.has_slots(self.lo, self.hi) {
            let (a, b) = self.cx.push_text(v);
            self.cx.set(self.lo, self.hi, Slot::Str(a, b));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (lo, hi) = (self.lo, self.hi);
        self.cx.set(lo, hi, Slot::Array);
        let mut i = 0usize;
        loop {
            let (clo, chi) = self.cx.descend(lo, hi, |c| c.index == Some(i));
            let more = if clo == chi {
                seq.next_element_seed(Skipper(self.cx.skip))?.is_some()
            } else {
                seq.next_element_seed(At { cx: &mut *self.cx, lo: clo, hi: chi })?.is_some()
            };
            self.cx.stack.truncate(clo);
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (lo, hi) = (self.lo, self.hi);
        let mut obj = ObjKeys { track: self.cx.has_slots(lo, hi), keys: 0, key: (0, 0) };
        while let Some((clo, chi)) = map.next_key_seed(Key { cx: &mut *self.cx, lo, hi, obj: &mut obj })? {
            if clo == chi {
                map.next_value_seed(Skipper(self.cx.skip))?;
            } else {
                map.next_value_seed(At { cx: &mut *self.cx, lo: clo, hi: chi })?;
            }
            self.cx.stack.truncate(clo);
        }
        if obj.track {
            self.cx.set(lo, hi, Slot::Object { keys: obj.keys, key: obj.key });
        }
        Ok(())
    }
}

/// Distinct keys of an object whose own value is wanted (for `single_key`).
struct ObjKeys {
    track: bool,
    keys: u8,
    key: (usize, usize),
}

/// A key of an object at the active nodes `lo..hi`; yields the run of matching children.
struct Key<'c, 'a, 'o> {
    cx: &'c mut Ctx<'a>,
    lo: usize,
    hi: usize,
    obj: &'o mut ObjKeys,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_, '_> {
    type Value = (usize, usize);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_, '_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, k: &str) -> Result<Self::Value, E> {
        if self.obj.track {
            match self.obj.keys {
                0 => {
                    self.obj.key = self.cx.push_text(k);
                    self.obj.keys = 1;
                }
                1 if self.cx.text[self.obj.key.0..self.obj.key.1] != *k => self.obj.keys = 2,
                _ => {}
            }
        }
        let k = k.as_bytes();
        let h = head(k);
        Ok(self.cx.descend(self.lo, self.hi, |c| {
            let ck = c.key.as_bytes();
            c.head == h && ck.len() == k.len() && (k.len() <= 8 || ck[8..] == k[8..])
        }))
    }
}

/// A value outside the pointers.
struct Skipper(Skip);

impl<'de> DeserializeSeed<'de> for Skipper {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0 {
            Skip::Validate => d.deserialize_any(Validate),
            Skip::Lenient => d.deserialize_ignored_any(IgnoredAny).map(|_| ()),
        }
    }
}

/// Consumes any value through the same deserializer calls as `serde_json::Value`.
struct Validate;

impl<'de> DeserializeSeed<'de> for Validate {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Validate {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Validate)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys go through `deserialize_str`, as `serde_json::Value`'s do.
        while map.next_key_seed(ValidateKey)?.is_some() {
            map.next_value_seed(Validate)?;
        }
        Ok(())
    }
}

struct ValidateKey;

impl<'de> DeserializeSeed<'de> for ValidateKey {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(Validate)
    }
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp, or `None` when it is not one or
/// falls outside `i64` nanoseconds (years 1677–2262). Always equal to
/// `chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt())`:
/// the common shape `YYYY-MM-DD(T|t| )HH:MM:SS[.digits](Z|z|±HH:MM)` is computed here,
/// anything else (including every invalid string) goes to chrono.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    match fast_rfc3339(s.as_bytes()) {
        Some(ns) => Some(ns),
        None => chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt()),
    }
}

/// The fast path of [`parse_rfc3339_nanos`]; `None` means "ask chrono".
#[inline]
fn fast_rfc3339(b: &[u8]) -> Option<i64> {
    const SCALE: [u32; 10] = [0, 100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1];
    if b.len() < 20 {
        return None;
    }
    let digit = |i: usize| -> Option<u32> {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(d as u32)
    };
    let two = |i: usize| -> Option<u32> { Some(digit(i)? * 10 + digit(i + 1)?) };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':'
    {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, min, sec) = (two(11)?, two(14)?, two(17)?);
    // Second 60 is a leap second; chrono counts it as 59 plus 10^9 ns, which is the same sum.
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && i - start < 9 && b[i].is_ascii_digit() {
            nanos = nanos * 10 + u32::from(b[i] - b'0');
            i += 1;
        }
        if i == start {
            return None;
        }
        nanos *= SCALE[i - start];
        // Digits past the ninth are dropped, as chrono does.
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    let offset = match *b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (two(i + 1)?, two(i + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = i64::from(h * 3600 + m * 60);
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + min * 60 + sec) - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(i64::from(nanos))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[path = "jsonpath_tests.rs"]
mod tests;
