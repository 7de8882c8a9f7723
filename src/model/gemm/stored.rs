//! Products with weights kept in the checkpoint's bf16 or f16, never widened in memory.
//!
//! candle 0.11's CPU matmul has no bf16, so a bf16 checkpoint used to be widened to f32 a block
//! of rows per call (memory traffic x3 and one f32 copy of a block at a time). Here the weights
//! stay 2 bytes each, in a layout of groups of 16 output rows, and are widened in registers:
//!
//! - [`HalfKernel::Avx512`], [`HalfKernel::Avx2`]: weights widened in registers, f32
//!   activations, f32 FMA: the product of the stored weights with the exact activations.
//! - [`HalfKernel::Scalar`]: the same sums in plain Rust.
//!
//! - `vdpbf16ps` (AVX512-BF16, activations rounded to bf16 as AMX and transformers in bf16 do)
//!   for bf16 products of at least 32 rows (prefills, vision towers) on AMD CPUs (Zen 4 and
//!   later), where it runs two bf16 pairs per lane at the FMA's rate: see [`PackedHalf::uses_bf16_dot`].
//!   On a Sapphire Rapids it measured 151 vs 182 GFLOP/s for the f32 path on the 7B MLP matrix
//!   (600 x 3584 x 18944; one `vdpbf16ps` a cycle does what two FMAs do), and AMX is faster
//!   still there, so Intel CPUs never take it.
//!
//! Layout inside a group, for each pair of inputs (i, i + 1): 32 values, 64 bytes. bf16:
//! interleaved (lane 0 input i, lane 0 input i + 1, lane 1 ...): one 32-bit load holds both,
//! widened by `<< 16` for input i and `& 0xffff0000` for i + 1. f16: the 16 lanes of input i,
//! then those of i + 1 (what `vcvtph2ps` reads).

use std::sync::OnceLock;

use half::{bf16, f16};

use super::tile::{for_each_tile, GROUP, MR};

/// The stored precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfType {
    Bf16,
    F16,
}

/// Which kernel multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfKernel {
    Avx512,
    Avx2,
    Scalar,
}

impl HalfKernel {
    fn detect() -> (bool, bool) {
        static FEATURES: OnceLock<(bool, bool)> = OnceLock::new();
        *FEATURES.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx512 = is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                let avx2 = is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                (avx512, avx2)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                (false, false)
            }
        })
    }

    /// Every kernel this CPU runs, fastest first.
    pub fn available() -> Vec<HalfKernel> {
        let (avx512, avx2) = HalfKernel::detect();
        let mut all = Vec::new();
        if avx512 {
            all.push(HalfKernel::Avx512);
        }
        if avx2 {
            all.push(HalfKernel::Avx2);
        }
        all.push(HalfKernel::Scalar);
        all
    }

    /// The kernel of the tier the kernels run at (`FOVEA_CPU` may ask for a lower one).
    pub fn best() -> HalfKernel {
        use super::tier::Tier;
        let available = HalfKernel::available();
        let wanted = match super::tier::current() {
            Tier::Amx | Tier::Avx512Vnni => HalfKernel::Avx512,
            Tier::AvxVnni | Tier::Avx2 => HalfKernel::Avx2,
            Tier::Portable => HalfKernel::Scalar,
        };
        if available.contains(&wanted) {
            wanted
        } else {
            available[0]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HalfKernel::Avx512 => "avx512",
            HalfKernel::Avx2 => "avx2",
            HalfKernel::Scalar => "scalar",
        }
    }
}

/// An (n, k) bf16 or f16 matrix in the kernels' layout (`k` even).
#[derive(Clone)]
pub struct PackedHalf {
    n: usize,
    k: usize,
    dtype: HalfType,
    /// `groups * k * GROUP` values (bits).
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedHalf({:?}, {} x {})", self.dtype, self.n, self.k)
    }
}

impl PackedHalf {
    /// Pack an (n, k) matrix whose rows `rows_of(range)` gives as row-major bits of `dtype`,
    /// whole groups of 16 rows at a time, at most `rows_per_call` rows per call.
    pub fn pack<E>(
        n: usize,
        k: usize,
        dtype: HalfType,
        rows_per_call: usize,
        rows_of: impl Fn(std::ops::Range<usize>) -> Result<Vec<u16>, E>,
    ) -> Result<PackedHalf, E> {
        assert!(
            k % 2 == 0 && k > 0,
            "packed halves need an even number of inputs"
        );
        let groups = n.div_ceil(GROUP);
        let mut data = vec![0u16; groups * k * GROUP];
        let groups_per_call = (rows_per_call / GROUP).max(1);
        for (call, chunk) in data.chunks_mut(groups_per_call * k * GROUP).enumerate() {
            let first = call * groups_per_call * GROUP;
            let last = (first + groups_per_call * GROUP).min(n);
            let rows = rows_of(first..last)?;
            for (offset, row) in rows.chunks(k).enumerate() {
                let (g, lane) = (offset / GROUP, offset % GROUP);
                let group = &mut chunk[g * k * GROUP..(g + 1) * k * GROUP];
                for (i, &bits) in row.iter().enumerate() {
                    group[position(dtype, lane, i)] = bits;
                }
            }
        }
        Ok(PackedHalf { n, k, dtype, data })
    }

