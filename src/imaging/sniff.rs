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

/// What [`check_lengths`] finds at the start of a DICOM file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthCheck {
    /// Nothing impossible among the elements walked.
    Plausible,
    /// Element `tag` declares `declared` bytes where only `left` follow.
    Impossible {
        tag: (u16, u16),
        declared: u64,
        left: u64,
    },
    /// The meta header says explicit VR, but the data set's first element has no VR: the file
    /// is implicit VR written under an explicit label (pydicom reads these with a warning).
    ImplicitUnderExplicitLabel,
}

impl LengthCheck {
    /// The problem in words, for an impossible length.
    pub fn problem(&self) -> Option<String> {
        match self {
            LengthCheck::Impossible {
                tag: (group, element),
                declared,
                left,
            } => Some(format!(
                "element ({group:04X},{element:04X}) declares {declared} bytes but only {left} follow: a corrupt or truncated file"
            )),
            _ => None,
        }
    }
}

/// Check the declared lengths of a DICOM file's data elements against the file's size, before
/// a parser allocates them: dicom-parser reserves and zero-fills a declared length before
/// reading it, so a 674-byte file claiming a 3.7 GB element costs seconds and gigabytes.
/// `head` is the file's start (any length), `file_len` its size.
///
/// Walks the meta group (explicit VR little endian), then the data set in the encoding the
/// meta header names, element by element, into sequences and items of undefined length as a
/// parser does, while the elements lie inside `head`; stops at encapsulated pixel data.
pub fn check_lengths(head: &[u8], file_len: u64) -> LengthCheck {
    let start = if head.get(128..132) == Some(b"DICM") {
        132
    } else if head.get(0..4) == Some(b"DICM") {
        4
    } else {
        0
    };
    // (explicit VR, little endian) for the data set after the meta group; a bare data set
    // (no meta header) is explicit when its first element has a VR, as `open` reads it.
    let mut encoding = if start == 0 {
        let explicit =
            head.len() > 6 && head[4].is_ascii_uppercase() && head[5].is_ascii_uppercase();
        (explicit, true)
    } else {
        (true, true)
    };
    let mut at = start;
    let mut in_meta = start > 0;
    let mut first_in_data_set = true;
    let read16 = |o: usize, little: bool| {
        head.get(o..o + 2).map(|b| {
            if little {
                u16::from_le_bytes([b[0], b[1]])
            } else {
                u16::from_be_bytes([b[0], b[1]])
            }
        })
    };
    let read32 = |o: usize, little: bool| {
        head.get(o..o + 4).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            if little {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        })
    };
    for _ in 0..100_000 {
        let Some(peek_group) = read16(at, true) else {
            return LengthCheck::Plausible;
        };
        if in_meta && peek_group != 0x0002 {
            in_meta = false;
        }
        let (explicit, little) = if in_meta { (true, true) } else { encoding };
        let (Some(group), Some(element)) = (read16(at, little), read16(at + 2, little)) else {
            return LengthCheck::Plausible;
        };
        let impossible = |length: u32, value_start: usize| {
            let left = file_len.saturating_sub(value_start as u64);
            (length != u32::MAX && length as u64 > left).then_some(LengthCheck::Impossible {
                tag: (group, element),
                declared: length as u64,
                left,
            })
        };
        if group == 0xFFFE {
            // Item, item delimiter, sequence delimiter: a tag and a 4-byte length, no VR.
            let Some(length) = read32(at + 4, little) else {
                return LengthCheck::Plausible;
            };
            if let Some(found) = impossible(length, at + 8) {
                return found;
            }
            at += 8;
            continue;
        }
        let (length, header, vr) = if explicit {
            let Some(vr) = head.get(at + 4..at + 6) else {
                return LengthCheck::Plausible;
            };
            if !(vr[0].is_ascii_uppercase() && vr[1].is_ascii_uppercase()) {
                if !in_meta && first_in_data_set && start > 0 {
                    return LengthCheck::ImplicitUnderExplicitLabel;
                }
                // A parser takes an unknown VR for a long one (two reserved bytes, then a
                // 4-byte length): check that length, then stop (what follows is guesswork).
                return read32(at + 8, little)
                    .and_then(|length| impossible(length, at + 12))
                    .unwrap_or(LengthCheck::Plausible);
            }
            let long = matches!(
                vr,
                b"OB"
                    | b"OD"
                    | b"OF"
                    | b"OL"
                    | b"OV"
                    | b"OW"
                    | b"SQ"
                    | b"SV"
                    | b"UC"
                    | b"UN"
                    | b"UR"
                    | b"UT"
                    | b"UV"
            );
            let length = if long {
                read32(at + 8, little)
            } else {
                read16(at + 6, little).map(u32::from)
            };
            let Some(length) = length else {
                return LengthCheck::Plausible;
            };
            (length, if long { 12 } else { 8 }, Some([vr[0], vr[1]]))
        } else {
            let Some(length) = read32(at + 4, little) else {
                return LengthCheck::Plausible;
            };
            (length, 8, None)
        };
        if !in_meta {
            first_in_data_set = false;
        }
        let value_start = at + header;
        if length == u32::MAX {
            // Undefined length: a sequence (walk into its items) or encapsulated pixel data
            // (stop: its fragments are the codec's business).
            if (group, element) == (0x7FE0, 0x0010) || vr == Some(*b"OB") || vr == Some(*b"OW") {
                return LengthCheck::Plausible;
            }
            at = value_start;
            continue;
        }
        if let Some(found) = impossible(length, value_start) {
            return found;
        }
        if in_meta && (group, element) == (0x0002, 0x0010) {
            let Some(uid) = head.get(value_start..value_start + length as usize) else {
                return LengthCheck::Plausible;
            };
            encoding = match String::from_utf8_lossy(uid).trim_end_matches(['\0', ' ']) {
                "1.2.840.10008.1.2" => (false, true),
                "1.2.840.10008.1.2.2" => (true, false),
                // Deflated data sets cannot be walked uncompressed.
                "1.2.840.10008.1.2.1.99" => return LengthCheck::Plausible,
                _ => (true, true),
            };
        }
        at = value_start + length as usize;
    }
    LengthCheck::Plausible
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Preamble, DICM, a meta group naming `ts`, then `data` (little endian).
    fn part10(ts: &str, data: &[u8]) -> Vec<u8> {
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        bytes.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        bytes.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&uid);
        bytes.extend_from_slice(data);
        bytes
    }

    /// By hand: a committed CT file is plausible; the same file with its pixel data length
    /// patched to 0xE0000000 is impossible at (7FE0,0010); an implicit data set under an
    /// explicit label is said to be one; an element inside an undefined-length sequence item
    /// with a 4 GB length is found; a short element that fits is plausible.
    #[test]
    fn lengths_by_hand() {
        let ct = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/dicom/CT_small.dcm"),
        )
        .unwrap();
        assert_eq!(check_lengths(&ct, ct.len() as u64), LengthCheck::Plausible);
        let mut patched = ct.clone();
        let at = patched
            .windows(6)
            .position(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W'])
            .unwrap();
        patched[at + 8..at + 12].copy_from_slice(&0xE000_0000u32.to_le_bytes());
        match check_lengths(&patched, patched.len() as u64) {
            LengthCheck::Impossible { tag, declared, .. } => {
                assert_eq!((tag, declared), ((0x7FE0, 0x0010), 0xE000_0000));
            }
            other => panic!("{other:?}"),
        }
        // (0008,0016) implicit: tag, 4-byte length 4, "1.2\0".
        let implicit = [0x08, 0x00, 0x16, 0x00, 4, 0, 0, 0, b'1', b'.', b'2', 0];
        let file = part10("1.2.840.10008.1.2.1", &implicit);
        assert_eq!(
            check_lengths(&file, file.len() as u64),
            LengthCheck::ImplicitUnderExplicitLabel
        );
        // The same under its own (implicit) label is fine.
        let file = part10("1.2.840.10008.1.2", &implicit);
        assert_eq!(
            check_lengths(&file, file.len() as u64),
            LengthCheck::Plausible
        );
        // A sequence of undefined length, an item of undefined length, then (0008,0100) SH with
        // length 4 ("ABCD"), then (0008,0104) LO claiming 0xFFFE bytes in a file that ends.
        let mut data = vec![
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[
            0x08, 0x00, 0x00, 0x01, b'S', b'H', 4, 0, b'A', b'B', b'C', b'D',
        ]);
        data.extend_from_slice(&[0x08, 0x00, 0x04, 0x01, b'L', b'O', 0xFE, 0xFF]);
        let file = part10("1.2.840.10008.1.2.1", &data);
        match check_lengths(&file, file.len() as u64) {
            LengthCheck::Impossible {
                tag,
                declared,
                left,
            } => {
                assert_eq!((tag, declared, left), ((0x0008, 0x0104), 0xFFFE, 0));
            }
            other => panic!("{other:?}"),
        }
        let file = part10("1.2.840.10008.1.2.1", &data[..data.len() - 8]);
        assert_eq!(
            check_lengths(&file, file.len() as u64),
            LengthCheck::Plausible
        );
    }
}
