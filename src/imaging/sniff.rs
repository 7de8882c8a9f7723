//! What kind of file is this: the first bytes decide (DICOM with or without the Part 10
//! header; raster formats are recognised by `raster::detect`), never the extension.

use std::path::Path;

use super::error::ImagingError;

/// True when the bytes begin like a DICOM Part 10 file ("DICM" after the 128-byte preamble,
/// or at the start for files written without a preamble).
pub fn has_dicm_magic(head: &[u8]) -> bool {
    head.get(128..132) == Some(b"DICM") || head.get(0..4) == Some(b"DICM")
}

/// True when the bytes look like a DICOM data set written without the Part 10 header
/// (old ACR-NEMA style files): a group 0x0008 or 0x0002 tag with a small element number and
/// either an explicit VR or a plausible implicit length.
pub fn looks_like_bare_dataset(head: &[u8]) -> bool {
    let Some(first) = head.get(0..8) else {
        return false;
    };
    let group = u16::from_le_bytes([first[0], first[1]]);
    let element = u16::from_le_bytes([first[2], first[3]]);
    if !matches!(group, 0x0002 | 0x0008) || element > 0x0200 {
        return false;
    }
    let explicit_vr = first[4].is_ascii_uppercase() && first[5].is_ascii_uppercase();
    let implicit_len = u32::from_le_bytes([first[4], first[5], first[6], first[7]]);
    explicit_vr || implicit_len < 1 << 16
}

/// The first `len` bytes of a file (fewer if it is shorter).
pub fn read_head(path: &Path, len: usize) -> Result<Vec<u8>, ImagingError> {
    use std::io::Read;
    let io_error = |source| ImagingError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut head = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut head)
        .map_err(io_error)?;
    Ok(head)
}
