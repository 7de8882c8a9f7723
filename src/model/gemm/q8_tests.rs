//! The int8 kernels against formulas written out: ggml's q8_0 quantization of one block, the
//! block-wise product in f64, and each SIMD kernel against the scalar one.

use super::*;
use crate::model::gemm::tile::testing::{assert_widens_to_bf16, report, values};

fn pack(w: &[f32], n: usize, k: usize, rows_per_call: usize) -> PackedQ8 {
    PackedQ8::quantize(n, k, rows_per_call, |rows| {
        Ok::<_, ()>(w[rows.start * k..rows.end * k].to_vec())
    })
    .unwrap()
}

/// ggml's q8_0 by hand: d = max|x|/127 (kept as f16), q = round(x/d).
#[test]
fn weights_are_ggml_q8_0() {
    let (n, k) = (3, 64);
    let w = values(n * k, 1);
    let packed = pack(&w, n, k, 16);
    let back = packed.dequantize();
    for row in 0..n {
        for b in 0..k / BLOCK {
            let block = &w[row * k + b * BLOCK..row * k + (b + 1) * BLOCK];
            let amax = block.iter().map(|v| v.abs()).fold(0.0, f32::max);
            let d = amax / 127.0;
            let d16 = f16::from_f32(d).to_f32();
            for (j, &v) in block.iter().enumerate() {
                let q = if d == 0.0 { 0.0 } else { (v / d).round() };
                assert!(q.abs() <= 127.0);
                let got = back[row * k + b * BLOCK + j];
                assert_eq!(got, q * d16, "row {row} block {b} item {j}");
            }
        }
    }
}

/// The product of the quantized weights and quantized activations, summed in f64.
fn reference(packed: &PackedQ8, x: &[f32], m: usize) -> Vec<f64> {
    let (n, k) = (packed.rows(), packed.inputs());
    let w = packed.dequantize();
    let mut out = vec![0f64; m * n];
    for r in 0..m {
        // Activations: the same q8_0 formula, written out again.
        let mut xq = vec![0f64; k];
        for b in 0..k / BLOCK {
            let block = &x[r * k + b * BLOCK..r * k + (b + 1) * BLOCK];
            let d = block.iter().map(|v| v.abs()).fold(0.0, f32::max) / 127.0;
            for (j, &v) in block.iter().enumerate() {
                let q = if d == 0.0 { 0.0 } else { (v / d).round() };
                xq[b * BLOCK + j] = q as f64 * d as f64;
            }
        }
        for c in 0..n {
            out[r * n + c] = (0..k).map(|i| w[c * k + i] as f64 * xq[i]).sum();
        }
    }
    out
}

fn max_rel(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()))
        / scale
}

/// Every kernel this CPU has, over row counts that exercise every tile height and the
/// parallel row chunks, and output counts that are not whole groups.
#[test]
fn every_kernel_computes_the_block_product() {
    let kernels = Kernel::available();
    eprintln!("kernels here: {:?}", kernels);
    for &(m, n, k) in &[
        (1, 16, 32),
        (2, 17, 64),
        (3, 32, 96),
        (4, 48, 256),
        (5, 33, 128),
        (7, 100, 64),
        (65, 40, 96),
        (130, 64, 160),
    ] {
        let w = values(n * k, (m * 1000 + n) as u64);
        let x = values(m * k, (n * 1000 + k) as u64 + 7);
        let packed = pack(&w, n, k, 16);
        let want = reference(&packed, &x, m);
        for &kernel in &kernels {
            let got = packed.matmul_with(kernel, &x, m);
            assert_eq!(got.len(), m * n);
            let err = max_rel(&got, &want);
            assert!(
                err < 2e-6,
                "{} m={m} n={n} k={k}: max error {err:e} of the largest output",
                kernel.name()
            );
        }
    }
}

/// Packing in several calls of whole groups gives the same matrix as packing it whole.
#[test]
fn packing_in_slices_matches_packing_whole() {
    let (n, k) = (70, 96);
    let w = values(n * k, 3);
    let whole = pack(&w, n, k, 1 << 20);
    let sliced = pack(&w, n, k, 16);
    assert_eq!(whole.quants[..], sliced.quants[..]);
    assert_eq!(whole.scales[..], sliced.scales[..]);
    assert_eq!(whole.bytes(), 80 * 96 + 80 * 3 * 2);
}

