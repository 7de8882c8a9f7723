//! Intel AMX (Sapphire Rapids and later Xeons): bf16 tile products for the prefill, where
//! torch/oneDNN get their speed. `tdpbf16ps` multiplies a 16 x 32 bf16 tile of activations by
//! a 32 x 16 tile of weights into 16 x 16 f32 sums in one instruction; fovea's packed bf16
//! layout (`stored.rs`: per pair of inputs, 16 outputs x 2 values, 64 bytes) is exactly the
//! weight tile's row format, so the weights are read in place: no second copy.
//!
//! Activations are rounded to bf16 (nearest even), as transformers does in bf16; the sums stay
//! f32. Used for products of at least [`MIN_ROWS`] rows (a prefill); shorter ones (decoding,
//! short suffixes) keep the f32 kernels, which are memory-bound there anyway.
//!
//! The instructions have no stable intrinsics in Rust, so they are written with `asm!`; Linux
//! hands out the tile state only after `arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`, asked once.
//! Elsewhere, and on CPUs without AMX-BF16, [`available`] is false.

use half::bf16;
use rayon::prelude::*;

use super::tile::{SharedOut, GROUP};

/// Fewest activation rows worth a tile product.
pub const MIN_ROWS: usize = 32;
/// Inputs per tile step (16 rows of 64 bytes of bf16 pairs).
const STEP: usize = 32;

/// Whether the kernels use AMX: this CPU and OS run it (`tier.rs` asks) and the tier
/// (`FOVEA_CPU`) is `amx`.
pub fn available() -> bool {
    super::tier::current() == super::tier::Tier::Amx
}

