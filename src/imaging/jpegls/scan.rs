//! JPEG-LS scan decoding (ITU-T T.87 Annex A, interleaving per Annex B):
//! context determination, MED prediction with bias correction C[Q], error
//! mapping (including the k = 0, 2B[Q] <= -N[Q] case) and the A/B/C/N
//! updates with RESET, run mode with the J[] table and run-interruption
//! samples (RItype, Nn), line buffers with the T.87 edge rules, the three
//! interleave modes, and restart intervals (RSTm). Coding parameters live in
//! `params.rs`, the bit reader in `bits.rs`.

use super::bits::BitReader;
use super::image::Error;
use super::params::Params;

/// Order of the run-length codes, indexed by RUNindex (T.87 A.7.1.1).
const J: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13,
    14, 15,
];

/// Bounds of the bias correction value C[Q] (T.87 A.6.2).
const MIN_C: i32 = -128;
const MAX_C: i32 = 127;

/// Median edge detector prediction (T.87 A.4.1).
#[inline]
fn predict(ra: i32, rb: i32, rc: i32) -> i32 {
    let (hi, lo) = if ra > rb { (ra, rb) } else { (rb, ra) };
    if rc >= hi {
        lo
    } else if rc <= lo {
        hi
    } else {
        ra + rb - rc
    }
}

/// Golomb parameter k: the least k with N << k >= A.
#[inline]
fn golomb_k(n: i32, a: i64) -> u32 {
    let n = i64::from(n.max(1));
    let mut k = 0;
    while k < 48 && (n << k) < a {
        k += 1;
    }
    k
}

#[derive(Clone, Copy)]
struct Context {
    a: i64,
    b: i32,
    c: i32,
    n: i32,
}

#[derive(Clone, Copy)]
struct RunContext {
    a: i64,
    n: i32,
    nn: i32,
}

/// Description of one scan for `decode_scan`.
pub(crate) struct Scan<'s> {
    /// 1-based scan number, for messages.
    pub number: usize,
    pub width: usize,
    pub height: usize,
    /// Output channel of each component of the scan, in scan order.
    pub channels: &'s [usize],
    /// Components per pixel of the output buffer.
    pub stride: usize,
    /// ILV of the scan (0, 1 or 2); a one-component scan is decoded as ILV 0.
    pub interleave: u8,
    pub params: Params,
    /// Lines per restart interval, 0 for none.
    pub restart_interval: u32,
}

struct Coder<'a> {
    data: &'a [u8],
    br: BitReader<'a>,
    p: Params,
    ctx: [Context; 365],
    run: [RunContext; 2],
    scan: usize,
}

impl<'a> Coder<'a> {
    fn new(data: &'a [u8], start: usize, p: Params, scan: usize) -> Self {
        let (ctx, run) = Self::initial_contexts(&p);
        Coder {
            data,
            br: BitReader::new(data, start),
            p,
            ctx,
            run,
            scan,
        }
    }

    /// Context variables at the start of a scan or restart interval (T.87 A.2.1).
    fn initial_contexts(p: &Params) -> ([Context; 365], [RunContext; 2]) {
        let a = p.initial_a();
        let ctx = Context {
            a,
            b: 0,
            c: 0,
            n: 1,
        };
        ([ctx; 365], [RunContext { a, n: 1, nn: 0 }; 2])
    }

    fn reset_contexts(&mut self) {
        (self.ctx, self.run) = Self::initial_contexts(&self.p);
    }

    fn invalid_code(&self) -> Error {
        if let Err(e) = self.check_overrun() {
            return e;
        }
        Error(format!(
            "invalid Golomb code in JPEG-LS scan {} near byte {}",
            self.scan, self.br.pos
        ))
    }

    /// Error unless the bits read so far lie inside the segment.
    fn check_overrun(&self) -> Result<(), Error> {
        if !self.br.overrun() {
            return Ok(());
        }
        let end = self.br.end;
        Err(match self.data.get(end + 1) {
            Some(m) => Error(format!(
                "JPEG-LS scan {} data ends early: marker 0xFF{m:02X} at byte {end} comes before the last sample",
                self.scan
            )),
            None => Error(format!("JPEG-LS stream ends inside scan {} at byte {}", self.scan, self.data.len())),
        })
    }

