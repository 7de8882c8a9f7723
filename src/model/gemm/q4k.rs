//! q4k weights (ggml's k-quant: superblocks of 256 inputs, a f16 scale and min, eight
//! sub-blocks of 32 with 6-bit scales and mins, 4-bit quants; `w = d * sc * q - dmin * m`)
//! in the int8 kernels' layout, one copy for prefill and decoding.
//!
//! The quantization itself is ggml's, done by candle (`QTensor::quantize(.., Q4K)`: the
//! search for the best scales and mins); the blocks are then unpacked into the layout below
//! and candle's copy is dropped. Per block of 32 the product is `d_a * (d * sc) * sum(q * q_a)
//! - (dmin * m) * (d_a * sum(q_a))`: the first sum is an exact int32 (`vpdpbusd` of the
//! unsigned 4-bit quants and the signed activation quants), the second comes with the
//! activations.
//!
//! Layout inside a group of 16 outputs, per block of 32 inputs: four pairs of quads, 64 bytes
//! each (16 lanes x 4 inputs; the low nibble holds the first quad of the pair, the high nibble
//! the second); then per block 16 sub-scales and 16 sub-mins (u8, 6 significant bits); per
//! superblock 16 `d` and 16 `dmin` (f16). 4.625 bits per weight (ggml's 4.5 packs the 6-bit
//! scales tighter).

use super::store::Store;
use half::f16;
use rayon::prelude::*;

use super::tile::{for_each_tile, ActRows, Activations, Kernel, Q4Tile, BLOCK, GROUP, MR, SUPER};

const SUBS: usize = SUPER / BLOCK;
/// Bytes of ggml's `block_q4_K`.
const GGML_BLOCK_BYTES: usize = 144;

/// An (n, k) q4k matrix in the kernels' layout (`k` a multiple of 256).
#[derive(Clone)]
pub struct PackedQ4K {
    n: usize,
    k: usize,
    quants: Store<u8>,
    /// Per group and block: 16 sub-scales then 16 sub-mins.
    subs: Store<u8>,
    /// Per group and superblock: 16 `d` then 16 `dmin`.
    supers: Store<f16>,
}

impl std::fmt::Debug for PackedQ4K {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ4K({} x {})", self.n, self.k)
    }
}

