//! Pure-Rust JPEG-LS decoder (ITU-T T.87 | ISO/IEC 14495-1), as DICOM uses it
//! (transfer syntaxes 1.2.840.10008.1.2.4.80 lossless and .81 near-lossless).
//!
//! This file holds the public API and the marker-level parsing: SOI, SOF55,
//! SOS, LSE (preset coding parameters, oversize dimensions), DRI, APPn
//! (including the HP colour-transform APP8 "mrfx" segment), COM and EOI.
//! The entropy-coded scans are decoded in `scan.rs` (coding parameters in
//! `params.rs`, bit reader in `bits.rs`); the inverse HP colour transforms
//! live in `colour.rs`. Malformed input gives an `Error`, never a
//! panic.

mod bits;
mod colour;
mod image;
mod params;
mod scan;

pub use image::{ColourTransform, Error, Image, Interleave};
use params::{Params, Preset};
use scan::Scan;

/// Largest number of samples (width * height * components) accepted.
const MAX_SAMPLES: u64 = 1 << 30;

/// Decodes a JPEG-LS codestream (SOI ... EOI).
pub fn decode(stream: &[u8]) -> Result<Image, Error> {
    Decoder::new(stream).run()
}

fn err<T>(msg: String) -> Result<T, Error> {
    Err(Error(msg))
}