/// Where a product's weights come from, in the packed bf16 layout.
pub enum Weights<'a> {
    /// Already packed (bf16 checkpoints): read in place.
    Packed(&'a [u16]),
    /// Quantized: `fill(groups, out)` writes those groups of 16 outputs, packed, into `out`
    /// (`groups.len() * k * 16` values); each task fills its own 128 outputs once.
    Dequantize(&'a (dyn Fn(std::ops::Range<usize>, &mut [u16]) + Sync)),
}

/// `x (m, k) -> x W^T (m, n)`, `n` outputs of `k` inputs (a multiple of 32). The caller
/// checks [`available`].
pub fn matmul(n: usize, k: usize, weights: Weights, x: &[f32], m: usize) -> Vec<f32> {
    assert!(available(), "AMX is not available");
    assert!(k % STEP == 0 && x.len() == m * k);
    let groups = n.div_ceil(GROUP);
    if let Weights::Packed(w) = &weights {
        assert!(w.len() >= groups * k * GROUP);
    }
    // Activations in bf16, rows padded to whole 32-row blocks of zeros.
    let blocks = m.div_ceil(32);
    let mut a = vec![0u16; blocks * 32 * k];
    a.par_chunks_mut(k).zip(x.par_chunks(k)).for_each(|(a, x)| {
        for (a, &v) in a.iter_mut().zip(x) {
            *a = bf16::from_f32(v).to_bits();
        }
    });
    let mut out = vec![0f32; m * n];
    // Tasks: every row block x 4 column pairs (128 outputs): the task's weights (4 pairs x k x
    // 64 bytes, 0.9 MB at k = 3584) are read (or dequantized) once and stay in L2 while the row
    // blocks pass.
    let pairs = groups.div_ceil(2);
    let pairs_per_task = 4;
    let rows_per_task = blocks;
    let row_tasks = blocks.div_ceil(rows_per_task);
    let col_tasks = pairs.div_ceil(pairs_per_task);
    let out_ptr = SharedOut(out.as_mut_ptr());
    (0..row_tasks * col_tasks).into_par_iter().for_each(|task| {
        let (rt, ct) = (task / col_tasks, task % col_tasks);
        let first_group = ct * pairs_per_task * 2;
        let last_group = ((ct + 1) * pairs_per_task * 2).min(groups);
        // Dequantized weights go to this thread's scratch, reused across tasks and calls (a
        // fresh buffer per task cost more in page faults than the dequantization itself).
        let mut scratch = SCRATCH.with(std::cell::RefCell::take);
        let base = match &weights {
            Weights::Packed(w) => &w[first_group * k * GROUP..],
            Weights::Dequantize(fill) => {
                let need = (last_group - first_group) * k * GROUP;
                if scratch.len() < need {
                    scratch.resize(need, 0u16);
                }
                fill(first_group..last_group, &mut scratch[..need]);
                &scratch[..need]
            }
        };
        let mut tile = [0f32; 32 * 32];
        // SAFETY: AMX checked above; `base` holds the task's groups; each task writes its own
        // rectangle of `out`.
        unsafe {
            configure();
            for block in rt * rows_per_task..((rt + 1) * rows_per_task).min(blocks) {
                for pair in ct * pairs_per_task..((ct + 1) * pairs_per_task).min(pairs) {
                    let g0 = 2 * pair;
                    let g1 = (g0 + 1).min(groups - 1);
                    product(
                        a.as_ptr().add(block * 32 * k),
                        k,
                        base.as_ptr().add((g0 - first_group) * k * GROUP),
                        base.as_ptr().add((g1 - first_group) * k * GROUP),
                        &mut tile,
                    );
                    let rows = block * 32..((block + 1) * 32).min(m);
                    let cols = g0 * GROUP..((g0 + 2) * GROUP).min(n);
                    for (r, row) in rows.enumerate() {
                        let src = &tile[r * 32..r * 32 + cols.len()];
                        let dst = out_ptr.at(row * n + cols.start);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
                    }
                }
            }
            release();
        }
        SCRATCH.with(|cell| cell.replace(scratch));
    });
    out
}

thread_local! {
    /// Per thread: the last task's dequantized weights (at most 8 groups x k x 16 values).
    static SCRATCH: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The tile configuration: palette 1, eight tiles of 16 rows x 64 bytes (tmm0-3: the 32 x 32
/// f32 sums, tmm4-5: two 16-row activation tiles, tmm6-7: two groups' weight tiles).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// # Safety
/// AMX must be available (and the tile state granted).
unsafe fn configure() {
    let mut config = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [0; 16],
        rows: [0; 16],
    };
    for t in 0..8 {
        config.bytes_per_row[t] = 64;
        config.rows[t] = 16;
    }
    std::arch::asm!("ldtilecfg [{}]", in(reg) &config as *const TileConfig, options(nostack, readonly));
}

/// # Safety
/// After [`configure`].
unsafe fn release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// 32 activation rows (`a`, bf16, row stride `k`) x two groups of weights (`w0`, `w1`) into
/// `tile` (32 x 32 f32, row-major).
///
/// # Safety
/// Tiles configured; `a` has 32 rows of `k`; `w0`, `w1` point at `k * 16` packed values.
unsafe fn product(a: *const u16, k: usize, w0: *const u16, w1: *const u16, tile: &mut [f32; 1024]) {
    use std::arch::asm;
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    let a_stride = k * 2;
    let lower = a.add(16 * k);
    for step in 0..k / STEP {
        let a0 = a.add(step * STEP);
        let a1 = lower.add(step * STEP);
        // A weight tile: 16 pairs of inputs (32 inputs) x 16 outputs, 64 bytes a row.
        let b0 = w0.add(step * STEP * GROUP);
        let b1 = w1.add(step * STEP * GROUP);
        asm!(
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a0,
            a1 = in(reg) a1,
            b0 = in(reg) b0,
            b1 = in(reg) b1,
            sa = in(reg) a_stride,
            sb = in(reg) 64usize,
            options(nostack, readonly)
        );
    }
    // tmm0: rows 0-15 x outputs 0-15, tmm1: rows 0-15 x 16-31, tmm2/3: rows 16-31.
    let t = tile.as_mut_ptr() as *mut u8;
    asm!(
        "tilestored [{t0} + {s}*1], tmm0",
        "tilestored [{t1} + {s}*1], tmm1",
        "tilestored [{t2} + {s}*1], tmm2",
        "tilestored [{t3} + {s}*1], tmm3",
        t0 = in(reg) t,
        t1 = in(reg) t.add(64),
        t2 = in(reg) t.add(16 * 128),
        t3 = in(reg) t.add(16 * 128 + 64),
        s = in(reg) 128usize,
        options(nostack)
    );
}
