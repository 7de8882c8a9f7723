//! Inverse HP colour transforms of JPEG-LS streams (HP1, HP2, HP3), signalled
//! by the APP8 "mrfx" segment that HP's LOCO-I and CharLS write.
//!
//! With RANGE = 2^P and all arithmetic modulo RANGE, the encoder codes
//! (v1, v2, v3) from (R, G, B) as
//! - HP1: v1 = R - G + RANGE/2, v2 = G, v3 = B - G + RANGE/2
//! - HP2: v1 = R - G + RANGE/2, v2 = G, v3 = B - ((R + G) >> 1) + RANGE/2
//! - HP3: v2 = B - G + RANGE/2, v3 = R - G + RANGE/2,
//!   v1 = G + ((v2 + v3) >> 2) - RANGE/4
//!
//! and `undo` inverts these in place on pixel-interleaved samples.

use super::image::ColourTransform;

/// Undoes `transform` on the first three components of each pixel.
pub(crate) fn undo(transform: ColourTransform, bits: u8, samples: &mut [u16], components: usize) {
    if components < 3 || transform == ColourTransform::None {
        return;
    }
    let range = 1i32 << bits;
    let mask = range - 1;
    let half = range >> 1;
    let quarter = range >> 2;
    for px in samples.chunks_exact_mut(components) {
        let [s1, s2, s3, ..] = px else { continue };
        let (v1, v2, v3) = (i32::from(*s1), i32::from(*s2), i32::from(*s3));
        let (r, g, b) = match transform {
            ColourTransform::None => (v1, v2, v3),
            ColourTransform::Hp1 => ((v1 + v2 - half) & mask, v2, (v3 + v2 - half) & mask),
            ColourTransform::Hp2 => {
                let r = (v1 + v2 - half) & mask;
                (r, v2, (v3 + ((r + v2) >> 1) - half) & mask)
            }
            ColourTransform::Hp3 => {
                let g = (v1 - ((v2 + v3) >> 2) + quarter) & mask;
                ((v3 + g - half) & mask, g, (v2 + g - half) & mask)
            }
        };
        *s1 = r as u16;
        *s2 = g as u16;
        *s3 = b as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward transforms, written out from the formulas above.
    fn forward(t: ColourTransform, bits: u8, r: i32, g: i32, b: i32) -> [u16; 3] {
        let range = 1i32 << bits;
        let (mask, half, quarter) = (range - 1, range / 2, range / 4);
        let (v1, v2, v3) = match t {
            ColourTransform::None => (r, g, b),
            ColourTransform::Hp1 => ((r - g + half) & mask, g, (b - g + half) & mask),
            ColourTransform::Hp2 => ((r - g + half) & mask, g, (b - ((r + g) >> 1) + half) & mask),
            ColourTransform::Hp3 => {
                let v2 = (b - g + half) & mask;
                let v3 = (r - g + half) & mask;
                ((g + ((v2 + v3) >> 2) - quarter) & mask, v2, v3)
            }
        };
        [v1 as u16, v2 as u16, v3 as u16]
    }

    #[test]
    fn inverse_undoes_forward() {
        let mut seed = 0x1234_5678u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for bits in [2u8, 5, 8, 12, 16] {
            let max = (1u32 << bits) - 1;
            for t in [
                ColourTransform::Hp1,
                ColourTransform::Hp2,
                ColourTransform::Hp3,
            ] {
                let mut rgb = Vec::new();
                let mut coded = Vec::new();
                for i in 0..2000u32 {
                    let px = match i {
                        0 => [0, 0, 0],
                        1 => [max, max, max],
                        2 => [max, 0, max],
                        3 => [0, max, 0],
                        _ => [next() & max, next() & max, next() & max],
                    };
                    rgb.extend(px.iter().map(|&v| v as u16));
                    coded.extend(forward(t, bits, px[0] as i32, px[1] as i32, px[2] as i32));
                }
                undo(t, bits, &mut coded, 3);
                assert_eq!(coded, rgb, "{t:?} at {bits} bits");
            }
        }
    }

    #[test]
    fn hp1_by_hand() {
        // 8-bit R=200, G=100, B=50 codes as (228, 100, 78).
        let mut s = vec![228u16, 100, 78];
        undo(ColourTransform::Hp1, 8, &mut s, 3);
        assert_eq!(s, [200, 100, 50]);
        // Fourth component untouched.
        let mut s = vec![228u16, 100, 78, 9];
        undo(ColourTransform::Hp1, 8, &mut s, 4);
        assert_eq!(s, [200, 100, 50, 9]);
    }
}
