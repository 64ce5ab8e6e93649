//! The walk itself: serde `Visitor`s that descend the payload along the pointer
//! trie, recording what each pointer finds and skipping everything else.

use super::*;

pub(super) struct Ctx<'a> {
    pub(super) nodes: &'a [Node],
    pub(super) skip: Skip,
    pub(super) slots: &'a mut Vec<Slot>,
    pub(super) text: &'a mut String,
    pub(super) stack: &'a mut Vec<u32>,
    pub(super) entered: &'a mut [u32],
    pub(super) pass: u32,
    /// [`PointerSet::stop_when_found`]: a slot keeps the first value set in it (and
    /// the byte scanner stops once none is missing).
    pub(super) first: bool,
    /// A trie node was entered twice (a repeated key on a pointer's path).
    pub(super) repeated: bool,
}

impl Ctx<'_> {
    /// Sets the slots of the pointers ending at the active nodes `stack[lo..hi]`.
    #[inline]
    pub(super) fn set(&mut self, lo: usize, hi: usize, v: Slot) {
        let first = self.first;
        let put = |slot: &mut Slot, v: Slot| {
            if !first || matches!(slot, Slot::Missing) {
                *slot = v;
            }
        };
        if hi == lo + 1 {
            // The usual case: one active node, with at most one pointer ending there.
            let slots = &self.nodes[self.stack[lo] as usize].slots;
            if let [s] = slots[..] {
                put(&mut self.slots[s as usize], v);
                return;
            }
        }
        for &n in &self.stack[lo..hi] {
            for &s in &self.nodes[n as usize].slots {
                put(&mut self.slots[s as usize], v.clone());
            }
        }
    }

    /// Every pointer has found something.
    pub(super) fn all_found(&self) -> bool {
        !self.slots.iter().any(|s| matches!(s, Slot::Missing))
    }

    pub(super) fn has_slots(&self, lo: usize, hi: usize) -> bool {
        self.stack[lo..hi].iter().any(|&n| !self.nodes[n as usize].slots.is_empty())
    }

    /// The slots of the pointers ending at the active nodes `stack[lo..hi]`.
    pub(super) fn slots_of(&self, lo: usize, hi: usize) -> impl Iterator<Item = u32> + '_ {
        self.stack[lo..hi].iter().flat_map(|&n| self.nodes[n as usize].slots.iter().copied())
    }

    pub(super) fn push_text(&mut self, s: &str) -> (usize, usize) {
        let a = self.text.len();
        self.text.push_str(s);
        (a, self.text.len())
    }

    /// Marks the active nodes `stack[lo..hi]` entered for this payload. A repeated key
    /// replaces everything found below its earlier occurrence (below a node entered
    /// for the first time, everything is still missing) — unless the first occurrence
    /// is kept.
    pub(super) fn enter(&mut self, lo: usize, hi: usize) {
        for &n in &self.stack[lo..hi] {
            let n = n as usize;
            if self.entered[n] == self.pass {
                self.repeated = true;
                if !self.first {
                    for &s in &self.nodes[n].subtree {
                        self.slots[s as usize] = Slot::Missing;
                    }
                }
            }
            self.entered[n] = self.pass;
        }
    }

    /// A key `k` of an object at the active nodes `lo..hi` (noted in `obj`); pushes
    /// the children it matches and returns their run.
    pub(super) fn key(&mut self, lo: usize, hi: usize, obj: &mut ObjKeys, k: &str) -> (usize, usize) {
        if obj.track {
            match obj.keys {
                0 => {
                    obj.key = self.push_text(k);
                    obj.keys = 1;
                }
                1 if self.text[obj.key.0..obj.key.1] != *k => obj.keys = 2,
                _ => {}
            }
        }
        let k = k.as_bytes();
        let (h, t) = (head(k), tail(k));
        self.descend(lo, hi, |c| {
            let ck = c.key.as_bytes();
            c.head == h
                && ck.len() == k.len()
                && match k.len() {
                    0..=8 => true,
                    9..=16 => c.tail == t,
                    _ => ck[8..] == k[8..],
                }
        })
    }

    /// Pushes the children of the active nodes `stack[lo..hi]` that `matches` accepts;
    /// returns the new run's bounds (empty when nothing matched).
    pub(super) fn descend(&mut self, lo: usize, hi: usize, matches: impl Fn(&Child) -> bool) -> (usize, usize) {
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
pub(super) struct At<'c, 'a> {
    pub(super) cx: &'c mut Ctx<'a>,
    pub(super) lo: usize,
    pub(super) hi: usize,
}

impl<'de> DeserializeSeed<'de> for At<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.cx.enter(self.lo, self.hi);
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
pub(super) struct ObjKeys {
    pub(super) track: bool,
    pub(super) keys: u8,
    pub(super) key: (usize, usize),
}

/// A key of an object at the active nodes `lo..hi`; yields the run of matching children.
pub(super) struct Key<'c, 'a, 'o> {
    pub(super) cx: &'c mut Ctx<'a>,
    pub(super) lo: usize,
    pub(super) hi: usize,
    pub(super) obj: &'o mut ObjKeys,
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
        Ok(self.cx.key(self.lo, self.hi, self.obj, k))
    }
}
