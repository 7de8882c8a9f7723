//! The x86-64 kernels for [`super::PackedQ8`]: one register tile of activation rows x 32
//! outputs (two packed groups), over all inputs. Each computes exactly the integer block
//! products of `tile_scalar` and sums them in f32 with FMA.

use std::arch::x86_64::*;

use half::f16;

use super::tile::{ActRows, Q4Tile, BLOCK, GROUP, MR, SUPER};

/// AVX-512 VNNI: `vpdpbusd` multiplies the unsigned stored weights (`q + 128`) by the signed
/// activation quants, 16 outputs x 4 inputs per instruction; `128 * sum(q_a)` per block
/// (`sums`) takes the offset back out, exactly.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI, FMA and F16C. `w` are two groups (`k * 16` bytes
/// each), `s` their scales (`k / 32 * 16`), `a` `rows * k` quants, `d` and `sums`
/// `rows * k / 32`; `rows` is 1..=4.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
pub(super) unsafe fn tile_avx512(
    rows: usize,
    k: usize,
    w: [&[u8]; 2],
    s: [&[f16]; 2],
    a: &[i8],
    d: &[f32],
    sums: &[i32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    debug_assert!(w[0].len() >= k * GROUP && w[1].len() >= k * GROUP);
    debug_assert!(a.len() >= rows * k && d.len() >= rows * (k / BLOCK));
    match rows {
        1 => avx512_rows::<1>(k, w, s, a, d, sums, tile),
        2 => avx512_rows::<2>(k, w, s, a, d, sums, tile),
        3 => avx512_rows::<3>(k, w, s, a, d, sums, tile),
        _ => avx512_rows::<4>(k, w, s, a, d, sums, tile),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
unsafe fn avx512_rows<const R: usize>(
    k: usize,
    w: [&[u8]; 2],
    s: [&[f16]; 2],
    a: &[i8],
    d: &[f32],
    sums: &[i32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    let blocks = k / BLOCK;
    let (w0, w1) = (w[0].as_ptr(), w[1].as_ptr());
    let (s0, s1) = (s[0].as_ptr(), s[1].as_ptr());
    let a = a.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for b in 0..blocks {
        let mut dot = [[_mm512_setzero_si512(); 2]; R];
        for step in 0..BLOCK / 4 {
            let quad = b * (BLOCK / 4) + step;
            let wv0 = _mm512_loadu_si512(w0.add(quad * 64) as *const __m512i);
            let wv1 = _mm512_loadu_si512(w1.add(quad * 64) as *const __m512i);
            for r in 0..R {
                let av = _mm512_set1_epi32(std::ptr::read_unaligned(
                    a.add(r * k + quad * 4) as *const i32
                ));
                dot[r][0] = _mm512_dpbusd_epi32(dot[r][0], wv0, av);
                dot[r][1] = _mm512_dpbusd_epi32(dot[r][1], wv1, av);
            }
        }
        let sc0 = _mm512_cvtph_ps(_mm256_loadu_si256(s0.add(b * GROUP) as *const __m256i));
        let sc1 = _mm512_cvtph_ps(_mm256_loadu_si256(s1.add(b * GROUP) as *const __m256i));
        for r in 0..R {
            let corr = _mm512_set1_epi32(*sums.get_unchecked(r * blocks + b));
            let da = _mm512_set1_ps(*d.get_unchecked(r * blocks + b));
            let f0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][0], corr));
            let f1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][1], corr));
            acc[r][0] = _mm512_fmadd_ps(f0, _mm512_mul_ps(sc0, da), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(f1, _mm512_mul_ps(sc1, da), acc[r][1]);
        }
    }
    store(&acc, tile);
}

/// Write `R` rows of two groups' sums into the tile.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store<const R: usize>(acc: &[[__m512; 2]; R], tile: &mut [f32; MR * 2 * GROUP]) {
    let out = tile.as_mut_ptr();
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(r * 2 * GROUP), acc[0]);
        _mm512_storeu_ps(out.add(r * 2 * GROUP + GROUP), acc[1]);
    }
}