struct Frame {
    bits: u8,
    width: u32,
    height: u32,
    ids: Vec<u8>,
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    frame: Option<Frame>,
    preset: Preset,
    transform: ColourTransform,
    restart_interval: u32,
    samples: Vec<u16>,
    done: Vec<bool>,
    scans: usize,
    first_scan: Option<(u16, Interleave)>,
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b))
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8]) -> Self {
        Decoder {
            data,
            pos: 0,
            frame: None,
            preset: Preset::default(),
            transform: ColourTransform::None,
            restart_interval: 0,
            samples: Vec::new(),
            done: Vec::new(),
            scans: 0,
            first_scan: None,
        }
    }

    fn run(mut self) -> Result<Image, Error> {
        match self.data.get(0..2) {
            None if self.data.is_empty() => return err("JPEG-LS stream is empty".into()),
            Some([0xFF, 0xD8]) => self.pos = 2,
            _ => return err("not a JPEG-LS stream: it does not start with an SOI marker".into()),
        }
        while let Some((marker, at)) = self.next_marker()? {
            match marker {
                0xD9 => break,
                0xF7 => self.sof()?,
                0xDA => self.sos()?,
                0xF8 => self.lse()?,
                0xDD => self.dri()?,
                0xE0..=0xEF => self.app(marker)?,
                0xFE => {
                    self.segment("COM")?;
                }
                0xD8 => return err(format!("second SOI marker in JPEG-LS stream at byte {at}")),
                0xD0..=0xD7 => {
                    return err(format!("unexpected restart marker RST{} at byte {at}", marker - 0xD0))
                }
                0xDC => return err("JPEG-LS DNL marker (height defined after the scan) is not supported".into()),
                0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                    return err(format!(
                        "not a JPEG-LS stream: SOF{} marker 0xFF{marker:02X} (another JPEG process) at byte {at}",
                        marker - 0xC0
                    ))
                }
                0xF9 => return err("JPEG-LS part 2 (SOF57, T.870 extensions) is not supported".into()),
                _ => return err(format!("unexpected marker 0xFF{marker:02X} in JPEG-LS stream at byte {at}")),
            }
        }
        self.finish()
    }

    /// Next marker code and its position, skipping 0xFF fill bytes; None at
    /// the end of the data.
    fn next_marker(&mut self) -> Result<Option<(u8, usize)>, Error> {
        let Some(&b) = self.data.get(self.pos) else {
            return Ok(None);
        };
        if b != 0xFF {
            return err(format!(
                "expected a JPEG-LS marker at byte {}, found 0x{b:02X}",
                self.pos
            ));
        }
        while self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        let at = self.pos;
        match self.data.get(self.pos + 1) {
            None => err(format!("JPEG-LS stream ends inside a marker at byte {at}")),
            Some(0x00) => err(format!(
                "expected a JPEG-LS marker at byte {at}, found 0xFF00"
            )),
            Some(&m) => {
                self.pos += 2;
                Ok(Some((m, at)))
            }
        }
    }

    /// Body of the marker segment at the current position (after its length).
    fn segment(&mut self, name: &str) -> Result<&'a [u8], Error> {
        let at = self.pos;
        let ends = || {
            Error(format!(
                "JPEG-LS stream ends inside the {name} segment at byte {at}"
            ))
        };
        let len = self.data.get(at..at + 2).map(be).ok_or_else(ends)? as usize;
        if len < 2 {
            return err(format!("invalid {name} segment length {len} at byte {at}"));
        }
        let body = self.data.get(at + 2..at + len).ok_or_else(ends)?;
        self.pos = at + len;
        Ok(body)
    }

    fn sof(&mut self) -> Result<(), Error> {
        let at = self.pos;
        let body = self.segment("SOF55")?;
        if self.frame.is_some() {
            return err(format!("second SOF55 frame header at byte {at}"));
        }
        let [bits, y1, y0, x1, x0, nf, rest @ ..] = body else {
            return err(format!("SOF55 segment at byte {at} is too short"));
        };
        if !(2..=16).contains(bits) {
            return err(format!(
                "unsupported JPEG-LS bits per sample {bits} (must be 2 to 16)"
            ));
        }
        if !(1..=4).contains(nf) {
            return err(format!(
                "unsupported JPEG-LS component count {nf} (1 to 4 are supported)"
            ));
        }
        if rest.len() != 3 * usize::from(*nf) {
            return err(format!(
                "SOF55 segment at byte {at} has the wrong length for {nf} components"
            ));
        }
        let mut ids = Vec::with_capacity(usize::from(*nf));
        for c in rest.chunks_exact(3) {
            let (id, sampling) = (c[0], c[1]);
            if ids.contains(&id) {
                return err(format!("JPEG-LS frame lists component {id} twice"));
            }
            if sampling != 0x11 {
                return err(format!(
                    "JPEG-LS component {id} has sampling factors {}x{}; subsampling is not supported",
                    sampling >> 4,
                    sampling & 15
                ));
            }
            ids.push(id);
        }
        let frame = Frame {
            bits: *bits,
            width: be(&[*x1, *x0]),
            height: be(&[*y1, *y0]),
            ids,
        };
        check_size(&frame, false)?;
        self.frame = Some(frame);
        Ok(())
    }

    fn lse(&mut self) -> Result<(), Error> {
        let at = self.pos;
        let body = self.segment("LSE")?;
        match body {
            [1, v @ ..] => {
                let [m1, m0, a1, a0, b1, b0, c1, c0, r1, r0] = v else {
                    return err(format!(
                        "LSE preset parameters segment at byte {at} has the wrong length"
                    ));
                };
                self.preset = Preset {
                    maxval: be(&[*m1, *m0]) as u16,
                    t1: be(&[*a1, *a0]) as u16,
                    t2: be(&[*b1, *b0]) as u16,
                    t3: be(&[*c1, *c0]) as u16,
                    reset: be(&[*r1, *r0]) as u16,
                };
                Ok(())
            }
            [2 | 3, ..] => err("JPEG-LS mapping tables are not supported".into()),
            [4, wxy, v @ ..] => {
                let n = usize::from(*wxy);
                if !(2..=4).contains(&n) || v.len() != 2 * n {
                    return err(format!(
                        "invalid LSE oversize-dimension segment at byte {at}"
                    ));
                }
                if !self.done.is_empty() {
                    return err(format!(
                        "LSE oversize-dimension segment after the first scan, at byte {at}"
                    ));
                }
                let Some(frame) = self.frame.as_mut() else {
                    return err(format!(
                        "LSE oversize-dimension segment before SOF55, at byte {at}"
                    ));
                };
                frame.height = be(&v[..n]);
                frame.width = be(&v[n..]);
                check_size(frame, false)
            }
            [id, ..] => err(format!(
                "unsupported JPEG-LS LSE segment type {id} at byte {at}"
            )),
            [] => err(format!("empty LSE segment at byte {at}")),
        }
    }

    fn dri(&mut self) -> Result<(), Error> {
        let at = self.pos;
        let body = self.segment("DRI")?;
        if !(2..=4).contains(&body.len()) {
            return err(format!("invalid DRI segment length at byte {at}"));
        }
        self.restart_interval = be(body);
        Ok(())
    }

    fn app(&mut self, marker: u8) -> Result<(), Error> {
        let at = self.pos;
        let body = self.segment("APPn")?;
        if marker == 0xE8 {
            if let Some(rest) = body.strip_prefix(b"mrfx") {
                self.transform = match rest.first() {
                    Some(0) => ColourTransform::None,
                    Some(1) => ColourTransform::Hp1,
                    Some(2) => ColourTransform::Hp2,
                    Some(3) => ColourTransform::Hp3,
                    Some(v) => {
                        return err(format!(
                            "unsupported JPEG-LS colour transform {v} in the APP8 mrfx segment"
                        ))
                    }
                    None => return err(format!("APP8 mrfx segment at byte {at} is too short")),
                };
            }
        }
        Ok(())
    }

    fn sos(&mut self) -> Result<(), Error> {
        let at = self.pos;
        let body = self.segment("SOS")?;
        let number = self.scans + 1;
        let Some(frame) = self.frame.as_ref() else {
            return err(format!(
                "JPEG-LS SOS at byte {at} comes before the SOF55 frame header"
            ));
        };
        let [ns, rest @ ..] = body else {
            return err(format!("SOS segment at byte {at} is too short"));
        };
        let ns = usize::from(*ns);
        if ns == 0 || ns > frame.ids.len() || rest.len() != 2 * ns + 3 {
            return err(format!(
                "invalid SOS segment at byte {at} ({ns} components)"
            ));
        }
        let (specs, tail) = rest.split_at(2 * ns);
        let [near_byte, ilv, pt] = tail else {
            return err(format!("SOS segment at byte {at} is too short"));
        };
        check_size(frame, true)?;
        if self.done.is_empty() {
            let n = frame.width as usize * frame.height as usize * frame.ids.len();
            // Probe that the allocation can succeed, then take zeroed memory
            // (calloc: pages are only touched as samples are decoded, so a
            // hostile header over a short stream costs little).
            if Vec::<u16>::new().try_reserve_exact(n).is_err() {
                return err(format!("cannot allocate {n} samples for the JPEG-LS image"));
            }
            self.samples = vec![0u16; n];
            self.done = vec![false; frame.ids.len()];
        }
        let mut channels = Vec::with_capacity(ns);
        for spec in specs.chunks_exact(2) {
            let (id, table) = (spec[0], spec[1]);
            let Some(ch) = frame.ids.iter().position(|&i| i == id) else {
                return err(format!(
                    "JPEG-LS scan {number} names component {id}, which the frame does not have"
                ));
            };
            if channels.contains(&ch) || self.done.get(ch).copied().unwrap_or(true) {
                return err(format!("JPEG-LS component {id} is coded more than once"));
            }
            if table != 0 {
                return err("JPEG-LS mapping tables are not supported".into());
            }
            channels.push(ch);
        }
        let interleave = match ilv {
            0 => Interleave::None,
            1 => Interleave::Line,
            2 => Interleave::Sample,
            _ => return err(format!("unsupported JPEG-LS interleave mode {ilv}")),
        };
        if ns > 1 && *ilv == 0 {
            return err(format!(
                "JPEG-LS scan {number} has {ns} components but interleave mode 0"
            ));
        }
        if *pt != 0 {
            return err(format!(
                "JPEG-LS point transform {} is not supported",
                pt & 15
            ));
        }
        let near = u16::from(*near_byte);
        let params = Params::new(frame.bits, near, self.preset)?;
        let scan = Scan {
            number,
            width: frame.width as usize,
            height: frame.height as usize,
            channels: &channels,
            stride: frame.ids.len(),
            interleave: if ns == 1 { 0 } else { *ilv },
            params,
            restart_interval: self.restart_interval,
        };
        self.pos = scan::decode_scan(self.data, self.pos, &scan, &mut self.samples)?;
        for ch in channels {
            if let Some(d) = self.done.get_mut(ch) {
                *d = true;
            }
        }
        self.scans = number;
        self.first_scan.get_or_insert((near, interleave));
        Ok(())
    }

    fn finish(mut self) -> Result<Image, Error> {
        let Some(frame) = self.frame.take() else {
            return err("JPEG-LS stream has no SOF55 frame header".into());
        };
        let Some((near, interleave)) = self.first_scan else {
            return err("JPEG-LS stream has no scan".into());
        };
        if let Some(missing) = self.done.iter().position(|d| !d) {
            let id = frame.ids.get(missing).copied().unwrap_or(0);
            return err(format!(
                "JPEG-LS stream ends at byte {} with no scan for component {id}",
                self.pos
            ));
        }
        let components = frame.ids.len();
        if self.transform != ColourTransform::None {
            if components != 3 {
                return err(format!(
                    "JPEG-LS HP colour transform needs 3 components, the frame has {components}"
                ));
            }
            colour::undo(self.transform, frame.bits, &mut self.samples, components);
        }
        Ok(Image {
            width: frame.width,
            height: frame.height,
            components: components as u8,
            bits_per_sample: frame.bits,
            near,
            interleave,
            colour_transform: self.transform,
            samples: self.samples,
        })
    }
}

/// Refuses zero (when `scanning`) or absurd image sizes.
fn check_size(frame: &Frame, scanning: bool) -> Result<(), Error> {
    if scanning && (frame.width == 0 || frame.height == 0) {
        return err(format!(
            "JPEG-LS frame is {}x{}: width and height must not be 0 (DNL is not supported)",
            frame.width, frame.height
        ));
    }
    let n = u64::from(frame.width) * u64::from(frame.height) * frame.ids.len() as u64;
    if n > MAX_SAMPLES {
        return err(format!(
            "JPEG-LS image of {}x{}x{} samples exceeds the limit of {MAX_SAMPLES} samples",
            frame.width,
            frame.height,
            frame.ids.len()
        ));
    }
    Ok(())
}
