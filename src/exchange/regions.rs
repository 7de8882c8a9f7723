//! Regions from other tools onto the open image: a DICOM SEG, a NIfTI mask or label map, COCO
//! JSON (boxes, polygons, RLE masks) or VGMED JSON/JSONL rows (`original_bboxes`). The file's
//! kind is read from its content.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::grounding::region::Region;

/// One imported region: its name, whether it marks a distractor, and its shape.
#[derive(Clone, Debug)]
pub struct ImportedRegion {
    pub name: String,
    pub distractor: bool,
    pub region: Region,
}

/// What an import gives: regions, and notes on how they were matched.
#[derive(Clone, Debug, Default)]
pub struct Import {
    pub regions: Vec<ImportedRegion>,
    pub notes: Vec<String>,
}

/// The open image an import is for.
pub struct Target<'a> {
    pub path: &'a Path,
    pub frame: usize,
    pub width: u32,
    pub height: u32,
    /// Whether the image is a DICOM file (a SEG and a NIfTI's geometry need its header).
    pub dicom: bool,
    /// When the image is a slice of an open series: the distance to its nearest neighbour
    /// (`Series::slice_spacing_mm`), which says how far off-plane a SEG frame may lie.
    pub slice_spacing_mm: Option<f64>,
}

/// Import regions from `file` onto `target`.
pub fn import(file: &Path, target: &Target) -> Result<Import> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.to_string_lossy().to_ascii_lowercase();
    let dicom = bytes.get(128..132) == Some(b"DICM");
    let result = if dicom {
        if !target.dicom {
            bail!(
                "a DICOM SEG goes onto the DICOM image it refers to; the open image is not DICOM: {}",
                file.display()
            );
        }
        let imported =
            super::seg_read::import(file, target.path, target.frame, target.slice_spacing_mm)?;
        Import {
            regions: imported
                .segments
                .into_iter()
                .map(|s| ImportedRegion {
                    name: s.label,
                    distractor: s.object,
                    region: s.region,
                })
                .collect(),
            notes: imported.notes,
        }
    } else if name.ends_with(".nii")
        || name.ends_with(".nii.gz")
        || bytes.starts_with(&[0x1f, 0x8b])
    {
        let volume = super::nifti::read(file)?;
        let source = if target.dicom {
            super::source::SourceImage::read(target.path, target.frame).ok()
        } else {
            None
        };
        let labels = super::nifti::labels_on_image(
            &volume,
            target.width,
            target.height,
            source.as_ref(),
            file,
        )?;
        let mut notes = Vec::new();
        if source.as_ref().is_some_and(|s| s.has_geometry()) && volume.affine.is_some() {
            notes.push("placed through the NIfTI affine and the image's patient geometry".into());
        } else {
            notes.push(
                "placed by voxel index (i = column, j = row): the image has no patient geometry"
                    .into(),
            );
        }
        let stem = file
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(".gz")
                    .trim_end_matches(".nii")
                    .to_string()
            })
            .unwrap_or_default();
        let single = labels.len() == 1;
        let regions = labels
            .into_iter()
            .filter_map(|(label, pixels)| {
                Region::from_mask(target.width, target.height, &pixels).map(|region| {
                    ImportedRegion {
                        name: if single {
                            stem.clone()
                        } else {
                            format!("{stem} label {label}")
                        },
                        distractor: false,
                        region,
                    }
                })
            })
            .collect();
        Import { regions, notes }
    } else {
        let text = String::from_utf8(bytes)
            .with_context(|| format!("not DICOM, NIfTI or JSON: {}", file.display()))?;
        json_regions(&text, file, target)?
    };
    if result.regions.is_empty() {
        bail!("no region in {} falls on the open image", file.display());
    }
    for r in &result.regions {
        r.region
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}: {}", file.display()))?;
    }
    Ok(result)
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