    pub fn dtype(&self) -> HalfType {
        self.dtype
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }

    /// The weights as f32 (n, k), row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (row, out_row) in out.chunks_mut(self.k).enumerate() {
            let (g, lane) = (row / GROUP, row % GROUP);
            let group = &self.data[g * self.k * GROUP..];
            for (i, value) in out_row.iter_mut().enumerate() {
                *value = widen(self.dtype, group[position(self.dtype, lane, i)]);
            }
        }
        out
    }

    /// `x (m, k) -> x W^T (m, n)` with the best kernel: AMX tiles for a bf16 prefill where
    /// the CPU has them (activations rounded to bf16, see `amx.rs`), `vdpbf16ps` where that is
    /// the faster path ([`Self::uses_bf16_dot`]), else f32 FMA.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if self.uses_amx(m) {
            let weights = super::amx::Weights::Packed(&self.data);
            return super::amx::matmul(self.n, self.k, weights, x, m);
        }
        #[cfg(target_arch = "x86_64")]
        if self.uses_bf16_dot(m) {
            return self.matmul_bf16_dot(x, m);
        }
        self.matmul_with(HalfKernel::best(), x, m)
    }

    /// Whether an `m`-row product runs on `vdpbf16ps`: a bf16 matrix, at least 32 rows, on an
    /// AMD CPU with AVX512-BF16 at the AVX-512 tier (not forced lower by `FOVEA_CPU`), no AMX.
    pub fn uses_bf16_dot(&self, m: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use super::tier::Tier;
            static FAST: OnceLock<bool> = OnceLock::new();
            let fast = *FAST.get_or_init(|| {
                let id = std::arch::x86_64::__cpuid(0);
                let amd = [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
                amd && is_x86_feature_detected!("avx512bf16") && HalfKernel::detect().0
            });
            fast && self.dtype == HalfType::Bf16
                && m >= super::amx::MIN_ROWS
                && !super::amx::available()
                && matches!(super::tier::current(), Tier::Amx | Tier::Avx512Vnni)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = m;
            false
        }
    }

    /// The `vdpbf16ps` product (the caller checked [`Self::uses_bf16_dot`] or the CPU's
    /// AVX512-BF16): activations rounded to bf16 once, f32 sums.
    #[cfg(target_arch = "x86_64")]
    fn matmul_bf16_dot(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not (m, k)");
        assert_eq!(self.dtype, HalfType::Bf16);
        let mut a = vec![0u16; x.len()];
        // SAFETY: AVX-512 F/BW and AVX512-BF16 (checked by the caller); equal lengths.
        unsafe { super::x86_bf16::round_to_bf16(x, &mut a) };
        self.tiles(m, |row, rows, w, tile| {
            let a = &a[row * self.k..(row + rows) * self.k];
            // SAFETY: as above; the slices are two groups and `rows` activation rows.
            unsafe { super::x86_bf16::bf16_dot_tile_avx512(rows, self.k, w, a, tile) }
        })
    }

    /// The (m, n) output, each register tile computed by `tile(row, rows, groups, tile)` from
    /// the two groups of weights it covers (the second repeated past the last group).
    fn tiles(
        &self,
        m: usize,
        tile: impl Fn(usize, usize, [&[u16]; 2], &mut [f32; MR * 2 * GROUP]) + Sync,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * self.n];
        let groups = self.n.div_ceil(GROUP);
        let group_len = self.k * GROUP;
        for_each_tile(m, self.n, &mut out, |row, rows, g, buffer| {
            let second = if g + 1 < groups { g + 1 } else { g };
            let w = [
                &self.data[g * group_len..(g + 1) * group_len],
                &self.data[second * group_len..(second + 1) * group_len],
            ];
            tile(row, rows, w, buffer)
        });
        out
    }

    /// Whether an `m`-row product goes to the AMX tiles.
    pub fn uses_amx(&self, m: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.dtype == HalfType::Bf16
                && m >= super::amx::MIN_ROWS
                && self.k % 32 == 0
                && super::amx::available()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = m;
            false
        }
    }

    /// The same with a chosen kernel (one of [`HalfKernel::available`]).
    pub fn matmul_with(&self, kernel: HalfKernel, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not (m, k)");
        assert!(
            HalfKernel::available().contains(&kernel),
            "kernel {} does not run here",
            kernel.name()
        );
        self.tiles(m, |row, rows, w, tile| {
            let x = &x[row * self.k..(row + rows) * self.k];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                HalfKernel::Avx512 => {
                    // SAFETY: AVX-512 F/BW, FMA, F16C checked by `available`.
                    unsafe {
                        super::x86::half_tile_avx512(
                            rows,
                            self.k,
                            self.dtype == HalfType::Bf16,
                            w,
                            x,
                            tile,
                        )
                    }
                }
                #[cfg(target_arch = "x86_64")]
                HalfKernel::Avx2 => {
                    // SAFETY: AVX2, FMA, F16C checked by `available`.
                    unsafe {
                        super::x86::half_tile_avx2(
                            rows,
                            self.k,
                            self.dtype == HalfType::Bf16,
                            w,
                            x,
                            tile,
                        )
                    }
                }
                _ => tile_scalar(self.dtype, rows, self.k, w, x, tile),
            }
        })
    }
}

