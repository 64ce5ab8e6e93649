//! Learned payload shapes: the byte scanner's walk of a payload, replayed on the next
//! payload of the same shape without walking the pointer trie again.
//!
//! A stream's payloads mostly share their layout — the same keys in the same order,
//! the same punctuation and spacing — and differ only in their values. When the byte
//! scanner accepts a payload, it can record it as a *tape*: the bytes between one value
//! and the next (keys, `:` `,` `{` `}` `[` `]`, spacing, and the literals `true`,
//! `false`, `null`), each value's kind (a string or number at a pointer, or a value it
//! skips) and what the walk did with it (the slots it set). Tapes with a common start
//! share it, as a trie. The next payload is replayed against them: each run of bytes
//! between values compared word by word, each value scanned by the scanner's own
//! functions (so accepted and rejected exactly as the scanner would), its slots set.
//!
//! A payload that replays to the end is one the scanner would accept with the same
//! walk: the bytes outside the values are the recorded payload's, so its structure,
//! its keys and thereby the trie nodes each value is met at are the same; its values
//! are read by the same functions. So the slots come out as the scanner's, which
//! the tests compare with serde_json's walk. Where a value's kind decides between
//! branches (a string here, an object there), the branches differ in their bytes
//! before the value's first byte or in that byte, so at most one of them matches.
//!
//! Payloads with a repeated key on a pointer's path are never recorded (what the walk
//! keeps of them depends on the order of the occurrences, not only on the bytes
//! between values). A scratch learns at most [`MAX_NODES`] steps, and at most
//! [`MAX_KIDS`] branches at any one; one whose payloads miss more than half the time
//! stops replaying, so an irregular stream costs at most a short spell of failed
//! replays.

use super::fast::Scan;
use super::walk::Ctx;
use super::Slot;

/// Steps (values) a scratch's tapes may hold in all.
const MAX_NODES: usize = 2048;
/// Bytes between values a scratch's tapes may hold in all.
const MAX_BYTES: usize = 1 << 16;
/// Branches at one step (each one a comparison when replaying).
const MAX_KIDS: usize = 8;
/// Replays per check of the miss rate.
const WINDOW: u64 = 1024;

/// What follows a run of bytes between values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// A string at trie nodes (its slots, if any, get its text in place).
    Str,
    /// A number at trie nodes (read with `Scan::number`).
    Num,
    /// A value outside the pointers, skipped at this depth (`Scan::skip`).
    Skip(u32),
    /// The end of the walk: of the payload, or (`stop_when_found`) the early stop.
    End { stop: bool },
}

/// One step of the trie: the bytes since the last value, then the value.
#[derive(Debug)]
struct Node {
    /// Range in `Tapes::bytes`.
    lit: (u32, u32),
    token: Token,
    /// Range in `Tapes::slots`: slots set to the value.
    slots: (u32, u32),
    /// For [`Token::End`]: index in `Tapes::ends`.
    end: u32,
    kids: Vec<u32>,
}

/// What a tape sets once it has replayed to its end.
#[derive(Debug, PartialEq)]
struct End {
    /// Slots of the literals, arrays and tracked objects met, with their values.
    consts: Vec<(u32, Slot)>,
    /// The scratch text the walk left (the keys of tracked objects, which
    /// `Slot::Object` refers to).
    text: String,
}

/// The tapes one scratch has learned, for one pointer set.
#[derive(Debug, Default)]
pub(super) struct Tapes {
    /// The [`super::PointerSet`] they were learned with (0: none yet).
    set: u64,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    bytes: Vec<u8>,
    slots: Vec<u32>,
    ends: Vec<End>,
    /// No more room: replay, but learn nothing new.
    full: bool,
    /// Too many misses: neither replay nor learn.
    off: bool,
    /// Replays and misses since the tapes were readied.
    tries: u64,
    misses: u64,
    /// `misses` when the current window of [`WINDOW`] replays began.
    window_misses: u64,
    rec: Recorder,
}

