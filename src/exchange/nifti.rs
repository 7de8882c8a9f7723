//! NIfTI-1 masks (.nii, .nii.gz) onto the open image, as 3D Slicer, ITK-SNAP, nnU-Net or
//! nibabel write them.
//!
//! Orientation: NIfTI voxels map to RAS+ millimetres through the sform (when sform_code > 0),
//! else the qform quaternion (when qform_code > 0). When the open image is a DICOM slice with a
//! patient geometry, each of its pixel centres is placed in patient space (DICOM is LPS+:
//! x and y flip sign against RAS), mapped back into the NIfTI's voxel grid and read there
//! (nearest voxel; outside the volume is empty). So a mask made from the series by any tool
//! lands on the right pixels whatever its axis order or flips.
//!
//! Without a patient geometry (a PNG, a Secondary Capture) there is nothing to align in
//! millimetres: the mask must have the image's size with i along columns and j along rows
//! (x fastest, as ITK and Slicer store a 2-D image); a mask of the transposed size is
//! refused with a message saying so.
//!
//! A label map (values 1, 2, 3, ...) gives one region per label.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::source::SourceImage;

/// A NIfTI-1 volume: sizes, voxel values (as f64) and the voxel-to-RAS affine (3 x 4).
pub struct Volume {
    pub dims: [usize; 3],
    pub values: Vec<f64>,
    /// `None` when neither sform nor qform is set (method 1: no orientation).
    pub affine: Option<[[f64; 4]; 3]>,
}

/// Read a .nii or .nii.gz file.
pub fn read(path: &Path) -> Result<Volume> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("cannot decompress {}", path.display()))?;
        out
    } else {
        raw
    };
    parse(&bytes).with_context(|| format!("not a NIfTI-1 mask: {}", path.display()))
}

/// Parse NIfTI-1 bytes (either byte order).
pub fn parse(bytes: &[u8]) -> Result<Volume> {
    if bytes.len() < 348 {
        bail!("shorter than a NIfTI-1 header (348 bytes)");
    }
    let little = i32::from_le_bytes(bytes[0..4].try_into()?) == 348;
    if !little && i32::from_be_bytes(bytes[0..4].try_into()?) != 348 {
        if i32::from_le_bytes(bytes[0..4].try_into()?) == 540 {
            bail!(
                "a NIfTI-2 file; fovea reads NIfTI-1 (save as NIfTI-1, e.g. nibabel.Nifti1Image)"
            );
        }
        bail!("sizeof_hdr is not 348");
    }
    let magic = &bytes[344..348];
    if magic != b"n+1\0" && magic != b"ni1\0" {
        bail!("no NIfTI-1 magic (n+1 / ni1)");
    }
    if magic == b"ni1\0" {
        bail!("a two-file NIfTI (.hdr/.img); save it as one .nii file");
    }
    let i16_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1]];
        if little {
            i16::from_le_bytes(b)
        } else {
            i16::from_be_bytes(b)
        }
    };
    let f32_at = |o: usize| {
        let b: [u8; 4] = bytes[o..o + 4].try_into().unwrap();
        let value = if little {
            f32::from_le_bytes(b)
        } else {
            f32::from_be_bytes(b)
        };
        value as f64
    };
    let ndim = i16_at(40);
    if !(1..=7).contains(&ndim) {
        bail!("dim[0] = {ndim}, not 1..7");
    }
    let dim = |k: usize| {
        if k as i16 <= ndim {
            i16_at(40 + 2 * k).max(1) as usize
        } else {
            1
        }
    };
    let dims = [dim(1), dim(2), dim(3)];
    if (4..=7).any(|k| dim(k) > 1) {
        bail!(
            "more than three dimensions ({:?}); a mask has one volume",
            (1..=ndim as usize).map(dim).collect::<Vec<_>>()
        );
    }
    let datatype = i16_at(70);
    let (size, read): (usize, Box<dyn Fn(&[u8]) -> f64>) = match datatype {
        2 => (1, Box::new(|b: &[u8]| b[0] as f64)),
        256 => (1, Box::new(|b: &[u8]| b[0] as i8 as f64)),
        4 => (2, Box::new(move |b: &[u8]| {
            let a = [b[0], b[1]];
            (if little { i16::from_le_bytes(a) } else { i16::from_be_bytes(a) }) as f64
        })),
        512 => (2, Box::new(move |b: &[u8]| {
            let a = [b[0], b[1]];
            (if little { u16::from_le_bytes(a) } else { u16::from_be_bytes(a) }) as f64
        })),
        8 => (4, Box::new(move |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            (if little { i32::from_le_bytes(a) } else { i32::from_be_bytes(a) }) as f64
        })),
        768 => (4, Box::new(move |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            (if little { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }) as f64
        })),
        16 => (4, Box::new(move |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            (if little { f32::from_le_bytes(a) } else { f32::from_be_bytes(a) }) as f64
        })),
        64 => (8, Box::new(move |b: &[u8]| {
            let a: [u8; 8] = b[..8].try_into().unwrap();
            if little { f64::from_le_bytes(a) } else { f64::from_be_bytes(a) }
        })),
        other => bail!("datatype {other} is not a mask type (uint8/int8/int16/uint16/int32/uint32/float32/float64)"),
    };
    let offset = f32_at(108).max(352.0) as usize;
    let count = dims[0] * dims[1] * dims[2];
    let end = offset + count * size;
    if bytes.len() < end {
        bail!(
            "{} bytes of voxels expected after offset {offset}, the file has {}",
            count * size,
            bytes.len().saturating_sub(offset)
        );
    }
    let (slope, inter) = (f32_at(112), f32_at(116));
    let (slope, inter) = if slope == 0.0 || !slope.is_finite() {
        (1.0, 0.0)
    } else {
        (slope, inter)
    };
    let values = bytes[offset..end]
        .chunks_exact(size)
        .map(|b| read(b) * slope + inter)
        .collect();
    let pixdim = |k: usize| f32_at(76 + 4 * k);
    let (qform, sform) = (i16_at(252), i16_at(254));
    let affine = if sform > 0 {
        let row = |o: usize| [f32_at(o), f32_at(o + 4), f32_at(o + 8), f32_at(o + 12)];
        Some([row(280), row(296), row(312)])
    } else if qform > 0 {
        let (b, c, d) = (f32_at(256), f32_at(260), f32_at(264));
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - b * b - c * c,
            ],
        ];
        let qfac = if pixdim(0) < 0.0 { -1.0 } else { 1.0 };
        let scale = [pixdim(1), pixdim(2), pixdim(3) * qfac];
        let offsets = [f32_at(268), f32_at(272), f32_at(276)];
        Some(std::array::from_fn(|row| {
            [
                r[row][0] * scale[0],
                r[row][1] * scale[1],
                r[row][2] * scale[2],
                offsets[row],
            ]
        }))
    } else {
        None
    };
    Ok(Volume {
        dims,
        values,
        affine,
    })
}