fn json_regions(text: &str, file: &Path, target: &Target) -> Result<Import> {
    let open_name = target
        .path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let parsed: Result<Value, _> = serde_json::from_str(text);
    let rows: Vec<Value> = match parsed {
        Ok(value) if value.get("annotations").is_some() => {
            return coco(&value, file, target, &open_name)
        }
        Ok(Value::Array(rows)) => rows,
        Ok(value @ Value::Object(_)) => vec![value],
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, line)| {
                serde_json::from_str(line)
                    .with_context(|| format!("line {}: not JSON: {}", n + 1, file.display()))
            })
            .collect::<Result<_>>()?,
    };
    // VGMED rows: image, question, original_bboxes [[x0, y0, x1, y1]], distractor_bboxes.
    let matching: Vec<&Value> = rows
        .iter()
        .filter(|row| row["image"].as_str().map(file_name) == Some(open_name.as_str()))
        .collect();
    let chosen: Vec<&Value> = if matching.is_empty() && rows.len() == 1 {
        rows.iter().collect()
    } else {
        matching
    };
    if chosen.is_empty() {
        bail!(
            "no COCO annotations and no VGMED row for {open_name} (rows name their image in \"image\"): {}",
            file.display()
        );
    }
    let mut regions: Vec<ImportedRegion> = Vec::new();
    let boxes = |row: &Value, key: &str| -> Result<Vec<[f64; 4]>> {
        match row.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone()).with_context(|| {
                format!(
                    "\"{key}\" is not a list of [x0, y0, x1, y1]: {}",
                    file.display()
                )
            }),
        }
    };
    for row in chosen {
        for (key, distractor) in [("original_bboxes", false), ("distractor_bboxes", true)] {
            for xyxy in boxes(row, key)? {
                let region = Region::Box { xyxy_px: xyxy };
                // Several questions of one image repeat its boxes: keep each once.
                if regions
                    .iter()
                    .any(|r| r.region == region && r.distractor == distractor)
                {
                    continue;
                }
                let name = if distractor {
                    format!(
                        "distractor {}",
                        regions.iter().filter(|r| r.distractor).count() + 1
                    )
                } else {
                    row["label"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("box {}", regions.len() + 1))
                };
                regions.push(ImportedRegion {
                    name,
                    distractor,
                    region,
                });
            }
        }
    }
    Ok(Import {
        regions,
        notes: vec!["VGMED boxes are x0, y0, x1, y1 in original image pixels".into()],
    })
}

/// COCO: the image entry named like the open image (or the only one), its annotations.
fn coco(value: &Value, file: &Path, target: &Target, open_name: &str) -> Result<Import> {
    let images = value["images"].as_array().cloned().unwrap_or_default();
    let image = images
        .iter()
        .find(|i| i["file_name"].as_str().map(file_name) == Some(open_name))
        .or_else(|| (images.len() == 1).then(|| &images[0]))
        .with_context(|| format!("no COCO image entry named {open_name}: {}", file.display()))?;
    let (w, h) = (image["width"].as_u64(), image["height"].as_u64());
    if let (Some(w), Some(h)) = (w, h) {
        if (w, h) != (target.width as u64, target.height as u64) {
            bail!(
                "the COCO image entry is {w} x {h} px, the open image {} x {}: {}",
                target.width,
                target.height,
                file.display()
            );
        }
    }
    let id = image["id"].clone();
    let categories: Vec<(Value, String)> = value["categories"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["id"].clone(),
                        c["name"].as_str().unwrap_or("region").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut regions = Vec::new();
    for annotation in value["annotations"].as_array().into_iter().flatten() {
        if annotation["image_id"] != id {
            continue;
        }
        let n = regions.len() + 1;
        let category = categories
            .iter()
            .find(|(cid, _)| *cid == annotation["category_id"])
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| "region".into());
        // fovea's own export carries the exact shape and name.
        if let Some(shape) = annotation["fovea"]
            .get("shape")
            .and_then(|s| serde_json::from_value::<Region>(s.clone()).ok())
        {
            let name = annotation["fovea"]["name"]
                .as_str()
                .unwrap_or(&category)
                .to_string();
            regions.push(ImportedRegion {
                name,
                distractor: false,
                region: shape,
            });
            continue;
        }
        let name = annotation["fovea"]["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{category} {n}"));
        let region = match &annotation["segmentation"] {
            Value::Array(polygons) if !polygons.is_empty() => {
                let polygons: Vec<Vec<[f64; 2]>> = polygons
                    .iter()
                    .filter_map(|p| p.as_array())
                    .map(|p| {
                        p.chunks_exact(2)
                            .filter_map(|xy| Some([xy[0].as_f64()?, xy[1].as_f64()?]))
                            .collect()
                    })
                    .filter(|p: &Vec<[f64; 2]>| p.len() >= 3)
                    .collect();
                match polygons.len() {
                    0 => None,
                    1 => Some(Region::Polygon {
                        points_px: polygons[0].clone(),
                    }),
                    _ => {
                        // Several parts: their union as a mask.
                        let mut union = vec![false; target.width as usize * target.height as usize];
                        for p in polygons {
                            let part = Region::Polygon { points_px: p }
                                .pixel_mask(target.width, target.height);
                            for (u, v) in union.iter_mut().zip(part) {
                                *u |= v;
                            }
                        }
                        Region::from_mask(target.width, target.height, &union)
                    }
                }
            }
            Value::Object(rle) => Some(coco_rle(rle, target, file)?),
            _ => None,
        };
        let region = match region {
            Some(region) => region,
            None => {
                let bbox: [f64; 4] = serde_json::from_value(annotation["bbox"].clone())
                    .with_context(|| {
                        format!(
                            "annotation {n} has neither segmentation nor bbox [x, y, w, h]: {}",
                            file.display()
                        )
                    })?;
                Region::Box {
                    xyxy_px: [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]],
                }
            }
        };
        regions.push(ImportedRegion {
            name,
            distractor: false,
            region,
        });
    }
    Ok(Import {
        regions,
        notes: vec!["COCO bbox is [x, y, width, height]; RLE runs are column by column".into()],
    })
}

