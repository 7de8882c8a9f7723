//! What every kernel shares: the block and tile sizes, which SIMD kernel this CPU runs, the
//! activations quantized to q8_0 when a product starts, and the parallel loop over register
//! tiles that writes the output.

use super::tier::Tier;
use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;

/// Inputs per quantization block (ggml's q8_0).
pub const BLOCK: usize = 32;
/// Inputs per q4k superblock.
pub const SUPER: usize = 256;
/// Output rows per packed group.
pub(super) const GROUP: usize = 16;
/// Activation rows per register tile.
pub(super) const MR: usize = 4;

/// Which kernel multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 with VNNI (`vpdpbusd` on 512-bit registers): Ice Lake and later Xeons, Zen 4.
    Avx512Vnni,
    /// AVX2 (`vpmaddubsw` + `vpmaddwd`): every x86-64 laptop of the last ten years.
    Avx2,
    /// Plain Rust, for other CPUs (and as the tests' reference).
    Scalar,
}

impl Kernel {
    /// The kernel of the tier the kernels run at (`tier.rs`: the best this CPU has, or
    /// `FOVEA_CPU`'s).
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| Kernel::of(super::tier::current()))
    }

    fn of(tier: Tier) -> Kernel {
        match tier {
            Tier::Amx | Tier::Avx512Vnni => Kernel::Avx512Vnni,
            Tier::AvxVnni | Tier::Avx2 => Kernel::Avx2,
            Tier::Portable => Kernel::Scalar,
        }
    }

    /// Every kernel this CPU can run, whatever the tier (the tests compare them).
    pub fn available() -> Vec<Kernel> {
        let here = super::tier::detected();
        let mut all = vec![Kernel::Scalar];
        if here.contains(&Tier::Avx512Vnni) {
            all.push(Kernel::Avx512Vnni);
        }
        if here.contains(&Tier::Avx2) {
            all.push(Kernel::Avx2);
        }
        all
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Scalar => "scalar",
        }
    }
}

/// ggml's q8_0 block: `d = max|x| / 127`, `q = round(x / d)`.
pub(super) fn quantize_block(block: &[f32]) -> (f32, [i8; BLOCK]) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i8; BLOCK];
    for (q, &v) in q.iter_mut().zip(block) {
        *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    (d, q)
}

/// Rows of activations quantized to q8_0, with each block's sum of quants times 128 (the
/// VNNI kernel's correction for unsigned weights).
pub(super) struct Activations {
    pub k: usize,
    pub q: Vec<i8>,
    /// `|q|` (the AVX2 kernels' unsigned operand, computed once per product).
    pub abs: Vec<i8>,
    pub d: Vec<f32>,
    pub sums: Vec<i32>,
    /// `d_a * sum(q_a)` per block (the q4k kernels' min term).
    pub sum_d: Vec<f32>,
}

impl Activations {
    /// Rows `row..row + rows` as the q4k kernels read them.
    pub(super) fn rows(&self, row: usize, rows: usize) -> ActRows<'_> {
        let blocks = self.k / BLOCK;
        ActRows {
            q: &self.q[row * self.k..(row + rows) * self.k],
            d: &self.d[row * blocks..(row + rows) * blocks],
            sum_d: &self.sum_d[row * blocks..(row + rows) * blocks],
        }
    }

    /// `with_abs`: also `|q|` (only the AVX2 q8_0 kernel reads it).
    pub(super) fn quantize(x: &[f32], m: usize, k: usize, with_abs: bool) -> Activations {
        let blocks = k / BLOCK;
        let mut q = vec![0i8; m * k];
        let mut abs = vec![0i8; if with_abs { m * k } else { 0 }];
        let mut d = vec![0f32; m * blocks];
        let mut sums = vec![0i32; m * blocks];
        // Without `|q|`, empty rows keep the zip in step.
        let abs_rows: Vec<&mut [i8]> = if with_abs {
            abs.chunks_mut(k).collect()
        } else {
            (0..m).map(|_| &mut [][..]).collect()
        };
        q.par_chunks_mut(k)
            .zip(abs_rows)
            .zip(d.par_chunks_mut(blocks))
            .zip(sums.par_chunks_mut(blocks))
            .zip(x.par_chunks(k))
            .with_min_len(16)
            .for_each(|((((q, abs), d), sums), x)| {
                for b in 0..blocks {
                    let (scale, quants) = quantize_block(&x[b * BLOCK..(b + 1) * BLOCK]);
                    d[b] = scale;
                    q[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(&quants);
                    if let Some(abs) = abs.get_mut(b * BLOCK..(b + 1) * BLOCK) {
                        for (abs, v) in abs.iter_mut().zip(quants) {
                            // |q| <= 127: quantize_block clamps to -127..=127.
                            *abs = v.unsigned_abs() as i8;
                        }
                    }
                    sums[b] = 128 * quants.iter().map(|&v| v as i32).sum::<i32>();
                }
            });
        let sum_d = d
            .iter()
            .zip(&sums)
            .map(|(&d, &s)| d * (s / 128) as f32)
            .collect();
        Activations {
            k,
            q,
            abs,
            d,
            sums,
            sum_d,
        }
    }
}

