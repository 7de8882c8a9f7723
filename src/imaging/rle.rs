//! DICOM RLE Lossless (PS3.5 Annex G) for 8-, 16- and 32-bit samples.
//!
//! dicom-rs's RLE adapter stops at 16 bits, but RT Dose and some secondary captures use
//! 32-bit RLE. A frame is a 64-byte header (segment count + 15 offsets) followed by PackBits
//! segments, one per byte of each sample, most significant byte first. The output is the
//! frame's samples interleaved, little endian.

use super::layout::PixelLayout;

pub fn decode(frame: &[u8], layout: &PixelLayout) -> Result<Vec<u8>, String> {
    let header = frame
        .get(..64)
        .ok_or("RLE frame is shorter than its 64-byte header")?;
    let word = |i: usize| {
        u32::from_le_bytes([
            header[4 * i],
            header[4 * i + 1],
            header[4 * i + 2],
            header[4 * i + 3],
        ]) as usize
    };
    let segments = word(0);
    let bytes_per_sample = (layout.bits_allocated as usize).div_ceil(8);
    let samples = layout.samples_per_pixel as usize;
    let expected = bytes_per_sample * samples;
    if segments != expected {
        return Err(format!(
            "RLE frame has {segments} segments, expected {expected}"
        ));
    }
    let pixels = layout.pixels_per_frame();
    let mut out = vec![0u8; pixels * expected];
    for segment in 0..segments {
        let start = word(1 + segment);
        let end = if segment + 1 < segments {
            word(2 + segment)
        } else {
            frame.len()
        };
        let data = frame
            .get(start..end.min(frame.len()))
            .ok_or("RLE segment offset is past the end of the frame")?;
        let decoded = unpack_bits(data, pixels)?;
        let sample = segment / bytes_per_sample;
        let byte_in_sample = bytes_per_sample - 1 - segment % bytes_per_sample;
        for (pixel, &value) in decoded.iter().enumerate() {
            out[(pixel * samples + sample) * bytes_per_sample + byte_in_sample] = value;
        }
    }
    Ok(out)
}

/// PackBits: a control byte n >= 0 copies n + 1 literal bytes; -127..=-1 repeats the next
/// byte 1 - n times; -128 is a no-op.
fn unpack_bits(data: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    let mut position = 0;
    while out.len() < len && position < data.len() {
        let control = data[position] as i8;
        position += 1;
        match control {
            0..=127 => {
                let count = control as usize + 1;
                let literal = data
                    .get(position..position + count)
                    .ok_or("RLE literal run is truncated")?;
                out.extend_from_slice(literal);
                position += count;
            }
            -127..=-1 => {
                let value = *data.get(position).ok_or("RLE repeat run is truncated")?;
                out.extend(std::iter::repeat_n(value, (1 - control as isize) as usize));
                position += 1;
            }
            -128 => {}
        }
    }
    if out.len() < len {
        return Err(format!(
            "RLE segment decoded to {} bytes, expected {len}",
            out.len()
        ));
    }
    out.truncate(len);
    Ok(out)
}
