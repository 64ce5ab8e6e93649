//! A byte scanner for the common payload: ASCII strings without escapes, plain
//! literals, shallow nesting. It walks the pointer trie as the serde walk does and
//! sets the same slots, but declines (`None`) at anything outside that subset — an
//! escape, a non-ASCII or control byte in a string, deep nesting, any syntax it does
//! not expect — and the serde walk then parses the payload from the start, with its
//! exact errors. So a payload it accepts is valid JSON that serde_json reads to the
//! same values; numbers are read by serde_json itself (`Number`'s own parser), so
//! their values and range errors are serde_json's.

use super::tape::{Recorder, Token};
use super::walk::{Ctx, ObjKeys};
use super::*;

/// Nesting beyond this is left to serde_json (whose limit is 128).
const MAX_DEPTH: u32 = 64;

pub(super) struct Scan<'b, 'r> {
    b: &'b [u8],
    pub(super) i: usize,
    /// Every pointer has found its value and the walk stops
    /// ([`PointerSet::stop_when_found`]).
    stopped: bool,
    /// Recording the walk as a tape ([`super::tape`]).
    rec: Option<&'r mut Recorder>,
}

/// Per byte: 1 for bytes a plain string may hold (printable ASCII but `"` and `\`).
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x20;
    while c < 0x7f {
        t[c] = c != b'"' as usize && c != b'\\' as usize;
        c += 1;
    }
    t
};

/// The bytes of `w` (little-endian) that are not plain — `"`, `\\`, below 0x20 or
/// above 0x7e — as their high bits. The classic has-zero-byte tests can also flag a
/// byte *above* a flagged one (a borrow or carry moving up), never below it, so the
/// lowest set bit marks exactly the first byte that is not plain.
#[inline]
fn not_plain(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero(w ^ (ONES * b'"' as u64));
    let slash = zero(w ^ (ONES * b'\\' as u64));
    // Bytes below 0x20: subtracting 0x20 borrows into the high bit (for bytes < 0x80).
    let low = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    // Bytes of 0x7f and above: adding 1 to 0x7f, or the byte's own high bit.
    let high = (w | w.wrapping_add(ONES)) & HIGH;
    quote | slash | low | high
}

impl<'b, 'r> Scan<'b, 'r> {
    pub(super) fn new(b: &'b [u8]) -> Self {
        Scan { b, i: 0, stopped: false, rec: None }
    }

    /// A scan that records its walk into `rec` (cleared).
    pub(super) fn recording(b: &'b [u8], rec: &'r mut Recorder) -> Self {
        Scan { b, i: 0, stopped: false, rec: Some(rec) }
    }

    /// A scan of one value of `b` at byte `i` (for replaying a tape).
    pub(super) fn at_byte(b: &'b [u8], i: usize) -> Self {
        Scan { b, i, stopped: false, rec: None }
    }

