//! The x86-64 kernels that need AVX512-BF16: weights widened to packed bf16 for the AMX tiles
//! (`q8_0` and `q4k` groups), activations rounded to bf16, and the `vdpbf16ps` product of
//! [`super::stored::PackedHalf`] (`stored.rs` says where each is used).

use std::arch::x86_64::*;

use half::f16;

use super::tile::{Q4Tile, BLOCK, GROUP, MR, SUPER};

/// Widen one 64-byte quad row (16 outputs x 4 inputs of unsigned quants, `q8.rs`/`q4k.rs`
/// order) to `(u - sub) * scale - min` per output, round to bf16, and split it into the two
/// pair rows of the packed bf16 layout (inputs 0-1, inputs 2-3 of the quad).
///
/// # Safety
/// The CPU must have AVX-512 F/BW and AVX512-BF16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn quad_to_bf16_rows(
    v: __m512i,
    sub: __m512i,
    scale: &[__m512; 4],
    min: &[__m512; 4],
) -> (__m512i, __m512i) {
    let chunks = [
        _mm512_extracti32x4_epi32::<0>(v),
        _mm512_extracti32x4_epi32::<1>(v),
        _mm512_extracti32x4_epi32::<2>(v),
        _mm512_extracti32x4_epi32::<3>(v),
    ];
    let mut halves = [_mm256_setzero_si256(); 4];
    for c in 0..4 {
        let ints = _mm512_sub_epi32(_mm512_cvtepu8_epi32(chunks[c]), sub);
        let values = _mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(ints), scale[c]), min[c]);
        halves[c] = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(values));
    }
    // As u32: (output l, inputs 0-1), (output l, inputs 2-3), ... for outputs 0-7 and 8-15.
    let low = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(halves[0]), halves[1]);
    let high = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(halves[2]), halves[3]);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    (
        _mm512_permutex2var_epi32(low, even, high),
        _mm512_permutex2var_epi32(low, odd, high),
    )
}

/// Per-output values of one block repeated for the four 16-byte chunks of a quad row:
/// chunk c holds outputs 4c..4c+3, each four times.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn per_chunk(values: __m512) -> [__m512; 4] {
    let spread = |c: i32| {
        _mm512_setr_epi32(
            4 * c,
            4 * c,
            4 * c,
            4 * c,
            4 * c + 1,
            4 * c + 1,
            4 * c + 1,
            4 * c + 1,
            4 * c + 2,
            4 * c + 2,
            4 * c + 2,
            4 * c + 2,
            4 * c + 3,
            4 * c + 3,
            4 * c + 3,
            4 * c + 3,
        )
    };
    [0, 1, 2, 3].map(|c| _mm512_permutexvar_ps(spread(c), values))
}

/// One group of q8_0 weights (`q8.rs` layout, `k` inputs) as packed bf16 (`stored.rs` layout):
/// `bf16(q * d)`, exactly what `PackedQ8::dequantize` gives, rounded to nearest even.
///
/// # Safety
/// The CPU must have AVX-512 F/BW, AVX512-BF16 and F16C; `quants` holds `k * 16` bytes,
/// `scales` `k / 32 * 16`, `out` `k * 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,f16c")]
pub(super) unsafe fn q8_group_to_bf16(k: usize, quants: &[u8], scales: &[f16], out: &mut [u16]) {
    debug_assert!(quants.len() >= k * GROUP && out.len() >= k * GROUP);
    let sub = _mm512_set1_epi32(128);
    let zero = [_mm512_setzero_ps(); 4];
    let o = out.as_mut_ptr();
    for b in 0..k / BLOCK {
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(
            scales.as_ptr().add(b * GROUP) as *const __m256i
        ));
        let scale = per_chunk(d);
        for quad in b * 8..b * 8 + 8 {
            let v = _mm512_loadu_si512(quants.as_ptr().add(quad * 64) as *const __m512i);
            let (first, second) = quad_to_bf16_rows(v, sub, &scale, &zero);
            _mm512_storeu_si512(o.add(2 * quad * 32) as *mut __m512i, first);
            _mm512_storeu_si512(o.add((2 * quad + 1) * 32) as *mut __m512i, second);
        }
    }
}

