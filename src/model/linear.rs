//! One linear layer for every precision, so a model file reads the same whatever the weights
//! are kept as: f32, the checkpoint's own bf16/f16 (never widened in memory), or quantized in
//! memory to q8_0 / q4k while loading.
//!
//! On a CPU with AVX2 (or AVX-512), bf16/f16, q8_0 and q4k weights live in fovea's own kernels'
//! layouts (`gemm/`): one compact copy that serves the prefill at matrix-matrix speed and
//! decoding at memory speed. Elsewhere (other CPUs, CUDA, Metal) candle multiplies: its
//! `QMatMul` for quantized weights, its matmul for stored ones.
//!
//! Quantization happens a slice of rows at a time straight from the file (`weights.rs`), on
//! every core: only a slice per core is ever in f32, so the full f32 model never exists.
//! Inputs and outputs are always f32: attention scores, softmax, the probe and the knockout
//! stay in f32. A matrix whose input size does not divide the block size falls back (q4k's 256
//! -> q8_0's 32 -> stored precision) and the fallback is logged.

use std::sync::{Arc, Mutex};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::cache::WeightCache;
use super::gemm::from_tensors::{
    half_type, own_kernels, pack_half, pack_q4k, pack_q8, SLICE_ELEMENTS,
};
use super::gemm::q4k::PackedQ4K;
use super::gemm::stored::PackedHalf;
use super::gemm::PackedQ8;
use super::weights::WeightFiles;

/// In-memory quantization of the language model's linear layers and LM head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Quantize {
    /// Keep the checkpoint's storage precision (bf16, f16 or f32).
    #[default]
    None,
    Q8_0,
    Q4K,
}

impl Quantize {
    pub fn parse(text: &str) -> std::result::Result<Quantize, String> {
        match text.to_ascii_lowercase().as_str() {
            "none" | "stored" => Ok(Quantize::None),
            "q8_0" | "q8" => Ok(Quantize::Q8_0),
            "q4k" | "q4_k" => Ok(Quantize::Q4K),
            other => Err(format!(
                "unknown quantization {other:?}: use q8_0, q4k or none"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::Q8_0 => "q8_0",
            Quantize::Q4K => "q4k",
        }
    }

    fn ggml(self) -> Option<GgmlDType> {
        match self {
            Quantize::None => None,
            Quantize::Q8_0 => Some(GgmlDType::Q8_0),
            Quantize::Q4K => Some(GgmlDType::Q4K),
        }
    }
}

/// Called as layers load: (what, done, total); returning false cancels the load.
#[derive(Clone)]
pub struct LoadProgress(pub Arc<dyn Fn(&str, usize, usize) -> bool + Send + Sync>);

impl std::fmt::Debug for LoadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadProgress")
    }
}

/// How the layers of one model are loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadPlan {
    /// The checkpoint's tensors; `None` when the layers create their own weights through the
    /// builder (the bench's generated checkpoint).
    pub files: Option<Arc<WeightFiles>>,
    pub quantize: Quantize,
    /// What fell back to another precision, and why (shown once after loading).
    pub notes: Arc<Mutex<Vec<String>>>,
    pub progress: Option<LoadProgress>,
    /// Quantized matrices read from (and recorded for) the weight cache (`cache.rs`).
    pub cache: Option<Arc<WeightCache>>,
}

impl LoadPlan {
    /// Layers that take everything from the builder (creating weights, or f32 as it gives).
    pub fn from_builder() -> LoadPlan {
        LoadPlan::default()
    }

    /// The same files at storage precision (the vision tower and projector are never quantized).
    pub fn unquantized(&self) -> LoadPlan {
        LoadPlan {
            quantize: Quantize::None,
            cache: None,
            ..self.clone()
        }
    }

    /// Report that `done` of `total` parts of `what` are loaded; an error if the user cancelled.
    pub fn report(&self, what: &str, done: usize, total: usize) -> Result<()> {
        match &self.progress {
            Some(progress) if !(progress.0)(what, done, total) => {
                candle_core::bail!("loading cancelled")
            }
            _ => Ok(()),
        }
    }

    /// The stored dtype of the checkpoint tensor `name` under `vb`, without reading it.
    pub(crate) fn stored_dtype(&self, vb: &VarBuilder, name: &str) -> Option<DType> {
        self.files.as_ref()?.dtype(&join(&vb.prefix(), name))
    }

