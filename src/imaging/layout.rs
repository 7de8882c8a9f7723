//! The sample layout of DICOM pixel data, shared by the DICOM reader and fovea's own codecs
//! (12-bit JPEG, RLE, JPEG-LS): sizes, bits, sign, planes, and how little-endian bytes become
//! stored values. Knows nothing of files.

/// The sample layout of the pixel data, as declared in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelLayout {
    pub rows: u32,
    pub cols: u32,
    pub frames: u32,
    pub samples_per_pixel: u32,
    pub bits_allocated: u32,
    pub bits_stored: u32,
    pub signed: bool,
    pub planar_configuration: u32,
    /// As written in the file, e.g. "MONOCHROME1", "YBR_FULL_422", "PALETTE COLOR".
    pub photometric: String,
    /// Float Pixel Data (7FE0,0008) or Double Float Pixel Data (7FE0,0009).
    pub float_data: bool,
}

impl PixelLayout {
    pub fn pixels_per_frame(&self) -> usize {
        self.rows as usize * self.cols as usize
    }
}

/// Stored values of one frame before the modality LUT, samples interleaved.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredSamples {
    Int(Vec<i64>),
    Float(Vec<f64>),
}

impl StoredSamples {
    pub fn len(&self) -> usize {
        match self {
            StoredSamples::Int(v) => v.len(),
            StoredSamples::Float(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get_f64(&self, index: usize) -> f64 {
        match self {
            StoredSamples::Int(v) => v[index] as f64,
            StoredSamples::Float(v) => v[index],
        }
    }
}

/// What the decoded samples of a frame mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodedColour {
    /// One sample per pixel, photometric as in the file.
    Grey,
    /// Three samples per pixel, already RGB.
    Rgb,
    /// Three samples per pixel in YCbCr (full range) still to be converted.
    YbrFull,
    /// Palette indices, still to be looked up.
    Palette,
}

impl DecodedColour {
    /// What the samples of native data (or a codec that keeps them as stored, like RLE) are.
    pub fn of_native(layout: &PixelLayout) -> DecodedColour {
        match (layout.samples_per_pixel, layout.photometric.as_str()) {
            (1, "PALETTE COLOR") => DecodedColour::Palette,
            (1, _) => DecodedColour::Grey,
            (_, "YBR_FULL" | "YBR_FULL_422") => DecodedColour::YbrFull,
            _ => DecodedColour::Rgb,
        }
    }
}

/// Bytes one sample takes in native (uncompressed) little-endian data.
pub fn bytes_per_sample(layout: &PixelLayout) -> usize {
    (layout.bits_allocated as usize).div_ceil(8)
}

/// Read little-endian samples of `bits_allocated` bits, keep the `bits_stored` low bits and
/// sign-extend them for signed data (as pydicom does).
pub fn unpack_samples(bytes: &[u8], layout: &PixelLayout) -> Vec<i64> {
    let bits_stored = layout.bits_stored;
    let mask: u64 = if bits_stored >= 64 {
        u64::MAX
    } else {
        (1u64 << bits_stored) - 1
    };
    let convert = |raw: u64| -> i64 {
        let value = raw & mask;
        if layout.signed && bits_stored < 64 && value >> (bits_stored - 1) & 1 == 1 {
            (value | !mask) as i64
        } else {
            value as i64
        }
    };
    match layout.bits_allocated {
        8 => bytes.iter().map(|&b| convert(b as u64)).collect(),
        16 => bytes
            .chunks_exact(2)
            .map(|c| convert(u16::from_le_bytes([c[0], c[1]]) as u64))
            .collect(),
        32 => bytes
            .chunks_exact(4)
            .map(|c| convert(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64))
            .collect(),
        64 => bytes
            .chunks_exact(8)
            .map(|c| convert(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect(),
        _ => Vec::new(),
    }
}