/// One group of q4k weights (`q4k.rs` layout) as packed bf16: `bf16(d * sc * q - dmin * m)`,
/// exactly `PackedQ4K::dequantize` rounded to nearest even.
///
/// # Safety
/// As [`q8_group_to_bf16`], with `w` one group of `q4k.rs`'s layout (`w.quants[0]` etc.).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,f16c")]
pub(super) unsafe fn q4k_group_to_bf16(k: usize, w: &Q4Tile, out: &mut [u16]) {
    let (quants, subs, supers) = (
        w.quants[0].as_ptr(),
        w.subs[0].as_ptr(),
        w.supers[0].as_ptr(),
    );
    let nibble = _mm512_set1_epi8(0x0f);
    let sub = _mm512_setzero_si512();
    let o = out.as_mut_ptr();
    for b in 0..k / BLOCK {
        let s = b / (SUPER / BLOCK);
        let sp = supers.add(s * 2 * GROUP);
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(sp as *const __m256i));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(sp.add(GROUP) as *const __m256i));
        let bp = subs.add(b * 2 * GROUP);
        let widen = |p: *const u8| {
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)))
        };
        let scale = per_chunk(_mm512_mul_ps(d, widen(bp)));
        let min = per_chunk(_mm512_mul_ps(dmin, widen(bp.add(GROUP))));
        for pair in 0..BLOCK / 8 {
            let raw = _mm512_loadu_si512(quants.add(b * 256 + pair * 64) as *const __m512i);
            let quads = [
                _mm512_and_si512(raw, nibble),
                _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nibble),
            ];
            for (h, v) in quads.into_iter().enumerate() {
                let quad = b * 8 + pair * 2 + h;
                let (first, second) = quad_to_bf16_rows(v, sub, &scale, &min);
                _mm512_storeu_si512(o.add(2 * quad * 32) as *mut __m512i, first);
                _mm512_storeu_si512(o.add((2 * quad + 1) * 32) as *mut __m512i, second);
            }
        }
    }
}

/// Rows of f32 activations rounded to bf16 (nearest even), in order: a row of `k` values is `k`
/// bf16 (`k / 2` pairs, each the 32-bit operand `vdpbf16ps` broadcasts).
///
/// # Safety
/// The CPU must have AVX-512 F/BW and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn round_to_bf16(x: &[f32], out: &mut [u16]) {
    debug_assert_eq!(x.len(), out.len());
    let chunks = x.len() / 32;
    for c in 0..chunks {
        let lo = _mm512_loadu_ps(x.as_ptr().add(c * 32));
        let hi = _mm512_loadu_ps(x.as_ptr().add(c * 32 + 16));
        // cvtne2ps_pbh(a, b): b's 16 values first, then a's.
        let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr().add(c * 32) as *mut __m512i, packed);
    }
    for i in chunks * 32..x.len() {
        out[i] = half::bf16::from_f32(x[i]).to_bits();
    }
}

/// bf16 weights (packed bf16 layout: each 32-bit lane one output's input pair) x activations
/// rounded to bf16 (`round_to_bf16`): `vdpbf16ps` multiplies 16 outputs x one input pair and
/// adds both products to f32 sums, twice the multiply-adds per instruction of the widening
/// kernel. Separate sums for even and odd pairs (the instruction's latency).
///
/// # Safety
/// The CPU must have AVX-512 F/BW and AVX512-BF16. `w` are two groups (`k * 16` values), `a`
/// `rows * k` bf16 activations, `rows` 1..=4, `k` even.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn bf16_dot_tile_avx512(
    rows: usize,
    k: usize,
    w: [&[u16]; 2],
    a: &[u16],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    debug_assert!(w[0].len() >= k * GROUP && w[1].len() >= k * GROUP && a.len() >= rows * k);
    match rows {
        1 => bf16_dot_rows::<1>(k, w, a, tile),
        2 => bf16_dot_rows::<2>(k, w, a, tile),
        3 => bf16_dot_rows::<3>(k, w, a, tile),
        _ => bf16_dot_rows::<4>(k, w, a, tile),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_dot_rows<const R: usize>(
    k: usize,
    w: [&[u16]; 2],
    a: &[u16],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    let (w0, w1) = (w[0].as_ptr(), w[1].as_ptr());
    let a = a.as_ptr() as *const u32;
    let pairs = k / 2;
    let step = |acc: &mut [[__m512; 2]; R], p: usize| {
        let wv0: __m512bh =
            std::mem::transmute(_mm512_loadu_si512(w0.add(p * 32) as *const __m512i));
        let wv1: __m512bh =
            std::mem::transmute(_mm512_loadu_si512(w1.add(p * 32) as *const __m512i));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(std::ptr::read_unaligned(
                a.add(r * pairs + p),
            ) as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], wv0, av);
            acc[1] = _mm512_dpbf16_ps(acc[1], wv1, av);
        }
    };
    let mut even = [[_mm512_setzero_ps(); 2]; R];
    let mut odd = [[_mm512_setzero_ps(); 2]; R];
    let mut p = 0;
    while p + 1 < pairs {
        step(&mut even, p);
        step(&mut odd, p + 1);
        p += 2;
    }
    if p < pairs {
        step(&mut even, p);
    }
    let out = tile.as_mut_ptr();
    for (r, (even, odd)) in even.iter().zip(&odd).enumerate() {
        for g in 0..2 {
            let sum = _mm512_add_ps(even[g], odd[g]);
            _mm512_storeu_ps(out.add(r * 2 * GROUP + g * GROUP), sum);
        }
    }
}