/// AVX2: the stored weights' sign bit flipped back gives `q_w`; `vpsignb` moves the
/// activation's sign onto it so `vpmaddubsw(|q_a|, ±q_w)` multiplies without saturating
/// (|pair sum| <= 2 * 127 * 127), and `vpmaddwd` with ones sums each 4 inputs into int32.
///
/// Register tiling (16 ymm registers): each weight vector is loaded and sign-flipped once for
/// all `rows` activation rows (up to 4), `|q_a|` comes precomputed (`abs`), and the int32 block
/// sums and f32 totals stay in registers (an earlier row-at-a-time kernel reloaded the weights
/// for every row and spilled its totals every block: 9.9 vs 14.5 tokens/s of 7B prefill).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; slices as for [`tile_avx512`], `abs` as `a`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_avx2(
    rows: usize,
    k: usize,
    w: [&[u8]; 2],
    s: [&[f16]; 2],
    a: &[i8],
    abs: &[i8],
    d: &[f32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    debug_assert!(w[0].len() >= k * GROUP && w[1].len() >= k * GROUP);
    debug_assert!(a.len() >= rows * k && abs.len() >= rows * k);
    debug_assert!(d.len() >= rows * (k / BLOCK));
    match rows {
        1 => avx2_rows::<1, 2>(k, w, s, a, abs, d, tile),
        2 => avx2_rows::<2, 2>(k, w, s, a, abs, d, tile),
        3 => avx2_rows::<3, 1>(k, w, s, a, abs, d, tile),
        _ => avx2_rows::<4, 1>(k, w, s, a, abs, d, tile),
    }
}

