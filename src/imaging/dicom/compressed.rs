//! Encapsulated (compressed) pixel data: one frame's fragments, then the right decoder. fovea's
//! own codecs take 12-bit JPEG, RLE (up to 32 bits) and JPEG-LS; jpeg-decoder takes 8-bit
//! colour JPEG without its colour transform; dicom-pixeldata's adapters take the rest (JPEG
//! baseline/lossless greyscale, JPEG 2000).

use dicom_encoding::transfer_syntax::Codec;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::TransferSyntax;

use crate::imaging::error::error_chain;
use crate::imaging::layout::{
    bytes_per_sample, unpack_samples, DecodedColour, PixelLayout, StoredSamples,
};
use crate::imaging::{jpeg12, jpegls, rle};

/// Decode one frame of encapsulated pixel data (after the caller checked the frame number).
pub fn decode_encapsulated_frame(
    obj: &DefaultDicomObject,
    layout: &PixelLayout,
    frame: u32,
    ts: &TransferSyntax,
) -> Result<(StoredSamples, DecodedColour), String> {
    let ts_uid = ts.uid().trim_end_matches('\0');
    if ts_uid == JPEG_EXTENDED_12BIT && layout.bits_allocated > 8 {
        let fragments = frame_fragments(obj, frame)?;
        let values = jpeg12::decode(&fragments, layout)?;
        return Ok((StoredSamples::Int(values), colour_after_codec(layout)));
    }
    if ts_uid == RLE_LOSSLESS {
        let fragments = frame_fragments(obj, frame)?;
        let bytes = rle::decode(&fragments, layout)?;
        let values = unpack_samples(&bytes, layout);
        return Ok((StoredSamples::Int(values), DecodedColour::of_native(layout)));
    }
    if JPEG_LS.contains(&ts_uid) {
        let fragments = frame_fragments(obj, frame)?;
        return decode_jpeg_ls(&fragments, layout);
    }
    if layout.samples_per_pixel == 3
        && layout.bits_allocated == 8
        && JPEG_DCT_OR_LOSSLESS.contains(&ts_uid)
    {
        let fragments = frame_fragments(obj, frame)?;
        return decode_colour_jpeg(&fragments, layout);
    }
    let Codec::EncapsulatedPixelData(Some(decoder), _) = ts.codec() else {
        return Err(format!(
            "no decoder for transfer syntax {} ({ts_uid})",
            ts.name()
        ));
    };
    let mut bytes = Vec::new();
    decoder
        .decode_frame(obj, frame, &mut bytes)
        .map_err(|err| format!("cannot decode {} ({})", ts.name(), error_chain(&err)))?;
    let expected =
        layout.pixels_per_frame() * layout.samples_per_pixel as usize * bytes_per_sample(layout);
    if bytes.len() < expected {
        return Err(format!(
            "{} decoder produced {} bytes, expected {expected}",
            ts.name(),
            bytes.len()
        ));
    }
    bytes.truncate(expected);
    let values = unpack_samples(&bytes, layout);
    Ok((StoredSamples::Int(values), colour_after_codec(layout)))
}

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// JPEG-LS lossless and near-lossless, decoded by fovea's own decoder (imaging/jpegls).
const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// One JPEG-LS frame: the codestream's samples are the stored bit patterns (also for signed
/// data), so they go through the same bits-stored mask and sign extension as native data.
fn decode_jpeg_ls(
    data: &[u8],
    layout: &PixelLayout,
) -> Result<(StoredSamples, DecodedColour), String> {
    let image = jpegls::decode(data).map_err(|err| format!("cannot decode JPEG-LS ({err})"))?;
    if image.width != layout.cols || image.height != layout.rows {
        return Err(format!(
            "JPEG-LS stream is {}x{}, the DICOM header says {}x{}",
            image.width, image.height, layout.cols, layout.rows
        ));
    }
    if u32::from(image.components) != layout.samples_per_pixel {
        return Err(format!(
            "JPEG-LS stream has {} component(s), the DICOM header says {} sample(s) per pixel",
            image.components, layout.samples_per_pixel
        ));
    }
    if u32::from(image.bits_per_sample) > layout.bits_allocated {
        return Err(format!(
            "JPEG-LS stream has {}-bit samples, more than Bits Allocated {}",
            image.bits_per_sample, layout.bits_allocated
        ));
    }
    let mut bytes = Vec::with_capacity(image.samples.len() * bytes_per_sample(layout));
    for &sample in &image.samples {
        match bytes_per_sample(layout) {
            1 => bytes.push(sample as u8),
            2 => bytes.extend_from_slice(&sample.to_le_bytes()),
            width => bytes.extend_from_slice(&u64::from(sample).to_le_bytes()[..width]),
        }
    }
    let values = unpack_samples(&bytes, layout);
    Ok((StoredSamples::Int(values), DecodedColour::of_native(layout)))
}

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
