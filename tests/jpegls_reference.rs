//! Reference tests for the JPEG-LS decoder: every fixture in `fixtures/`
//! (codestreams from CharLS and from pydicom's corpus, expected samples
//! decoded by CharLS and libjpeg, see tools/make_jpegls_fixtures.py) must
//! decode bit for bit; damaged streams must give Ok or Err, never a panic;
//! malformed headers are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use fovea::imaging::jpegls::{decode, ColourTransform, Interleave};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpegls")
}

#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Num(i64),
    Bool(bool),
}

/// Parses one flat JSON object of string, integer and boolean values (the
/// manifest's case lines); None for anything else.
fn parse_flat_object(line: &str) -> Option<HashMap<String, Value>> {
    let s = line.trim().trim_end_matches(',');
    let mut chars = s.strip_prefix('{')?.strip_suffix('}')?.chars().peekable();
    let mut map = HashMap::new();
    let read_string = |chars: &mut std::iter::Peekable<std::str::Chars>| -> Option<String> {
        let mut out = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
    };
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => return Some(map),
            Some('"') => {}
            Some(_) => return None,
        }
        let key = read_string(&mut chars)?;
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ':') {
            chars.next();
        }
        let value = match chars.peek()? {
            '"' => {
                chars.next();
                Value::Str(read_string(&mut chars)?)
            }
            _ => {
                let mut tok = String::new();
                while chars.peek().is_some_and(|c| *c != ',') {
                    tok.push(chars.next()?);
                }
                match tok.trim() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    t => Value::Num(t.parse().ok()?),
                }
            }
        };
        map.insert(key, value);
    }
}

struct Case {
    name: String,
    stream: Vec<u8>,
    expected: Vec<u16>,
    width: u32,
    height: u32,
    components: u8,
    bits: u8,
    near: u16,
    interleave: Interleave,
    transform: ColourTransform,
    /// The expected samples were also checked against the lossless original.
    lossless_original: bool,
}

fn load_cases() -> Vec<Case> {
    let dir = fixtures_dir();
    let manifest =
        std::fs::read_to_string(dir.join("manifest.json")).expect("fixtures/manifest.json");
    let mut cases = Vec::new();
    for line in manifest.lines().filter(|l| l.starts_with("{\"name\"")) {
        let m = parse_flat_object(line).unwrap_or_else(|| panic!("bad manifest line {line}"));
        let s = |k: &str| match m.get(k) {
            Some(Value::Str(v)) => v.clone(),
            other => panic!("manifest key {k}: {other:?}"),
        };
        let n = |k: &str| match m.get(k) {
            Some(Value::Num(v)) => *v,
            other => panic!("manifest key {k}: {other:?}"),
        };
        let stream = std::fs::read(dir.join(s("file"))).expect("fixture .jls");
        let raw = std::fs::read(dir.join(s("raw"))).expect("fixture .raw");
        let expected: Vec<u16> = match n("raw_bytes") {
            1 => raw.iter().map(|&b| u16::from(b)).collect(),
            2 => raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            other => panic!("raw_bytes {other}"),
        };
        let interleave = match s("interleave").as_str() {
            "none" => Interleave::None,
            "line" => Interleave::Line,
            "sample" => Interleave::Sample,
            other => panic!("interleave {other}"),
        };
        let transform = match s("transform").as_str() {
            "none" => ColourTransform::None,
            "hp1" => ColourTransform::Hp1,
            "hp2" => ColourTransform::Hp2,
            "hp3" => ColourTransform::Hp3,
            other => panic!("transform {other}"),
        };
        let lossless_original = matches!(m.get("lossless_original"), Some(Value::Bool(true)));
        cases.push(Case {
            name: s("name"),
            stream,
            expected,
            width: n("width") as u32,
            height: n("height") as u32,
            components: n("components") as u8,
            bits: n("bits") as u8,
            near: n("near") as u16,
            interleave,
            transform,
            lossless_original,
        });
    }
    assert!(
        cases.len() > 100,
        "expected the full fixture set, found {}",
        cases.len()
    );
    cases
}