/// `R` rows x `H` half groups per pass over the inputs (`H = 2`: a whole group, both halves of
/// each 64-byte quad row read together, as decoding's single row wants; `H = 1` for 3-4 rows,
/// whose block sums would not fit the registers for a whole group).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_rows<const R: usize, const H: usize>(
    k: usize,
    w: [&[u8]; 2],
    s: [&[f16]; 2],
    a: &[i8],
    abs: &[i8],
    d: &[f32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    let blocks = k / BLOCK;
    let flip = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    let (a, abs, d) = (a.as_ptr(), abs.as_ptr(), d.as_ptr());
    for (g, (w, s)) in w.iter().zip(s).enumerate() {
        for first in (0..2).step_by(H) {
            // Half group `first + h`: bytes 32 (first + h).. of every 64 (8 outputs x 4 inputs).
            let wp = w.as_ptr().add(first * 32);
            let sp = s.as_ptr().add(first * 8);
            let mut acc = [[_mm256_setzero_ps(); H]; R];
            for b in 0..blocks {
                let mut dot = [[_mm256_setzero_si256(); H]; R];
                for quad in b * (BLOCK / 4)..(b + 1) * (BLOCK / 4) {
                    let mut wq = [_mm256_setzero_si256(); H];
                    for (h, wq) in wq.iter_mut().enumerate() {
                        let at = wp.add(quad * 64 + h * 32) as *const __m256i;
                        *wq = _mm256_xor_si256(_mm256_loadu_si256(at), flip);
                    }
                    for (r, dot) in dot.iter_mut().enumerate() {
                        let at = r * k + quad * 4;
                        let av =
                            _mm256_set1_epi32(std::ptr::read_unaligned(a.add(at) as *const i32));
                        let aabs =
                            _mm256_set1_epi32(std::ptr::read_unaligned(abs.add(at) as *const i32));
                        for (dot, &wq) in dot.iter_mut().zip(&wq) {
                            let pairs = _mm256_maddubs_epi16(aabs, _mm256_sign_epi8(wq, av));
                            *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
                let mut sc = [_mm256_setzero_ps(); H];
                for (h, sc) in sc.iter_mut().enumerate() {
                    let at = sp.add(b * GROUP + h * 8) as *const __m128i;
                    *sc = _mm256_cvtph_ps(_mm_loadu_si128(at));
                }
                for (r, (acc, dot)) in acc.iter_mut().zip(dot).enumerate() {
                    let da = _mm256_set1_ps(*d.add(r * blocks + b));
                    for ((acc, dot), &sc) in acc.iter_mut().zip(dot).zip(&sc) {
                        let f = _mm256_cvtepi32_ps(dot);
                        *acc = _mm256_fmadd_ps(f, _mm256_mul_ps(sc, da), *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (h, acc) in acc.iter().enumerate() {
                    let at = r * 2 * GROUP + g * GROUP + (first + h) * 8;
                    _mm256_storeu_ps(tile.as_mut_ptr().add(at), *acc);
                }
            }
        }
    }
}

/// bf16 or f16 weights widened in registers x f32 activations, f32 FMA.
///
/// # Safety
/// The CPU must have AVX-512 F/BW, FMA and F16C. `w` are two groups in `stored.rs`'s layout for
/// the dtype, `x` `rows * k` activations, `rows` 1..=4.
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
pub(super) unsafe fn half_tile_avx512(
    rows: usize,
    k: usize,
    bf16: bool,
    w: [&[u16]; 2],
    x: &[f32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    debug_assert!(w[0].len() >= k * GROUP && w[1].len() >= k * GROUP && x.len() >= rows * k);
    match (rows, bf16) {
        (1, true) => widen_rows::<1, true>(k, w, x, tile),
        (2, true) => widen_rows::<2, true>(k, w, x, tile),
        (3, true) => widen_rows::<3, true>(k, w, x, tile),
        (_, true) => widen_rows::<4, true>(k, w, x, tile),
        (1, false) => widen_rows::<1, false>(k, w, x, tile),
        (2, false) => widen_rows::<2, false>(k, w, x, tile),
        (3, false) => widen_rows::<3, false>(k, w, x, tile),
        (_, false) => widen_rows::<4, false>(k, w, x, tile),
    }
}

/// One pair of inputs of one group, widened: (input i, input i + 1) for 16 outputs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn widen_pair<const BF16: bool>(p: *const u16) -> (__m512, __m512) {
    if BF16 {
        let raw = _mm512_loadu_si512(p as *const __m512i);
        let lo = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw));
        let hi = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(-65536)));
        (lo, hi)
    } else {
        let lo = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
        let hi = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(GROUP) as *const __m256i));
        (lo, hi)
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
unsafe fn widen_rows<const R: usize, const BF16: bool>(
    k: usize,
    w: [&[u16]; 2],
    x: &[f32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    let (w0, w1, x) = (w[0].as_ptr(), w[1].as_ptr(), x.as_ptr());
    // Separate sums for inputs i and i + 1: twice the independent FMA chains.
    let mut acc = [[[_mm512_setzero_ps(); 2]; 2]; R];
    for p in 0..k / 2 {
        let (lo0, hi0) = widen_pair::<BF16>(w0.add(p * 32));
        let (lo1, hi1) = widen_pair::<BF16>(w1.add(p * 32));
        for r in 0..R {
            let xa = _mm512_set1_ps(*x.add(r * k + 2 * p));
            let xb = _mm512_set1_ps(*x.add(r * k + 2 * p + 1));
            acc[r][0][0] = _mm512_fmadd_ps(lo0, xa, acc[r][0][0]);
            acc[r][0][1] = _mm512_fmadd_ps(hi0, xb, acc[r][0][1]);
            acc[r][1][0] = _mm512_fmadd_ps(lo1, xa, acc[r][1][0]);
            acc[r][1][1] = _mm512_fmadd_ps(hi1, xb, acc[r][1][1]);
        }
    }
    let out = tile.as_mut_ptr();
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(r * 2 * GROUP), _mm512_add_ps(acc[0][0], acc[0][1]));
        _mm512_storeu_ps(
            out.add(r * 2 * GROUP + GROUP),
            _mm512_add_ps(acc[1][0], acc[1][1]),
        );
    }
}

/// The same on 256-bit registers: each group as two halves of 8 outputs, rows one at a time.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; slices as for [`half_tile_avx512`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn half_tile_avx2(
    rows: usize,
    k: usize,
    bf16: bool,
    w: [&[u16]; 2],
    x: &[f32],
    tile: &mut [f32; MR * 2 * GROUP],
) {
    debug_assert!(x.len() >= rows * k);
    let mask = _mm256_set1_epi32(-65536);
    for (g, w) in w.iter().enumerate() {
        let wp = w.as_ptr();
        for r in 0..rows {
            let xr = x.as_ptr().add(r * k);
            let mut acc = [[_mm256_setzero_ps(); 2]; 2];
            for p in 0..k / 2 {
                let xa = _mm256_set1_ps(*xr.add(2 * p));
                let xb = _mm256_set1_ps(*xr.add(2 * p + 1));
                for (h, acc) in acc.iter_mut().enumerate() {
                    let (lo, hi) = if bf16 {
                        let raw = _mm256_loadu_si256(wp.add(p * 32 + h * 16) as *const __m256i);
                        (
                            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(raw)),
                            _mm256_castsi256_ps(_mm256_and_si256(raw, mask)),
                        )
                    } else {
                        (
                            _mm256_cvtph_ps(_mm_loadu_si128(
                                wp.add(p * 32 + h * 8) as *const __m128i
                            )),
                            _mm256_cvtph_ps(_mm_loadu_si128(
                                wp.add(p * 32 + GROUP + h * 8) as *const __m128i
                            )),
                        )
                    };
                    acc[0] = _mm256_fmadd_ps(lo, xa, acc[0]);
                    acc[1] = _mm256_fmadd_ps(hi, xb, acc[1]);
                }
            }
            let out = tile.as_mut_ptr().add(r * 2 * GROUP + g * GROUP);
            _mm256_storeu_ps(out, _mm256_add_ps(acc[0][0], acc[0][1]));
            _mm256_storeu_ps(out.add(8), _mm256_add_ps(acc[1][0], acc[1][1]));
        }
    }
}