    pub(crate) fn note(&self, text: String) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(text);
        }
    }

    /// A large tensor (embeddings) in its stored dtype, or from the builder.
    pub fn stored_tensor(
        &self,
        vb: &VarBuilder,
        shape: (usize, usize),
        name: &str,
    ) -> Result<Tensor> {
        let Some(files) = &self.files else {
            return vb.get(shape, name);
        };
        let full = join(&vb.prefix(), name);
        let tensor = files.load(&full, vb.device())?;
        if tensor.dims() != [shape.0, shape.1] {
            candle_core::bail!(
                "tensor {full} has shape {:?}, the config implies {shape:?}",
                tensor.dims()
            )
        }
        Ok(tensor)
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

#[derive(Clone, Debug)]
enum Weight {
    /// (out, in), f32 or the storage dtype.
    Dense(Tensor),
    /// Row blocks of the (out, in) matrix, in order.
    Quantized(Vec<QMatMul>),
    /// q8_0 in fovea's own kernels' layout (CPU): one copy for prefill and decoding.
    Q8(Arc<PackedQ8>),
    /// q4k in fovea's own kernels' layout (CPU).
    Q4K(Arc<PackedQ4K>),
    /// The checkpoint's bf16/f16 in fovea's kernels' layout (CPU).
    Half(Arc<PackedHalf>),
}

/// `y = x W^T + b` with f32 in and out.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    out_dim: usize,
}

impl Linear {
    /// A layer from an existing (out, in) matrix (a tied LM head).
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        let out_dim = weight.dim(0)?;
        Ok(Linear {
            weight: Weight::Dense(weight),
            bias,
            out_dim,
        })
    }

    /// A layer over q8_0 weights kept elsewhere (a tied head read from the weight cache).
    pub fn from_q8(packed: Arc<PackedQ8>) -> Linear {
        Linear {
            out_dim: packed.rows(),
            weight: Weight::Q8(packed),
            bias: None,
        }
    }

    /// The tied LM head: the embedding matrix, quantized as the plan says.
    pub fn tied(embeddings: &Tensor, plan: &LoadPlan, name: &str) -> Result<Linear> {
        let (out_dim, in_dim) = embeddings.dims2()?;
        match choose(plan, in_dim, name) {
            Some(GgmlDType::Q8_0) if own_kernels(embeddings.device()) => {
                let packed =
                    WeightCache::q8_or(plan.cache.as_deref(), name, (out_dim, in_dim), || {
                        pack_q8(out_dim, in_dim, |rows| {
                            embeddings.narrow(0, rows.start, rows.len())
                        })
                    })?;
                Ok(Linear {
                    weight: Weight::Q8(packed),
                    bias: None,
                    out_dim,
                })
            }
            Some(GgmlDType::Q4K) if own_kernels(embeddings.device()) => {
                let packed =
                    WeightCache::q4k_or(plan.cache.as_deref(), name, (out_dim, in_dim), || {
                        pack_q4k(out_dim, in_dim, |rows| {
                            embeddings.narrow(0, rows.start, rows.len())
                        })
                    })?;
                Ok(Linear {
                    weight: Weight::Q4K(packed),
                    bias: None,
                    out_dim,
                })
            }
            Some(dtype) => {
                let blocks = quantize_rows(out_dim, in_dim, dtype, |rows| {
                    embeddings.narrow(0, rows.start, rows.len())
                })?;
                Ok(Linear {
                    weight: Weight::Quantized(blocks),
                    bias: None,
                    out_dim,
                })
            }
            None => Linear::from_weight(embeddings.clone(), None),
        }
    }

    /// The q8_0 weights in fovea's layout, when that is how this layer is kept (a tied head
    /// shares them with the embedding table).
    pub fn packed_q8(&self) -> Option<Arc<PackedQ8>> {
        match &self.weight {
            Weight::Q8(packed) => Some(packed.clone()),
            _ => None,
        }
    }

    /// Load `weight` (and `bias`) under `vb` as the plan says.
    pub fn load(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        plan: &LoadPlan,
    ) -> Result<Linear> {
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        let Some(files) = &plan.files else {
            let weight = vb.get((out_dim, in_dim), "weight")?;
            return Ok(Linear {
                weight: Weight::Dense(weight),
                bias,
                out_dim,
            });
        };
        let name = join(&vb.prefix(), "weight");
        match files.shape(&name) {
            Some(shape) if shape == [out_dim, in_dim] => {}
            Some(shape) => candle_core::bail!(
                "tensor {name} has shape {shape:?}, the config implies {:?}",
                [out_dim, in_dim]
            ),
            None => candle_core::bail!("cannot find tensor {name}"),
        }
        let weight =
            match choose(plan, in_dim, &name) {
                Some(GgmlDType::Q8_0) if own_kernels(vb.device()) => Weight::Q8(
                    WeightCache::q8_or(plan.cache.as_deref(), &name, (out_dim, in_dim), || {
                        pack_q8(out_dim, in_dim, |rows| {
                            files.load_rows(&name, Some(rows), vb.device())
                        })
                    })?,
                ),
                Some(GgmlDType::Q4K) if own_kernels(vb.device()) => Weight::Q4K(
                    WeightCache::q4k_or(plan.cache.as_deref(), &name, (out_dim, in_dim), || {
                        pack_q4k(out_dim, in_dim, |rows| {
                            files.load_rows(&name, Some(rows), vb.device())
                        })
                    })?,
                ),
                Some(dtype) => Weight::Quantized(quantize_rows(out_dim, in_dim, dtype, |rows| {
                    files.load_rows(&name, Some(rows), vb.device())
                })?),
                None => match half_type(files.dtype(&name), in_dim, vb.device()) {
                    Some(dtype) => {
                        Weight::Half(Arc::new(pack_half(out_dim, in_dim, dtype, |rows| {
                            files.load_rows(&name, Some(rows), vb.device())
                        })?))
                    }
                    None => Weight::Dense(files.load(&name, vb.device())?),
                },
            };
        Ok(Linear {
            weight,
            bias,
            out_dim,
        })
    }

    /// Bytes the weight takes in memory.
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            Weight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Weight::Quantized(blocks) => blocks
                .iter()
                .map(|q| match q {
                    QMatMul::QTensor(t) => t.storage_size_in_bytes(),
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => {
                        t.elem_count() * t.dtype().size_in_bytes()
                    }
                })
                .sum(),
            Weight::Q8(packed) => packed.bytes(),
            Weight::Half(packed) => packed.bytes(),
            Weight::Q4K(packed) => packed.bytes(),
        }
    }
}

