//! Tests of the one-pass pointer extractor and the RFC 3339 parser.

use super::*;
use super::rfc3339::fast_rfc3339;

fn segs(p: &str) -> Vec<String> {
    if p.is_empty() {
        return vec![];
    }
    p.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect()
}

#[test]
fn finds_values_variants_and_indices() {
    let ptrs = ["/a/b", "/a", "/k", "/l/1", "/l/01", "/missing", "/a/b/c", ""];
    let set = PointerSet::new(ptrs.iter().map(|p| segs(p)));
    let mut sc = Scratch::new();
    let doc = br#"{"a":{"b":"x\"y"},"k":{"T":{"p":1}},"l":[true,2.5],"a":{"b":-3}}"#;
    let r = set.extract(doc, &mut sc).unwrap();
    let n = serde_json::Number::from(-3);
    assert_eq!(r.get(0), Found::Number(&n));
    assert_eq!(r.get(1), Found::Object { single_key: Some("b") });
    assert_eq!(r.get(2), Found::Object { single_key: Some("T") });
    let f = serde_json::Number::from_f64(2.5).unwrap();
    assert_eq!(r.get(3), Found::Number(&f));
    assert_eq!(r.get(4), Found::Number(&f));
    assert_eq!(r.get(5), Found::Missing);
    assert_eq!(r.get(6), Found::Missing);
    assert_eq!(r.get(7), Found::Object { single_key: None });
    assert!(set.extract(b"{} x", &mut sc).is_err());

    // One scratch for several sets; the same pointer twice; repeated keys again.
    let other = PointerSet::new([segs("/a/b"), segs("/a/b"), segs("/a")]);
    for _ in 0..3 {
        let r = other.extract(br#"{"a":{"b":1},"a":{"c":2}}"#, &mut sc).unwrap();
        assert_eq!([r.get(0), r.get(1)], [Found::Missing, Found::Missing]);
        assert_eq!(r.get(2), Found::Object { single_key: Some("c") });
        let r = set.extract(doc, &mut sc).unwrap();
        assert_eq!(r.get(0), Found::Number(&n));
    }
}

fn chrono_nanos(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt())
}

/// Random near-RFC 3339 strings: the fast path only answers where chrono agrees, and
/// answers the common shapes itself.
#[test]
fn fast_path_agrees_with_chrono() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let (mut fast, mut total) = (0, 0);
    for _ in 0..50_000 {
        let year = if rnd(4) == 0 { rnd(10_000) } else { 1600 + rnd(800) };
        let (mo, d, h, mi, se) = (rnd(14), rnd(33), rnd(26), rnd(62), rnd(62));
        let sep = ["T", "t", " ", "_"][rnd(4) as usize];
        let mut s = format!("{year:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{se:02}");
        match rnd(4) {
            0 => {}
            1 => s.push('.'),
            _ => {
                s.push('.');
                for _ in 0..1 + rnd(12) {
                    s.push((b'0' + rnd(10) as u8) as char);
                }
            }
        }
        match rnd(6) {
            0 => s.push('Z'),
            1 => s.push('z'),
            2 => {}
            _ => {
                s.push(['+', '-', '\u{2212}'][rnd(3) as usize]);
                s.push_str(&format!("{:02}:{:02}", rnd(26), rnd(62)));
            }
        }
        if rnd(8) == 0 {
            let mut b = s.into_bytes();
            let at = rnd(b.len() as u64) as usize;
            b[at] = b"0123456789-:.+Zz T"[rnd(18) as usize];
            s = String::from_utf8(b).unwrap_or_default();
        }
        let want = chrono_nanos(&s);
        if let Some(ns) = fast_rfc3339(s.as_bytes()) {
            assert_eq!(Some(ns), want, "{s}");
            fast += 1;
        }
        assert_eq!(parse_rfc3339_nanos(&s), want, "{s}");
        total += 1;
        // Valid, in range, in the shape the fast path covers: it must take them.
        if want.is_some() && s.is_ascii() {
            assert!(fast_rfc3339(s.as_bytes()).is_some(), "fast path declined {s}");
        }
    }
    assert!(fast > total / 20, "{fast} of {total}");
}

