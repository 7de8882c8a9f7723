//! DICOM files: frames of modality values, display defaults and a PHI-free summary.
//!
//! dicom-object parses the data set and dicom-pixeldata's transfer-syntax adapters decompress
//! encapsulated pixel data (JPEG, JPEG-LS, JPEG 2000, RLE). fovea interprets the samples
//! itself, because the meaning of the bits is where viewers disagree: bits stored vs.
//! allocated, sign extension, planar configuration, subsampled YBR, palette colour, 1-bit
//! and 32-bit data, big-endian files and files without a meta header. The rules follow
//! pydicom (`pixel_array` then `apply_modality_lut`), and the tests compare against it.

use std::borrow::Cow;
use std::path::Path;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::{
    Frame, Identity, ImagingError, Photometric, SourceFormat, Study, Summary, VoiFunction,
    WindowLevel, MAX_DECODED_BYTES,
};

const DOUBLE_FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0009);
const FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0008);

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

/// Read the data set of a file, with or without preamble and meta header.
pub fn open(path: &Path) -> Result<DefaultDicomObject, ImagingError> {
    let head = std::fs::read(path).map_err(|source| ImagingError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if has_dicm_magic(&head) {
        let opened = OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Auto)
            .open_file(path)
            .map_err(|err| {
                ImagingError::dicom(path, format!("cannot parse DICOM ({})", error_chain(&err)))
            });
        return match opened {
            Ok(obj) => Ok(obj),
            // Some writers declare explicit VR but write implicit VR; pydicom reads those with
            // a warning, and so does fovea.
            Err(err) => reopen_as_implicit(&head).ok_or(err),
        };
    }
    open_bare(path, &head)
}

fn reopen_as_implicit(bytes: &[u8]) -> Option<DefaultDicomObject> {
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
    let start = if bytes.get(128..132) == Some(b"DICM") {
        128
    } else {
        0
    };
    let mut reader = bytes.get(start..)?;
    let mut meta = dicom_object::meta::FileMetaTable::from_reader(&mut reader).ok()?;
    let declared = meta.transfer_syntax().trim_end_matches('\0').to_string();
    if matches!(
        declared.as_str(),
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.2" | "1.2.840.10008.1.2.1.99"
    ) {
        return None;
    }
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let dataset = InMemDicomObject::read_dataset_with_ts(reader, &ts).ok()?;
    dataset.get(tags::PIXEL_DATA)?;
    // The pixel data keeps the declared encoding (native or encapsulated).
    if declared == "1.2.840.10008.1.2.1" {
        meta.transfer_syntax = ts.uid().to_string();
    }
    Some(dataset.with_exact_meta(meta))
}

fn open_bare(path: &Path, bytes: &[u8]) -> Result<DefaultDicomObject, ImagingError> {
    use dicom_transfer_syntax_registry::entries::{
        EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };
    let explicit =
        bytes.len() > 6 && bytes[4].is_ascii_uppercase() && bytes[5].is_ascii_uppercase();
    let ts = if explicit {
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let dataset = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|err| {
        ImagingError::dicom(
            path,
            format!(
                "cannot parse DICOM data set without meta header ({})",
                error_chain(&err)
            ),
        )
    })?;
    let uid = |tag| {
        dataset
            .get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_else(|| "1.2.3.4".to_string())
    };
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .transfer_syntax(ts.uid())
        .media_storage_sop_class_uid(uid(tags::SOP_CLASS_UID))
        .media_storage_sop_instance_uid(uid(tags::SOP_INSTANCE_UID))
        .implementation_class_uid("1.2.826.0.1.3680043.10.1483")
        .build()
        .map_err(|err| ImagingError::dicom(path, format!("cannot build a meta header ({err})")))?;
    Ok(dataset.with_exact_meta(meta))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

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

fn string_of(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let element = obj.get(tag)?;
    let text = element.to_str().ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!text.is_empty()).then(|| text.to_string())
}

fn uint_of(obj: &DefaultDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

fn floats_of(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| !v.is_empty())
}