fn invert(m: &[[f64; 4]; 3]) -> Option<[[f64; 4]; 3]> {
    let a = [
        [m[0][0], m[0][1], m[0][2]],
        [m[1][0], m[1][1], m[1][2]],
        [m[2][0], m[2][1], m[2][2]],
    ];
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    if det.abs() < 1e-12 {
        return None;
    }
    let inv = |r: usize, c: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
        (a[c1][r1] * a[c2][r2] - a[c1][r2] * a[c2][r1]) / det
    };
    let mut out = [[0.0; 4]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = inv(r, c);
        }
        out[r][3] = -(0..3).map(|c| out[r][c] * m[c][3]).sum::<f64>();
    }
    Some(out)
}

/// The labels of `volume` on a `width x height` image: for each non-zero label, its pixels
/// (raster order). `source` gives the image's patient geometry when it has one.
pub fn labels_on_image(
    volume: &Volume,
    width: u32,
    height: u32,
    source: Option<&SourceImage>,
    path: &Path,
) -> Result<Vec<(f64, Vec<bool>)>> {
    let (w, h) = (width as usize, height as usize);
    let [ni, nj, nk] = volume.dims;
    let voxel = |i: usize, j: usize, k: usize| volume.values[(k * nj + j) * ni + i];
    let mut label_of = vec![0.0f64; w * h];
    let geometry = source.filter(|s| s.has_geometry());
    match (geometry, volume.affine) {
        (Some(source), Some(affine)) => {
            let inverse = invert(&affine)
                .with_context(|| format!("the NIfTI's affine is singular: {}", path.display()))?;
            let p0 = source.position.unwrap();
            let o = source.orientation.unwrap();
            let [row_mm, col_mm] = source.pixel_spacing.unwrap();
            let mut inside = 0usize;
            for r in 0..h {
                for c in 0..w {
                    // DICOM pixel centre in LPS, then RAS.
                    let lps: [f64; 3] = std::array::from_fn(|a| {
                        p0[a] + o[a] * c as f64 * col_mm + o[3 + a] * r as f64 * row_mm
                    });
                    let ras = [-lps[0], -lps[1], lps[2]];
                    let ijk: [f64; 3] = std::array::from_fn(|a| {
                        inverse[a][0] * ras[0]
                            + inverse[a][1] * ras[1]
                            + inverse[a][2] * ras[2]
                            + inverse[a][3]
                    });
                    let idx: [i64; 3] = std::array::from_fn(|a| ijk[a].round() as i64);
                    if idx
                        .iter()
                        .zip([ni, nj, nk])
                        .all(|(&v, n)| v >= 0 && (v as usize) < n)
                    {
                        inside += 1;
                        label_of[r * w + c] =
                            voxel(idx[0] as usize, idx[1] as usize, idx[2] as usize);
                    }
                }
            }
            if inside == 0 {
                bail!(
                    "the NIfTI mask does not reach the open slice in patient coordinates (its affine places it elsewhere): {}",
                    path.display()
                );
            }
        }
        _ => {
            if nk != 1 {
                bail!(
                    "the open image has no patient geometry to place a {ni} x {nj} x {nk} volume; a mask for it must be one {w} x {h} slice: {}",
                    path.display()
                );
            }
            if (ni, nj) != (w, h) {
                if (ni, nj) == (h, w) {
                    bail!(
                        "the NIfTI mask is {ni} x {nj}, the image {w} x {h}: it looks transposed (i must run along columns, j along rows; with nibabel save mask.T): {}",
                        path.display()
                    );
                }
                bail!(
                    "the NIfTI mask is {ni} x {nj}, the image {w} x {h}: {}",
                    path.display()
                );
            }
            for r in 0..h {
                for c in 0..w {
                    label_of[r * w + c] = voxel(c, r, 0);
                }
            }
        }
    }
    let mut labels: Vec<f64> = label_of
        .iter()
        .copied()
        .filter(|v| *v != 0.0 && v.is_finite())
        .collect();
    labels.sort_by(f64::total_cmp);
    labels.dedup();
    if labels.len() > 255 {
        bail!(
            "{} distinct values: not a mask or label map: {}",
            labels.len(),
            path.display()
        );
    }
    Ok(labels
        .into_iter()
        .map(|label| (label, label_of.iter().map(|&v| v == label).collect()))
        .collect())
}
