//! Checkpoint tensors read one at a time, in the dtype they are stored in.
//!
//! candle's memory-mapped loader widens every tensor to the builder's dtype and keeps the
//! whole file mapped, so a bf16 7B model becomes 30 GB of f32 plus the mapped pages. Here a
//! safetensors header is parsed once and each tensor is read with `pread` straight into its
//! own buffer when a layer asks for it: resident memory is the weights as kept (bf16, or
//! quantized by `linear.rs`), never a second copy, and nothing is mapped. Small tensors
//! (norms, biases, position tables) are converted to whatever dtype the caller asks for.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use half::vec::HalfBitsVecExt;

/// Where one tensor lies.
#[derive(Clone, Debug)]
struct Entry {
    file: usize,
    /// `Err(name)` for a dtype fovea cannot read: refused only if a layer asks for the tensor.
    dtype: std::result::Result<DType, String>,
    shape: Vec<usize>,
    /// Byte offset from the start of the file.
    offset: u64,
    len: usize,
}

/// The tensors of one or more safetensors files (sharded checkpoints, a separate vision tower).
#[derive(Debug)]
pub struct WeightFiles {
    paths: Vec<PathBuf>,
    files: Vec<File>,
    entries: HashMap<String, Entry>,
}

fn parse_dtype(text: &str) -> Option<DType> {
    Some(match text {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

impl WeightFiles {
    /// Read the headers of `paths`; no tensor data is read yet.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<Arc<WeightFiles>> {
        use anyhow::{bail, Context};
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let file = File::open(path)
                .with_context(|| format!("cannot open the weights {}", path.display()))?;
            let size = file
                .metadata()
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            let mut len_bytes = [0u8; 8];
            read_at(&file, &mut len_bytes, 0).with_context(|| {
                format!("not a safetensors file (too short): {}", path.display())
            })?;
            let header_len = u64::from_le_bytes(len_bytes);
            if header_len > 100 << 20 || 8 + header_len > size {
                bail!(
                    "not a safetensors file (header of {header_len} bytes in a {size}-byte file): {}",
                    path.display()
                );
            }
            let mut header = vec![0u8; header_len as usize];
            read_at(&file, &mut header, 8)
                .with_context(|| format!("cannot read the header of {}", path.display()))?;
            let header: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&header).with_context(|| {
                    format!("the safetensors header is not JSON: {}", path.display())
                })?;
            let data_start = 8 + header_len;
            for (name, info) in header {
                if name == "__metadata__" {
                    continue;
                }
                let dtype_text = info["dtype"].as_str().unwrap_or_default();
                let dtype = parse_dtype(dtype_text).ok_or_else(|| dtype_text.to_string());
                let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())
                    .with_context(|| format!("tensor {name} has no shape: {}", path.display()))?;
                let [start, end]: [u64; 2] = serde_json::from_value(info["data_offsets"].clone())
                    .with_context(|| {
                    format!("tensor {name} has no data offsets: {}", path.display())
                })?;
                let fits_shape = match dtype {
                    Ok(dtype) => {
                        let expected =
                            shape.iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64;
                        end.checked_sub(start) == Some(expected)
                    }
                    Err(_) => end >= start,
                };
                if !fits_shape || data_start + end > size {
                    bail!(
                        "tensor {name} ({dtype_text} {shape:?}) has offsets {start}..{end} that do not fit its shape or the {size}-byte file: {}",
                        path.display()
                    );
                }
                entries.insert(
                    name,
                    Entry {
                        file: index,
                        dtype,
                        shape,
                        offset: data_start + start,
                        len: (end - start) as usize,
                    },
                );
            }
            files.push(file);
        }
        Ok(Arc::new(WeightFiles {
            paths: paths.to_vec(),
            files,
            entries,
        }))
    }

    /// Every tensor fovea can read: name, stored dtype, shape.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, DType, &[usize])> {
        self.entries.iter().filter_map(|(name, e)| {
            e.dtype
                .as_ref()
                .ok()
                .map(|&dtype| (name.as_str(), dtype, e.shape.as_slice()))
        })
    }

    /// The names of all tensors, readable or not.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored dtype, when fovea can read it.
    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.entries
            .get(name)
            .and_then(|e| e.dtype.as_ref().ok().copied())
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Read a tensor in its stored dtype. Rows `rows` of the first dimension only, when given
    /// (so a large matrix can be converted or quantized a slice at a time).
    pub fn load_rows(
        &self,
        name: &str,
        rows: Option<std::ops::Range<usize>>,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(entry) = self.entries.get(name) else {
            candle_core::bail!("cannot find tensor {name}")
        };
        let (offset, shape) = match rows {
            Some(rows) => {
                let total = entry.shape.first().copied().unwrap_or(1);
                if rows.start > rows.end || rows.end > total {
                    candle_core::bail!("rows {rows:?} of {name} outside 0..{total}")
                }
                let row_bytes = entry.len / total.max(1);
                let mut shape = entry.shape.clone();
                if let Some(first) = shape.first_mut() {
                    *first = rows.len();
                }
                (entry.offset + (rows.start * row_bytes) as u64, shape)
            }
            None => (entry.offset, entry.shape.clone()),
        };
        let count: usize = shape.iter().product();
        let file = &self.files[entry.file];
        let path = &self.paths[entry.file];
        let dtype = match &entry.dtype {
            Ok(dtype) => *dtype,
            Err(text) => candle_core::bail!(
                "tensor {name} has dtype {text:?}, which fovea cannot read: {}",
                path.display()
            ),
        };
        let io = |err: std::io::Error| {
            candle_core::Error::Msg(format!("cannot read {name} ({err}): {}", path.display()))
        };
        let tensor = match dtype {
            DType::BF16 => {
                let bits = read_u16s(file, offset, count).map_err(io)?;
                Tensor::from_vec(bits.reinterpret_into::<half::bf16>(), shape, device)?
            }
            DType::F16 => {
                let bits = read_u16s(file, offset, count).map_err(io)?;
                Tensor::from_vec(bits.reinterpret_into::<half::f16>(), shape, device)?
            }
            DType::F32 => {
                let mut values = vec![0f32; count];
                read_at(file, bytemuck::cast_slice_mut(&mut values), offset).map_err(io)?;
                if cfg!(target_endian = "big") {
                    values = values
                        .into_iter()
                        .map(|v| f32::from_bits(u32::from_le(v.to_bits())))
                        .collect();
                }
                Tensor::from_vec(values, shape, device)?
            }
            other => {
                let mut bytes = vec![0u8; count * other.size_in_bytes()];
                read_at(file, &mut bytes, offset).map_err(io)?;
                Tensor::from_raw_buffer(&bytes, other, &shape, device)?
            }
        };
        Ok(tensor)
    }

    /// Read a whole tensor in its stored dtype.
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        self.load_rows(name, None, device)
    }
}