/// Read the pixel layout, with a clear message for each missing or impossible attribute.
pub fn pixel_layout(obj: &DefaultDicomObject, path: &Path) -> Result<PixelLayout, ImagingError> {
    let float_data =
        obj.get(FLOAT_PIXEL_DATA).is_some() || obj.get(DOUBLE_FLOAT_PIXEL_DATA).is_some();
    if obj.get(tags::PIXEL_DATA).is_none() && !float_data {
        return Err(ImagingError::dicom(
            path,
            "DICOM file has no pixel data (7FE0,0010)",
        ));
    }
    let required = |tag: Tag, name: &str| {
        uint_of(obj, tag)
            .ok_or_else(|| ImagingError::dicom(path, format!("DICOM pixel data lacks {name}")))
    };
    let rows = required(tags::ROWS, "Rows (0028,0010)")?;
    let cols = required(tags::COLUMNS, "Columns (0028,0011)")?;
    let bits_allocated = required(tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")?;
    let bits_stored = uint_of(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    let samples_per_pixel = uint_of(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let frames = string_of(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|s| s.parse::<f64>().ok())
        .map(|n| n.max(1.0) as u32)
        .unwrap_or(1);
    let photometric = string_of(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| {
        if samples_per_pixel == 3 {
            "RGB"
        } else {
            "MONOCHROME2"
        }
        .to_string()
    });
    let layout = PixelLayout {
        rows,
        cols,
        frames,
        samples_per_pixel,
        bits_allocated,
        bits_stored,
        signed: uint_of(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        planar_configuration: uint_of(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0),
        photometric,
        float_data,
    };
    if rows == 0 || cols == 0 {
        return Err(ImagingError::dicom(
            path,
            format!("DICOM image has zero size {cols}x{rows}"),
        ));
    }
    if rows > super::MAX_SIDE_PX || cols > super::MAX_SIDE_PX {
        return Err(ImagingError::dicom(
            path,
            format!(
                "DICOM image is {cols}x{rows} px, larger than fovea's limit of {} px a side",
                super::MAX_SIDE_PX
            ),
        ));
    }
    if !matches!(bits_allocated, 1 | 8 | 16 | 32 | 64) {
        return Err(ImagingError::dicom(
            path,
            format!("unsupported Bits Allocated {bits_allocated}"),
        ));
    }
    if bits_stored == 0 || bits_stored > bits_allocated {
        return Err(ImagingError::dicom(
            path,
            format!("Bits Stored {bits_stored} does not fit in Bits Allocated {bits_allocated}"),
        ));
    }
    if !matches!(samples_per_pixel, 1 | 3) {
        return Err(ImagingError::dicom(
            path,
            format!("unsupported Samples per Pixel {samples_per_pixel}"),
        ));
    }
    let decoded_bytes =
        layout.pixels_per_frame() as u64 * samples_per_pixel as u64 * frames as u64 * 4;
    if decoded_bytes > MAX_DECODED_BYTES {
        return Err(ImagingError::dicom(
            path,
            format!(
                "DICOM image would need {} MiB decoded, over fovea's limit",
                decoded_bytes >> 20
            ),
        ));
    }
    Ok(layout)
}

/// Decode the stored values of one frame (before any LUT). Colour images come back as RGB
/// (YBR converted, planes interleaved); palette images come back as indices.
pub fn decode_stored_frame(
    obj: &DefaultDicomObject,
    layout: &PixelLayout,
    frame: u32,
    path: &Path,
) -> Result<(StoredSamples, DecodedColour), ImagingError> {
    if frame >= layout.frames {
        return Err(ImagingError::NoSuchFrame {
            path: path.to_path_buf(),
            frame: frame as usize,
            frames: layout.frames as usize,
        });
    }
    let in_frame = |problem: String| ImagingError::dicom(path, format!("frame {frame}: {problem}"));
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let ts = TransferSyntaxRegistry
        .get(&ts_uid)
        .ok_or_else(|| ImagingError::dicom(path, format!("unknown transfer syntax {ts_uid}")))?;
    let photometric = layout.photometric.as_str();
    let samples = layout.samples_per_pixel as usize;
    let pixels = layout.pixels_per_frame();

    if layout.float_data {
        return decode_float_frame(obj, layout, frame).map_err(in_frame);
    }
    let Some(pixel_element) = obj.get(tags::PIXEL_DATA) else {
        return Err(ImagingError::dicom(
            path,
            "DICOM file has no pixel data (7FE0,0010)",
        ));
    };

    if let Value::PixelSequence(_) = pixel_element.value() {
        if ts_uid == JPEG_EXTENDED_12BIT && layout.bits_allocated > 8 {
            let fragments = frame_fragments(obj, frame).map_err(in_frame)?;
            let values = super::jpeg12::decode(&fragments, layout).map_err(in_frame)?;
            return Ok((StoredSamples::Int(values), colour_after_codec(layout)));
        }
        if ts_uid == RLE_LOSSLESS {
            let fragments = frame_fragments(obj, frame).map_err(in_frame)?;
            let bytes = super::rle::decode(&fragments, layout).map_err(in_frame)?;
            let values = unpack_samples(&bytes, layout);
            let colour = match (samples, photometric) {
                (1, "PALETTE COLOR") => DecodedColour::Palette,
                (1, _) => DecodedColour::Grey,
                (_, "YBR_FULL" | "YBR_FULL_422") => DecodedColour::YbrFull,
                _ => DecodedColour::Rgb,
            };
            return Ok((StoredSamples::Int(values), colour));
        }
        if samples == 3
            && layout.bits_allocated == 8
            && JPEG_DCT_OR_LOSSLESS.contains(&ts_uid.as_str())
        {
            let fragments = frame_fragments(obj, frame).map_err(in_frame)?;
            return decode_colour_jpeg(&fragments, layout).map_err(in_frame);
        }
        let Codec::EncapsulatedPixelData(Some(decoder), _) = ts.codec() else {
            return Err(ImagingError::dicom(
                path,
                format!("no decoder for transfer syntax {} ({ts_uid})", ts.name()),
            ));
        };
        let mut bytes = Vec::new();
        decoder
            .decode_frame(obj, frame, &mut bytes)
            .map_err(|err| {
                in_frame(format!(
                    "cannot decode {} ({})",
                    ts.name(),
                    error_chain(&err)
                ))
            })?;
        let expected = pixels * samples * bytes_per_sample(layout);
        if bytes.len() < expected {
            return Err(in_frame(format!(
                "{} decoder produced {} bytes, expected {expected}",
                ts.name(),
                bytes.len()
            )));
        }
        bytes.truncate(expected);
        let values = unpack_samples(&bytes, layout);
        return Ok((StoredSamples::Int(values), colour_after_codec(layout)));
    }

    // Native (uncompressed) pixel data.
    let Value::Primitive(primitive) = pixel_element.value() else {
        return Err(in_frame(
            "pixel data is a sequence, not pixel values".into(),
        ));
    };
    let big_endian = ts_uid == "1.2.840.10008.1.2.2";
    let bytes = native_le_bytes(primitive, layout, big_endian);
    let ybr422 = photometric == "YBR_FULL_422" && samples == 3 && layout.bits_allocated == 8;
    let frame_samples = if ybr422 { pixels * 2 } else { pixels * samples };
    let values = if layout.bits_allocated == 1 {
        let first_bit = frame as usize * frame_samples;
        let needed_bytes = (first_bit + frame_samples).div_ceil(8);
        if bytes.len() < needed_bytes {
            return Err(in_frame(format!(
                "pixel data is truncated ({} bytes, {needed_bytes} needed)",
                bytes.len()
            )));
        }
        (0..frame_samples)
            .map(|i| {
                let bit = first_bit + i;
                ((bytes[bit / 8] >> (bit % 8)) & 1) as i64
            })
            .collect()
    } else {
        let frame_bytes = frame_samples * bytes_per_sample(layout);
        let start = frame as usize * frame_bytes;
        let Some(frame_slice) = bytes.get(start..start + frame_bytes) else {
            return Err(in_frame(format!(
                "pixel data is truncated ({} bytes, {} needed for {} frame(s))",
                bytes.len(),
                frame_bytes * layout.frames as usize,
                layout.frames
            )));
        };
        unpack_samples(frame_slice, layout)
    };
    if ybr422 {
        return Ok((
            StoredSamples::Int(ybr_full_from_422(&values, layout)),
            DecodedColour::YbrFull,
        ));
    }
    let values = if samples == 3 && layout.planar_configuration == 1 {
        interleave_planes(&values, pixels)
    } else {
        values
    };
    let colour = match (samples, photometric) {
        (1, "PALETTE COLOR") => DecodedColour::Palette,
        (1, _) => DecodedColour::Grey,
        (_, "YBR_FULL" | "YBR_FULL_422") => DecodedColour::YbrFull,
        _ => DecodedColour::Rgb,
    };
    Ok((StoredSamples::Int(values), colour))
}

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// JPEG syntaxes decoded by jpeg-decoder: baseline, extended, lossless (processes 14, 14 SV1).
const JPEG_DCT_OR_LOSSLESS: [&str; 4] = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];

/// Colour JPEG, decoded without the codec's own colour transform: the DICOM photometric
/// interpretation says what the components are (RGB stays RGB even when the JPEG stream
/// would suggest YCbCr), and YCbCr is converted with pydicom's exact arithmetic.
fn decode_colour_jpeg(
    data: &[u8],
    layout: &PixelLayout,
) -> Result<(StoredSamples, DecodedColour), String> {
    // `ColorTransform::RGB` interleaves the components untouched (its `None` is broken).
    let decoded = std::panic::catch_unwind(|| {
        let mut decoder = jpeg_decoder::Decoder::new(std::io::Cursor::new(data));
        decoder.set_color_transform(jpeg_decoder::ColorTransform::RGB);
        decoder.decode().map(|pixels| (pixels, decoder.info()))
    })
    .map_err(|_| "the JPEG decoder failed on malformed data".to_string())?;
    let (pixels, info) = decoded.map_err(|err| format!("cannot decode JPEG ({err})"))?;
    let info = info.ok_or("JPEG stream has no frame header")?;
    if info.width as u32 != layout.cols || info.height as u32 != layout.rows {
        return Err(format!(
            "JPEG stream is {}x{}, the DICOM header says {}x{}",
            info.width, info.height, layout.cols, layout.rows
        ));
    }
    let expected = layout.pixels_per_frame() * 3;
    if pixels.len() != expected {
        return Err(format!(
            "JPEG stream decoded to {} samples, expected {expected}",
            pixels.len()
        ));
    }
    let values = pixels.into_iter().map(i64::from).collect();
    let colour = if layout.photometric.starts_with("YBR") {
        DecodedColour::YbrFull
    } else {
        DecodedColour::Rgb
    };
    Ok((StoredSamples::Int(values), colour))
}

/// JPEG Extended (Process 2 & 4): the only JPEG syntax that may hold 12-bit DCT data, which
/// the jpeg-decoder crate refuses; fovea decodes those frames itself.
const JPEG_EXTENDED_12BIT: &str = "1.2.840.10008.1.2.4.51";

/// The colour of a frame produced by a codec adapter: adapters always give interleaved
/// samples, and the JPEG family converts YCbCr to RGB inside the codec; RLE does not.
fn colour_after_codec(layout: &PixelLayout) -> DecodedColour {
    match (layout.samples_per_pixel, layout.photometric.as_str()) {
        (1, "PALETTE COLOR") => DecodedColour::Palette,
        (1, _) => DecodedColour::Grey,
        _ => DecodedColour::Rgb,
    }
}

fn bytes_per_sample(layout: &PixelLayout) -> usize {
    (layout.bits_allocated as usize).div_ceil(8)
}

/// The pixel data bytes in little-endian sample order.
fn native_le_bytes<'a>(
    primitive: &'a PrimitiveValue,
    layout: &PixelLayout,
    big_endian: bool,
) -> Cow<'a, [u8]> {
    let bytes = primitive.to_bytes();
    if !big_endian {
        return bytes;
    }
    match (primitive, layout.bits_allocated) {
        // The parser already swapped 16-bit words into native order. For 32-bit samples
        // read as OW the two halves are still in big-endian order.
        (PrimitiveValue::U16(_) | PrimitiveValue::I16(_), 32) => {
            let mut swapped = bytes.into_owned();
            for word in swapped.chunks_exact_mut(4) {
                word.swap(0, 2);
                word.swap(1, 3);
            }
            Cow::Owned(swapped)
        }
        // 16-bit samples stored as OB bytes keep the file's byte order.
        (PrimitiveValue::U8(_), 16) => {
            let mut swapped = bytes.into_owned();
            for word in swapped.chunks_exact_mut(2) {
                word.swap(0, 1);
            }
            Cow::Owned(swapped)
        }
        _ => bytes,
    }
}

/// Read little-endian samples of `bits_allocated` bits, keep the `bits_stored` low bits and
/// sign-extend them for signed data (as pydicom does).
fn unpack_samples(bytes: &[u8], layout: &PixelLayout) -> Vec<i64> {
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

fn interleave_planes(values: &[i64], pixels: usize) -> Vec<i64> {
    let mut out = vec![0; pixels * 3];
    for plane in 0..3 {
        for pixel in 0..pixels {
            out[pixel * 3 + plane] = values[plane * pixels + pixel];
        }
    }
    out
}

/// Uncompressed YBR_FULL_422 stores Y1 Y2 Cb Cr for each pair of pixels along a row;
/// repeat the chroma for both pixels (as pydicom does).
fn ybr_full_from_422(values: &[i64], layout: &PixelLayout) -> Vec<i64> {
    let pixels = layout.pixels_per_frame();
    let mut out = Vec::with_capacity(pixels * 3);
    for group in values.chunks_exact(4) {
        let (y1, y2, cb, cr) = (group[0], group[1], group[2], group[3]);
        out.extend_from_slice(&[y1, cb, cr, y2, cb, cr]);
    }
    out.truncate(pixels * 3);
    out
}

fn decode_float_frame(
    obj: &DefaultDicomObject,
    layout: &PixelLayout,
    frame: u32,
) -> Result<(StoredSamples, DecodedColour), String> {
    let element = obj
        .get(FLOAT_PIXEL_DATA)
        .or_else(|| obj.get(DOUBLE_FLOAT_PIXEL_DATA))
        .ok_or("no float pixel data")?;
    let frame_samples = layout.pixels_per_frame() * layout.samples_per_pixel as usize;
    let values: Vec<f64> = match element.value() {
        Value::Primitive(PrimitiveValue::F32(v)) => v.iter().map(|&x| x as f64).collect(),
        Value::Primitive(PrimitiveValue::F64(v)) => v.to_vec(),
        Value::Primitive(other) => {
            let bytes = other.to_bytes();
            if layout.bits_allocated == 64 {
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            } else {
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect()
            }
        }
        _ => return Err("float pixel data is not a plain value".into()),
    };
    let start = frame as usize * frame_samples;
    let slice = values
        .get(start..start + frame_samples)
        .ok_or_else(|| format!("float pixel data is truncated ({} samples)", values.len()))?;
    let colour = if layout.samples_per_pixel == 3 {
        DecodedColour::Rgb
    } else {
        DecodedColour::Grey
    };
    Ok((StoredSamples::Float(slice.to_vec()), colour))
}

/// The compressed bytes of one frame of encapsulated pixel data.
fn frame_fragments(obj: &DefaultDicomObject, frame: u32) -> Result<Vec<u8>, String> {
    use dicom_encoding::adapters::PixelDataObject;
    let raw = obj.raw_pixel_data().ok_or("no encapsulated pixel data")?;
    let fragments = &raw.fragments;
    let frames = obj.number_of_frames().unwrap_or(1) as usize;
    if fragments.is_empty() {
        return Err("encapsulated pixel data has no fragments".into());
    }
    if frames == 1 {
        return Ok(fragments.iter().flatten().copied().collect());
    }
    if fragments.len() == frames {
        return Ok(fragments[frame as usize].to_vec());
    }
    // Several fragments per frame: use the basic offset table.
    let offsets = &raw.offset_table;
    if offsets.len() != frames {
        return Err("cannot split fragments into frames without a basic offset table".into());
    }
    let mut position = 0u64;
    let start = offsets[frame as usize] as u64;
    let end = offsets
        .get(frame as usize + 1)
        .map(|&o| o as u64)
        .unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for fragment in fragments {
        if position >= start && position < end {
            out.extend_from_slice(fragment);
        }
        position += fragment.len() as u64 + 8;
    }
    Ok(out)
}

/// YCbCr (full range, ITU-R BT.601) to RGB, computed exactly as pydicom does it: float32
/// matrix, subtract 128 from the chroma, add 0.5, floor, clip to the sample range.
pub fn ybr_full_to_rgb(values: &mut [i64], bits_allocated: u32) {
    let max = ((1i64 << bits_allocated.clamp(8, 16)) - 1) as f32;
    let half = (1i64 << (bits_allocated.clamp(8, 16) - 1)) as f32;
    let cb_to_g = (-0.114f64 * 1.772 / 0.587) as f32;
    let cr_to_g = (-0.299f64 * 1.402 / 0.587) as f32;
    for pixel in values.chunks_exact_mut(3) {
        let y = pixel[0] as f32;
        let cb = pixel[1] as f32 - half;
        let cr = pixel[2] as f32 - half;
        let r = y + cb * 0.0 + cr * 1.402f32;
        let g = y + cb * cb_to_g + cr * cr_to_g;
        let b = y + cb * 1.772f32 + cr * 0.0;
        let round = |v: f32| (v + 0.5).floor().clamp(0.0, max) as i64;
        pixel[0] = round(r);
        pixel[1] = round(g);
        pixel[2] = round(b);
    }
}

/// A lookup table from the Modality LUT Sequence or a palette: descriptor + data.
#[derive(Clone, Debug)]
pub struct Lut {
    pub first_mapped: i64,
    pub entries: Vec<u32>,
}

impl Lut {
    pub fn lookup(&self, value: i64) -> u32 {
        let index = (value - self.first_mapped).clamp(0, self.entries.len() as i64 - 1);
        self.entries[index as usize]
    }
}

fn read_lut(
    item: &InMemDicomObject,
    descriptor_tag: Tag,
    data_tag: Tag,
    signed_first: bool,
) -> Option<(Lut, u32)> {
    let descriptor_element = item.get(descriptor_tag)?;
    let descriptor: Vec<i64> = descriptor_element.to_multi_int::<i64>().ok()?;
    let [count, first, bits] = descriptor.get(0..3)?.try_into().ok()?;
    let count = if count == 0 {
        65536
    } else {
        (count as u64 & 0xFFFF) as usize
    };
    let count = if count == 0 { 65536 } else { count };
    let first_mapped = if signed_first && first > 0x7FFF {
        first - 0x10000
    } else {
        first
    };
    let data_element = item.get(data_tag)?;
    let entries: Vec<u32> = match data_element.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => v.iter().map(|&x| x as u32).collect(),
        Value::Primitive(PrimitiveValue::I16(v)) => v.iter().map(|&x| x as u16 as u32).collect(),
        Value::Primitive(PrimitiveValue::U8(v)) if bits <= 8 && v.len() >= count => {
            v.iter().map(|&x| x as u32).collect()
        }
        Value::Primitive(PrimitiveValue::U8(v)) => v
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        Value::Primitive(other) => other.to_multi_int::<u32>().ok()?,
        _ => return None,
    };
    if entries.is_empty() {
        return None;
    }
    let mut entries = entries;
    entries.truncate(count.max(1));
    Some((
        Lut {
            first_mapped,
            entries,
        },
        bits as u32,
    ))
}

/// The modality transform of a file: rescale slope/intercept, or a Modality LUT Sequence.
#[derive(Clone, Debug)]
pub enum ModalityTransform {
    Identity,
    Rescale { slope: f64, intercept: f64 },
    Lut(Lut),
}

impl ModalityTransform {
    pub fn from_object(obj: &DefaultDicomObject, layout: &PixelLayout) -> Self {
        if let Some(sequence) = obj.get(tags::MODALITY_LUT_SEQUENCE) {
            if let Some(item) = sequence.items().and_then(|items| items.first()) {
                if let Some((lut, _bits)) =
                    read_lut(item, tags::LUT_DESCRIPTOR, tags::LUT_DATA, layout.signed)
                {
                    return ModalityTransform::Lut(lut);
                }
            }
        }
        let root: &InMemDicomObject = obj;
        let slope = floats_of(root, tags::RESCALE_SLOPE).map(|v| v[0]);
        let intercept = floats_of(root, tags::RESCALE_INTERCEPT).map(|v| v[0]);
        match (slope, intercept) {
            (Some(slope), intercept) => ModalityTransform::Rescale {
                slope,
                intercept: intercept.unwrap_or(0.0),
            },
            (None, Some(intercept)) => ModalityTransform::Rescale {
                slope: 1.0,
                intercept,
            },
            (None, None) => ModalityTransform::Identity,
        }
    }

    pub fn apply(&self, stored: f64) -> f64 {
        match self {
            ModalityTransform::Identity => stored,
            ModalityTransform::Rescale { slope, intercept } => stored * slope + intercept,
            ModalityTransform::Lut(lut) => lut.lookup(stored as i64) as f64,
        }
    }
}

/// The red, green and blue palette LUTs of a PALETTE COLOR image.
pub struct Palette {
    pub channels: [Lut; 3],
    pub bits: u32,
}

impl Palette {
    pub fn from_object(obj: &DefaultDicomObject, path: &Path) -> Result<Self, ImagingError> {
        let read = |descriptor: Tag, data: Tag, segmented: Tag, name: &str| {
            if obj.get(data).is_none() && obj.get(segmented).is_some() {
                return read_segmented_lut(obj, descriptor, segmented).ok_or_else(|| {
                    ImagingError::dicom(path, format!("cannot read segmented {name} palette"))
                });
            }
            read_lut(obj, descriptor, data, false).ok_or_else(|| {
                ImagingError::dicom(
                    path,
                    format!("PALETTE COLOR image lacks a readable {name} palette"),
                )
            })
        };
        let (red, bits) = read(
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "red",
        )?;
        let (green, _) = read(
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "green",
        )?;
        let (blue, _) = read(
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "blue",
        )?;
        Ok(Palette {
            channels: [red, green, blue],
            bits,
        })
    }

    pub fn apply(&self, indices: &[i64]) -> Vec<i64> {
        let mut out = Vec::with_capacity(indices.len() * 3);
        for &index in indices {
            for channel in &self.channels {
                out.push(channel.lookup(index) as i64);
            }
        }
        out
    }
}

/// Segmented palette LUTs (PS3.3 C.7.9.2): discrete, linear and indirect segments.
fn read_segmented_lut(obj: &DefaultDicomObject, descriptor: Tag, data: Tag) -> Option<(Lut, u32)> {
    let descriptor: Vec<i64> = obj.get(descriptor)?.to_multi_int::<i64>().ok()?;
    let [count, first, bits] = descriptor.get(0..3)?.try_into().ok()?;
    let count = if count == 0 { 65536 } else { count as usize };
    let words: Vec<u16> = match obj.get(data)?.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => v.to_vec(),
        Value::Primitive(other) => other
            .to_bytes()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        _ => return None,
    };
    let mut entries: Vec<u32> = Vec::with_capacity(count);
    let mut position = 0;
    let mut segment_starts = Vec::new();
    while position + 1 < words.len() {
        segment_starts.push(entries.len());
        let opcode = words[position];
        let length = words[position + 1] as usize;
        position += 2;
        match opcode {
            0 => {
                entries.extend(
                    words
                        .get(position..position + length)?
                        .iter()
                        .map(|&w| w as u32),
                );
                position += length;
            }
            1 => {
                let end = *words.get(position)? as f64;
                position += 1;
                let start = *entries.last()? as f64;
                for step in 1..=length {
                    let value = start + (end - start) * step as f64 / length as f64;
                    entries.push(value.round() as u32);
                }
            }
            2 => {
                let offset =
                    *words.get(position)? as usize | (*words.get(position + 1)? as usize) << 16;
                position += 2;
                // Copy `length` earlier segments starting at the segment at byte offset.
                let copy_from = segment_starts
                    .iter()
                    .position(|&s| s >= offset / 2)
                    .unwrap_or(0);
                let from = segment_starts.get(copy_from).copied().unwrap_or(0);
                let to = segment_starts
                    .get(copy_from + length)
                    .copied()
                    .unwrap_or(entries.len());
                let copied: Vec<u32> = entries[from..to].to_vec();
                entries.extend(copied);
            }
            _ => return None,
        }
    }
    entries.truncate(count);
    (!entries.is_empty()).then_some((
        Lut {
            first_mapped: first,
            entries,
        },
        bits as u32,
    ))
}