/// Where input `i` of output `lane` lives inside its group.
fn position(dtype: HalfType, lane: usize, i: usize) -> usize {
    let pair = (i / 2) * 2 * GROUP;
    match dtype {
        HalfType::Bf16 => pair + lane * 2 + i % 2,
        HalfType::F16 => pair + (i % 2) * GROUP + lane,
    }
}

fn widen(dtype: HalfType, bits: u16) -> f32 {
    match dtype {
        HalfType::Bf16 => bf16::from_bits(bits).to_f32(),
        HalfType::F16 => f16::from_bits(bits).to_f32(),
    }
}

fn tile_scalar(
    dtype: HalfType,
    rows: usize,
    k: usize,
    w: [&[u16]; 2],
    x: &[f32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    for r in 0..rows {
        for (half, w) in w.iter().enumerate() {
            for lane in 0..GROUP {
                let mut acc = 0f32;
                for i in 0..k {
                    acc += widen(dtype, w[position(dtype, lane, i)]) * x[r * k + i];
                }
                tile[r * 2 * GROUP + half * GROUP + lane] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gemm::tile::testing::{report, values};

    fn pack(w: &[f32], n: usize, k: usize, dtype: HalfType) -> PackedHalf {
        PackedHalf::pack(n, k, dtype, 16, |rows| {
            Ok::<_, ()>(
                w[rows.start * k..rows.end * k]
                    .iter()
                    .map(|&v| match dtype {
                        HalfType::Bf16 => bf16::from_f32(v).to_bits(),
                        HalfType::F16 => f16::from_f32(v).to_bits(),
                    })
                    .collect(),
            )
        })
        .unwrap()
    }

    /// Each kernel against the product written out in f64 over the stored weights, within
    /// f32 summation error.
    #[test]
    fn every_kernel_computes_the_product_of_the_stored_weights() {
        for dtype in [HalfType::Bf16, HalfType::F16] {
            for &(m, n, k) in &[
                (1, 16, 2),
                (2, 17, 34),
                (3, 40, 128),
                (5, 33, 64),
                (70, 64, 96),
            ] {
                let w = values(n * k, (m * 31 + n) as u64);
                let x = values(m * k, (k * 7 + n) as u64);
                let packed = pack(&w, n, k, dtype);
                let stored = packed.to_f32();
                for (a, b) in stored.iter().zip(&w) {
                    assert!((a - b).abs() <= b.abs() / 128.0 + 1e-7, "{a} vs {b}");
                }
                let want: Vec<f64> = (0..m * n)
                    .map(|o| {
                        let (r, c) = (o / n, o % n);
                        (0..k)
                            .map(|i| stored[c * k + i] as f64 * x[r * k + i] as f64)
                            .sum()
                    })
                    .collect();
                // Sum of |terms|: the scale every error is relative to.
                let mass: Vec<f64> = (0..m * n)
                    .map(|o| {
                        let (r, c) = (o / n, o % n);
                        (0..k)
                            .map(|i| (stored[c * k + i] as f64 * x[r * k + i] as f64).abs())
                            .sum()
                    })
                    .collect();
                for kernel in HalfKernel::available() {
                    let got = packed.matmul_with(kernel, &x, m);
                    let bound = 1e-5;
                    for o in 0..m * n {
                        let err = (got[o] as f64 - want[o]).abs();
                        assert!(
                            err <= bound * mass[o] + 1e-6,
                            "{:?} {} m={m} n={n} k={k} output {o}: {} vs {}",
                            dtype,
                            kernel.name(),
                            got[o],
                            want[o]
                        );
                    }
                }
            }
        }
    }

    /// The AMX tile product (where the CPU has it) against the product written out in f64 over
    /// the stored weights and the bf16-rounded activations; row counts around the 32-row
    /// blocks, an odd number of groups.
    #[test]
    fn amx_tiles_compute_the_bf16_product() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::model::gemm::amx::available() {
                eprintln!("no AMX here: nothing to check");
                return;
            }
            for &(m, n, k) in &[(32, 16, 32), (33, 48, 64), (70, 40, 96), (130, 100, 320)] {
                let w = values(n * k, (m + 3 * n) as u64);
                let x = values(m * k, (k + 5 * n) as u64);
                let packed = pack(&w, n, k, HalfType::Bf16);
                assert!(packed.uses_amx(m));
                let stored = packed.to_f32();
                let rounded: Vec<f64> = x.iter().map(|&v| bf16::from_f32(v).to_f64()).collect();
                let got = packed.matmul(&x, m);
                for o in 0..m * n {
                    let (r, c) = (o / n, o % n);
                    let terms = (0..k).map(|i| stored[c * k + i] as f64 * rounded[r * k + i]);
                    let want: f64 = terms.clone().sum();
                    let mass: f64 = terms.map(f64::abs).sum();
                    let err = (got[o] as f64 - want).abs();
                    assert!(
                        err <= 1e-5 * mass + 1e-6,
                        "m={m} n={n} k={k} output {o}: {} vs {want}",
                        got[o]
                    );
                }
                // And the f32 kernels: the difference is the activations' rounding only.
                let exact = packed.matmul_with(HalfKernel::best(), &x, m);
                let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
                let diff = got
                    .iter()
                    .zip(&exact)
                    .fold(0f32, |a, (g, e)| a.max((g - e).abs()));
                assert!(diff <= scale / 64.0, "AMX vs f32: {diff} of {scale}");
            }
        }
    }

    /// The `vdpbf16ps` product (where the CPU has AVX512-BF16, whether or not `matmul` picks it
    /// here) against the product written out in f64 over the stored weights and the
    /// bf16-rounded activations; odd pair counts, row counts around the 4-row tiles.
    #[test]
    fn bf16_dot_computes_the_bf16_product() {
        #[cfg(target_arch = "x86_64")]
        {
            if !(is_x86_feature_detected!("avx512bf16") && HalfKernel::detect().0) {
                eprintln!("no AVX512-BF16 here: nothing to check");
                return;
            }
            for &(m, n, k) in &[(1, 16, 2), (5, 48, 62), (33, 40, 96), (70, 100, 330)] {
                let w = values(n * k, (m + 7 * n) as u64);
                let x = values(m * k, (k + 3 * n) as u64);
                let packed = pack(&w, n, k, HalfType::Bf16);
                let stored = packed.to_f32();
                let rounded: Vec<f64> = x.iter().map(|&v| bf16::from_f32(v).to_f64()).collect();
                let got = packed.matmul_bf16_dot(&x, m);
                for o in 0..m * n {
                    let (r, c) = (o / n, o % n);
                    let terms = (0..k).map(|i| stored[c * k + i] as f64 * rounded[r * k + i]);
                    let want: f64 = terms.clone().sum();
                    let mass: f64 = terms.map(f64::abs).sum();
                    assert!(
                        (got[o] as f64 - want).abs() <= 1e-5 * mass + 1e-6,
                        "m={m} n={n} k={k} output {o}: {} vs {want}",
                        got[o]
                    );
                }
                assert_eq!(packed.uses_bf16_dot(m), packed.uses_bf16_dot(32) && m >= 32);
            }
        }
    }

    /// Throughput on the 7B MLP shape (run with `--release -- --ignored`).
    #[test]
    #[ignore]
    fn throughput_on_a_7b_mlp_matrix() {
        let (m, n, k) = (600, 18944, 3584);
        let w = values(n * k, 3);
        let x = values(m * k, 4);
        let packed = pack(&w, n, k, HalfType::Bf16);
        for kernel in HalfKernel::available() {
            if kernel != HalfKernel::Scalar {
                report(
                    &format!("bf16 {}", kernel.name()),
                    (m, n, k),
                    packed.bytes(),
                    |rows| packed.matmul_with(kernel, &x[..rows * k], rows),
                );
            }
        }
        if packed.uses_amx(m) {
            report("bf16 amx", (m, n, k), packed.bytes(), |rows| {
                packed.matmul(&x[..rows * k], rows)
            });
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512bf16") {
            report("bf16 vdpbf16ps", (m, n, k), packed.bytes(), |rows| {
                packed.matmul_bf16_dot(&x[..rows * k], rows)
            });
        }
    }
}
