//! Attention's softmax on the CPU in one pass over the scores: scale, additive mask, row max,
//! exp, sum and normalisation, rows in parallel, with an exp the compiler vectorises (AVX-512 or
//! AVX2 + FMA where the CPU has them, chosen at run time).
//!
//! candle's `softmax_last_dim` calls libm's scalar `expf` per score, after separate passes for
//! the scale and the mask: at SigLIP's 4096 patches (7.2 G scores an image) the exps alone took
//! an eighth of the vision tower's time in a profile. The exp here is Cephes' `expf` (range
//! reduction by ln 2 in two parts, a degree-5 minimax polynomial: within 2 ulp of the true
//! value, `tests` below), so probabilities move by about 1e-7 relative, far inside the parity
//! bars (attention 1e-5 against transformers).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `softmax(scores * scale + mask)` over the last dimension. `scores` is (..., rows, S); `mask`,
/// when given, is (rows, S) and is added to every leading index (heads) alike. On the CPU in f32
/// this is one fused pass; elsewhere candle's ops.
pub fn scaled_masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    if matches!(scores.device(), Device::Cpu) && scores.dtype() == DType::F32 {
        let dims = scores.dims();
        let (rows, keys) = match dims {
            [.., r, s] => (*r, *s),
            _ => candle_core::bail!("softmax over a tensor of shape {dims:?}"),
        };
        let mask = match mask {
            Some(m) => {
                if m.dims() != [rows, keys] {
                    candle_core::bail!("a mask of {:?} for scores of {dims:?}", m.dims());
                }
                Some(m.flatten_all()?.to_vec1::<f32>()?)
            }
            None => None,
        };
        let op = FusedSoftmax {
            scale: scale as f32,
            mask,
            rows,
        };
        return scores.contiguous()?.apply_op1_no_bwd(&op);
    }
    let scaled = (scores * scale)?;
    let masked = match mask {
        Some(mask) => scaled.broadcast_add(mask)?,
        None => scaled,
    };
    candle_nn::ops::softmax_last_dim(&masked)
}

struct FusedSoftmax {
    scale: f32,
    /// (rows, S), row-major.
    mask: Option<Vec<f32>>,
    /// Rows of one mask (the second-to-last dimension of the scores).
    rows: usize,
}