    /// After a value at a pointer: whether the walk stops here (in stop mode, once no
    /// pointer is missing).
    #[inline]
    fn done(&mut self, cx: &Ctx<'_>) -> bool {
        self.stopped |= cx.first && cx.all_found();
        self.stopped
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A plain string at the cursor (the opening quote); its contents.
    #[inline]
    pub(super) fn string(&mut self) -> Option<&'b str> {
        self.eat(b'"')?;
        let start = self.i;
        // Eight bytes at a time: the first byte that is not plain ends the run.
        loop {
            let Some(w) = self.b.get(self.i..self.i + 8) else {
                // The last few bytes of the payload, one at a time.
                while PLAIN[*self.b.get(self.i)? as usize] {
                    self.i += 1;
                }
                break;
            };
            let m = not_plain(u64::from_le_bytes(w.try_into().expect("8 bytes")));
            if m != 0 {
                self.i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            self.i += 8;
        }
        let end = self.i;
        self.eat(b'"')?;
        // SAFETY: every byte in start..end is printable ASCII (`PLAIN`), so valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(&self.b[start..end]) })
    }

    /// A number at the cursor, read by serde_json — but for a plain non-negative
    /// integer of up to 19 digits without a leading zero, which always fits a `u64`
    /// and which serde_json reads as exactly that integer.
    #[inline]
    pub(super) fn number(&mut self) -> Option<Number> {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.i += 1;
        }
        let t = &self.b[start..self.i];
        if (1..=19).contains(&t.len()) && t.iter().all(u8::is_ascii_digit) && (t[0] != b'0' || t.len() == 1) {
            return Some(Number::from(t.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'))));
        }
        serde_json::from_slice::<Number>(t).ok()
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// After a member or element: `,` (true: another follows) or `close` (false:
    /// the container ends); anything else declines.
    #[inline]
    fn more(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        if c == b',' {
            self.ws();
            Some(true)
        } else {
            (c == close).then_some(false)
        }
    }

    /// The whole payload: one value at the trie's root, whitespace around it.
    pub(super) fn document(mut self, cx: &mut Ctx<'_>) -> Option<()> {
        self.ws();
        self.at(cx, 0, 1, 0)?;
        if !self.stopped {
            self.ws();
            if self.i != self.b.len() {
                return None;
            }
        }
        if let Some(r) = self.rec.as_deref_mut() {
            r.end(self.i, self.stopped);
        }
        Some(())
    }

    /// The value at the active trie nodes `cx.stack[lo..hi]` (as `walk::At`).
    fn at(&mut self, cx: &mut Ctx<'_>, lo: usize, hi: usize, depth: u32) -> Option<()> {
        cx.enter(lo, hi);
        let start = self.i;
        match self.peek()? {
            b'"' => {
                let s = self.string()?;
                if cx.has_slots(lo, hi) {
                    // Left in the payload: a plain string is its own text.
                    cx.set(lo, hi, Slot::Raw(start + 1, start + 1 + s.len()));
                }
                if let Some(r) = self.rec.as_deref_mut() {
                    r.token(start, self.i, Token::Str, cx.slots_of(lo, hi));
                }
            }
            b'{' => self.object(cx, lo, hi, depth + 1)?,
            b'[' => self.array(cx, lo, hi, depth + 1)?,
            b't' => {
                self.literal(b"true")?;
                self.constant(cx, lo, hi, Slot::Bool(true));
            }
            b'f' => {
                self.literal(b"false")?;
                self.constant(cx, lo, hi, Slot::Bool(false));
            }
            b'n' => {
                self.literal(b"null")?;
                self.constant(cx, lo, hi, Slot::Null);
            }
            b'-' | b'0'..=b'9' => {
                let n = self.number()?;
                cx.set(lo, hi, Slot::Number(n));
                if let Some(r) = self.rec.as_deref_mut() {
                    r.token(start, self.i, Token::Num, cx.slots_of(lo, hi));
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// Sets the slots at the active nodes to `v`, which the bytes before it decide (a
    /// literal, an array, an object's keys): a tape sets it at its end.
    #[inline]
    fn constant(&mut self, cx: &mut Ctx<'_>, lo: usize, hi: usize, v: Slot) {
        if let Some(r) = self.rec.as_deref_mut() {
            r.consts(cx.slots_of(lo, hi), &v);
        }
        cx.set(lo, hi, v);
    }

    /// A value outside the pointers, skipped (one value of a tape).
    #[inline]
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        let start = self.i;
        self.skip(depth)?;
        if let Some(r) = self.rec.as_deref_mut() {
            r.token(start, self.i, Token::Skip(depth), std::iter::empty());
        }
        Some(())
    }

    fn object(&mut self, cx: &mut Ctx<'_>, lo: usize, hi: usize, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        let mut obj = ObjKeys { track: cx.has_slots(lo, hi), keys: 0, key: (0, 0) };
        self.ws();
        if self.eat(b'}').is_none() {
            loop {
                let k = self.string()?;
                let (clo, chi) = cx.key(lo, hi, &mut obj, k);
                self.ws();
                self.eat(b':')?;
                self.ws();
                if clo == chi {
                    self.skip_value(depth)?;
                } else {
                    self.at(cx, clo, chi, depth)?;
                    if self.done(cx) {
                        return Some(());
                    }
                }
                cx.stack.truncate(clo);
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        if obj.track {
            self.constant(cx, lo, hi, Slot::Object { keys: obj.keys, key: obj.key });
        }
        Some(())
    }

    fn array(&mut self, cx: &mut Ctx<'_>, lo: usize, hi: usize, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.constant(cx, lo, hi, Slot::Array);
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        let mut i = 0usize;
        loop {
            let (clo, chi) = cx.descend(lo, hi, |c| c.index == Some(i));
            if clo == chi {
                self.skip_value(depth)?;
            } else {
                self.at(cx, clo, chi, depth)?;
                if self.done(cx) {
                    return Some(());
                }
            }
            cx.stack.truncate(clo);
            if !self.more(b']')? {
                return Some(());
            }
            i += 1;
        }
    }

    /// A value outside the pointers: checked, not kept.
    pub(super) fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                if depth + 1 > MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.eat(close).is_some() {
                    return Some(());
                }
                loop {
                    if close == b'}' {
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.skip(depth + 1)?;
                    if !self.more(close)? {
                        return Some(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    /// A number outside the pointers. Without an exponent and with fewer than 300
    /// integer digits it cannot leave f64's range, so the JSON grammar is all there is
    /// to check (`-? (0 | [1-9][0-9]*) (. [0-9]+)?`, what serde_json accepts); any
    /// other number is read by serde_json, whose range error then declines.
    #[inline]
    fn skip_number(&mut self) -> Option<()> {
        let b = self.b;
        let mut i = self.i;
        let digits = |mut i: usize| {
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(i + 1),
            _ => return None,
        }
        let int_digits = i - int_start;
        if b.get(i) == Some(&b'.') {
            let frac = i + 1;
            i = digits(frac);
            if i == frac {
                return None;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) || int_digits >= 300 {
            return self.number().map(|_| ());
        }
        self.i = i;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word test marks exactly the first byte the table refuses (or none when
    /// the table refuses none). Every byte value in every lane, amid plain and random
    /// neighbours.
    #[test]
    fn word_test_marks_the_first_refused_byte() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for lane in 0..8 {
            for b in 0..=255u8 {
                for k in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let mut bytes = if k % 2 == 0 { *b"abcdefgh" } else { x.to_le_bytes() };
                    bytes[lane] = b;
                    // The first byte the table refuses, and the one the word test marks.
                    let first = bytes.iter().position(|&c| !PLAIN[c as usize]).unwrap_or(8);
                    let m = not_plain(u64::from_le_bytes(bytes));
                    let marked = if m == 0 { 8 } else { (m.trailing_zeros() / 8) as usize };
                    assert_eq!(marked, first, "{bytes:?}");
                }
            }
        }
    }
}