/// The quantized type for a matrix with `in_dim` inputs, falling back when the rows do not
/// divide the block size (q4k's 256 -> q8_0's 32 -> storage precision).
fn choose(plan: &LoadPlan, in_dim: usize, name: &str) -> Option<GgmlDType> {
    let wanted = plan.quantize.ggml()?;
    for dtype in [wanted, GgmlDType::Q8_0] {
        if in_dim % dtype.block_size() == 0 {
            if dtype != wanted {
                plan.note(format!(
                    "{name}: {in_dim} inputs do not divide {}'s block of {}; kept as q8_0",
                    plan.quantize.name(),
                    wanted.block_size()
                ));
            }
            return Some(dtype);
        }
    }
    plan.note(format!(
        "{name}: {in_dim} inputs do not divide q8_0's block of 32; kept at storage precision"
    ));
    None
}

fn quantize_rows(
    out_dim: usize,
    in_dim: usize,
    dtype: GgmlDType,
    rows_of: impl Fn(std::ops::Range<usize>) -> Result<Tensor> + Sync,
) -> Result<Vec<QMatMul>> {
    let per_block = (SLICE_ELEMENTS / in_dim.max(1)).clamp(1, out_dim.max(1));
    let ranges: Vec<std::ops::Range<usize>> = (0..out_dim)
        .step_by(per_block)
        .map(|start| start..(start + per_block).min(out_dim))
        .collect();
    let quantize = |rows: std::ops::Range<usize>| -> Result<QMatMul> {
        // `QTensor::quantize` reads the whole storage behind a tensor, not its view: a slice
        // of a larger f32 tensor (a tied head's rows) must be copied out first.
        let slice = rows_of(rows)?;
        let slice = if slice.dtype() == DType::F32 {
            let values = slice.flatten_all()?.to_vec1::<f32>()?;
            Tensor::from_vec(values, slice.shape(), slice.device())?
        } else {
            slice.to_dtype(DType::F32)?
        };
        QMatMul::from_qtensor(QTensor::quantize(&slice, dtype)?)
    };
    // Blocks are independent: quantize them on every core (candle's quantizer is one thread),
    // each thread holding one f32 slice at a time.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(ranges.len())
        .max(1);
    if threads == 1 {
        return ranges.into_iter().map(quantize).collect();
    }
    let results: Vec<Mutex<Option<Result<QMatMul>>>> =
        ranges.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for first in 0..threads {
            let (ranges, results, quantize) = (&ranges, &results, &quantize);
            scope.spawn(move || {
                for index in (first..ranges.len()).step_by(threads) {
                    let block = quantize(ranges[index].clone());
                    if let Ok(mut slot) = results[index].lock() {
                        *slot = Some(block);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(candle_core::Error::Msg("a quantizing thread failed".into()))
            })
        })
        .collect()
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&1);
        let rows = x.elem_count() / in_dim.max(1);
        let flat = x.reshape((rows, in_dim))?;
        let mut out = match &self.weight {
            Weight::Dense(w) if w.dtype() == flat.dtype() => flat.matmul(&w.t()?)?,
            // candle's CPU matmul has no bf16: widen this layer's weight for this call only, a
            // block of rows at a time, so a 152k-row LM head never exists whole in f32.
            Weight::Dense(w) if flat.device().is_cpu() => {
                let (rows, inputs) = w.dims2()?;
                let per_block = (SLICE_ELEMENTS / inputs.max(1)).clamp(1, rows.max(1));
                if per_block >= rows {
                    flat.matmul(&w.to_dtype(flat.dtype())?.t()?)?
                } else {
                    let mut parts = Vec::new();
                    let mut start = 0;
                    while start < rows {
                        let len = per_block.min(rows - start);
                        let block = w.narrow(0, start, len)?.to_dtype(flat.dtype())?;
                        parts.push(flat.matmul(&block.t()?)?);
                        start += len;
                    }
                    Tensor::cat(&parts, 1)?
                }
            }
            Weight::Dense(w) => flat
                .to_dtype(w.dtype())?
                .matmul(&w.t()?)?
                .to_dtype(x.dtype())?,
            Weight::Q8(packed) => {
                let values = flat.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let out = packed.matmul(&values, rows);
                Tensor::from_vec(out, (rows, self.out_dim), flat.device())?
                    .to_dtype(flat.dtype())?
            }
            Weight::Q4K(packed) => {
                let values = flat.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let out = packed.matmul(&values, rows);
                Tensor::from_vec(out, (rows, self.out_dim), flat.device())?
                    .to_dtype(flat.dtype())?
            }
            Weight::Half(packed) => {
                let values = flat.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let out = packed.matmul(&values, rows);
                Tensor::from_vec(out, (rows, self.out_dim), flat.device())?
                    .to_dtype(flat.dtype())?
            }
            Weight::Quantized(blocks) if blocks.len() == 1 => blocks[0].forward(&flat)?,
            Weight::Quantized(blocks) => {
                let parts = blocks
                    .iter()
                    .map(|q| q.forward(&flat))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 1)?
            }
        };
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(bias)?;
        }
        let mut shape = dims;
        if let Some(last) = shape.last_mut() {
            *last = self.out_dim;
        }
        out.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A bf16 matrix larger than one widening block gives the same product as widening it
    /// whole (the product written out with f32 weights).
    #[test]
    fn block_widening_matches_the_whole_product() {
        let (rows, inputs) = (4100, 4096); // 16.8 Mi elements: two blocks
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (rows, inputs), &device)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, inputs), &device).unwrap();
        let layer = Linear::from_weight(w.clone(), None).unwrap();
        let got = layer.forward(&x).unwrap();
        assert_eq!(got.dims(), [1, 3, rows]);
        let expected = x
            .reshape((3, inputs))
            .unwrap()
            .matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap();
        let diff = (got.reshape((3, rows)).unwrap() - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-3, "max difference {diff}");
    }

    /// A matrix quantized as row blocks on several threads holds exactly the weights of the
    /// matrix quantized whole, and multiplies like them (within the int8 rounding of the
    /// activations that candle's kernels apply).
    #[test]
    fn parallel_row_blocks_match_the_whole_quantized_matrix() {
        let (rows, inputs) = (9000, 4096); // three blocks of at most 4096 rows
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (rows, inputs), &device).unwrap();
        let x = Tensor::randn(0f32, 1.0, (5, inputs), &device).unwrap();
        let blocks = quantize_rows(rows, inputs, GgmlDType::Q8_0, |r| {
            w.narrow(0, r.start, r.len())
        })
        .unwrap();
        assert_eq!(blocks.len(), 3);
        let dequantized: Vec<Tensor> = blocks
            .iter()
            .map(|q| match q {
                QMatMul::QTensor(t) => t.dequantize(&device).unwrap(),
                other => panic!("not quantized: {other:?}"),
            })
            .collect();
        let from_blocks = Tensor::cat(&dequantized, 0).unwrap();
        let whole = QTensor::quantize(&w, GgmlDType::Q8_0)
            .unwrap()
            .dequantize(&device)
            .unwrap();
        let max_abs = |t: Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(
            max_abs((&from_blocks - &whole).unwrap()),
            0.0,
            "same quantized weights"
        );
        let layer = Linear {
            weight: Weight::Quantized(blocks),
            bias: None,
            out_dim: rows,
        };
        let got = layer.forward(&x).unwrap();
        let exact = x.matmul(&whole.t().unwrap()).unwrap();
        let diff = max_abs((got - &exact).unwrap());
        let scale = max_abs(exact);
        assert!(diff <= 0.02 * scale, "max difference {diff} of {scale}");
    }
}