#[test]
fn fast_timestamps() {
    assert_eq!(fast_rfc3339(b"1970-01-01T00:00:02Z"), Some(2_000_000_000));
    assert_eq!(fast_rfc3339(b"2025-03-25T23:07:00.773674205Z"), Some(1_742_944_020_773_674_205));
    assert_eq!(parse_rfc3339_nanos("1970-01-01T01:00:00+01:00"), Some(0));
    assert_eq!(parse_rfc3339_nanos("2023-02-29T00:00:00Z"), None);
}

/// What each pointer found, owned (for comparing two walks).
fn found_all(r: &Extracted<'_>) -> Vec<String> {
    r.iter().map(|f| format!("{f:?}")).collect()
}

/// The first `n` lines of each shipped JSON-lines sample (ticks, daily demand).
fn sample_lines(n: usize) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut lines = Vec::new();
    for f in ["data/binance_ticks_sample.jsonl", "data/daily_demand.jsonl"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        lines.extend(text.lines().take(n).map(|l| l.as_bytes().to_vec()));
    }
    lines
}

/// The byte scanner against serde_json's walk on the shipped JSON samples and on
/// thousands of damaged copies of their lines (bytes deleted, replaced or inserted,
/// JSON's own characters favoured): wherever `extract` answers, it answers what the
/// serde walk answers — the same values, or the same error, with either skip mode.
/// The scanner must also take the plain lines itself, or it would save nothing.
#[test]
fn byte_scanner_agrees_with_the_serde_walk() {
    let lines = sample_lines(400);
    let ptrs = [
        "/Item/time_exchange",
        "/Item/kind",
        "/Item/kind/OrderBookL1/best_bid/price",
        "/Item/kind/Trade/side",
        "/Item/kind/Trade/price",
        "/Item/instrument",
        "/Item/instrument/0",
        "/date",
        "/demand",
        "/value",
        "",
    ];
    let sets = [Skip::Validate, Skip::Lenient].map(|s| PointerSet::new(ptrs.iter().map(|p| segs(p))).with_skip(s));
    let (mut a, mut b) = (Scratch::new(), Scratch::new());
    let mut check = |set: &PointerSet, doc: &[u8]| -> bool {
        let fast = set.walk(&mut a, |cx, _| fast::Scan::new(doc).document(cx)).is_some();
        let got = set.extract(doc, &mut a).map(|r| found_all(&r)).map_err(|e| e.to_string());
        let want = set.extract_serde(doc, &mut b).map(|r| found_all(&r)).map_err(|e| e.to_string());
        assert_eq!(got, want, "on {:?}", String::from_utf8_lossy(doc));
        fast
    };
    let mut taken = 0;
    for l in &lines {
        for set in &sets {
            taken += check(set, l) as usize;
        }
    }
    assert_eq!(taken, 2 * lines.len(), "the scanner declined plain sample lines");
    // Numbers in skipped places (inside an array and as a member nothing points at)
    // and at a pointer, at the edges of JSON's grammar, of u64 and of f64's range.
    let long = |n: usize| "9".repeat(n);
    let numbers = [
        "0", "-0", "01", "-01", "1.", ".5", "-", "--1", "+1", "1-2", "0x10", "1.2.3", "1.5e-3", "1E5", "1e", "1e+", "1e400",
        "-1e400", "1e-400", "1.0e+400", "-1.25", "12345678901234567890123", "0.000", "1.e5", "00",
        "7", "1.0", "-7", "1234567890123456789", "9999999999999999999", "09999999999999999999",
        "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
    ]
    .map(String::from)
    .into_iter()
    .chain([long(299), long(300), long(308), long(309), long(400), format!("{}.5", long(310)), format!("-{}", long(320))]);
    let mut took = 0;
    for n in numbers {
        let docs = [
            format!(r#"{{"skipped": {n}, "value": 1}}"#),
            format!(r#"{{"value": [1, {n}]}}"#),
            format!(r#"[{n}]"#),
            format!(r#"{{"value": {n}}}"#),
        ];
        for doc in docs {
            for set in &sets {
                took += check(set, doc.as_bytes()) as usize;
            }
        }
    }
    assert!(took > 50, "the scanner took only {took} of the number documents");
    // Damaged lines: a seeded xorshift picks the damage.
    let mut damage = Damage::new();
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..6000 {
        let d = damage.apply(&lines[round % lines.len()], 3);
        for set in &sets {
            if check(set, &d) {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
    }
    // Both sides of the scanner were exercised.
    assert!(accepted > 1000 && rejected > 1000, "accepted {accepted}, declined {rejected}");
    // Nesting: at the scanner's limit, beyond it, and beyond serde_json's.
    for depth in [64, 65, 127, 128, 129, 200] {
        let doc = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for set in &sets {
            check(set, doc.as_bytes());
        }
    }
}

/// Damage for the tests' lines, picked by a seeded xorshift.
struct Damage(u64);

impl Damage {
    fn new() -> Self {
        Damage(0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `line` with 1 to `most` bytes deleted, replaced or inserted, JSON's own
    /// characters favoured.
    fn apply(&mut self, line: &[u8], most: u64) -> Vec<u8> {
        const ALPHABET: &[u8] = b"{}[]:,\"\\ 0123456789.-+eEtrufalsn\x01\xc3\xa9";
        let mut d = line.to_vec();
        for _ in 0..1 + self.next() % most {
            let at = (self.next() as usize) % (d.len() + 1);
            let c = ALPHABET[(self.next() as usize) % ALPHABET.len()];
            match self.next() % 3 {
                0 if at < d.len() => {
                    d.remove(at);
                }
                1 if at < d.len() => d[at] = c,
                _ => d.insert(at, c),
            }
        }
        d
    }
}

/// Keys match only themselves, whatever their length: for keys of 1 to 40 bytes, a
/// document holds the key, then every copy of it with one byte changed, one byte
/// dropped or one added, each with another value. The byte scanner and the serde
/// walk find the key's own value (2), and so does the walk of a set holding every
/// near miss as a pointer too.
#[test]
fn keys_match_only_themselves() {
    let mut scratch = Scratch::new();
    for len in 1..=40usize {
        let key: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let mut misses: Vec<String> = Vec::new();
        for j in 0..len {
            let mut b = key.clone().into_bytes();
            b[j] = b'Z';
            misses.push(String::from_utf8(b).unwrap());
            misses.push(format!("{}{}", &key[..j], &key[j + 1..]));
        }
        misses.push(format!("{key}Z"));
        let mut doc = format!(r#"{{"{key}": 2"#);
        for (i, m) in misses.iter().enumerate() {
            doc.push_str(&format!(r#", "{m}": {}"#, i + 3));
        }
        doc.push('}');
        let alone = PointerSet::new([segs(&format!("/{key}"))]);
        let r = alone.extract(doc.as_bytes(), &mut scratch).unwrap();
        assert_eq!(r.get(0).as_number().and_then(|n| n.as_u64()), Some(2), "{len} bytes");
        let all = PointerSet::new(std::iter::once(key.clone()).chain(misses.iter().cloned()).map(|k| segs(&format!("/{k}"))));
        let got = found_all(&all.extract(doc.as_bytes(), &mut scratch).unwrap());
        let mut b = Scratch::new();
        let want = found_all(&all.extract_serde(doc.as_bytes(), &mut b).unwrap());
        assert_eq!(got, want, "{len} bytes");
        assert_eq!(got[0], format!("{:?}", Found::Number(&serde_json::Number::from(2u64))), "{len} bytes");
    }
}

/// A key's head word is its first eight bytes, zero-padded, little-endian — what a
/// copy into a zeroed buffer read with `u64::from_le_bytes` gives.
#[test]
fn head_is_the_zero_padded_first_word() {
    let key = b"best_bid_price\xff\x01";
    for n in 0..=key.len() {
        let mut b = [0u8; 8];
        let m = n.min(8);
        b[..m].copy_from_slice(&key[..m]);
        assert_eq!(head(&key[..n]), u64::from_le_bytes(b), "{n} bytes");
    }
}

/// `stop_when_found`: on the shipped tick sample (no duplicate keys) it finds what the
/// full serde walk finds; of duplicate keys it keeps the first (where serde_json's
/// `Value` keeps the last), on the byte scanner's path and on the serde path alike;
/// the scanner stops once every pointer is found, so what follows goes unread — but a
/// payload in which some pointer is never found is still read, and rejected, in full.
#[test]
fn stop_when_found_keeps_first_occurrences_and_stops_early() {
    let ptrs = [segs("/Item/time_exchange"), segs("/Item/instrument")];
    let (full, stop) = (PointerSet::new(ptrs.clone()), PointerSet::new(ptrs).stop_when_found());
    let (mut a, mut b) = (Scratch::new(), Scratch::new());
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/binance_ticks_sample.jsonl")).unwrap();
    for line in text.lines() {
        let want = full.extract_serde(line.as_bytes(), &mut b).map(|r| found_all(&r)).unwrap();
        assert_eq!(stop.extract(line.as_bytes(), &mut a).map(|r| found_all(&r)).unwrap(), want, "{line}");
    }

    let one = |set: &PointerSet, doc: &str, sc: &mut Scratch| set.extract(doc.as_bytes(), sc).map(|r| found_all(&r));
    let set = |ptrs: &[&str]| PointerSet::new(ptrs.iter().map(|p| segs(p)));
    let (n1, n3) = (format!("{:?}", Found::Number(&1.into())), format!("{:?}", Found::Number(&3.into())));
    let missing = format!("{:?}", Found::Missing);
    // Duplicates: serde_json's own DOM keeps the last.
    let dup = r#"{"a":1,"b":2,"a":3}"#;
    assert_eq!(serde_json::from_str::<serde_json::Value>(dup).unwrap()["a"], 3);
    assert_eq!(one(&set(&["/a"]), dup, &mut a).unwrap()[0], n3);
    assert_eq!(one(&set(&["/a"]).stop_when_found(), dup, &mut a).unwrap()[0], n1);
    // An escaped string makes the scanner decline; the serde walk (which reads the
    // whole payload: "/z" is never found) keeps the first occurrence too.
    let escaped = r#"{"a":1,"s":"\u00e9","a":3}"#;
    assert_eq!(one(&set(&["/a", "/z"]).stop_when_found(), escaped, &mut a).unwrap(), [n1.clone(), missing.clone()]);
    assert_eq!(one(&set(&["/a", "/z"]), escaped, &mut a).unwrap(), [n3, missing]);
    // A duplicated object on the path: nothing below the first is replaced.
    let nested = r#"{"o":{"x":1},"o":{"y":2}}"#;
    assert_eq!(one(&set(&["/o/x", "/o/y"]).stop_when_found(), nested, &mut a).unwrap()[0], n1);
    assert_eq!(one(&set(&["/o/x", "/o/y"]), nested, &mut a).unwrap()[0], format!("{:?}", Found::Missing));
    // Early stop: what follows the last pointer is not read.
    for broken in [r#"{"a":1,"b":2,"c":[1,"#, r#"{"a":1,"b":2} trailing"#] {
        assert!(one(&set(&["/a", "/b"]), broken, &mut a).is_err(), "{broken}");
        assert_eq!(one(&set(&["/a", "/b"]).stop_when_found(), broken, &mut a).unwrap()[0], n1, "{broken}");
        assert!(one(&set(&["/a", "/z"]).stop_when_found(), broken, &mut a).is_err(), "{broken}");
    }
}

/// `push_number` writes what `Number`'s `Display` writes: integers at the edges of
/// `u64` and `i64`, and floats (which take the `Display` path).
#[test]
fn push_number_writes_what_display_writes() {
    let texts = ["0", "7", "10", "-1", "-10", "9223372036854775807", "9223372036854775808", "18446744073709551615",
        "-9223372036854775808", "1.5", "-0.0", "1e300", "123456789012345678901234567890"];
    for t in texts {
        let n: Number = serde_json::from_str(t).unwrap();
        let mut out = String::from("x");
        push_number(&mut out, &n);
        assert_eq!(out, format!("x{n}"), "{t}");
    }
}


/// Replays a scratch's learned shapes, with its tapes' counters: the results (or the
/// error) of `extract`, and whether a tape took the payload.
fn replayed(set: &PointerSet, doc: &[u8], sc: &mut Scratch) -> (Result<Vec<String>, String>, bool) {
    let (_, tries, misses, _) = sc.tapes.stats();
    let got = set.extract(doc, sc).map(|r| found_all(&r)).map_err(|e| e.to_string());
    let (_, t, m, _) = sc.tapes.stats();
    (got, t > tries && m == misses)
}

/// Learned shapes (`tape`): on the shipped samples and on thousands of damaged copies
/// of their lines, met by a scratch that has learned the clean lines' shapes, what
/// `extract` answers is what serde_json's walk answers (values or error, for the
/// decoder's full walk), or what the byte scanner alone answers (for the reader's
/// early stop, which serde's walk does not make). Clean lines replay from tapes almost
/// always; damaged ones both replay (a value changed) and miss (a key or bracket).
#[test]
fn tapes_answer_what_the_walks_answer() {
    let lines = sample_lines(1000);
    let full = PointerSet::new(
        [
            "/Item/time_exchange", "/Item/instrument", "/Item/kind", "/Item/kind/OrderBookL1/best_bid/price",
            "/Item/kind/OrderBookL1/best_ask/amount", "/Item/kind/Trade/price", "/Item/kind/Trade/side", "/date",
            "/demand", "",
        ]
        .iter()
        .map(|p| segs(p)),
    );
    let stop = PointerSet::new([segs("/Item/time_exchange"), segs("/Item/instrument")]).with_skip(Skip::Lenient).stop_when_found();
    let (mut a, mut b) = (Scratch::new(), Scratch::new());
    // What the walk without tapes answers: serde's, or for the early stop the scanner's
    // (falling back to serde's where it declines).
    let want = |set: &PointerSet, doc: &[u8], b: &mut Scratch| {
        if std::ptr::eq(set, &stop) && set.walk(b, |cx, _| fast::Scan::new(doc).document(cx)).is_some() {
            return Ok(found_all(&Extracted { slots: &b.slots, text: &b.text, payload: doc }));
        }
        set.extract_serde(doc, b).map(|r| found_all(&r)).map_err(|e| e.to_string())
    };
    for set in [&full, &stop] {
        let mut hits = 0;
        for l in &lines {
            let (got, hit) = replayed(set, l, &mut a);
            assert_eq!(got, want(set, l, &mut b), "on {:?}", String::from_utf8_lossy(l));
            hits += hit as usize;
        }
        // Binance L1 updates and trades, and the demand file's rows: a handful of shapes.
        let (steps, ..) = a.tapes.stats();
        assert!(hits + 20 > lines.len(), "{hits} of {} lines replayed, {steps} steps learned", lines.len());
        // Damaged lines, each after a clean one (so the misses stay under half and the
        // tapes stay on): bytes deleted, replaced or inserted, JSON's own favoured.
        let mut damage = Damage::new();
        let (mut replays, mut misses) = (0, 0);
        for round in 0..8000 {
            let clean = &lines[round % lines.len()];
            let (got, _) = replayed(set, clean, &mut a);
            assert_eq!(got, want(set, clean, &mut b));
            let d = damage.apply(clean, 2);
            let (got, hit) = replayed(set, &d, &mut a);
            assert_eq!(got, want(set, &d, &mut b), "on {:?}", String::from_utf8_lossy(&d));
            if hit {
                replays += 1;
            } else {
                misses += 1;
            }
        }
        assert!(replays > 1000 && misses > 1000, "replayed {replays}, missed {misses}");
        assert!(!a.tapes.stats().3, "the tapes turned off");
    }
}

/// Shapes that differ only where a value starts (a string, a number, an object, a
/// literal at the same key), payloads that extend a learned one, and repeated keys:
/// each answer is serde's, whatever was learned before it, in either order.
#[test]
fn tapes_tell_close_shapes_apart() {
    let set = PointerSet::new(["/v", "/v/w", "/k"].iter().map(|p| segs(p)));
    let docs = [
        r#"{"v":"1","k":2}"#, r#"{"v":1,"k":2}"#, r#"{"v":{"w":1},"k":2}"#, r#"{"v":{"w":"x"},"k":2}"#,
        r#"{"v":true,"k":2}"#, r#"{"v":null,"k":2}"#, r#"{"v":[1],"k":2}"#, r#"{"v":-1.5e3,"k":2}"#,
        r#"{"v":"1","k":2} "#, r#"{"v":"1","k":2} x"#, r#"{"v":"1","k":2}}"#, r#"{"v":"1","k":2,"z":[{}]}"#,
        r#"{"v":"1","k":2,"v":3}"#, r#"{"v":{"w":1},"v":{"u":2},"k":2}"#, r#"{"v":"1","k":"2\"3"}"#,
        r#"{"v":"1","k":01}"#, r#"{"v":"1" ,"k":2}"#, r#"{"v":"1","k":[2,3]}"#, r#"{"v":"1","k":1e400}"#,
    ];
    let mut b = Scratch::new();
    for order in 0..2 {
        let mut a = Scratch::new();
        for round in 0..3 {
            for i in 0..docs.len() {
                let d = docs[if order == 0 { i } else { docs.len() - 1 - i }].as_bytes();
                let (got, _) = replayed(&set, d, &mut a);
                let want = set.extract_serde(d, &mut b).map(|r| found_all(&r)).map_err(|e| e.to_string());
                assert_eq!(got, want, "round {round}: {:?}", String::from_utf8_lossy(d));
            }
        }
        // The second and third rounds replayed the twelve shapes the scanner takes
        // without a repeated key (the other seven go to serde every time).
        let (steps, tries, misses, _) = a.tapes.stats();
        assert!(steps > 10 && tries - misses >= 24, "{steps} steps, {misses} misses in {tries}");
    }
}

/// A stream of ever-new shapes fills the tapes or turns them off, and every answer is
/// still serde's.
#[test]
fn tapes_give_up_on_irregular_streams() {
    let set = PointerSet::new(["/a", "/b"].iter().map(|p| segs(p)));
    let (mut a, mut b) = (Scratch::new(), Scratch::new());
    for i in 0..5000 {
        let d = format!(r#"{{"a":{i},"k{i}":[{i}],"b":"{i}"}}"#);
        let (got, _) = replayed(&set, d.as_bytes(), &mut a);
        let want = set.extract_serde(d.as_bytes(), &mut b).map(|r| found_all(&r)).map_err(|e| e.to_string());
        assert_eq!(got, want, "{d}");
    }
    assert!(a.tapes.stats().3, "the tapes are still on");
}