/// ggml's 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes.
fn scale_min(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

impl PackedQ4K {
    /// Unpack `rows_of(range)`: the ggml `block_q4_K` bytes of whole groups of 16 rows (at most
    /// `rows_per_call`), row-major, `k / 256` blocks per row.
    pub fn from_ggml<E: Send>(
        n: usize,
        k: usize,
        rows_per_call: usize,
        rows_of: impl Fn(std::ops::Range<usize>) -> Result<Vec<u8>, E> + Sync,
    ) -> Result<PackedQ4K, E> {
        assert!(
            k % SUPER == 0 && k > 0,
            "q4k needs inputs in blocks of {SUPER}"
        );
        let groups = n.div_ceil(GROUP);
        let (blocks, supers) = (k / BLOCK, k / SUPER);
        let mut quants = vec![0u8; groups * k * GROUP / 2];
        let mut subs = vec![0u8; groups * blocks * 2 * GROUP];
        let mut sups = vec![f16::ZERO; groups * supers * 2 * GROUP];
        // Calls cover whole groups, so each fills its own part of the three arrays: run them
        // on every core (candle's quantizer, behind `rows_of`, is one thread).
        let per_call = (rows_per_call / GROUP).max(1);
        quants
            .par_chunks_mut(per_call * k * GROUP / 2)
            .zip(subs.par_chunks_mut(per_call * blocks * 2 * GROUP))
            .zip(sups.par_chunks_mut(per_call * supers * 2 * GROUP))
            .enumerate()
            .try_for_each(|(call, ((quants, subs), sups))| {
                let first = call * per_call * GROUP;
                let last = (first + per_call * GROUP).min(n);
                let bytes = rows_of(first..last)?;
                assert_eq!(bytes.len(), (last - first) * supers * GGML_BLOCK_BYTES);
                let mut part = Part {
                    k,
                    quants,
                    subs,
                    supers: sups,
                };
                for (row, ggml) in bytes.chunks(supers * GGML_BLOCK_BYTES).enumerate() {
                    part.set_row(row, ggml);
                }
                Ok(())
            })?;
        Ok(PackedQ4K {
            n,
            k,
            quants: quants.into(),
            subs: subs.into(),
            supers: sups.into(),
        })
    }

    pub fn bytes(&self) -> usize {
        self.quants.len() + self.subs.len() + self.supers.len() * 2
    }

    /// (outputs, inputs).
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The packed arrays as the kernels read them (the weight cache stores them as they are).
    pub fn parts(&self) -> (&[u8], &[u8], &[f16]) {
        (&self.quants, &self.subs, &self.supers)
    }

    /// A matrix from [`PackedQ4K::parts`] read back; `None` when the lengths do not fit (n, k).
    pub fn from_parts(
        n: usize,
        k: usize,
        quants: Store<u8>,
        subs: Store<u8>,
        supers: Store<f16>,
    ) -> Option<PackedQ4K> {
        let groups = n.div_ceil(GROUP);
        let fits = k % SUPER == 0
            && k > 0
            && quants.len() == groups * k * GROUP / 2
            && subs.len() == groups * (k / BLOCK) * 2 * GROUP
            && supers.len() == groups * (k / SUPER) * 2 * GROUP;
        fits.then_some(PackedQ4K {
            n,
            k,
            quants,
            subs,
            supers,
        })
    }

    /// The weights as f32 (n, k), row-major: `d * sc * q - dmin * m`.
    pub fn dequantize(&self) -> Vec<f32> {
        let (k, blocks, supers) = (self.k, self.k / BLOCK, self.k / SUPER);
        let mut out = vec![0f32; self.n * k];
        for (row, out_row) in out.chunks_mut(k).enumerate() {
            let (g, lane) = (row / GROUP, row % GROUP);
            for (i, value) in out_row.iter_mut().enumerate() {
                let (b, s) = (i / BLOCK, i / SUPER);
                let sup = (g * supers + s) * 2 * GROUP;
                let sub = (g * blocks + b) * 2 * GROUP;
                let d = self.supers[sup + lane].to_f32() * self.subs[sub + lane] as f32;
                let m =
                    self.supers[sup + GROUP + lane].to_f32() * self.subs[sub + GROUP + lane] as f32;
                let (index, high) = quant_slot(k, g, lane, i);
                let q = if high {
                    self.quants[index] >> 4
                } else {
                    self.quants[index] & 0x0f
                };
                *value = d * q as f32 - m;
            }
        }
        out
    }

    /// `x (m, k) -> x W^T (m, n)` with the best kernel (for a prefill on an AMX CPU: widened
    /// to bf16 per task and multiplied on the tiles, as for q8_0).
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if m >= super::amx::MIN_ROWS && super::amx::available() {
            let fill =
                |groups: std::ops::Range<usize>, out: &mut [u16]| self.groups_to_bf16(groups, out);
            let weights = super::amx::Weights::Dequantize(&fill);
            return super::amx::matmul(self.n, self.k, weights, x, m);
        }
        self.matmul_with(Kernel::best(), x, m)
    }

    /// One group's parts, as the kernels read them.
    fn group(&self, g: usize) -> Q4Tile<'_> {
        let (blocks, supers) = (self.k / BLOCK, self.k / SUPER);
        let (ql, bl, sl) = (self.k * GROUP / 2, blocks * 2 * GROUP, supers * 2 * GROUP);
        let quants = &self.quants[g * ql..(g + 1) * ql];
        let subs = &self.subs[g * bl..(g + 1) * bl];
        let supers = &self.supers[g * sl..(g + 1) * sl];
        Q4Tile {
            quants: [quants; 2],
            subs: [subs; 2],
            supers: [supers; 2],
        }
    }

    /// Groups of 16 outputs as packed bf16 (`stored.rs` layout), `bf16(d * sc * q - dmin * m)`.
    pub fn groups_to_bf16(&self, groups: std::ops::Range<usize>, out: &mut [u16]) {
        let k = self.k;
        for (g, out) in groups.zip(out.chunks_mut(k * GROUP)) {
            #[cfg(target_arch = "x86_64")]
            if super::amx::available() {
                // SAFETY: AMX CPUs have AVX-512 F/BW, AVX512-BF16 and F16C (checked by
                // `available`); the parts are one group.
                unsafe { super::x86_bf16::q4k_group_to_bf16(k, &self.group(g), out) };
                continue;
            }
            let tile = self.group(g);
            for i in 0..k {
                for lane in 0..GROUP {
                    out[(i / 2) * 2 * GROUP + lane * 2 + i % 2] =
                        half::bf16::from_f32(weight(&tile, k, lane, i)).to_bits();
                }
            }
        }
    }

    pub fn matmul_with(&self, kernel: Kernel, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not (m, k)");
        assert!(
            Kernel::available().contains(&kernel),
            "kernel {} does not run here",
            kernel.name()
        );
        let acts = Activations::quantize(x, m, self.k, false);
        let mut out = vec![0f32; m * self.n];
        let groups = self.n.div_ceil(GROUP);
        let (blocks, supers) = (self.k / BLOCK, self.k / SUPER);
        let (ql, bl, sl) = (self.k * GROUP / 2, blocks * 2 * GROUP, supers * 2 * GROUP);
        for_each_tile(m, self.n, &mut out, |row, rows, g, tile| {
            let second = if g + 1 < groups { g + 1 } else { g };
            let parts = |v: usize| [g, second].map(|x| x * v);
            let [q0, q1] = parts(ql);
            let [b0, b1] = parts(bl);
            let [s0, s1] = parts(sl);
            let w = Q4Tile {
                quants: [&self.quants[q0..q0 + ql], &self.quants[q1..q1 + ql]],
                subs: [&self.subs[b0..b0 + bl], &self.subs[b1..b1 + bl]],
                supers: [&self.supers[s0..s0 + sl], &self.supers[s1..s1 + sl]],
            };
            let a = acts.rows(row, rows);
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Vnni => {
                    // SAFETY: AVX-512 VNNI, FMA, F16C checked by `available`; slices sized above.
                    unsafe { super::x86::q4k_tile_avx512(rows, self.k, &w, &a, tile) }
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => {
                    // SAFETY: AVX2, FMA, F16C checked by `available`.
                    unsafe { super::x86::q4k_tile_avx2(rows, self.k, &w, &a, tile) }
                }
                _ => tile_scalar(rows, self.k, &w, &a, tile),
            }
        });
        out
    }
}

