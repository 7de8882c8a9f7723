//! How much memory a checkpoint will take once loaded at a given precision, estimated from the
//! safetensors headers alone, and a refusal with a clear message when that cannot fit: the
//! kernel's OOM killer gives the user nothing to act on.
//!
//! The estimate counts what the loader keeps: the text decoder's linear layers and head at
//! 8.5 bits (q8_0) or 4.5 bits (q4k) per weight when quantized, the embedding table then at
//! 8.5 bits, everything else (norms, the projector, the vision tower) as stored; plus the working set of one pass: a block
//! of a bf16 matrix widened to f32 for one matmul (candle's CPU matmul has no bf16) and 1 GiB
//! of activations, KV cache and allocator slack. Set `FOVEA_SKIP_MEMORY_CHECK=1` to load anyway
//! (with swap, say), or `FOVEA_MEMORY_LIMIT=12G` to keep fovea within less than what is free.

use anyhow::{bail, Result};
use candle_core::DType;

use super::config::Checkpoint;
use super::linear::Quantize;
use super::weights::WeightFiles;

const GIB: f64 = (1u64 << 30) as f64;

fn bits_per_weight(quantize: Quantize) -> Option<f64> {
    match quantize {
        Quantize::None => None,
        Quantize::Q8_0 => Some(8.5),
        Quantize::Q4K => Some(4.5),
    }
}

/// Estimated peak bytes of a loaded model and one VGRefine pass, as `quantize` keeps it.
pub fn estimate_bytes(
    checkpoint: &Checkpoint,
    files: &WeightFiles,
    vision_files: Option<&WeightFiles>,
    quantize: Quantize,
) -> u64 {
    let layout = &checkpoint.layout;
    let text_prefix = layout.text.trim_end_matches('.');
    let head_prefix = layout.lm_head.trim_end_matches('.');
    let in_text = |name: &str| {
        (!text_prefix.is_empty() && name.starts_with(text_prefix))
            || (!head_prefix.is_empty() && name.starts_with(head_prefix))
    };
    let is_other = |name: &str| {
        [
            &layout.vision,
            &layout.projector_first,
            &layout.projector_second,
        ]
        .iter()
        .any(|p| !p.is_empty() && name.starts_with(p.trim_end_matches('.')))
    };
    let mut total = 0f64;
    let mut largest_matrix = 0f64;
    let mut head_seen = false;
    for (name, dtype, shape) in files.tensors() {
        let elements = shape.iter().product::<usize>() as f64;
        let stored = elements * dtype.size_in_bytes() as f64;
        let wanted = in_text(name) || is_other(name);
        if !wanted {
            continue;
        }
        head_seen |= !head_prefix.is_empty() && name.starts_with(head_prefix);
        let quantizable = in_text(name)
            && !is_other(name)
            && shape.len() == 2
            && !name.contains("embed_tokens")
            && shape[1] % 32 == 0
            && matches!(dtype, DType::F32 | DType::F16 | DType::BF16);
        // The embedding table of a quantized model is kept as q8_0 rows (linear.rs).
        let embedding = in_text(name)
            && name.contains("embed_tokens")
            && shape.len() == 2
            && shape[1] % 32 == 0
            && matches!(dtype, DType::F32 | DType::F16 | DType::BF16);
        total += match (bits_per_weight(quantize), quantizable, embedding) {
            (Some(bits), true, _) => elements * bits / 8.0,
            (Some(_), _, true) => elements * 8.5 / 8.0,
            _ => stored,
        };
        // A matrix kept as bf16/f16 is widened to f32 for each matmul on the CPU.
        let widened = shape.len() == 2
            && !name.contains("embed_tokens")
            && !(quantizable && bits_per_weight(quantize).is_some())
            && dtype != DType::F32;
        if widened {
            // Widened a block of at most 16 Mi elements at a time (linear.rs).
            largest_matrix = largest_matrix.max(elements.min((16u64 << 20) as f64) * 4.0);
        }
    }
    if let Some(vision) = vision_files {
        let prefix = layout.vision.trim_end_matches('.');
        total += vision
            .tensors()
            .filter(|(name, _, _)| name.starts_with(prefix))
            .map(|(_, dtype, shape)| {
                shape.iter().product::<usize>() as f64 * dtype.size_in_bytes() as f64
            })
            .sum::<f64>();
    }
    // A tied head is a quantized copy of the embeddings; at q8_0 the two share their rows.
    if checkpoint.text.tie_word_embeddings && !head_seen && quantize == Quantize::Q4K {
        if let Some(bits) = bits_per_weight(quantize) {
            total += (checkpoint.text.vocab_size * checkpoint.text.hidden_size) as f64 * bits / 8.0;
        }
    }
    (total + largest_matrix + GIB) as u64
}

/// Memory fovea may use: what the system can give without swapping (Linux: MemAvailable,
/// Windows: the available physical memory; see [`crate::platform`]), or `FOVEA_MEMORY_LIMIT`
/// (bytes, or with a K/M/G suffix) when that is smaller.
pub fn available_bytes() -> Option<u64> {
    let system = crate::platform::available_memory_bytes();
    let limit = std::env::var("FOVEA_MEMORY_LIMIT")
        .ok()
        .and_then(|v| parse_size(&v));
    match (system, limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches(['B', 'b', 'i']);
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, ' '),
    };
    let value: f64 = number.trim().parse().ok()?;
    let scale = match unit {
        ' ' => 1.0,
        'K' => 1024.0,
        'M' => 1024.0 * 1024.0,
        'G' => GIB,
        _ => return None,
    };
    Some((value * scale) as u64)
}

/// Refuse to load what cannot fit, naming what would.
pub fn check_fits(
    checkpoint: &Checkpoint,
    files: &WeightFiles,
    vision_files: Option<&WeightFiles>,
    quantize: Quantize,
) -> Result<()> {
    if std::env::var_os("FOVEA_SKIP_MEMORY_CHECK").is_some_and(|v| v != "0") {
        return Ok(());
    }
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    let needed = estimate_bytes(checkpoint, files, vision_files, quantize);
    if needed <= available {
        return Ok(());
    }
    let options: Vec<String> = [Quantize::None, Quantize::Q8_0, Quantize::Q4K]
        .into_iter()
        .filter(|&q| q != quantize)
        .map(|q| {
            let bytes = estimate_bytes(checkpoint, files, vision_files, q);
            let fits = if bytes <= available {
                "fits"
            } else {
                "does not fit"
            };
            let flag = match q {
                Quantize::None => "no --quantize".to_string(),
                other => format!("--quantize {}", other.name()),
            };
            format!("{flag}: about {:.1} GiB ({fits})", bytes as f64 / GIB)
        })
        .collect();
    bail!(
        "this model needs about {:.1} GiB at {} precision and {:.1} GiB of memory is available; {} \
         (FOVEA_SKIP_MEMORY_CHECK=1 loads anyway): {}",
        needed as f64 / GIB,
        match quantize {
            Quantize::None => "its stored".to_string(),
            other => other.name().to_string(),
        },
        available as f64 / GIB,
        options.join(", "),
        checkpoint.dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("8GiB"), Some(8 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
    }
}
