//! fovea's own int8 matrix products for q8_0 weights: one compact copy of the weights serves
//! both the prefill (matrix x matrix, at int8 dot-product speed) and decoding (matrix x
//! vector, at memory speed).
//!
//! Why not candle's `QMatMul`: candle 0.11's CPU path either multiplies one token at a time,
//! or builds a second, expanded copy of the weights for its tiled kernels (measured: the q4k
//! 7B model at 6.5 GiB instead of 4). Here the weights are quantized once, while loading, into
//! the layout the kernels read, and nothing else is kept.
//!
//! Numbers: weights are q8_0 as ggml defines it (blocks of 32 inputs, `d = max|w| / 127`,
//! `q = round(w / d)`, `d` kept as f16). Each row of activations is quantized the same way
//! when the product starts (as ggml's q8_0 x q8_0 dot product does). Block products are exact
//! int32 sums, scaled by `d_w * d_a` and summed in f32, so every kernel below computes the same
//! integers and differs from the others only in the order of f32 additions.
//!
//! Layout: output rows (the matrix's rows, `n` of them) in groups of 16; inside a group, for
//! each quad of 4 inputs, 16 x 4 bytes (one 512-bit register: 16 output lanes x 4 inputs, the
//! operand shape of `vpdpbusd`). Weights are stored as `q + 128` (unsigned, 1..=255); the
//! AVX-512 VNNI kernel subtracts `128 * sum(q_a)` per block, the AVX2 kernel flips the sign
//! bit back. Scales: per group and block, 16 f16 values.

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_bf16;

pub mod from_tensors;
pub mod q4k;
pub mod q8;
pub mod store;
pub mod stored;
pub mod tier;
pub mod tile;

pub use q8::PackedQ8;
pub use tile::{Kernel, BLOCK};
