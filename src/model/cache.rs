//! The weight cache: a checkpoint's quantized linear layers written once in the packed layout
//! the kernels read, and read straight back into place on every later load.
//!
//! Quantizing a 7B checkpoint to q8_0 while loading costs ~40 s on two cores, every time
//! `fovea inspect`, a research shard or the app starts. The packed arrays do not depend on
//! anything but the checkpoint's bytes, the quantization and fovea's layout, so the first load
//! writes them to `<cache>/weights/` and later loads map the file and use the arrays where they
//! lie (`gemm::store::Store`): no f32, no quantizer, no copy, the same bytes, so answers and
//! maps are bit-identical. Mapped pages are file-backed: the kernel can drop and re-read them
//! under memory pressure instead of swapping, and processes that load the same model share them.
//!
//! **Never trusted.** The file name carries a key: SHA-256 of the format version, the
//! quantization, the packing constants and, for every weight file, its safetensors header,
//! size, modification time and 64 KiB sampled across its data. A changed checkpoint has another
//! key, so its old cache is never read (and is deleted when the new one is written). Inside the
//! file, an index repeats the key and gives each array's offset, length and CRC-32; a file
//! whose magic, version, key, lengths or any checksum is wrong is reported, ignored and
//! rebuilt. A cache that cannot be written (no space, read-only home) is a note, not an error.
//!
//! Layout: `FOVEAWC\0`, u32 version, u64 index length, the index (JSON), zero padding to 64
//! bytes, then the arrays back to back, each 64-byte aligned.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::gemm::q4k::PackedQ4K;
use super::gemm::store::Store;
use super::gemm::PackedQ8;
use super::weights::read_at;

const MAGIC: &[u8; 8] = b"FOVEAWC\0";
/// Bump when the packed layout or this file's layout changes.
const FORMAT_VERSION: u32 = 1;
const ALIGN: u64 = 64;
const SAMPLES: u64 = 16;
const SAMPLE_BYTES: u64 = 4096;

/// One quantized matrix as the kernels keep it.
#[derive(Clone, Debug)]
pub enum Packed {
    Q8(Arc<PackedQ8>),
    Q4K(Arc<PackedQ4K>),
}

