//! Coding parameters of a JPEG-LS scan (ITU-T T.87 A.2.1 and C.2.4.1.1):
//! MAXVAL, NEAR, the thresholds T1..T3 and RESET (defaults or LSE type 1
//! presets, validated), and the derived RANGE, qbpp and LIMIT; also the
//! gradient quantization and the near-lossless reconstruction they define.

use super::image::Error;

/// Basic default thresholds of T.87 C.2.4.1.1.
const BASIC_T1: i32 = 3;
const BASIC_T2: i32 = 7;
const BASIC_T3: i32 = 21;

/// Preset coding parameters of an LSE type 1 segment; 0 means "default".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Preset {
    pub maxval: u16,
    pub t1: u16,
    pub t2: u16,
    pub t3: u16,
    pub reset: u16,
}

/// Coding parameters of one scan, with the values derived from them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub maxval: i32,
    pub near: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    pub reset: i32,
    range: i32,
    pub qbpp: u32,
    pub limit: u32,
    pub qstep: i32,
}

/// Smallest `n` with `2^n >= v` (for v >= 1).
fn ceil_log2(v: i32) -> u32 {
    let mut n = 0;
    while n < 31 && (1i32 << n) < v {
        n += 1;
    }
    n
}

/// Default thresholds T1, T2, T3 for MAXVAL and NEAR (T.87 C.2.4.1.1).
fn default_thresholds(maxval: i32, near: i32) -> (i32, i32, i32) {
    let clamp = |i: i32, j: i32| if i > maxval || i < j { j } else { i };
    if maxval >= 128 {
        let factor = (maxval.min(4095) + 128) / 256;
        let t1 = clamp(factor * (BASIC_T1 - 2) + 2 + 3 * near, near + 1);
        let t2 = clamp(factor * (BASIC_T2 - 3) + 3 + 5 * near, t1);
        let t3 = clamp(factor * (BASIC_T3 - 4) + 4 + 7 * near, t2);
        (t1, t2, t3)
    } else {
        let factor = 256 / (maxval + 1);
        let t1 = clamp((BASIC_T1 / factor + 3 * near).max(2), near + 1);
        let t2 = clamp((BASIC_T2 / factor + 5 * near).max(3), t1);
        let t3 = clamp((BASIC_T3 / factor + 7 * near).max(4), t2);
        (t1, t2, t3)
    }
}

impl Params {
    /// Parameters for a scan of `bits`-bit samples with the given NEAR and
    /// the preset values in force (0 = default), validated as T.87 C.2.4.1.1 asks.
    pub(crate) fn new(bits: u8, near: u16, preset: Preset) -> Result<Params, Error> {
        let full = (1i32 << bits) - 1;
        let maxval = if preset.maxval == 0 {
            full
        } else {
            i32::from(preset.maxval)
        };
        if maxval > full {
            return Err(Error(format!(
                "JPEG-LS MAXVAL {maxval} exceeds {full}, the largest {bits}-bit sample"
            )));
        }
        let near = i32::from(near);
        let near_max = (maxval / 2).min(255);
        if near > near_max {
            return Err(Error(format!(
                "JPEG-LS NEAR {near} is out of range 0..={near_max} for MAXVAL {maxval}"
            )));
        }
        let (d1, d2, d3) = default_thresholds(maxval, near);
        let pick = |v: u16, d: i32| if v == 0 { d } else { i32::from(v) };
        let (t1, t2, t3) = (
            pick(preset.t1, d1),
            pick(preset.t2, d2),
            pick(preset.t3, d3),
        );
        if !(near < t1 && t1 <= t2 && t2 <= t3 && t3 <= maxval) {
            return Err(Error(format!(
                "invalid JPEG-LS thresholds T1={t1} T2={t2} T3={t3} for MAXVAL {maxval} and NEAR {near}"
            )));
        }
        let reset = pick(preset.reset, 64);
        if reset < 3 || reset > maxval.max(255) {
            return Err(Error(format!(
                "invalid JPEG-LS RESET {reset} for MAXVAL {maxval} (must be 3..={})",
                maxval.max(255)
            )));
        }
        let qstep = 2 * near + 1;
        let range = (maxval + 2 * near) / qstep + 1;
        let bpp = ceil_log2(maxval + 1).max(2);
        Ok(Params {
            maxval,
            near,
            t1,
            t2,
            t3,
            reset,
            range,
            qbpp: ceil_log2(range),
            limit: 2 * (bpp + bpp.max(8)),
            qstep,
        })
    }