/// One value of a recorded walk.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    /// The byte range before it.
    lit: (usize, usize),
    token: Token,
    /// Range in `Recorder::slots`.
    slots: (usize, usize),
}

/// A walk as the scanner records it.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    steps: Vec<Recorded>,
    slots: Vec<u32>,
    consts: Vec<(u32, Slot)>,
    /// End of the last value.
    last: usize,
}

impl Recorder {
    /// A value from `start` to `end` of the payload, set into `slots`.
    pub(super) fn token(&mut self, start: usize, end: usize, token: Token, slots: impl Iterator<Item = u32>) {
        let a = self.slots.len();
        self.slots.extend(slots);
        self.steps.push(Recorded { lit: (self.last, start), token, slots: (a, self.slots.len()) });
        self.last = end;
    }

    /// `v` set into `slots` by something other than a string or number value.
    pub(super) fn consts(&mut self, slots: impl Iterator<Item = u32>, v: &Slot) {
        self.consts.extend(slots.map(|s| (s, v.clone())));
    }

    /// The walk ended (stopped early, or at the end of the payload) at `at`.
    pub(super) fn end(&mut self, at: usize, stop: bool) {
        self.steps.push(Recorded { lit: (self.last, at), token: Token::End { stop }, slots: (0, 0) });
    }

    fn clear(&mut self) {
        self.steps.clear();
        self.slots.clear();
        self.consts.clear();
        self.last = 0;
    }
}

/// `a == b` for slices of equal length, a word at a time.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let w = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if w(a, i) != w(b, i) {
                return false;
            }
            i += 8;
        }
        // The last word, overlapping the one before where `n` is not a multiple of 8.
        return w(a, n - 8) == w(b, n - 8);
    }
    if n >= 4 {
        let h = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"));
        return h(a, 0) == h(b, 0) && h(a, n - 4) == h(b, n - 4);
    }
    a == b
}

impl Tapes {
    /// Readies the tapes for pointer set `set` (forgetting those of another); whether
    /// they are in use.
    pub(super) fn ready(&mut self, set: u64) -> bool {
        if self.set != set {
            *self = Tapes { set, rec: std::mem::take(&mut self.rec), ..Tapes::default() };
        }
        !self.off
    }

    /// Whether a payload the tapes missed should be recorded.
    pub(super) fn learning(&self) -> bool {
        !self.full && !self.off
    }

    /// Replays `b` against the tapes, setting `cx`'s slots and text; false where no
    /// tape takes it to its end (`cx` then holds partial results, which the caller's
    /// next walk resets).
    pub(super) fn replay(&mut self, b: &[u8], cx: &mut Ctx<'_>) -> bool {
        let hit = self.walk(b, cx);
        self.tries += 1;
        self.misses += u64::from(!hit);
        if self.tries.is_multiple_of(WINDOW) {
            self.off = self.misses - self.window_misses > WINDOW / 2;
            self.window_misses = self.misses;
        }
        hit
    }

