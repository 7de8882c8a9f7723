//! Filling the kernels' packed layouts from candle tensors, a slice of rows at a time (the
//! loader hands over rows of a checkpoint tensor or of the embedding matrix), and which
//! weights the kernels take.

use std::ops::Range;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Result, Tensor};

use super::q4k::PackedQ4K;
use super::q8::PackedQ8;
use super::stored::{HalfKernel, HalfType, PackedHalf};
use super::tile::Kernel;

/// f32 elements converted at a time per core while packing (64 MiB).
pub const SLICE_ELEMENTS: usize = 16 << 20;

/// Rows per slice for matrices with `in_dim` inputs (at least one group of 16).
fn rows_per_call(in_dim: usize) -> usize {
    (SLICE_ELEMENTS / in_dim.max(1)).max(16)
}

/// Quantize an (out, in) matrix to q4k (ggml's quantizer, in candle) and unpack it into
/// fovea's layout, a slice of rows at a time on every core.
pub fn pack_q4k(
    out_dim: usize,
    in_dim: usize,
    rows_of: impl Fn(Range<usize>) -> Result<Tensor> + Sync,
) -> Result<PackedQ4K> {
    let rows_per_call = rows_per_call(in_dim);
    PackedQ4K::from_ggml(out_dim, in_dim, rows_per_call, |rows| {
        let slice = rows_of(rows)?;
        // `QTensor::quantize` reads the whole storage behind a view: copy the rows out.
        let values = slice
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let slice = Tensor::from_vec(values, slice.shape(), slice.device())?;
        Ok(QTensor::quantize(&slice, GgmlDType::Q4K)?.data()?.to_vec())
    })
}

/// fovea's q8_0 kernels run on the CPU with AVX2 or AVX-512 VNNI; elsewhere (other CPUs,
/// CUDA, Metal) candle's `QMatMul` multiplies.
pub fn own_kernels(device: &Device) -> bool {
    device.is_cpu() && Kernel::best() != Kernel::Scalar
}

/// A bf16/f16 matrix is multiplied by fovea's kernels on the CPU (even input count); f32 and
/// other devices keep candle's matmul.
pub fn half_type(stored: Option<DType>, in_dim: usize, device: &Device) -> Option<HalfType> {
    if !device.is_cpu() || in_dim % 2 != 0 || HalfKernel::best() == HalfKernel::Scalar {
        return None;
    }
    match stored? {
        DType::BF16 => Some(HalfType::Bf16),
        DType::F16 => Some(HalfType::F16),
        _ => None,
    }
}

/// Pack an (out, in) bf16/f16 matrix in fovea's layout, a slice of rows at a time.
pub fn pack_half(
    out_dim: usize,
    in_dim: usize,
    dtype: HalfType,
    rows_of: impl Fn(Range<usize>) -> Result<Tensor>,
) -> Result<PackedHalf> {
    let rows_per_call = rows_per_call(in_dim);
    PackedHalf::pack(out_dim, in_dim, dtype, rows_per_call, |rows| {
        let slice = rows_of(rows)?.flatten_all()?;
        match dtype {
            HalfType::Bf16 => Ok(slice
                .to_dtype(DType::BF16)?
                .to_vec1::<half::bf16>()?
                .into_iter()
                .map(|v| v.to_bits())
                .collect()),
            HalfType::F16 => Ok(slice
                .to_dtype(DType::F16)?
                .to_vec1::<half::f16>()?
                .into_iter()
                .map(|v| v.to_bits())
                .collect()),
        }
    })
}

/// Quantize an (out, in) matrix to fovea's q8_0 layout, a slice of rows at a time.
pub fn pack_q8(
    out_dim: usize,
    in_dim: usize,
    rows_of: impl Fn(Range<usize>) -> Result<Tensor> + Sync,
) -> Result<PackedQ8> {
    let rows_per_call = rows_per_call(in_dim);
    PackedQ8::quantize(out_dim, in_dim, rows_per_call, |rows| {
        rows_of(rows)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
    })
}