    /// Gradient quantization to -4..=4 (T.87 A.3.3).
    #[inline]
    pub(crate) fn quantize(&self, d: i32) -> i32 {
        if d <= -self.t3 {
            -4
        } else if d <= -self.t2 {
            -3
        } else if d <= -self.t1 {
            -2
        } else if d < -self.near {
            -1
        } else if d <= self.near {
            0
        } else if d < self.t1 {
            1
        } else if d < self.t2 {
            2
        } else if d < self.t3 {
            3
        } else {
            4
        }
    }

    /// Reconstructed sample from prediction and (signed, quantized) error,
    /// with the modulo reduction and clamping of T.87 A.4.
    #[inline]
    pub(crate) fn reconstruct(&self, px: i32, err: i32) -> i32 {
        let mut rx = px + err * self.qstep;
        if rx < -self.near {
            rx += self.range * self.qstep;
        } else if rx > self.maxval + self.near {
            rx -= self.range * self.qstep;
        }
        rx.clamp(0, self.maxval)
    }

    /// Initial value of A[Q] (T.87 A.2.1).
    pub(crate) fn initial_a(&self) -> i64 {
        i64::from(((self.range + 32) / 64).max(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_thresholds_match_t87() {
        // T.87 C.2.4.1.1.2: 8-bit lossless defaults are 3, 7, 21.
        assert_eq!(default_thresholds(255, 0), (3, 7, 21));
        // 12-bit and 16-bit (MAXVAL clamped to 4095 in FACTOR).
        assert_eq!(default_thresholds(4095, 0), (18, 67, 276));
        assert_eq!(default_thresholds(65535, 0), (18, 67, 276));
        // Near-lossless shifts the thresholds.
        assert_eq!(default_thresholds(255, 3), (12, 22, 42));
        // MAXVAL < 128: MAX(2, BASIC_T1 / FACTOR + 3 * NEAR), as CharLS and
        // libjpeg read it (the HP/UBC V.2.1 code adds 3 * NEAR after the MAX).
        assert_eq!(default_thresholds(3, 0), (2, 3, 3));
        assert_eq!(default_thresholds(31, 0), (2, 3, 4));
        assert_eq!(default_thresholds(31, 1), (3, 5, 9));
    }

    #[test]
    fn derived_parameters() {
        let p = Params::new(8, 0, Preset::default()).unwrap();
        assert_eq!((p.range, p.qbpp, p.limit), (256, 8, 32));
        let p = Params::new(16, 0, Preset::default()).unwrap();
        assert_eq!((p.range, p.qbpp, p.limit), (65536, 16, 64));
        let p = Params::new(8, 3, Preset::default()).unwrap();
        assert_eq!((p.range, p.qbpp), (38, 6));
        // An LSE MAXVAL sets RANGE and LIMIT (bpp = 10 for MAXVAL 1000).
        let preset = Preset {
            maxval: 1000,
            ..Preset::default()
        };
        let p = Params::new(12, 0, preset).unwrap();
        assert_eq!((p.range, p.qbpp, p.limit), (1001, 10, 40));
        assert!(Params::new(
            8,
            0,
            Preset {
                maxval: 256,
                ..Preset::default()
            }
        )
        .is_err());
        assert!(Params::new(8, 128, Preset::default()).is_err());
        assert!(Params::new(
            8,
            0,
            Preset {
                reset: 2,
                ..Preset::default()
            }
        )
        .is_err());
    }
}