fn read_u16s(file: &File, offset: u64, count: usize) -> std::io::Result<Vec<u16>> {
    let mut bits = vec![0u16; count];
    read_at(file, bytemuck::cast_slice_mut(&mut bits), offset)?;
    if cfg!(target_endian = "big") {
        bits.iter_mut().for_each(|b| *b = u16::from_le(*b));
    }
    Ok(bits)
}

#[cfg(unix)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(windows)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let n = file.seek_read(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
    }
    Ok(())
}

/// `WeightFiles` behind a candle `VarBuilder`, for the small tensors a layer takes in the
/// builder's dtype (norms, biases, embeddings of the vision tower).
#[derive(Clone, Debug)]
pub struct Backend(pub Arc<WeightFiles>);

impl candle_nn::var_builder::SimpleBackend for Backend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.0.load(name, device)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "tensor {name} has shape {:?}, the config implies {shape:?}",
                tensor.dims()
            )
        }
        tensor.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.load(name, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// A builder over `files`: f32 for what layers take through it, the files themselves for the
/// large matrices `linear.rs` keeps at storage precision or quantizes.
pub fn var_builder(files: &Arc<WeightFiles>, device: &Device) -> candle_nn::VarBuilder<'static> {
    candle_nn::VarBuilder::from_backend(
        Box::new(Backend(files.clone())),
        DType::F32,
        device.clone(),
    )
}