/// The weight of output `lane`, input `i` of a group: `d * sc * q - dmin * m`.
fn weight(w: &Q4Tile, k: usize, lane: usize, i: usize) -> f32 {
    let (b, s) = (i / BLOCK, i / SUPER);
    let _ = k;
    let d = w.supers[0][s * 2 * GROUP + lane].to_f32() * w.subs[0][b * 2 * GROUP + lane] as f32;
    let m = w.supers[0][s * 2 * GROUP + GROUP + lane].to_f32()
        * w.subs[0][b * 2 * GROUP + GROUP + lane] as f32;
    let (index, high) = quant_slot(k, 0, lane, i);
    let byte = w.quants[0][index];
    let q = if high { byte >> 4 } else { byte & 0x0f };
    d * q as f32 - m
}

/// Whole groups of a [`PackedQ4K`] being filled (row 0 is the first row of the first group).
struct Part<'a> {
    k: usize,
    quants: &'a mut [u8],
    subs: &'a mut [u8],
    supers: &'a mut [f16],
}

impl Part<'_> {
    fn set_row(&mut self, row: usize, ggml: &[u8]) {
        let (g, lane) = (row / GROUP, row % GROUP);
        let (k, blocks, supers) = (self.k, self.k / BLOCK, self.k / SUPER);
        for (s, block) in ggml.chunks(GGML_BLOCK_BYTES).enumerate() {
            let d = f16::from_le_bytes([block[0], block[1]]);
            let dmin = f16::from_le_bytes([block[2], block[3]]);
            let scales = &block[4..16];
            let qs = &block[16..144];
            let at = (g * supers + s) * 2 * GROUP;
            self.supers[at + lane] = d;
            self.supers[at + GROUP + lane] = dmin;
            for sub in 0..SUBS {
                let (sc, m) = scale_min(sub, scales);
                let b = s * SUBS + sub;
                let at = (g * blocks + b) * 2 * GROUP;
                self.subs[at + lane] = sc;
                self.subs[at + GROUP + lane] = m;
                // ggml: 64 inputs per 32 bytes, low nibbles the first 32, high the next 32.
                let bytes = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
                for j in 0..BLOCK {
                    let q = if sub % 2 == 0 {
                        bytes[j] & 0x0f
                    } else {
                        bytes[j] >> 4
                    };
                    let i = b * BLOCK + j;
                    let (index, high) = quant_slot(k, g, lane, i);
                    let byte = &mut self.quants[index];
                    *byte = if high {
                        (*byte & 0x0f) | (q << 4)
                    } else {
                        (*byte & 0xf0) | q
                    };
                }
            }
        }
    }
}