/// Against the unquantized product: the error q8_0 itself makes stays within 1% of the
/// output's scale (two 8-bit roundings per product).
#[test]
fn close_to_the_f32_product() {
    let (m, n, k) = (6, 50, 512);
    let w: Vec<f32> = values(n * k, 11)
        .iter()
        .map(|v| v.clamp(-1.0, 1.0))
        .collect();
    let x: Vec<f32> = values(m * k, 12)
        .iter()
        .map(|v| v.clamp(-1.0, 1.0))
        .collect();
    let packed = pack(&w, n, k, 16);
    let exact: Vec<f64> = (0..m * n)
        .map(|o| {
            let (r, c) = (o / n, o % n);
            (0..k)
                .map(|i| w[c * k + i] as f64 * x[r * k + i] as f64)
                .sum()
        })
        .collect();
    let got = packed.matmul(&x, m);
    let rms = (exact.iter().map(|v| v * v).sum::<f64>() / exact.len() as f64).sqrt();
    let worst = got
        .iter()
        .zip(&exact)
        .fold(0f64, |m, (&g, &e)| m.max((g as f64 - e).abs()));
    assert!(worst < 0.01 * rms * 3.0, "worst {worst} rms {rms}");
}

/// All-zero inputs and weights give zeros, never NaN (a zero block has scale 0).
#[test]
fn zero_blocks_give_zero() {
    let (m, n, k) = (3, 20, 64);
    let packed = pack(&vec![0.0; n * k], n, k, 16);
    for kernel in Kernel::available() {
        let got = packed.matmul_with(kernel, &vec![1.0; m * k], m);
        assert!(got.iter().all(|&v| v == 0.0), "{}", kernel.name());
        let packed = pack(&values(n * k, 5), n, k, 16);
        let got = packed.matmul_with(kernel, &vec![0.0; m * k], m);
        assert!(got.iter().all(|&v| v == 0.0), "{}", kernel.name());
    }
}

/// Throughput on the 7B decoder's MLP shape (run with `--release -- --ignored`).
#[test]
#[ignore]
fn throughput_on_a_7b_mlp_matrix() {
    let (m, n, k) = (600, 18944, 3584);
    let w = values(n * k, 21);
    let x = values(m * k, 22);
    let packed = pack(&w, n, k, 4096);
    for kernel in Kernel::available() {
        if kernel != Kernel::Scalar {
            report(
                &format!("q8_0 {}", kernel.name()),
                (m, n, k),
                packed.bytes(),
                |rows| packed.matmul_with(kernel, &x[..rows * k], rows),
            );
        }
    }
    report(
        "q8_0 best (AMX prefill where present)",
        (m, n, k),
        packed.bytes(),
        |rows| packed.matmul(&x[..rows * k], rows),
    );
}

/// Widening to packed bf16 (the AMX prefill's weights) gives `bf16(q * d)` for every weight,
/// against `dequantize` and the packed layout written out again.
#[test]
fn widening_to_bf16_rounds_each_dequantized_weight() {
    let (n, k) = (40, 96);
    let packed = pack(&values(n * k, 31), n, k, 16);
    assert_widens_to_bf16(n, k, &packed.dequantize(), |groups, out| {
        packed.groups_to_bf16(groups, out)
    });
}

/// A prefill-sized product (AMX tiles where the CPU has them, else the int8 kernels) against
/// the f64 product: with AMX, of the bf16-rounded weights and activations.
#[test]
fn prefill_products_match_their_formula() {
    let (m, n, k) = (70, 48, 128);
    let packed = pack(&values(n * k, 41), n, k, 16);
    let x = values(m * k, 42);
    let got = packed.matmul(&x, m);
    #[cfg(target_arch = "x86_64")]
    let amx = crate::model::gemm::amx::available();
    #[cfg(not(target_arch = "x86_64"))]
    let amx = false;
    if !amx {
        let want = reference(&packed, &x, m);
        assert!(max_rel(&got, &want) < 2e-6);
        return;
    }
    let round = |v: f32| half::bf16::from_f32(v).to_f64();
    let w = packed.dequantize();
    for o in 0..m * n {
        let (r, c) = (o / n, o % n);
        let terms = (0..k).map(|i| round(w[c * k + i]) * round(x[r * k + i]));
        let want: f64 = terms.clone().sum();
        let mass: f64 = terms.map(f64::abs).sum();
        assert!(
            (got[o] as f64 - want).abs() <= 1e-5 * mass + 1e-6,
            "output {o}: {} vs {want}",
            got[o]
        );
    }
}