    /// Moves past restart marker RSTm at the end of the current segment and
    /// resets the context variables.
    fn restart(&mut self, m: u8) -> Result<(), Error> {
        self.check_overrun()?;
        let mut pos = self.br.end;
        while self.data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        match self.data.get(pos + 1) {
            Some(&mk) if mk == 0xD0 + m => {}
            Some(&mk) => {
                return Err(Error(format!(
                    "expected restart marker RST{m} in JPEG-LS scan {} at byte {pos}, found 0xFF{mk:02X}",
                    self.scan
                )))
            }
            None => {
                return Err(Error(format!(
                    "JPEG-LS stream ends inside scan {} at byte {}",
                    self.scan,
                    self.data.len()
                )))
            }
        }
        self.br = BitReader::new(self.data, pos + 2);
        self.reset_contexts();
        Ok(())
    }

    /// Regular-mode sample with gradients d1, d2, d3 (T.87 A.3 to A.6).
    #[inline]
    fn regular(&mut self, ra: i32, rb: i32, rc: i32, d: [i32; 3]) -> Result<i32, Error> {
        let p = self.p;
        let q = 81 * p.quantize(d[0]) + 9 * p.quantize(d[1]) + p.quantize(d[2]);
        let (qi, sign) = if q < 0 {
            (q.unsigned_abs() as usize, -1)
        } else {
            (q as usize, 1)
        };
        let Some(ctx) = self.ctx.get_mut(qi) else {
            return Err(Error(format!("JPEG-LS context {qi} out of range")));
        };
        let px = (predict(ra, rb, rc) + sign * ctx.c).clamp(0, p.maxval);
        let k = golomb_k(ctx.n, ctx.a);
        let m = match self.br.read_golomb(k, p.limit, p.qbpp) {
            Some(m) if m <= 1u64 << p.qbpp => m as i32,
            _ => return Err(self.invalid_code()),
        };
        let err = if p.near == 0 && k == 0 && 2 * ctx.b <= -ctx.n {
            if m & 1 == 1 {
                (m - 1) >> 1
            } else {
                -(m >> 1) - 1
            }
        } else if m & 1 == 0 {
            m >> 1
        } else {
            -((m + 1) >> 1)
        };
        ctx.b += err * p.qstep;
        ctx.a += i64::from(err.abs());
        if ctx.n == p.reset {
            ctx.a >>= 1;
            ctx.b >>= 1;
            ctx.n >>= 1;
        }
        ctx.n += 1;
        if ctx.b <= -ctx.n {
            ctx.b += ctx.n;
            if ctx.c > MIN_C {
                ctx.c -= 1;
            }
            if ctx.b <= -ctx.n {
                ctx.b = -ctx.n + 1;
            }
        } else if ctx.b > 0 {
            ctx.b -= ctx.n;
            if ctx.c < MAX_C {
                ctx.c += 1;
            }
            if ctx.b > 0 {
                ctx.b = 0;
            }
        }
        Ok(p.reconstruct(px, sign * err))
    }

    /// Run-interruption sample (T.87 A.7.2) of type `ritype` (0 or 1).
    fn interruption(
        &mut self,
        ra: i32,
        rb: i32,
        ritype: usize,
        run_index: usize,
    ) -> Result<i32, Error> {
        let p = self.p;
        let (px, sign) = if ritype == 1 {
            (ra, 1)
        } else {
            (rb, if ra > rb { -1 } else { 1 })
        };
        let Some(rc) = self.run.get_mut(ritype) else {
            return Err(Error(format!(
                "JPEG-LS run interruption type {ritype} out of range"
            )));
        };
        let temp = if ritype == 0 {
            rc.a
        } else {
            rc.a + i64::from(rc.n >> 1)
        };
        let k = golomb_k(rc.n, temp);
        let glimit = p.limit.saturating_sub(J[run_index.min(31)] + 1);
        let em = match self.br.read_golomb(k, glimit, p.qbpp) {
            Some(m) if m <= 1u64 << p.qbpp => m as i32,
            _ => return Err(self.invalid_code()),
        };
        let t = em + ritype as i32;
        let magnitude = (t + 1) >> 1;
        let map = t & 1 == 1;
        let positive_when_mapped = k == 0 && 2 * rc.nn < rc.n;
        let err = if map == positive_when_mapped {
            magnitude
        } else {
            -magnitude
        };
        if err < 0 {
            rc.nn += 1;
        }
        rc.a += i64::from((em + 1 - ritype as i32) >> 1);
        if rc.n == p.reset {
            rc.a >>= 1;
            rc.n >>= 1;
            rc.nn >>= 1;
        }
        rc.n += 1;
        Ok(p.reconstruct(px, sign * err))
    }