/// Activation rows as the q4k kernels read them.
pub(super) struct ActRows<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    /// `d_a * sum(q_a)` per block.
    pub sum_d: &'a [f32],
}

/// Two groups of q4k weights, as the kernels read them (layout in `q4k.rs`).
pub(super) struct Q4Tile<'a> {
    pub quants: [&'a [u8]; 2],
    pub subs: [&'a [u8]; 2],
    pub supers: [&'a [f16]; 2],
}

/// Run `tile(row, rows, first_group, tile)` over every register tile of an (m, n) output on
/// every core and copy each tile into `out`. Tasks are column chunks of two groups (32
/// outputs) x row chunks of at most 64 rows; each writes its own rectangle of `out`.
pub(super) fn for_each_tile(
    m: usize,
    n: usize,
    out: &mut [f32],
    tile: impl Fn(usize, usize, usize, &mut [f32; MR * 2 * GROUP]) + Sync,
) {
    assert_eq!(out.len(), m * n);
    let col_chunks = n.div_ceil(2 * GROUP);
    let row_chunk = m.clamp(1, 64);
    let row_chunks = m.div_ceil(row_chunk).max(1);
    let out_ptr = SharedOut(out.as_mut_ptr());
    (0..col_chunks * row_chunks)
        .into_par_iter()
        .with_min_len(if m == 1 { 8 } else { 1 })
        .for_each(|task| {
            let (rc, cc) = (task / col_chunks, task % col_chunks);
            let rows = rc * row_chunk..((rc + 1) * row_chunk).min(m);
            let first_group = cc * 2;
            let cols = first_group * GROUP..((first_group + 2) * GROUP).min(n);
            let mut buffer = [0f32; MR * 2 * GROUP];
            let mut row = rows.start;
            while row < rows.end {
                let tile_rows = (rows.end - row).min(MR);
                tile(row, tile_rows, first_group, &mut buffer);
                for r in 0..tile_rows {
                    let src = &buffer[r * 2 * GROUP..r * 2 * GROUP + cols.len()];
                    // SAFETY: tasks cover disjoint (rows, cols) rectangles of `out`, which
                    // outlives the parallel loop; `cols` ends at n and `row + r` below m.
                    unsafe {
                        let dst = out_ptr.at((row + r) * n + cols.start);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
                    }
                }
                row += tile_rows;
            }
        });
}

/// A raw pointer into the output that the parallel tasks share (each writes its own part).
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: tasks write disjoint elements; see `for_each_tile`.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    /// # Safety
    /// `offset` must be inside the output.
    pub(super) unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// What the kernels' tests share: test values and a throughput report.
#[cfg(test)]
pub(super) mod testing {
    use super::BLOCK;

    /// A small deterministic generator (xorshift), values in [-1, 1) with some large
    /// outliers and some all-zero blocks, as real activations have.
    pub fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                if (i / BLOCK) % 11 == 5 {
                    0.0
                } else if i % 97 == 3 {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Widen all `n` outputs of a packed matrix with `widen` (its `groups_to_bf16`) and check
    /// every weight against `bf16(w)` of its dequantized row-major (n, k) `weights`.
    pub fn assert_widens_to_bf16(
        n: usize,
        k: usize,
        weights: &[f32],
        widen: impl Fn(std::ops::Range<usize>, &mut [u16]),
    ) {
        let groups = n.div_ceil(super::GROUP);
        let mut out = vec![0u16; groups * k * super::GROUP];
        widen(0..groups, &mut out);
        assert_packed_bf16(&out, weights, n, k);
    }

    /// `packed` (groups of 16 outputs in the packed bf16 layout) holds `bf16(w)` for every
    /// weight of the row-major (n, k) `weights`.
    pub fn assert_packed_bf16(packed: &[u16], weights: &[f32], n: usize, k: usize) {
        for row in 0..n {
            let (g, lane) = (row / 16, row % 16);
            for i in 0..k {
                let got = packed[g * k * 16 + (i / 2) * 32 + lane * 2 + i % 2];
                let want = half::bf16::from_f32(weights[row * k + i]).to_bits();
                assert_eq!(got, want, "row {row} input {i}");
            }
        }
    }

    /// Time one (m, k) x (k, n) product and one single-row product over `bytes` of weights.
    pub fn report(
        label: &str,
        (m, n, k): (usize, usize, usize),
        bytes: usize,
        product: impl Fn(usize) -> Vec<f32>,
    ) {
        let start = std::time::Instant::now();
        let out = product(m);
        let s = start.elapsed().as_secs_f64();
        let rate = 2.0 * (m * n * k) as f64 / s / 1e9;
        eprintln!(
            "{label}: {m}x{k}x{n} in {s:.3} s = {rate:.0} G(FL)OP/s ({})",
            out[0]
        );
        let start = std::time::Instant::now();
        let out = product(1);
        let s = start.elapsed().as_secs_f64();
        let speed = bytes as f64 / s / 1e9;
        eprintln!(
            "{label}: one row in {:.2} ms = {speed:.1} GB/s of weights ({})",
            s * 1e3,
            out[0]
        );
    }
}