#[test]
fn fixtures_decode_bit_exact() {
    let cases = load_cases();
    let mut failures = Vec::new();
    let mut largest: Option<(usize, String, f64)> = None;
    for case in &cases {
        let t = Instant::now();
        let result = decode(&case.stream);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let img = match result {
            Ok(img) => img,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let header = (
            img.width,
            img.height,
            img.components,
            img.bits_per_sample,
            img.near,
        );
        let want = (
            case.width,
            case.height,
            case.components,
            case.bits,
            case.near,
        );
        if header != want
            || img.interleave != case.interleave
            || img.colour_transform != case.transform
        {
            failures.push(format!(
                "{}: header {header:?} {:?} {:?}, expected {want:?} {:?} {:?}",
                case.name, img.interleave, img.colour_transform, case.interleave, case.transform
            ));
            continue;
        }
        if img.samples != case.expected {
            let first = img
                .samples
                .iter()
                .zip(&case.expected)
                .position(|(a, b)| a != b);
            failures.push(format!(
                "{}: samples differ (len {} vs {}, first difference at {first:?})",
                case.name,
                img.samples.len(),
                case.expected.len()
            ));
        }
        let n = case.expected.len();
        if largest.as_ref().is_none_or(|(m, _, _)| n > *m) {
            largest = Some((n, case.name.clone(), ms));
        }
    }
    if let Some((n, name, ms)) = largest {
        println!("largest fixture {name}: {n} samples decoded in {ms:.3} ms");
    }
    let originals = cases
        .iter()
        .filter(|c| c.lossless_original && c.near == 0)
        .count();
    println!(
        "{} fixtures checked ({originals} also equal to their lossless original), {} failed",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Decodes `data`, turning a panic into a test failure naming `what`.
fn must_not_panic(data: &[u8], what: &str) -> bool {
    match std::panic::catch_unwind(|| decode(data)) {
        Ok(r) => r.is_ok(),
        Err(_) => panic!("decoder panicked on {what}"),
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncated_streams_never_panic() {
    let mut errs = 0;
    for case in load_cases() {
        for cut in (0..case.stream.len()).step_by(7) {
            if !must_not_panic(&case.stream[..cut], &format!("{} cut at {cut}", case.name)) {
                errs += 1;
            }
        }
        // Cutting off only the EOI marker still leaves every sample decodable.
        let n = case.stream.len();
        let _ = must_not_panic(&case.stream[..n - 2], &format!("{} without EOI", case.name));
        assert!(
            decode(&case.stream[..n / 2]).is_err(),
            "{} cut in half decoded",
            case.name
        );
    }
    assert!(errs > 0);
}

#[test]
fn corrupted_streams_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for case in load_cases() {
        for round in 0..60 {
            let mut data = case.stream.clone();
            let flips = 1 + (round % 4);
            for _ in 0..flips {
                let i = (rng.next() as usize) % data.len();
                data[i] = match round % 3 {
                    0 => data[i] ^ (1 << (rng.next() % 8)),
                    1 => rng.next() as u8,
                    _ => 0xFF,
                };
            }
            must_not_panic(&data, &format!("{} round {round}", case.name));
        }
        // Structural damage: inserted, deleted and spliced bytes, stray segments.
        let sos = case
            .stream
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .unwrap_or(2);
        for round in 0..24u64 {
            let mut data = case.stream.clone();
            let at = 2 + (rng.next() as usize) % (data.len() - 2);
            match round % 4 {
                0 => data
                    .splice(at..at, (0..1 + rng.next() % 9).map(|_| rng.next() as u8))
                    .for_each(drop),
                1 => data
                    .drain(at..(at + 1 + (rng.next() % 9) as usize).min(data.len()))
                    .for_each(drop),
                2 => {
                    let mut lse = vec![0xFF, 0xF8, 0, 13, 1];
                    for _ in 0..5 {
                        let v = if rng.next() % 3 == 0 {
                            0
                        } else {
                            rng.next() as u16
                        };
                        lse.extend_from_slice(&v.to_be_bytes());
                    }
                    data.splice(sos..sos, lse).for_each(drop);
                }
                _ => {
                    let ri = (1 + rng.next() % 5) as u8;
                    data.splice(sos..sos, [0xFF, 0xDD, 0, 4, 0, ri])
                        .for_each(drop);
                }
            }
            must_not_panic(&data, &format!("{} structural round {round}", case.name));
        }
        // Damage confined to the header bytes (SOF/SOS/LSE fields).
        for i in 2..case.stream.len().min(40) {
            for v in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut data = case.stream.clone();
                data[i] = v;
                must_not_panic(&data, &format!("{} byte {i} = {v:#x}", case.name));
            }
        }
    }
}

/// A small 8-bit monochrome fixture to patch headers in.
fn mono8() -> Vec<u8> {
    std::fs::read(fixtures_dir().join("g08_mono_mixed_17x13_n0.jls")).expect("fixture")
}

fn find(data: &[u8], marker: u8) -> usize {
    data.windows(2)
        .position(|w| w == [0xFF, marker])
        .expect("marker present")
}

fn err_of(data: &[u8]) -> String {
    match decode(data) {
        Ok(_) => panic!("stream decoded but should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_headers_are_refused() {
    assert!(err_of(&[]).contains("empty"));
    assert!(err_of(&[0xFF, 0xD8]).contains("no SOF55"));
    assert!(err_of(&[0xFF, 0xD8, 0xFF, 0xD9]).contains("no SOF55"));
    assert!(err_of(b"not a jpeg at all").contains("SOI"));

    let good = mono8();
    assert!(decode(&good).is_ok());
    let sof = find(&good, 0xF7);
    let sos = find(&good, 0xDA);

    // No SOF at all: SOI followed straight by the scan.
    let mut no_sof = vec![0xFF, 0xD8];
    no_sof.extend_from_slice(&good[sos..]);
    assert!(err_of(&no_sof).contains("before the SOF55"));

    for bits in [0u8, 1, 17, 255] {
        let mut d = good.clone();
        d[sof + 4] = bits;
        let e = err_of(&d);
        assert!(e.contains("bits per sample"), "{bits}: {e}");
    }
    for (at, what) in [(sof + 5, "height"), (sof + 7, "width")] {
        let mut d = good.clone();
        d[at] = 0;
        d[at + 1] = 0;
        let e = err_of(&d);
        assert!(e.contains("must not be 0"), "{what}: {e}");
    }
    // 65535 x 65535 exceeds the sample limit.
    let mut d = good.clone();
    d[sof + 5..sof + 9].copy_from_slice(&[0xFF; 4]);
    assert!(err_of(&d).contains("exceeds the limit"));

    // SOS fields: interleave mode 3, mapping table, point transform.
    let ns = usize::from(good[sos + 4]);
    let mut d = good.clone();
    d[sos + 6 + 2 * ns] = 3;
    assert_eq!(err_of(&d), "unsupported JPEG-LS interleave mode 3");
    let mut d = good.clone();
    d[sos + 6] = 1;
    assert_eq!(err_of(&d), "JPEG-LS mapping tables are not supported");
    let mut d = good.clone();
    d[sos + 7 + 2 * ns] = 1;
    assert!(err_of(&d).contains("point transform"));
    // NEAR beyond MAXVAL / 2.
    let mut d = good.clone();
    d[sos + 5 + 2 * ns] = 200;
    assert!(err_of(&d).contains("NEAR 200"));

    // LSE mapping table (type 2) and unknown LSE types, inserted before SOS.
    for (id, want) in [
        (2u8, "mapping tables"),
        (3, "mapping tables"),
        (9, "LSE segment type 9"),
    ] {
        let mut d = good[..sos].to_vec();
        d.extend_from_slice(&[0xFF, 0xF8, 0x00, 0x06, id, 0x01, 0x01, 0x00]);
        d.extend_from_slice(&good[sos..]);
        let e = err_of(&d);
        assert!(e.contains(want), "{id}: {e}");
    }
    // Invalid LSE type 1 thresholds (T1 > T2).
    let mut d = good[..sos].to_vec();
    d.extend_from_slice(&[0xFF, 0xF8, 0x00, 0x0D, 1, 0, 0, 0, 50, 0, 10, 0, 0, 0, 0]);
    d.extend_from_slice(&good[sos..]);
    assert!(err_of(&d).contains("invalid JPEG-LS thresholds"));
    // Unsupported HP transform value.
    let mut d = good[..sos].to_vec();
    d.extend_from_slice(&[0xFF, 0xE8, 0x00, 0x07, b'm', b'r', b'f', b'x', 4]);
    d.extend_from_slice(&good[sos..]);
    assert!(err_of(&d).contains("colour transform 4"));
    // Another JPEG process.
    let mut d = good.clone();
    d[sof + 1] = 0xC3;
    assert!(err_of(&d).contains("SOF3"));
    // Truncated scan data reports where the stream ends.
    let cut = &good[..sos + 20];
    let e = err_of(cut);
    assert!(e.contains("ends inside scan 1"), "{e}");
}

#[test]
fn oversize_dimensions_from_lse_type_4() {
    let good = mono8();
    let want = decode(&good).expect("fixture decodes");
    let sof = find(&good, 0xF7);
    let sos = find(&good, 0xDA);
    let mut d = good[..sos].to_vec();
    d[sof + 5..sof + 9].fill(0);
    let (h, w) = (want.height, want.width);
    d.extend_from_slice(&[0xFF, 0xF8, 0x00, 0x0C, 4, 4]);
    d.extend_from_slice(&h.to_be_bytes());
    d.extend_from_slice(&w.to_be_bytes());
    d.extend_from_slice(&good[sos..]);
    assert_eq!(decode(&d).expect("LSE 4 stream decodes"), want);
}

#[test]
fn trailing_padding_after_eoi_is_ignored() {
    let mut d = mono8();
    let want = decode(&d).expect("fixture decodes").samples;
    d.push(0);
    assert_eq!(decode(&d).expect("padded stream decodes").samples, want);
}

/// Decode time of a 512x512 16-bit stream written by
/// `make_jpegls_fixtures.py --bench DIR`; run with JPEGLS_BENCH=DIR.
#[test]
#[ignore]
fn bench_512x512_16bit() {
    let Ok(dir) = std::env::var("JPEGLS_BENCH") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let stream = std::fs::read(dir.join("bench_512x512_16bit.jls")).expect("bench stream");
    let raw = std::fs::read(dir.join("bench_512x512_16bit.raw")).expect("bench raw");
    let want: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = Instant::now();
        let img = decode(&stream).expect("bench decodes");
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(img.samples, want);
    }
    println!(
        "512x512 16-bit ({} bytes): best of 10 = {best:.2} ms",
        stream.len()
    );
}