    /// One line of one component; `prev` and `cur` hold width + 2 samples,
    /// index 0 and width + 1 being the borders (T.87 A.2.1).
    fn line(
        &mut self,
        prev: &[i32],
        cur: &mut [i32],
        w: usize,
        run_index: &mut usize,
    ) -> Result<(), Error> {
        let near = self.p.near;
        cur[0] = prev[1];
        let mut x = 1;
        while x <= w {
            let (ra, rb, rc, rd) = (cur[x - 1], prev[x], prev[x - 1], prev[x + 1]);
            let d = [rd - rb, rb - rc, rc - ra];
            if d.iter().all(|g| g.abs() <= near) {
                x = self.run_line(prev, cur, x, w, run_index)?;
            } else {
                cur[x] = self.regular(ra, rb, rc, d)?;
                x += 1;
            }
        }
        cur[w + 1] = cur[w];
        Ok(())
    }

    /// Run mode from sample x0 of a one-component line; returns the next x.
    fn run_line(
        &mut self,
        prev: &[i32],
        cur: &mut [i32],
        x0: usize,
        w: usize,
        run_index: &mut usize,
    ) -> Result<usize, Error> {
        self.run_pixels(prev, cur, x0, w, 1, run_index)
    }

    fn bad_run(&self) -> Error {
        if let Err(e) = self.check_overrun() {
            return e;
        }
        Error(format!(
            "JPEG-LS run in scan {} runs past the end of the line near byte {}",
            self.scan, self.br.pos
        ))
    }

    /// One line of a sample-interleaved scan of `nc` components; the buffers
    /// hold (width + 2) * nc samples, pixel-interleaved, with border pixels.
    fn pixel_line(
        &mut self,
        prev: &[i32],
        cur: &mut [i32],
        w: usize,
        nc: usize,
        run_index: &mut usize,
    ) -> Result<(), Error> {
        let near = self.p.near;
        cur[..nc].copy_from_slice(&prev[nc..2 * nc]);
        let mut x = 1;
        let mut grads = [[0i32; 3]; 4];
        while x <= w {
            let mut flat = true;
            for (c, g) in grads.iter_mut().enumerate().take(nc) {
                let (ra, rb) = (cur[(x - 1) * nc + c], prev[x * nc + c]);
                let (rc, rd) = (prev[(x - 1) * nc + c], prev[(x + 1) * nc + c]);
                *g = [rd - rb, rb - rc, rc - ra];
                flat &= g.iter().all(|d| d.abs() <= near);
            }
            if flat {
                x = self.run_pixels(prev, cur, x, w, nc, run_index)?;
            } else {
                for (c, g) in grads.iter().enumerate().take(nc) {
                    let (ra, rb, rc) = (
                        cur[(x - 1) * nc + c],
                        prev[x * nc + c],
                        prev[(x - 1) * nc + c],
                    );
                    cur[x * nc + c] = self.regular(ra, rb, rc, *g)?;
                }
                x += 1;
            }
        }
        let (body, border) = cur.split_at_mut((w + 1) * nc);
        border[..nc].copy_from_slice(&body[w * nc..]);
        Ok(())
    }

    /// Run mode over whole pixels of a line of `nc` interleaved components (T.87 A.7 for one
    /// component, B.3 for sample interleaving); returns the next x.
    fn run_pixels(
        &mut self,
        prev: &[i32],
        cur: &mut [i32],
        x0: usize,
        w: usize,
        nc: usize,
        run_index: &mut usize,
    ) -> Result<usize, Error> {
        let mut ra = [0i32; 4];
        ra[..nc].copy_from_slice(&cur[(x0 - 1) * nc..x0 * nc]);
        let ra = &ra[..nc];
        let mut x = x0;
        loop {
            let ri = (*run_index).min(31);
            if self.br.read_bit() {
                let seg = 1usize << J[ri];
                let n = seg.min(w + 1 - x);
                cur[x * nc..(x + n) * nc]
                    .chunks_exact_mut(nc)
                    .for_each(|px| px.copy_from_slice(ra));
                x += n;
                if n == seg && ri < 31 {
                    *run_index = ri + 1;
                }
                if x > w {
                    return Ok(x);
                }
            } else {
                let cnt = self.br.read_bits(J[ri]) as usize;
                if cnt > w - x {
                    return Err(self.bad_run());
                }
                cur[x * nc..(x + cnt) * nc]
                    .chunks_exact_mut(nc)
                    .for_each(|px| px.copy_from_slice(ra));
                x += cnt;
                for (c, &a) in ra.iter().enumerate() {
                    let rb = prev[x * nc + c];
                    // One component: RItype says whether Ra and Rb are alike (A.7.2); pixels of
                    // several components always code their interruption as RItype 0 (B.3).
                    let ritype = usize::from(nc == 1 && (a - rb).abs() <= self.p.near);
                    cur[x * nc + c] = self.interruption(a, rb, ritype, ri)?;
                }
                *run_index = ri.saturating_sub(1);
                return Ok(x + 1);
            }
        }
    }
}