impl CustomOp1 for FusedSoftmax {
    fn name(&self) -> &'static str {
        "fovea-scaled-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused softmax needs contiguous scores");
        };
        let CpuStorage::F32(all) = storage else {
            candle_core::bail!("fused softmax needs f32 scores");
        };
        let scores = &all[start..end];
        let keys = *layout
            .dims()
            .last()
            .expect("checked: at least two dimensions");
        let mut out = vec![0f32; scores.len()];
        let kernel = Kernel::best();
        out.par_chunks_mut(keys)
            .zip(scores.par_chunks(keys))
            .enumerate()
            .with_min_len(4)
            .for_each(|(index, (out, row))| {
                let mask = self
                    .mask
                    .as_ref()
                    .map(|m| &m[(index % self.rows) * keys..(index % self.rows + 1) * keys]);
                kernel.row(row, mask, self.scale, out);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[derive(Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                return Kernel::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    fn row(self, row: &[f32], mask: Option<&[f32]>, scale: f32, out: &mut [f32]) {
        match self {
            // SAFETY: `best` chose these only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { row_avx512(row, mask, scale, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { row_avx2(row, mask, scale, out) },
            Kernel::Portable => softmax_row(row, mask, scale, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn row_avx512(row: &[f32], mask: Option<&[f32]>, scale: f32, out: &mut [f32]) {
    softmax_row(row, mask, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(row: &[f32], mask: Option<&[f32]>, scale: f32, out: &mut [f32]) {
    softmax_row(row, mask, scale, out)
}

/// Lanes of the partial maxima and sums (independent, so the loops vectorise).
const LANES: usize = 16;

/// One row: `out = softmax(row * scale + mask)`.
#[inline(always)]
fn softmax_row(row: &[f32], mask: Option<&[f32]>, scale: f32, out: &mut [f32]) {
    match mask {
        Some(mask) => {
            for ((o, &x), &m) in out.iter_mut().zip(row).zip(mask) {
                *o = x * scale + m;
            }
        }
        None => {
            for (o, &x) in out.iter_mut().zip(row) {
                *o = x * scale;
            }
        }
    }
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut chunks = out.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in maxima.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&maxima)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sums = [0f32; LANES];
    let mut chunks = out.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut total = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        total += *v;
    }
    let total = total + sums.iter().sum::<f32>();
    let inverse = 1.0 / total;
    for v in out.iter_mut() {
        *v *= inverse;
    }
}

/// `e^x` in f32 (Cephes' `expf`): `x = n ln 2 + f` with `|f| <= ln 2 / 2` (ln 2 in two parts,
/// so `n ln 2` is exact), a degree-5 minimax polynomial for `e^f`, and `2^n` built in the
/// exponent bits. 0 below -87 (`-inf` included: a masked score), no branches.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5 x 2^23 trick (no rounding instruction needed).
    const SHIFTER: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.0, 88.0);
    let n = (clamped * LOG2E + SHIFTER) - SHIFTER;
    let f = clamped - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * f + 1.398_2e-3) * f + 8.333_452e-3) * f + 4.166_579_6e-2) * f
        + 0.166_666_65)
        * f
        + 0.5;
    let e = p * f * f + f + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * two_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let ours = exp(x) as f64;
            let truth = (x as f64).exp();
            worst = worst.max((ours - truth).abs() / truth);
            x += 0.000_731;
        }
        // 2 ulp of f32 is 2.4e-7 relative.
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(-90.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    /// Softmax written out in f64 by hand, against every kernel this CPU has.
    #[test]
    fn rows_match_softmax_by_hand() {
        let keys = 77; // not a multiple of the lanes: the remainder path runs too
        let row: Vec<f32> = (0..keys)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.9)
            .collect();
        let mut mask = vec![0f32; keys];
        mask[3] = f32::NEG_INFINITY;
        mask[40] = f32::MIN;
        mask[76] = f32::NEG_INFINITY;
        let scale = 0.125f32;
        let scaled: Vec<f64> = row
            .iter()
            .zip(&mask)
            .map(|(&x, &m)| x as f64 * scale as f64 + m as f64)
            .collect();
        let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = scaled.iter().map(|v| (v - max).exp()).sum();
        let expected: Vec<f64> = scaled.iter().map(|v| (v - max).exp() / total).collect();
        let mut kernels = vec![Kernel::Portable, Kernel::best()];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            kernels.push(Kernel::Avx2);
        }
        for kernel in kernels {
            let mut out = vec![0f32; keys];
            kernel.row(&row, Some(&mask), scale, &mut out);
            for (i, (&o, &e)) in out.iter().zip(&expected).enumerate() {
                assert!(
                    (o as f64 - e).abs() <= 1e-6 * e.max(1e-30) + 1e-12,
                    "{i}: {o} vs {e}"
                );
            }
            assert_eq!((out[3], out[40], out[76]), (0.0, 0.0, 0.0));
        }
    }

    /// The fused op against candle's ops on a (1, 2, 3, 77) block with a (3, 77) mask.
    #[test]
    fn fused_equals_candle_ops() -> Result<()> {
        let device = Device::Cpu;
        let values: Vec<f32> = (0..2 * 3 * 77)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.21)
            .collect();
        let scores = Tensor::from_vec(values, (1, 2, 3, 77), &device)?;
        let mut mask = vec![0f32; 3 * 77];
        for (i, m) in mask.iter_mut().enumerate() {
            if i % 77 > 70 + i / 77 {
                *m = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(mask, (3, 77), &device)?;
        let ours = scaled_masked_softmax(&scores, 0.3, Some(&mask))?;
        let theirs = candle_nn::ops::softmax_last_dim(&(scores * 0.3)?.broadcast_add(&mask)?)?;
        let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-7, "max |diff| {diff:e}");
        Ok(())
    }
}