/// q4k: `vpdpbusd` of the unsigned 4-bit quants (nibbles masked out of 64 bytes: two quads of
/// 16 outputs) and the signed activation quants; per block the sub-scale and sub-min times
/// the superblock's `d` and `dmin`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI, FMA and F16C. `w` holds two groups of `q4k.rs`'s
/// layout for `k` inputs, `a` `rows` (1..=4) activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
pub(super) unsafe fn q4k_tile_avx512(
    rows: usize,
    k: usize,
    w: &Q4Tile,
    a: &ActRows,
    tile: &mut [f32; MR * 2 * GROUP],
) {
    debug_assert!(w.quants[0].len() >= k * GROUP / 2 && a.q.len() >= rows * k);
    match rows {
        1 => q4k_rows::<1>(k, w, a, tile),
        2 => q4k_rows::<2>(k, w, a, tile),
        3 => q4k_rows::<3>(k, w, a, tile),
        _ => q4k_rows::<4>(k, w, a, tile),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
unsafe fn q4k_rows<const R: usize>(
    k: usize,
    w: &Q4Tile,
    a: &ActRows,
    tile: &mut [f32; MR * 2 * GROUP],
) {
    let blocks = k / BLOCK;
    let quants = [w.quants[0].as_ptr(), w.quants[1].as_ptr()];
    let subs = [w.subs[0].as_ptr(), w.subs[1].as_ptr()];
    let supers = [w.supers[0].as_ptr(), w.supers[1].as_ptr()];
    let aq = a.q.as_ptr();
    let nibble = _mm512_set1_epi8(0x0f);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for s in 0..k / SUPER {
        let mut dv = [_mm512_setzero_ps(); 2];
        let mut mv = [_mm512_setzero_ps(); 2];
        for g in 0..2 {
            let p = supers[g].add(s * 2 * GROUP);
            dv[g] = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
            mv[g] = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(GROUP) as *const __m256i));
        }
        for sub in 0..SUPER / BLOCK {
            let b = s * (SUPER / BLOCK) + sub;
            let mut dot = [[_mm512_setzero_si512(); 2]; R];
            for pair in 0..BLOCK / 8 {
                let mut lo = [_mm512_setzero_si512(); 2];
                let mut hi = [_mm512_setzero_si512(); 2];
                for g in 0..2 {
                    let raw =
                        _mm512_loadu_si512(quants[g].add(b * 256 + pair * 64) as *const __m512i);
                    lo[g] = _mm512_and_si512(raw, nibble);
                    hi[g] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nibble);
                }
                for r in 0..R {
                    let at = aq.add(r * k + b * BLOCK + pair * 8);
                    let alo = _mm512_set1_epi32(std::ptr::read_unaligned(at as *const i32));
                    let ahi = _mm512_set1_epi32(std::ptr::read_unaligned(at.add(4) as *const i32));
                    for g in 0..2 {
                        dot[r][g] = _mm512_dpbusd_epi32(dot[r][g], lo[g], alo);
                        dot[r][g] = _mm512_dpbusd_epi32(dot[r][g], hi[g], ahi);
                    }
                }
            }
            let mut sc = [_mm512_setzero_ps(); 2];
            let mut mn = [_mm512_setzero_ps(); 2];
            for g in 0..2 {
                let p = subs[g].add(b * 2 * GROUP);
                let widen = |p: *const u8| {
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)))
                };
                sc[g] = _mm512_mul_ps(widen(p), dv[g]);
                mn[g] = _mm512_mul_ps(widen(p.add(GROUP)), mv[g]);
            }
            for r in 0..R {
                let da = _mm512_set1_ps(*a.d.get_unchecked(r * blocks + b));
                let sd = _mm512_set1_ps(*a.sum_d.get_unchecked(r * blocks + b));
                for g in 0..2 {
                    let f = _mm512_cvtepi32_ps(dot[r][g]);
                    acc[r][g] = _mm512_fmadd_ps(f, _mm512_mul_ps(sc[g], da), acc[r][g]);
                    acc[r][g] = _mm512_fnmadd_ps(mn[g], sd, acc[r][g]);
                }
            }
        }
    }
    store(&acc, tile);
}