/// Where the quant of output `lane` of group `g`, input `i` lives: (byte, high nibble?).
fn quant_slot(k: usize, g: usize, lane: usize, i: usize) -> (usize, bool) {
    let (b, j) = (i / BLOCK, i % BLOCK);
    let (pair, high, within) = (j / 8, (j / 4) % 2 == 1, j % 4);
    (
        g * k * GROUP / 2 + b * 256 + pair * 64 + lane * 4 + within,
        high,
    )
}

fn tile_scalar(rows: usize, k: usize, w: &Q4Tile, a: &ActRows, tile: &mut [f32; MR * 2 * GROUP]) {
    let blocks = k / BLOCK;
    for r in 0..rows {
        for half in 0..2 {
            for lane in 0..GROUP {
                let mut acc = 0f32;
                for b in 0..blocks {
                    let mut dot = 0i32;
                    for j in 0..BLOCK {
                        let (index, high) = quant_slot(k, 0, lane, b * BLOCK + j);
                        let byte = w.quants[half][index];
                        let q = if high { byte >> 4 } else { byte & 0x0f };
                        dot += q as i32 * a.q[r * k + b * BLOCK + j] as i32;
                    }
                    let s = b / SUBS;
                    let d = w.supers[half][s * 2 * GROUP + lane].to_f32()
                        * w.subs[half][b * 2 * GROUP + lane] as f32;
                    let m = w.supers[half][s * 2 * GROUP + GROUP + lane].to_f32()
                        * w.subs[half][b * 2 * GROUP + GROUP + lane] as f32;
                    acc += dot as f32 * (d * a.d[r * blocks + b]);
                    acc -= m * a.sum_d[r * blocks + b];
                }
                tile[r * 2 * GROUP + half * GROUP + lane] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gemm::tile::testing::{assert_widens_to_bf16, report, values};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// candle's q4k quantization of `w`, unpacked; and candle's own dequantization of it.
    fn quantize(w: &[f32], n: usize, k: usize) -> (PackedQ4K, Vec<f32>) {
        let t = Tensor::from_vec(w.to_vec(), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q4K).unwrap();
        let bytes = q.data().unwrap().to_vec();
        let row_bytes = k / SUPER * GGML_BLOCK_BYTES;
        let packed = PackedQ4K::from_ggml(n, k, 16, |rows| {
            Ok::<_, ()>(bytes[rows.start * row_bytes..rows.end * row_bytes].to_vec())
        })
        .unwrap();
        let reference = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (packed, reference)
    }

    /// The unpacked weights are exactly the ones ggml's (candle's) dequantization gives.
    #[test]
    fn unpacking_keeps_ggml_q4k_weights() {
        let (n, k) = (37, 512);
        let w = values(n * k, 1);
        let (packed, reference) = quantize(&w, n, k);
        assert_eq!(packed.dequantize(), reference);
        assert_eq!(packed.bytes(), 48 * 512 / 2 + 48 * 16 * 2 + 48 * 2 * 2 * 2);
    }

    /// Widening to packed bf16 (the AMX prefill's weights) rounds each dequantized weight.
    #[test]
    fn widening_to_bf16_rounds_each_dequantized_weight() {
        let (n, k) = (40, 512);
        let (packed, _) = quantize(&values(n * k, 9), n, k);
        assert_widens_to_bf16(n, k, &packed.dequantize(), |groups, out| {
            packed.groups_to_bf16(groups, out)
        });
    }

    /// Every kernel against the block formula in f64 over the unpacked weights and the q8_0
    /// activations (written out again here).
    #[test]
    fn every_kernel_computes_the_block_product() {
        for &(m, n, k) in &[
            (1, 16, 256),
            (3, 33, 512),
            (4, 64, 256),
            (9, 40, 768),
            (70, 32, 256),
        ] {
            let w = values(n * k, (m + n) as u64);
            let x = values(m * k, (n * 3 + k) as u64);
            let (packed, _) = quantize(&w, n, k);
            let wd = packed.dequantize();
            let mut xq = vec![0f64; m * k];
            for (r, block) in x.chunks(BLOCK).enumerate() {
                let d = block.iter().map(|v| v.abs()).fold(0.0, f32::max) / 127.0;
                for (j, &v) in block.iter().enumerate() {
                    let q = if d == 0.0 { 0.0 } else { (v / d).round() };
                    xq[r * BLOCK + j] = q as f64 * d as f64;
                }
            }
            let want: Vec<f64> = (0..m * n)
                .map(|o| {
                    let (r, c) = (o / n, o % n);
                    (0..k).map(|i| wd[c * k + i] as f64 * xq[r * k + i]).sum()
                })
                .collect();
            let scale = want.iter().fold(1e-6f64, |a, v| a.max(v.abs()));
            for kernel in Kernel::available() {
                let got = packed.matmul_with(kernel, &x, m);
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |a, (&g, &w)| a.max((g as f64 - w).abs()))
                    / scale;
                assert!(
                    err < 1e-5,
                    "{} m={m} n={n} k={k}: error {err:e}",
                    kernel.name()
                );
            }
        }
    }

    /// Throughput on the 7B MLP shape (run with `--release -- --ignored`).
    #[test]
    #[ignore]
    fn throughput_on_a_7b_mlp_matrix() {
        let (m, n, k) = (600, 18944, 3584 / SUPER * SUPER);
        let w = values(n * k, 5);
        let x = values(m * k, 6);
        let (packed, _) = quantize(&w, n, k);
        for kernel in Kernel::available() {
            if kernel != Kernel::Scalar {
                report(
                    &format!("q4k {}", kernel.name()),
                    (m, n, k),
                    packed.bytes(),
                    |rows| packed.matmul_with(kernel, &x[..rows * k], rows),
                );
            }
        }
        report(
            "q4k best (AMX prefill where present)",
            (m, n, k),
            packed.bytes(),
            |rows| packed.matmul(&x[..rows * k], rows),
        );
    }
}
