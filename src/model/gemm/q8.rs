//! q8_0 weights in the int8 kernels' layout (see `mod.rs` for the numbers and the layout).

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use super::store::Store;
use super::tile::{for_each_tile, quantize_block, Activations, Kernel, BLOCK, GROUP, MR};

/// An (n, k) matrix quantized to q8_0 in the kernels' layout.
#[derive(Clone)]
pub struct PackedQ8 {
    n: usize,
    k: usize,
    /// `groups * k * GROUP` bytes, `q + 128`.
    quants: Store<u8>,
    /// `groups * (k / BLOCK) * GROUP` scales.
    scales: Store<f16>,
}

impl std::fmt::Debug for PackedQ8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ8({} x {})", self.n, self.k)
    }
}

impl PackedQ8 {
    /// Quantize an (n, k) matrix whose rows `rows_of(range)` returns as row-major f32, a range
    /// of whole groups of 16 rows at a time (at most `rows_per_call` rows), on every core.
    pub fn quantize<E>(
        n: usize,
        k: usize,
        rows_per_call: usize,
        rows_of: impl Fn(Range<usize>) -> Result<Vec<f32>, E> + Sync,
    ) -> Result<PackedQ8, E>
    where
        E: Send,
    {
        assert!(
            k % BLOCK == 0 && k > 0,
            "q8_0 needs inputs in blocks of {BLOCK}"
        );
        let groups = n.div_ceil(GROUP);
        let blocks = k / BLOCK;
        let mut quants = vec![0u8; groups * k * GROUP];
        let mut scales = vec![f16::ZERO; groups * blocks * GROUP];
        let groups_per_call = (rows_per_call / GROUP).max(1);
        quants
            .par_chunks_mut(groups_per_call * k * GROUP)
            .zip(scales.par_chunks_mut(groups_per_call * blocks * GROUP))
            .enumerate()
            .try_for_each(|(call, (q, s))| {
                let first = call * groups_per_call * GROUP;
                let last = (first + groups_per_call * GROUP).min(n);
                let rows = rows_of(first..last)?;
                debug_assert_eq!(rows.len(), (last - first) * k);
                for (g, (q, s)) in q
                    .chunks_mut(k * GROUP)
                    .zip(s.chunks_mut(blocks * GROUP))
                    .enumerate()
                {
                    let start = g * GROUP;
                    let count = (last - first).saturating_sub(start).min(GROUP);
                    pack_group(&rows[start * k..(start + count) * k], k, q, s);
                }
                Ok(())
            })?;
        Ok(PackedQ8 {
            n,
            k,
            quants: quants.into(),
            scales: scales.into(),
        })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    /// The packed arrays as the kernels read them (the weight cache stores them as they are).
    pub fn parts(&self) -> (&[u8], &[f16]) {
        (&self.quants, &self.scales)
    }

    /// A matrix from [`PackedQ8::parts`] read back; `None` when the lengths do not fit (n, k).
    pub fn from_parts(
        n: usize,
        k: usize,
        quants: Store<u8>,
        scales: Store<f16>,
    ) -> Option<PackedQ8> {
        let groups = n.div_ceil(GROUP);
        let fits = k % BLOCK == 0
            && k > 0
            && quants.len() == groups * k * GROUP
            && scales.len() == groups * (k / BLOCK) * GROUP;
        fits.then_some(PackedQ8 {
            n,
            k,
            quants,
            scales,
        })
    }

    pub fn inputs(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.quants.len() + self.scales.len() * 2
    }

    /// The weights as f32 (n, k), row-major: what the kernels multiply by.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (row, out_row) in out.chunks_mut(self.k).enumerate() {
            self.dequantize_row(row, out_row);
        }
        out
    }

    /// Row `row` (< n) as f32 into `out` (k values): an embedding lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let blocks = self.k / BLOCK;
        let (g, lane) = (row / GROUP, row % GROUP);
        for (i, value) in out[..self.k].iter_mut().enumerate() {
            let q = self.quants[quant_index(self.k, g, lane, i)] as i32 - 128;
            let d = self.scales[(g * blocks + i / BLOCK) * GROUP + lane].to_f32();
            *value = q as f32 * d;
        }
    }

    /// `x (m, k) -> x W^T (m, n)`, row-major f32, with the best kernel: for a prefill on a CPU
    /// with AMX, the weights are widened to bf16 a task's 128 outputs at a time and multiplied
    /// on the tiles (see `amx.rs`); otherwise the int8 kernels.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if m >= super::amx::MIN_ROWS && super::amx::available() {
            let fill = |groups: Range<usize>, out: &mut [u16]| self.groups_to_bf16(groups, out);
            let weights = super::amx::Weights::Dequantize(&fill);
            return super::amx::matmul(self.n, self.k, weights, x, m);
        }
        self.matmul_with(Kernel::best(), x, m)
    }

    /// Groups of 16 outputs as packed bf16 (`stored.rs` layout), `bf16(q * d)`.
    pub fn groups_to_bf16(&self, groups: Range<usize>, out: &mut [u16]) {
        let (k, blocks) = (self.k, self.k / BLOCK);
        for (g, out) in groups.zip(out.chunks_mut(k * GROUP)) {
            let quants = &self.quants[g * k * GROUP..(g + 1) * k * GROUP];
            let scales = &self.scales[g * blocks * GROUP..(g + 1) * blocks * GROUP];
            #[cfg(target_arch = "x86_64")]
            if super::amx::available() {
                // SAFETY: AMX CPUs have AVX-512 F/BW, AVX512-BF16 and F16C (checked by
                // `available`); the slices are one group.
                unsafe { super::x86_bf16::q8_group_to_bf16(k, quants, scales, out) };
                continue;
            }
            for i in 0..k {
                for lane in 0..GROUP {
                    let q = quants[((i / 4) * GROUP + lane) * 4 + i % 4] as i32 - 128;
                    let d = scales[(i / BLOCK) * GROUP + lane].to_f32();
                    out[(i / 2) * 2 * GROUP + lane * 2 + i % 2] =
                        half::bf16::from_f32(q as f32 * d).to_bits();
                }
            }
        }
    }

    /// The same with a chosen kernel (`kernel` must be one of [`Kernel::available`]).
    pub fn matmul_with(&self, kernel: Kernel, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not (m, k)");
        let acts = Activations::quantize(x, m, self.k, kernel == Kernel::Avx2);
        let mut out = vec![0f32; m * self.n];
        for_each_tile(m, self.n, &mut out, |row, rows, group, tile| {
            self.tile(kernel, &acts, row, rows, group, tile)
        });
        out
    }

    /// One tile: `rows` activation rows from `row` x the 32 outputs of groups `g`, `g + 1`
    /// (the second may not exist), into `tile` (rows x 32).
    fn tile(
        &self,
        kernel: Kernel,
        acts: &Activations,
        row: usize,
        rows: usize,
        g: usize,
        tile: &mut [f32; MR * 2 * GROUP],
    ) {
        let groups = self.n.div_ceil(GROUP);
        let blocks = self.k / BLOCK;
        let group_bytes = self.k * GROUP;
        let group_scales = blocks * GROUP;
        let second = if g + 1 < groups { g + 1 } else { g };
        let w = [
            &self.quants[g * group_bytes..(g + 1) * group_bytes],
            &self.quants[second * group_bytes..(second + 1) * group_bytes],
        ];
        let s = [
            &self.scales[g * group_scales..(g + 1) * group_scales],
            &self.scales[second * group_scales..(second + 1) * group_scales],
        ];
        let a = &acts.q[row * self.k..(row + rows) * self.k];
        let d = &acts.d[row * blocks..(row + rows) * blocks];
        let sums = &acts.sums[row * blocks..(row + rows) * blocks];
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                assert!(Kernel::best() == Kernel::Avx512Vnni);
                // SAFETY: the CPU has AVX-512 F/BW/VNNI and F16C (checked above); slices
                // are the sizes the kernel reads.
                unsafe { super::x86::tile_avx512(rows, self.k, w, s, a, d, sums, tile) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(matches!(Kernel::best(), Kernel::Avx512Vnni | Kernel::Avx2));
                // `|q|` was computed for this kernel (`matmul_with`).
                let abs = &acts.abs[row * self.k..(row + rows) * self.k];
                // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
                unsafe { super::x86::tile_avx2(rows, self.k, w, s, a, abs, d, tile) }
            }
            _ => tile_scalar(rows, self.k, w, s, a, d, tile),
        }
    }
}