    fn walk(&self, b: &[u8], cx: &mut Ctx<'_>) -> bool {
        let mut i = 0usize;
        let mut kids = &self.roots[..];
        'step: loop {
            for &k in kids {
                let n = &self.nodes[k as usize];
                let lit = &self.bytes[n.lit.0 as usize..n.lit.1 as usize];
                let Some(here) = b.get(i..i + lit.len()) else { continue };
                if !same(here, lit) {
                    continue;
                }
                let mut s = Scan::at_byte(b, i + lit.len());
                let v = match n.token {
                    Token::End { stop } => {
                        if !stop && s.i != b.len() {
                            continue;
                        }
                        let e = &self.ends[n.end as usize];
                        for (slot, v) in &e.consts {
                            cx.slots[*slot as usize] = v.clone();
                        }
                        cx.text.clear();
                        cx.text.push_str(&e.text);
                        return true;
                    }
                    Token::Str => {
                        let start = s.i + 1;
                        let Some(t) = s.string() else { continue };
                        Slot::Raw(start, start + t.len())
                    }
                    Token::Num => match s.number() {
                        Some(x) => Slot::Number(x),
                        None => continue,
                    },
                    Token::Skip(depth) => match s.skip(depth) {
                        Some(()) => Slot::Missing,
                        None => continue,
                    },
                };
                for &slot in &self.slots[n.slots.0 as usize..n.slots.1 as usize] {
                    cx.slots[slot as usize] = v.clone();
                }
                i = s.i;
                kids = &n.kids;
                continue 'step;
            }
            return false;
        }
    }

    /// The recorder for the next walk, cleared (hand it back with [`Tapes::learn`]).
    pub(super) fn recorder(&mut self) -> Recorder {
        let mut r = std::mem::take(&mut self.rec);
        r.clear();
        r
    }

    /// Adds the walk `rec` recorded over `b` (when `keep`: the walk accepted `b` and met
    /// no repeated key), whose text was `text`; keeps the recorder for reuse.
    pub(super) fn learn(&mut self, b: &[u8], rec: Recorder, text: &str, keep: bool) {
        if keep && !self.full {
            self.insert(b, &rec, text);
        }
        self.rec = rec;
    }

    fn insert(&mut self, b: &[u8], rec: &Recorder, text: &str) {
        // The path's one end, moved into the trie if the path is new there.
        let mut end = Some(End { consts: rec.consts.clone(), text: text.to_owned() });
        // The recorded path as far as the trie holds it already.
        let (mut parent, mut shared) = (None::<u32>, 0);
        for &Recorded { lit: (a, z), token, slots: (sa, sz) } in &rec.steps {
            let (lit, slots) = (&b[a..z], &rec.slots[sa..sz]);
            let kids = parent.map_or(&self.roots, |p| &self.nodes[p as usize].kids);
            let Some(k) = kids.iter().copied().find(|&k| {
                let n = &self.nodes[k as usize];
                n.token == token
                    && &self.bytes[n.lit.0 as usize..n.lit.1 as usize] == lit
                    && &self.slots[n.slots.0 as usize..n.slots.1 as usize] == slots
            }) else {
                break;
            };
            // The same bytes end the same walk the same way.
            debug_assert!(!matches!(token, Token::End { .. }) || Some(&self.ends[self.nodes[k as usize].end as usize]) == end.as_ref());
            (parent, shared) = (Some(k), shared + 1);
        }
        let rest = &rec.steps[shared..];
        if rest.is_empty() {
            return;
        }
        let new_bytes: usize = rest.iter().map(|r| r.lit.1 - r.lit.0).sum();
        if self.nodes.len() + rest.len() > MAX_NODES || self.bytes.len() + new_bytes > MAX_BYTES {
            self.full = true;
            return;
        }
        if parent.map_or(self.roots.len(), |p| self.nodes[p as usize].kids.len()) >= MAX_KIDS {
            return;
        }
        for &Recorded { lit: (a, z), token, slots: (sa, sz) } in rest {
            let k = self.nodes.len() as u32;
            let (l, s) = (self.bytes.len() as u32, self.slots.len() as u32);
            self.bytes.extend_from_slice(&b[a..z]);
            self.slots.extend_from_slice(&rec.slots[sa..sz]);
            let e = match token {
                Token::End { .. } => {
                    self.ends.push(end.take().expect("one end per path"));
                    self.ends.len() as u32 - 1
                }
                _ => 0,
            };
            let (lit, slots) = ((l, self.bytes.len() as u32), (s, self.slots.len() as u32));
            self.nodes.push(Node { lit, token, slots, end: e, kids: Vec::new() });
            match parent {
                Some(p) => self.nodes[p as usize].kids.push(k),
                None => self.roots.push(k),
            }
            parent = Some(k);
        }
    }

    /// Steps learned, replays and misses so far, and whether the tapes are off (for
    /// tests).
    #[cfg(test)]
    pub(super) fn stats(&self) -> (usize, u64, u64, bool) {
        (self.nodes.len(), self.tries, self.misses, self.off)
    }
}