fn window_of(obj: &DefaultDicomObject) -> Option<WindowLevel> {
    let root: &InMemDicomObject = obj;
    let from = |item: &InMemDicomObject| {
        let center = floats_of(item, tags::WINDOW_CENTER)?[0];
        let width = floats_of(item, tags::WINDOW_WIDTH)?[0];
        (width > 0.0 && center.is_finite()).then_some(WindowLevel { center, width })
    };
    if let Some(window) = from(root) {
        return Some(window);
    }
    // Enhanced multi-frame objects keep the window in the functional groups.
    for group in [
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    ] {
        let Some(item) = obj
            .get(group)
            .and_then(|e| e.items())
            .and_then(|items| items.first())
        else {
            continue;
        };
        let Some(voi) = item
            .get(tags::FRAME_VOILUT_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|i| i.first())
        else {
            continue;
        };
        if let Some(window) = from(voi) {
            return Some(window);
        }
    }
    None
}

/// Fields that identify a patient, study or institution: never shown unless asked.
const PHI_TAGS: &[(Tag, &str)] = &[
    (tags::PATIENT_NAME, "Patient's Name"),
    (tags::PATIENT_ID, "Patient ID"),
    (tags::PATIENT_BIRTH_DATE, "Patient's Birth Date"),
    (tags::PATIENT_SEX, "Patient's Sex"),
    (tags::PATIENT_AGE, "Patient's Age"),
    (Tag(0x0010, 0x1000), "Other Patient IDs"),
    (tags::PATIENT_ADDRESS, "Patient's Address"),
    (tags::ACCESSION_NUMBER, "Accession Number"),
    (tags::INSTITUTION_NAME, "Institution Name"),
    (tags::INSTITUTION_ADDRESS, "Institution Address"),
    (tags::REFERRING_PHYSICIAN_NAME, "Referring Physician's Name"),
    (
        tags::PERFORMING_PHYSICIAN_NAME,
        "Performing Physician's Name",
    ),
    (tags::OPERATORS_NAME, "Operators' Name"),
    (tags::STUDY_DATE, "Study Date"),
    (tags::STUDY_TIME, "Study Time"),
    (tags::STUDY_ID, "Study ID"),
    (tags::STUDY_DESCRIPTION, "Study Description"),
    (tags::SERIES_DESCRIPTION, "Series Description"),
    (tags::STATION_NAME, "Station Name"),
    (tags::DEVICE_SERIAL_NUMBER, "Device Serial Number"),
    (tags::STUDY_INSTANCE_UID, "Study Instance UID"),
    (tags::SERIES_INSTANCE_UID, "Series Instance UID"),
    (tags::SOP_INSTANCE_UID, "SOP Instance UID"),
];