/// q4k on 256-bit registers: `vpmaddubsw(quants, q_a)` (|pair| <= 2 * 15 * 127, no
/// saturation) and `vpmaddwd` with ones; rows one at a time, each group as two halves.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; slices as for [`q4k_tile_avx512`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_tile_avx2(
    rows: usize,
    k: usize,
    w: &Q4Tile,
    a: &ActRows,
    tile: &mut [f32; MR * 2 * GROUP],
) {
    debug_assert!(a.q.len() >= rows * k);
    let blocks = k / BLOCK;
    let nibble = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    for g in 0..2 {
        let (qp, bp, sp) = (
            w.quants[g].as_ptr(),
            w.subs[g].as_ptr(),
            w.supers[g].as_ptr(),
        );
        for r in 0..rows {
            let ar = a.q.as_ptr().add(r * k);
            let mut acc = [_mm256_setzero_ps(); 2];
            for b in 0..blocks {
                let s = b / (SUPER / BLOCK);
                let mut dot = [_mm256_setzero_si256(); 2];
                for pair in 0..BLOCK / 8 {
                    let at = ar.add(b * BLOCK + pair * 8);
                    let alo = _mm256_set1_epi32(std::ptr::read_unaligned(at as *const i32));
                    let ahi = _mm256_set1_epi32(std::ptr::read_unaligned(at.add(4) as *const i32));
                    for (h, dot) in dot.iter_mut().enumerate() {
                        let raw = _mm256_loadu_si256(
                            qp.add(b * 256 + pair * 64 + h * 32) as *const __m256i
                        );
                        let lo = _mm256_and_si256(raw, nibble);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibble);
                        let p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, alo),
                            _mm256_maddubs_epi16(hi, ahi),
                        );
                        *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(p, ones));
                    }
                }
                let da = _mm256_set1_ps(*a.d.get_unchecked(r * blocks + b));
                let sd = _mm256_set1_ps(*a.sum_d.get_unchecked(r * blocks + b));
                for (h, (acc, dot)) in acc.iter_mut().zip(dot).enumerate() {
                    let widen = |p: *const u8| {
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                            p as *const __m128i,
                        )))
                    };
                    let sup = sp.add(s * 2 * GROUP + h * 8);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(sup as *const __m128i));
                    let dmin = _mm256_cvtph_ps(_mm_loadu_si128(sup.add(GROUP) as *const __m128i));
                    let sub = bp.add(b * 2 * GROUP + h * 8);
                    let sc = _mm256_mul_ps(widen(sub), d);
                    let mn = _mm256_mul_ps(widen(sub.add(GROUP)), dmin);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(sc, da), *acc);
                    *acc = _mm256_fnmadd_ps(mn, sd, *acc);
                }
            }
            let out = tile.as_mut_ptr().add(r * 2 * GROUP + g * GROUP);
            _mm256_storeu_ps(out, acc[0]);
            _mm256_storeu_ps(out.add(8), acc[1]);
        }
    }
}
