//! Dataset readers for the research commands: VGMED / COCO-style grounding JSONL, HuatuoGPT-
//! Vision's Medical_Multimodal_Evaluation_Data (multiple choice JSON), and closed/open
//! question JSONL in the VQA-RAD / SLAKE / PathVQA style.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One sample, whatever file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Position in the data file: the stable key for shards, resume and merge.
    pub index: usize,
    pub image: PathBuf,
    /// The image path as written in the file.
    pub image_name: String,
    pub question: String,
    pub answer: Option<String>,
    /// Multiple-choice options, in order (A, B, C, ...).
    pub options: Vec<String>,
    /// "closed" (yes/no) or "open", when the file says.
    pub answer_type: Option<String>,
    pub modality: String,
    pub dataset: String,
    /// Regions in original image pixels, xyxy.
    pub boxes: Vec<[f64; 4]>,
}

fn text(row: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match row.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Array(items)) => items.first().and_then(|v| v.as_str()).map(String::from),
        _ => None,
    })
}

fn boxes_of(value: &Value) -> Vec<Vec<f64>> {
    match value {
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![items.iter().filter_map(Value::as_f64).collect()]
        }
        Value::Array(items) => items.iter().flat_map(boxes_of).collect(),
        _ => Vec::new(),
    }
}

/// Boxes of a grounding row: `original_bboxes` (xyxy), or `bbox` (xywh) for COCO rows and
/// VGMED rows whose image path starts with `Slake` (as the reference code reads them).
pub fn row_boxes(row: &Value, image_name: &str) -> Vec<[f64; 4]> {
    let xywh = |b: &Vec<f64>| [b[0], b[1], b[0] + b[2], b[1] + b[3]];
    let xyxy = |b: &Vec<f64>| [b[0], b[1], b[2], b[3]];
    let slake = image_name.starts_with("Slake");
    let (value, convert): (Option<&Value>, &dyn Fn(&Vec<f64>) -> [f64; 4]) =
        if slake && row.get("bbox").is_some() {
            (row.get("bbox"), &xywh)
        } else if row.get("original_bboxes").is_some() {
            (row.get("original_bboxes"), &xyxy)
        } else {
            (row.get("bbox"), &xywh)
        };
    value
        .map(boxes_of)
        .unwrap_or_default()
        .iter()
        .filter(|b| b.len() >= 4)
        .map(convert)
        .collect()
}

/// Read a data file (JSONL, or a JSON array) relative to `images`.
pub fn read(path: &Path, images: &Path) -> Result<Vec<Sample>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rows: Vec<Value> = if content.trim_start().starts_with('[') {
        serde_json::from_str(&content)
            .with_context(|| format!("invalid JSON in {}", path.display()))?
    } else {
        content
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line)
                    .with_context(|| format!("invalid JSON on line {}: {}", n + 1, path.display()))
            })
            .collect::<Result<_>>()?
    };
    let default_dataset = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("data")
        .to_string();
    let mut samples = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let Some(image_name) = text(row, &["image", "img_name", "image_name", "img_path"]) else {
            bail!("row {} has no image field: {}", index + 1, path.display());
        };
        let Some(question) = text(row, &["question", "query", "text"]) else {
            bail!(
                "row {} has no question field: {}",
                index + 1,
                path.display()
            );
        };
        let options: Vec<String> = match row.get("options") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(Value::Object(map)) => map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        samples.push(Sample {
            index,
            image: images.join(crate::platform::native_path(&image_name)),
            question,
            answer: text(row, &["answer", "gt_answer", "label_text"]),
            options,
            answer_type: text(row, &["answer_type", "type"]).map(|t| t.to_ascii_lowercase()),
            modality: text(row, &["modality", "image_modality"])
                .unwrap_or_else(|| "unknown".into()),
            dataset: text(row, &["dataset", "source"]).unwrap_or_else(|| default_dataset.clone()),
            boxes: row_boxes(row, &image_name),
            image_name,
        });
    }
    Ok(samples)
}

/// `--shard I/N`: which samples this process takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("shard {text:?} must be I/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("shard index {i:?} is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count {n:?} is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: the index must be below the count"
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn contains(&self, sample_index: usize) -> bool {
        sample_index % self.count == self.index
    }
}

/// The samples a run processes: `--limit` first `limit` after a seeded shuffle (seed 0 keeps
/// file order), then the shard's slice. Deterministic, so shards partition a single run.
pub fn select(
    mut samples: Vec<Sample>,
    limit: Option<usize>,
    seed: u64,
    shard: Option<Shard>,
) -> Vec<Sample> {
    if seed != 0 {
        let mut rng = crate::demo::phantom::Rng::new(seed);
        for i in (1..samples.len()).rev() {
            let j = rng.below(i + 1);
            samples.swap(i, j);
        }
    }
    if let Some(limit) = limit {
        samples.truncate(limit);
    }
    samples.sort_by_key(|s| s.index);
    if let Some(shard) = shard {
        samples.retain(|s| shard.contains(s.index));
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_follow_the_reference_conventions() {
        let vgmed: Value = serde_json::json!({"image": "x.png", "original_bboxes": [[1, 2, 11, 12]], "bbox": [9, 9, 9, 9]});
        assert_eq!(row_boxes(&vgmed, "x.png"), vec![[1.0, 2.0, 11.0, 12.0]]);
        let slake: Value = serde_json::json!({"image": "Slake/1.png", "original_bboxes": [[0, 0, 1, 1]], "bbox": [[5, 6, 10, 20]]});
        assert_eq!(
            row_boxes(&slake, "Slake/1.png"),
            vec![[5.0, 6.0, 15.0, 26.0]]
        );
        let coco: Value = serde_json::json!({"image": "c.jpg", "bbox": [5, 6, 10, 20]});
        assert_eq!(row_boxes(&coco, "c.jpg"), vec![[5.0, 6.0, 15.0, 26.0]]);
    }

    #[test]
    fn shards_partition_the_selection() {
        let samples: Vec<Sample> = (0..10)
            .map(|index| Sample {
                index,
                image: PathBuf::new(),
                image_name: String::new(),
                question: String::new(),
                answer: None,
                options: Vec::new(),
                answer_type: None,
                modality: String::new(),
                dataset: String::new(),
                boxes: Vec::new(),
            })
            .collect();
        let all: Vec<usize> = select(samples.clone(), Some(7), 42, None)
            .iter()
            .map(|s| s.index)
            .collect();
        let mut union: Vec<usize> = (0..3)
            .flat_map(|i| {
                select(
                    samples.clone(),
                    Some(7),
                    42,
                    Some(Shard { index: i, count: 3 }),
                )
            })
            .map(|s| s.index)
            .collect();
        union.sort_unstable();
        assert_eq!(union, all);
        assert!(Shard::parse("3/3").is_err());
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
    }
}