/// Copies samples 1..=w of a line buffer (stride `nc`, component `c`) into
/// channel `ch` of row `y` of the pixel-interleaved output.
fn store(
    out: &mut [u16],
    scan: &Scan,
    y: usize,
    line: &[i32],
    nc: usize,
    c: usize,
    ch: usize,
) -> Result<(), Error> {
    let row_len = scan.width * scan.stride;
    let row = out
        .get_mut(y * row_len..(y + 1) * row_len)
        .ok_or_else(|| Error("JPEG-LS output buffer too small".into()))?;
    let src = line.iter().skip(nc + c).step_by(nc).take(scan.width);
    for (px, &v) in row.chunks_exact_mut(scan.stride).zip(src) {
        if let Some(s) = px.get_mut(ch) {
            *s = v as u16;
        }
    }
    Ok(())
}

/// Decodes one scan whose entropy-coded data starts at `start`, writing its
/// components into `out` (pixel-interleaved, `scan.stride` per pixel).
/// Returns the position just after the scan data (the next marker).
pub(crate) fn decode_scan(
    data: &[u8],
    start: usize,
    scan: &Scan,
    out: &mut [u16],
) -> Result<usize, Error> {
    let (w, h, nc) = (scan.width, scan.height, scan.channels.len());
    if nc == 0 || nc > 4 || w == 0 {
        return Err(Error(format!(
            "JPEG-LS scan {} has no samples to decode",
            scan.number
        )));
    }
    if out.len() < w * h * scan.stride || scan.channels.iter().any(|&ch| ch >= scan.stride) {
        return Err(Error("JPEG-LS output buffer too small".into()));
    }
    let mut coder = Coder::new(data, start, scan.params, scan.number);
    let ri = scan.restart_interval as usize;
    let mut restarts = 0u8;
    if nc > 1 && scan.interleave == 2 {
        let mut prev = vec![0i32; (w + 2) * nc];
        let mut cur = vec![0i32; (w + 2) * nc];
        let mut run_index = 0usize;
        for y in 0..h {
            if ri > 0 && y > 0 && y % ri == 0 {
                coder.restart(restarts % 8)?;
                restarts = restarts.wrapping_add(1);
                prev.fill(0);
                run_index = 0;
            }
            coder.pixel_line(&prev, &mut cur, w, nc, &mut run_index)?;
            coder.check_overrun()?;
            for (c, &ch) in scan.channels.iter().enumerate() {
                store(out, scan, y, &cur, nc, c, ch)?;
            }
            std::mem::swap(&mut prev, &mut cur);
        }
    } else {
        let mut prev = vec![vec![0i32; w + 2]; nc];
        let mut cur = vec![vec![0i32; w + 2]; nc];
        let mut run_index = [0usize; 4];
        for y in 0..h {
            if ri > 0 && y > 0 && y % ri == 0 {
                coder.restart(restarts % 8)?;
                restarts = restarts.wrapping_add(1);
                prev.iter_mut().for_each(|l| l.fill(0));
                run_index = [0; 4];
            }
            for (c, ((p, l), r)) in prev
                .iter()
                .zip(cur.iter_mut())
                .zip(run_index.iter_mut())
                .enumerate()
            {
                coder.line(p, l, w, r)?;
                if let Some(&ch) = scan.channels.get(c) {
                    store(out, scan, y, l, 1, 0, ch)?;
                }
            }
            coder.check_overrun()?;
            std::mem::swap(&mut prev, &mut cur);
        }
    }
    coder.check_overrun()?;
    Ok(coder.br.end)
}