/// COCO run-length masks: `counts` as a list (uncompressed) or pycocotools' string
/// (compressed), column-major, unset first; `size` is [height, width].
fn coco_rle(rle: &serde_json::Map<String, Value>, target: &Target, file: &Path) -> Result<Region> {
    let size: [usize; 2] = serde_json::from_value(rle.get("size").cloned().unwrap_or_default())
        .with_context(|| format!("RLE without size [height, width]: {}", file.display()))?;
    let (h, w) = (size[0], size[1]);
    if (w, h) != (target.width as usize, target.height as usize) {
        bail!(
            "an RLE mask of {w} x {h} px on a {} x {} image: {}",
            target.width,
            target.height,
            file.display()
        );
    }
    let counts: Vec<u64> = match rle.get("counts") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_u64).collect(),
        Some(Value::String(text)) => decompress_counts(text),
        _ => bail!("RLE without counts: {}", file.display()),
    };
    let mut column_major = Vec::with_capacity(w * h);
    for (k, &run) in counts.iter().enumerate() {
        column_major.extend(std::iter::repeat_n(k % 2 == 1, run as usize));
    }
    if column_major.len() != w * h {
        bail!(
            "RLE counts cover {} pixels, the mask has {}: {}",
            column_major.len(),
            w * h,
            file.display()
        );
    }
    let mut pixels = vec![false; w * h];
    for x in 0..w {
        for y in 0..h {
            pixels[y * w + x] = column_major[x * h + y];
        }
    }
    Region::from_mask(w as u32, h as u32, &pixels)
        .with_context(|| format!("an empty RLE mask: {}", file.display()))
}

/// pycocotools' compressed counts: 5 bits a character (offset 48), continuation bit 0x20, sign
/// bit 0x10 on the last character, and each count after the second stored as a difference
/// from the count two before.
fn decompress_counts(text: &str) -> Vec<u64> {
    let bytes = text.as_bytes();
    let mut counts: Vec<i64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k, mut more) = (0i64, 0, true);
        while more && p < bytes.len() {
            let c = bytes[p] as i64 - 48;
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more && c & 0x10 != 0 {
                x |= -1i64 << (5 * k);
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2];
        }
        counts.push(x);
    }
    counts.into_iter().map(|c| c.max(0) as u64).collect()
}