fn identity_of(obj: &DefaultDicomObject) -> Identity {
    let fields = PHI_TAGS
        .iter()
        .filter_map(|&(tag, name)| string_of(obj, tag).map(|value| (name.to_string(), value)))
        .collect();
    Identity { fields }
}

fn is_lossy(ts_uid: &str, obj: &DefaultDicomObject) -> bool {
    let lossy_syntax = matches!(
        ts_uid,
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.81"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.100"
            | "1.2.840.10008.1.2.4.101"
            | "1.2.840.10008.1.2.4.102"
            | "1.2.840.10008.1.2.4.103"
            | "1.2.840.10008.1.2.4.104"
            | "1.2.840.10008.1.2.4.105"
            | "1.2.840.10008.1.2.4.106"
            | "1.2.840.10008.1.2.4.111"
            | "1.2.840.10008.1.2.4.112"
    );
    lossy_syntax || string_of(obj, tags::LOSSY_IMAGE_COMPRESSION).as_deref() == Some("01")
}

/// Load a DICOM file into a [`Study`] of modality values.
pub fn load(path: &Path) -> Result<Study, ImagingError> {
    let obj = open(path)?;
    study_from_object(&obj, path)
}

pub fn study_from_object(obj: &DefaultDicomObject, path: &Path) -> Result<Study, ImagingError> {
    let layout = pixel_layout(obj, path)?;
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let ts_name = TransferSyntaxRegistry
        .get(&ts_uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| "unknown transfer syntax".to_string());
    let transform = ModalityTransform::from_object(obj, &layout);
    let palette = if layout.photometric == "PALETTE COLOR" && layout.samples_per_pixel == 1 {
        Some(Palette::from_object(obj, path)?)
    } else {
        None
    };
    // RT Dose stores integers that become Gy only through Dose Grid Scaling, which pydicom's
    // modality LUT leaves out; a viewer must apply it.
    let root: &InMemDicomObject = obj;
    let dose_grid_scaling = (string_of(obj, tags::MODALITY).as_deref() == Some("RTDOSE"))
        .then(|| floats_of(root, tags::DOSE_GRID_SCALING).map(|v| v[0]))
        .flatten()
        .filter(|scale| scale.is_finite() && *scale > 0.0);
    let transform = match (dose_grid_scaling, transform) {
        (Some(scale), ModalityTransform::Identity) => ModalityTransform::Rescale {
            slope: scale,
            intercept: 0.0,
        },
        (Some(scale), ModalityTransform::Rescale { slope, intercept }) => {
            ModalityTransform::Rescale {
                slope: slope * scale,
                intercept: intercept * scale,
            }
        }
        (_, transform) => transform,
    };
    let mut frames = Vec::with_capacity(layout.frames as usize);
    let mut photometric = Photometric::Monochrome2;
    for frame in 0..layout.frames {
        let (stored, colour) = decode_stored_frame(obj, &layout, frame, path)?;
        let values: Vec<f32> = match (colour, stored) {
            (DecodedColour::Palette, StoredSamples::Int(indices)) => {
                photometric = Photometric::Rgb;
                let Some(palette) = &palette else {
                    return Err(ImagingError::dicom(
                        path,
                        "PALETTE COLOR image without palette",
                    ));
                };
                palette
                    .apply(&indices)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect()
            }
            (DecodedColour::YbrFull, StoredSamples::Int(mut ybr)) => {
                photometric = Photometric::Rgb;
                ybr_full_to_rgb(&mut ybr, layout.bits_allocated);
                ybr.into_iter()
                    .map(|v| transform.apply(v as f64) as f32)
                    .collect()
            }
            (DecodedColour::Rgb, stored)
            | (DecodedColour::Palette, stored)
            | (DecodedColour::YbrFull, stored) => {
                photometric = Photometric::Rgb;
                (0..stored.len())
                    .map(|i| transform.apply(stored.get_f64(i)) as f32)
                    .collect()
            }
            (DecodedColour::Grey, stored) => {
                photometric = if layout.photometric == "MONOCHROME1" {
                    Photometric::Monochrome1
                } else {
                    Photometric::Monochrome2
                };
                (0..stored.len())
                    .map(|i| transform.apply(stored.get_f64(i)) as f32)
                    .collect()
            }
        };
        frames.push(Frame { values });
    }
    let sample_max = match (&palette, photometric) {
        (Some(palette), _) => {
            let max_entry = palette
                .channels
                .iter()
                .flat_map(|c| c.entries.iter())
                .copied()
                .max()
                .unwrap_or(255);
            if max_entry > 255 || palette.bits > 8 {
                65535.0
            } else {
                255.0
            }
        }
        (None, Photometric::Rgb) => ((1u64 << layout.bits_stored.min(32)) - 1) as f32,
        _ => frames
            .iter()
            .filter_map(Frame::min_max)
            .map(|(_, hi)| hi)
            .fold(f32::MIN, f32::max)
            .max(1.0),
    };
    let pixel_spacing_mm = floats_of(root, tags::PIXEL_SPACING)
        .or_else(|| floats_of(root, tags::IMAGER_PIXEL_SPACING))
        .filter(|v| v.len() >= 2)
        .map(|v| [v[0], v[1]]);
    let (rescale_slope, rescale_intercept) = match &transform {
        ModalityTransform::Rescale { slope, intercept } => (Some(*slope), Some(*intercept)),
        _ => (None, None),
    };
    let voi_function = string_of(obj, tags::VOILUT_FUNCTION)
        .and_then(|s| VoiFunction::from_dicom(&s))
        .unwrap_or_default();
    Ok(Study {
        path: path.to_path_buf(),
        format: SourceFormat::Dicom {
            transfer_syntax_uid: ts_uid.clone(),
            transfer_syntax_name: ts_name,
            has_file_meta: has_dicm_magic(&super::read_head(path, 132).unwrap_or_default()),
        },
        width: layout.cols,
        height: layout.rows,
        photometric,
        stored_photometric: layout.photometric.clone(),
        frames,
        sample_max,
        pixel_spacing_mm,
        file_window: if photometric == Photometric::Rgb {
            None
        } else {
            window_of(obj)
        },
        voi_function,
        summary: Summary {
            modality: string_of(obj, tags::MODALITY),
            body_part: string_of(obj, tags::BODY_PART_EXAMINED),
            manufacturer: string_of(obj, tags::MANUFACTURER),
            sop_class: string_of(obj, tags::SOP_CLASS_UID).map(|uid| sop_class_name(&uid)),
            bits_allocated: Some(layout.bits_allocated as u16),
            bits_stored: Some(layout.bits_stored as u16),
            signed: Some(layout.signed),
            rescale_slope,
            rescale_intercept,
            rescale_type: string_of(obj, tags::RESCALE_TYPE)
                .or_else(|| dose_grid_scaling.and(string_of(obj, tags::DOSE_UNITS))),
            slice_thickness_mm: floats_of(root, tags::SLICE_THICKNESS).map(|v| v[0]),
            lossy: is_lossy(&ts_uid, obj),
        },
        identity: identity_of(obj),
    })
}

fn sop_class_name(uid: &str) -> String {
    let name = match uid {
        "1.2.840.10008.5.1.4.1.1.2" => "CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.2.1" => "Enhanced CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.4" => "MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.1" => "Enhanced MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.7" => "Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.1" => "Computed Radiography Image Storage",
        "1.2.840.10008.5.1.4.1.1.1.1" => "Digital X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.2" => {
            "Digital Mammography X-Ray Image Storage - For Presentation"
        }
        "1.2.840.10008.5.1.4.1.1.6.1" => "Ultrasound Image Storage",
        "1.2.840.10008.5.1.4.1.1.3.1" => "Ultrasound Multi-frame Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.2" => "RT Dose Storage",
        "1.2.840.10008.5.1.4.1.1.20" => "Nuclear Medicine Image Storage",
        "1.2.840.10008.5.1.4.1.1.128" => "Positron Emission Tomography Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.6" => "VL Whole Slide Microscopy Image Storage",
        _ => return uid.to_string(),
    };
    format!("{name} ({uid})")
}
