//! The token embedding table, kept as stored or (when the language model is quantized) as
//! q8_0 rows widened on lookup.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};

use super::cache::WeightCache;
use super::gemm::from_tensors::{own_kernels, pack_q8};
use super::gemm::PackedQ8;
use super::linear::{Linear, LoadPlan, Quantize};

/// A token embedding table (vocab, hidden). When the language model is quantized and fovea's
/// kernels run (CPU), its rows are kept as q8_0 (8.5 bits a value instead of 16: Qwen2-7B's
/// 152064 x 3584 table takes 0.58 GB instead of 1.09) and widened to f32 on lookup; otherwise
/// as stored.
#[derive(Clone, Debug)]
pub struct Embedding {
    table: EmbeddingTable,
    vocab: usize,
    hidden: usize,
    device: candle_core::Device,
}

#[derive(Clone, Debug)]
enum EmbeddingTable {
    Stored(Tensor),
    Q8(Arc<PackedQ8>),
}

impl Embedding {
    /// The table from the checkpoint's `stored` (vocab, hidden) tensor, as the plan keeps it;
    /// `tied_head` is the LM head made from the same tensor, whose q8_0 rows are shared.
    pub fn new(
        stored: Tensor,
        plan: &LoadPlan,
        tied_head: Option<&Linear>,
        name: &str,
    ) -> Result<Embedding> {
        let (vocab, hidden) = stored.dims2()?;
        let device = stored.device().clone();
        let table = if plan.quantize == Quantize::None || !own_kernels(&device) {
            EmbeddingTable::Stored(stored)
        } else if let Some(shared) = tied_head.and_then(Linear::packed_q8) {
            EmbeddingTable::Q8(shared)
        } else if hidden % 32 != 0 {
            plan.note(format!(
                "{name}: {hidden} values a row do not divide q8_0's block of 32; kept as stored"
            ));
            EmbeddingTable::Stored(stored)
        } else {
            let packed = WeightCache::q8_or(
                plan.cache.as_deref(),
                &Embedding::cache_name(name),
                (vocab, hidden),
                || {
                    pack_q8(vocab, hidden, |rows| {
                        stored.narrow(0, rows.start, rows.len())
                    })
                },
            )?;
            EmbeddingTable::Q8(packed)
        };
        Ok(Embedding {
            table,
            vocab,
            hidden,
            device,
        })
    }

    /// The table's name in the weight cache.
    pub fn cache_name(name: &str) -> String {
        format!("{name} (embedding)")
    }

    /// A q8_0 table read from the weight cache (or shared with a tied head read from it).
    pub fn from_q8(packed: Arc<PackedQ8>, device: &candle_core::Device) -> Embedding {
        Embedding {
            vocab: packed.rows(),
            hidden: packed.inputs(),
            table: EmbeddingTable::Q8(packed),
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    /// Bytes the table takes in memory.
    pub fn bytes(&self) -> usize {
        match &self.table {
            EmbeddingTable::Stored(t) => t.elem_count() * t.dtype().size_in_bytes(),
            EmbeddingTable::Q8(packed) => packed.bytes(),
        }
    }

    /// Rows `ids` as f32 (1, T, hidden); an id past the vocabulary is an error.
    pub fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            candle_core::bail!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.vocab
            )
        }
        match &self.table {
            EmbeddingTable::Stored(table) => {
                let ids = Tensor::new(ids, &self.device)?;
                table
                    .index_select(&ids, 0)?
                    .to_dtype(DType::F32)?
                    .unsqueeze(0)
            }
            EmbeddingTable::Q8(packed) => {
                let mut rows = vec![0f32; ids.len() * self.hidden];
                for (&id, out) in ids.iter().zip(rows.chunks_mut(self.hidden)) {
                    packed.dequantize_row(id as usize, out);
                }
                Tensor::from_vec(rows, (1, ids.len(), self.hidden), &self.device)
            }
        }
    }
}