/// Where a quantized weight of output `lane` of group `g`, input `i`, lives in the group.
fn quant_index(k: usize, g: usize, lane: usize, i: usize) -> usize {
    g * k * GROUP + ((i / 4) * GROUP + lane) * 4 + i % 4
}

/// Quantize up to 16 rows (row-major, k each) into one group; missing rows stay zero.
fn pack_group(rows: &[f32], k: usize, quants: &mut [u8], scales: &mut [f16]) {
    for (lane, row) in rows.chunks(k).enumerate() {
        for (b, block) in row.chunks(BLOCK).enumerate() {
            let (d, q) = quantize_block(block);
            scales[b * GROUP + lane] = f16::from_f32(d);
            for (j, &q) in q.iter().enumerate() {
                let i = b * BLOCK + j;
                quants[((i / 4) * GROUP + lane) * 4 + i % 4] = (q as i32 + 128) as u8;
            }
        }
    }
    // Rows past the matrix: q = 0 (stored 128), scale 0.
    for lane in rows.len() / k..GROUP {
        for i in 0..k {
            quants[((i / 4) * GROUP + lane) * 4 + i % 4] = 128;
        }
    }
}

/// The reference kernel: the same integer block products, summed in f32.
#[allow(clippy::too_many_arguments)]
fn tile_scalar(
    rows: usize,
    k: usize,
    w: [&[u8]; 2],
    s: [&[f16]; 2],
    a: &[i8],
    d: &[f32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    let blocks = k / BLOCK;
    for r in 0..rows {
        for half in 0..2 {
            for lane in 0..GROUP {
                let mut acc = 0f32;
                for b in 0..blocks {
                    let mut dot = 0i32;
                    for j in 0..BLOCK {
                        let i = b * BLOCK + j;
                        let wq = w[half][((i / 4) * GROUP + lane) * 4 + i % 4] as i32 - 128;
                        dot += wq * a[r * k + i] as i32;
                    }
                    acc += dot as f32 * (s[half][b * GROUP + lane].to_f32() * d[r * blocks + b]);
                }
                tile[r * 2 * GROUP + half * GROUP + lane] = acc;
            }
        }
    }
}

#[cfg(test)]
#[path = "q8_tests.rs"]
mod tests;