impl Packed {
    fn kind(&self) -> &'static str {
        match self {
            Packed::Q8(_) => "q8_0",
            Packed::Q4K(_) => "q4k",
        }
    }

    fn shape(&self) -> (usize, usize) {
        match self {
            Packed::Q8(p) => (p.rows(), p.inputs()),
            Packed::Q4K(p) => p.shape(),
        }
    }

    /// The arrays, as bytes, in the order the index lists them.
    fn sections(&self) -> Vec<&[u8]> {
        match self {
            Packed::Q8(p) => {
                let (quants, scales) = p.parts();
                vec![quants, bytemuck::cast_slice(scales.reinterpret_cast())]
            }
            Packed::Q4K(p) => {
                let (quants, subs, supers) = p.parts();
                vec![
                    quants,
                    subs,
                    bytemuck::cast_slice(supers.reinterpret_cast()),
                ]
            }
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Index {
    key: String,
    quantize: String,
    entries: Vec<IndexEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IndexEntry {
    name: String,
    kind: String,
    n: usize,
    k: usize,
    /// (offset, bytes, CRC-32) of each array.
    sections: Vec<(u64, u64, u32)>,
}

/// The cache of one checkpoint at one quantization, as a load uses it: what the file held (taken
/// by the layers as they load), and every packed matrix of this load (to write a new file when
/// the old one was missing, stale or incomplete).
#[derive(Debug)]
pub struct WeightCache {
    path: PathBuf,
    key: String,
    /// The quantization, by name ("q8_0", "q4k").
    quantize: &'static str,
    found: Mutex<HashMap<String, Packed>>,
    loaded: Mutex<Vec<(String, Packed)>>,
    /// Something was quantized here (a layer the file lacked): write the file after the load.
    missed: Mutex<bool>,
    /// What happened to the cache, for the load notes.
    pub notes: Mutex<Vec<String>>,
}

/// Where caches live: `$FOVEA_CACHE_DIR`, else `$XDG_CACHE_HOME/fovea`, else `~/.cache/fovea`
/// (`%LOCALAPPDATA%\fovea` on Windows, `~/Library/Caches/fovea` on macOS);
/// `FOVEA_CACHE_DIR=off` turns the cache off.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FOVEA_CACHE_DIR") {
        return (dir != "off" && !dir.is_empty()).then(|| PathBuf::from(dir));
    }
    Some(crate::platform::cache_dir()?.join("fovea"))
}

/// The key of `weights` (the checkpoint's safetensors files) at `quantize`.
fn key(weights: &[PathBuf], quantize: &str) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(MAGIC);
    hash.update(FORMAT_VERSION.to_le_bytes());
    hash.update(quantize.as_bytes());
    // The packing constants: a layout change must never read an old file.
    hash.update(format!("group 16 block 32 super 256 {}", std::env::consts::ARCH).as_bytes());
    for path in weights {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let size = meta.len();
        hash.update(size.to_le_bytes());
        if let Ok(modified) = meta.modified() {
            if let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH) {
                hash.update(since.as_nanos().to_le_bytes());
            }
        }
        let mut len_bytes = [0u8; 8];
        read_at(&file, &mut len_bytes, 0)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let header_len = u64::from_le_bytes(len_bytes).min(size.saturating_sub(8));
        let mut header = vec![0u8; header_len as usize];
        read_at(&file, &mut header, 8)
            .with_context(|| format!("cannot read {}", path.display()))?;
        hash.update(&header);
        let data = 8 + header_len;
        let span = size.saturating_sub(data);
        let mut sample = vec![0u8; SAMPLE_BYTES.min(span) as usize];
        for i in 0..SAMPLES {
            let offset = data + (span - sample.len() as u64) * i / (SAMPLES - 1).max(1);
            read_at(&file, &mut sample, offset)
                .with_context(|| format!("cannot read {}", path.display()))?;
            hash.update(&sample);
        }
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A short name for the checkpoint folder, so a rebuilt cache replaces its predecessor.
fn folder_tag(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl WeightCache {
    /// The cache of the checkpoint in `dir` (tensors in `weights`) at `quantize` ("q8_0",
    /// "q4k"), under `cache_dir`: read now when a valid file exists (every array checked), else
    /// empty.
    pub fn open(
        cache_dir: &Path,
        dir: &Path,
        weights: &[PathBuf],
        quantize: &'static str,
    ) -> Result<WeightCache> {
        let key = key(weights, quantize)?;
        let path = cache_dir.join("weights").join(format!(
            "{}-{}.{}.fwc",
            folder_tag(dir),
            &key[..24],
            quantize
        ));
        let cache = WeightCache {
            path,
            key: key.clone(),
            quantize,
            found: Mutex::new(HashMap::new()),
            loaded: Mutex::new(Vec::new()),
            missed: Mutex::new(false),
            notes: Mutex::new(Vec::new()),
        };
        if cache.path.exists() {
            let started = std::time::Instant::now();
            match read(&cache.path, &key, quantize) {
                Ok(found) => {
                    cache.note(format!(
                        "read {} quantized matrices from the weight cache in {:.1} s: {}",
                        found.len(),
                        started.elapsed().as_secs_f64(),
                        cache.path.display()
                    ));
                    if let Ok(mut map) = cache.found.lock() {
                        *map = found;
                    }
                }
                Err(e) => cache.note(format!(
                    "the weight cache is not usable ({e:#}); quantizing and writing it again: {}",
                    cache.path.display()
                )),
            }
        }
        Ok(cache)
    }

    fn note(&self, text: String) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(text);
        }
    }

    /// The cached matrix `name` of shape (n, k), taken out of the cache.
    fn take(&self, name: &str, n: usize, k: usize) -> Option<Packed> {
        let packed = self.found.lock().ok()?.remove(name)?;
        (packed.shape() == (n, k)).then_some(packed)
    }

    /// The q8_0 matrix `name` (n, k) when `cache` has it (recorded for the next cache).
    pub fn cached_q8(
        cache: Option<&WeightCache>,
        name: &str,
        (n, k): (usize, usize),
    ) -> Option<Arc<PackedQ8>> {
        let cache = cache?;
        match cache.take(name, n, k)? {
            Packed::Q8(packed) => {
                cache.record(name, Packed::Q8(packed.clone()), false);
                Some(packed)
            }
            Packed::Q4K(_) => None,
        }
    }

    /// The q8_0 matrix `name` (n, k): from `cache`, else made by `make` (and recorded for
    /// the cache).
    pub fn q8_or<E>(
        cache: Option<&WeightCache>,
        name: &str,
        shape: (usize, usize),
        make: impl FnOnce() -> std::result::Result<PackedQ8, E>,
    ) -> std::result::Result<Arc<PackedQ8>, E> {
        if let Some(packed) = WeightCache::cached_q8(cache, name, shape) {
            return Ok(packed);
        }
        let packed = Arc::new(make()?);
        if let Some(cache) = cache {
            cache.record(name, Packed::Q8(packed.clone()), true);
        }
        Ok(packed)
    }

    /// As [`WeightCache::q8_or`] for q4k.
    pub fn q4k_or<E>(
        cache: Option<&WeightCache>,
        name: &str,
        (n, k): (usize, usize),
        make: impl FnOnce() -> std::result::Result<PackedQ4K, E>,
    ) -> std::result::Result<Arc<PackedQ4K>, E> {
        if let Some(cache) = cache {
            if let Some(Packed::Q4K(packed)) = cache.take(name, n, k) {
                cache.record(name, Packed::Q4K(packed.clone()), false);
                return Ok(packed);
            }
        }
        let packed = Arc::new(make()?);
        if let Some(cache) = cache {
            cache.record(name, Packed::Q4K(packed.clone()), true);
        }
        Ok(packed)
    }

    /// Record a matrix of this load; `quantized` when it was made now rather than read.
    fn record(&self, name: &str, packed: Packed, quantized: bool) {
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.push((name.to_string(), packed));
        }
        if quantized {
            if let Ok(mut missed) = self.missed.lock() {
                *missed = true;
            }
        }
    }

    /// Whether the load quantized anything the file lacked (so [`WeightCache::write`] has work).
    pub fn needs_writing(&self) -> bool {
        self.missed.lock().map(|m| *m).unwrap_or(false)
    }

    /// Write every matrix of this load to the cache file (atomically), and remove older
    /// caches of the same folder at the same quantization. Failures become a note.
    pub fn write(&self) {
        let started = std::time::Instant::now();
        let result = self.write_file();
        match result {
            Ok(bytes) => self.note(format!(
                "wrote the weight cache ({:.2} GB) in {:.1} s; later loads read it: {}",
                bytes as f64 / 1e9,
                started.elapsed().as_secs_f64(),
                self.path.display()
            )),
            Err(e) => self.note(format!(
                "could not write the weight cache ({e:#}); the next load quantizes again: {}",
                self.path.display()
            )),
        }
    }

    fn write_file(&self) -> Result<u64> {
        let loaded = self
            .loaded
            .lock()
            .map_err(|_| anyhow::anyhow!("the cache's record is poisoned"))?;
        // Checksums first (every core): the index, which precedes the data, carries them.
        let crcs: Vec<Vec<u32>> = loaded
            .par_iter()
            .map(|(_, packed)| packed.sections().iter().map(|s| crc32(s)).collect())
            .collect();
        let mut entries = Vec::with_capacity(loaded.len());
        let mut offset = 0u64;
        for ((name, packed), crcs) in loaded.iter().zip(&crcs) {
            let (n, k) = packed.shape();
            let mut sections = Vec::new();
            for (section, &crc) in packed.sections().iter().zip(crcs) {
                sections.push((offset, section.len() as u64, crc));
                offset = (offset + section.len() as u64).next_multiple_of(ALIGN);
            }
            entries.push(IndexEntry {
                name: name.clone(),
                kind: packed.kind().to_string(),
                n,
                k,
                sections,
            });
        }
        let index = serde_json::to_vec(&Index {
            key: self.key.clone(),
            quantize: self.quantize.to_string(),
            entries,
        })?;
        let head = (8 + 4 + 8 + index.len() as u64).next_multiple_of(ALIGN);
        let total = head + offset;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::io::write_with(&self.path, ".fwc", |out| {
            out.write_all(MAGIC)?;
            out.write_all(&FORMAT_VERSION.to_le_bytes())?;
            out.write_all(&(index.len() as u64).to_le_bytes())?;
            out.write_all(&index)?;
            let mut written = 8 + 4 + 8 + index.len() as u64;
            let zeros = [0u8; ALIGN as usize];
            for (_, packed) in loaded.iter() {
                for section in packed.sections() {
                    let pad = written.next_multiple_of(ALIGN) - written;
                    out.write_all(&zeros[..pad as usize])?;
                    out.write_all(section)?;
                    written += pad + section.len() as u64;
                }
            }
            Ok(())
        })?;
        self.remove_predecessors();
        Ok(total)
    }

    /// Older caches of the same folder at the same quantization (another key): stale now.
    fn remove_predecessors(&self) {
        let Some(name) = self.path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let Some((tag, rest)) = name.split_once('-') else {
            return;
        };
        let suffix = rest.split_once('.').map(|(_, s)| s).unwrap_or_default();
        let Some(dir) = self.path.parent() else {
            return;
        };
        let Ok(listing) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in listing.flatten() {
            let other = entry.file_name();
            let Some(other) = other.to_str() else {
                continue;
            };
            if other != name
                && other.starts_with(&format!("{tag}-"))
                && other.ends_with(&format!(".{suffix}"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

/// Map the file and check it whole: its header, its index and every array's checksum (on
/// every core); the matrices then use the mapped pages where they lie.
fn read(path: &Path, key: &str, quantize: &str) -> Result<HashMap<String, Packed>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // The file is only ever replaced by a rename (never rewritten in place), so the mapped
    // pages stay what was checked for as long as the model lives.
    let map = Arc::new(
        unsafe { memmap2::MmapOptions::new().populate().map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?,
    );
    let size = map.len() as u64;
    let head = map.get(..20).context("shorter than its header")?;
    if &head[..8] != MAGIC {
        bail!("not a fovea weight cache");
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != FORMAT_VERSION {
        bail!("format version {version}, this fovea writes {FORMAT_VERSION}");
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&head[12..20]);
    let index_len = u64::from_le_bytes(len_bytes);
    if index_len > size.saturating_sub(20) {
        bail!("an index of {index_len} bytes in a {size}-byte file (truncated)");
    }
    let index: Index = serde_json::from_slice(&map[20..20 + index_len as usize])
        .context("the index is not readable")?;
    if index.key != key || index.quantize != quantize {
        bail!("it was written for another checkpoint or quantization");
    }
    let data = (20 + index_len).next_multiple_of(ALIGN);
    let range = |&(offset, len, _): &(u64, u64, u32)| -> Result<std::ops::Range<usize>> {
        let start = data + offset;
        if start + len > size {
            bail!("an array lies past the end of the file (truncated)");
        }
        Ok(start as usize..(start + len) as usize)
    };
    index
        .entries
        .par_iter()
        .map(|entry| {
            let section = |i: usize| -> Result<std::ops::Range<usize>> {
                let section = entry.sections.get(i).context("a missing array")?;
                let bytes = range(section)?;
                if crc32(&map[bytes.clone()]) != section.2 {
                    bail!("a checksum does not match (the file is corrupt)");
                }
                Ok(bytes)
            };
            let bytes = |i: usize| -> Result<Store<u8>> {
                Store::mapped(&map, section(i)?).context("a misaligned array")
            };
            let halves = |i: usize| -> Result<Store<f16>> {
                Store::mapped(&map, section(i)?).context("a misaligned array")
            };
            let packed = match entry.kind.as_str() {
                "q8_0" => PackedQ8::from_parts(entry.n, entry.k, bytes(0)?, halves(1)?)
                    .map(|p| Packed::Q8(Arc::new(p))),
                "q4k" => PackedQ4K::from_parts(entry.n, entry.k, bytes(0)?, bytes(1)?, halves(2)?)
                    .map(|p| Packed::Q4K(Arc::new(p))),
                other => bail!("unknown kind {other:?}"),
            };
            let packed = packed
                .with_context(|| format!("arrays that do not fit {} x {}", entry.n, entry.k))?;
            Ok((entry.name.clone(), packed))
        })
        .collect::<Result<HashMap<_, _>>>()
}
