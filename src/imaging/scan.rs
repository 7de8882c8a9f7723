//! Finding the series in a folder or a DICOMDIR: headers only (each file is read up to its
//! pixel data), grouped by Study and Series Instance UID and ordered along the slice normal by
//! [`super::series`]. Pixels are read later, one slice at a time, by whoever shows it.
//!
//! Enhanced multi-frame objects (one file, a frame per slice, positions in the per-frame
//! functional groups) become a series of their frames. Files that are not DICOM, or not images
//! (a DICOMDIR, a SEG, a structured report), are counted and named, never fatal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

use super::error::{error_chain, ImagingError};
use super::series::{self, Ordering, SliceHeader};
use super::sniff::{has_dicm_magic, looks_like_bare_dataset, read_head};

/// What a series browser shows of a series: nothing that identifies the patient.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesInfo {
    /// Which study of the scan (0-based, in the order studies were first found).
    pub study: usize,
    pub study_uid: String,
    pub series_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    /// Series Description (free text, as PACS viewers show it).
    pub description: Option<String>,
    pub rows: u32,
    pub columns: u32,
    pub slices: Vec<SliceHeader>,
    pub ordering: Ordering,
}

impl SeriesInfo {
    /// Slice `index`'s distance to its nearest neighbour (`series::neighbour_spacing_mm`).
    pub fn slice_spacing_mm(&self, index: usize) -> Option<f64> {
        if self.ordering != Ordering::Position {
            return None;
        }
        super::series::neighbour_spacing_mm(&self.slices, index)
    }

    /// One line for lists: "CT #3 AXIAL 2.5 mm, 200 slices 512 x 512, ordered by position".
    pub fn label(&self) -> String {
        let mut text = self.modality.clone().unwrap_or_else(|| "?".into());
        if let Some(number) = self.series_number {
            text.push_str(&format!(" #{number}"));
        }
        if let Some(description) = &self.description {
            text.push_str(&format!(" {description}"));
        }
        let ordering = match self.ordering {
            Ordering::Position => "by position along the slice normal",
            Ordering::InstanceNumber => "by Instance Number",
            Ordering::FileName => "by file name",
        };
        format!(
            "{text}, {} slice(s) {} x {}, ordered {ordering}",
            self.slices.len(),
            self.columns,
            self.rows
        )
    }
}

/// The result of a scan: series in the order they were found, and what was passed over.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub root: PathBuf,
    pub series: Vec<SeriesInfo>,
    /// Files that are not DICOM images, with why (shown as a count and on request).
    pub skipped: Vec<(PathBuf, String)>,
}

impl Scan {
    /// How many studies the series come from.
    pub fn studies(&self) -> usize {
        self.series
            .iter()
            .map(|s| s.study)
            .max()
            .map_or(0, |k| k + 1)
    }

    /// Whether series `index` is the first of its study in a scan of several studies (where a
    /// list shows a study heading).
    pub fn starts_study(&self, index: usize) -> bool {
        self.studies() > 1
            && (index == 0 || self.series[index - 1].study != self.series[index].study)
    }
}

/// Live counters a UI can poll while a scan runs on another thread.
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub found: AtomicUsize,
    pub read: AtomicUsize,
    pub cancel: AtomicBool,
    /// Wait this long per file (a slow network share, for tests of the UI during a scan).
    pub throttle: Option<std::time::Duration>,
}

/// Per-file header facts beyond what ordering needs.
struct FileHeader {
    slices: Vec<SliceHeader>,
    modality: Option<String>,
    series_number: Option<i64>,
    description: Option<String>,
    rows: u32,
    columns: u32,
}

/// A folder or a DICOMDIR (by name), rather than one image file.
pub fn is_series_source(path: &Path) -> bool {
    path.is_dir()
        || path
            .file_name()
            .is_some_and(|name| name.eq_ignore_ascii_case("DICOMDIR"))
}

/// Scan `root`: a folder (recursively, hidden entries skipped) or a DICOMDIR file (its image
/// records' files). Errors only when `root` itself cannot be read or holds no DICOM image.
pub fn scan(root: &Path, progress: &ScanProgress) -> Result<Scan, ImagingError> {
    let files = if root.is_dir() {
        let mut files = Vec::new();
        walk(root, &mut files, progress)?;
        files.sort();
        files
    } else {
        dicomdir_files(root)?
    };
    progress.found.store(files.len(), AtomicOrdering::Relaxed);
    let mut headers = Vec::new();
    let mut skipped = Vec::new();
    for file in files {
        if progress.cancel.load(AtomicOrdering::Relaxed) {
            break;
        }
        if let Some(wait) = progress.throttle {
            std::thread::sleep(wait);
        }
        match read_header(&file) {
            Ok(header) => headers.push(header),
            Err(why) => skipped.push((file, why)),
        }
        progress.read.fetch_add(1, AtomicOrdering::Relaxed);
    }
    if headers.is_empty() {
        return Err(ImagingError::dicom(
            root,
            format!(
                "no DICOM image found ({} file(s) looked at{})",
                skipped.len(),
                skipped
                    .first()
                    .map(|(path, why)| format!("; {}: {why}", path.display()))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(Scan {
        root: root.to_path_buf(),
        series: group(headers),
        skipped,
    })
}

/// Group file headers into series (see [`series::group`]) and attach what the browser shows.
/// Series come out study by study (studies in the order first found), and by Series Number
/// within a study (series without one last, in the order found).
fn group(headers: Vec<FileHeader>) -> Vec<SeriesInfo> {
    let slices: Vec<SliceHeader> = headers.iter().flat_map(|h| h.slices.clone()).collect();
    let mut studies: Vec<String> = Vec::new();
    let mut grouped: Vec<SeriesInfo> = series::group(slices)
        .into_iter()
        .map(|s| {
            let first = headers
                .iter()
                .find(|h| {
                    h.slices
                        .first()
                        .is_some_and(|f| f.series_uid == s.series_uid && f.study_uid == s.study_uid)
                })
                .expect("every series comes from a header");
            let study = match studies.iter().position(|u| *u == s.study_uid) {
                Some(k) => k,
                None => {
                    studies.push(s.study_uid.clone());
                    studies.len() - 1
                }
            };
            SeriesInfo {
                study,
                study_uid: s.study_uid,
                series_uid: s.series_uid,
                modality: first.modality.clone(),
                series_number: first.series_number,
                description: first.description.clone(),
                rows: first.rows,
                columns: first.columns,
                slices: s.slices,
                ordering: s.ordering,
            }
        })
        .collect();
    grouped.sort_by_key(|s| (s.study, s.series_number.unwrap_or(i64::MAX)));
    grouped
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, progress: &ScanProgress) -> Result<(), ImagingError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ImagingError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        if progress.cancel.load(AtomicOrdering::Relaxed) {
            return Ok(());
        }
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            // A folder we may not read is passed over, not fatal.
            let _ = walk(&path, files, progress);
        } else if kind.is_file() {
            files.push(path);
            progress.found.store(files.len(), AtomicOrdering::Relaxed);
        }
    }
    Ok(())
}

/// The image files a DICOMDIR names (Referenced File ID of its IMAGE records, relative to the
/// DICOMDIR's folder).
fn dicomdir_files(path: &Path) -> Result<Vec<PathBuf>, ImagingError> {
    let obj = OpenFileOptions::new().open_file(path).map_err(|err| {
        ImagingError::dicom(
            path,
            format!(
                "not a folder and not a readable DICOMDIR ({})",
                error_chain(&err)
            ),
        )
    })?;
    let Some(records) = obj
        .get(tags::DIRECTORY_RECORD_SEQUENCE)
        .and_then(|e| e.items())
    else {
        return Err(ImagingError::dicom(
            path,
            "not a folder and not a DICOMDIR (no Directory Record Sequence)",
        ));
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for record in records {
        let Some(id) = record.get(tags::REFERENCED_FILE_ID) else {
            continue;
        };
        let Ok(parts) = id.to_multi_str() else {
            continue;
        };
        let mut file = base.to_path_buf();
        for part in parts.iter() {
            file.push(part.trim_matches(|c: char| c == '\0' || c.is_whitespace()));
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(ImagingError::dicom(
            path,
            "DICOMDIR names no files (no Referenced File ID)",
        ));
    }
    Ok(files)
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_string())
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let values = obj.get(tag)?.to_multi_float64().ok()?;
    let array: [f64; N] = values.get(..N)?.try_into().ok()?;
    array.iter().all(|v| v.is_finite()).then_some(array)
}

/// The first item of sequence `tag` in `obj`.
fn item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

/// A functional-group attribute of `frame`: per-frame first, then shared.
fn functional<'a>(
    root: &'a InMemDicomObject,
    frame: usize,
    group: Tag,
) -> Option<&'a InMemDicomObject> {
    let per_frame = root
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.get(frame))
        .and_then(|frame_item| item(frame_item, group));
    per_frame.or_else(|| {
        item(root, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|shared| item(shared, group))
    })
}

/// Read one file's header (up to its pixel data) and the slices it holds.
fn read_header(path: &Path) -> Result<FileHeader, String> {
    let head = read_head(path, 64 << 10).map_err(|err| err.to_string())?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let check = super::sniff::check_lengths(&head, file_len);
    if let Some(problem) = check.problem() {
        return Err(problem);
    }
    let misdeclared = check == super::sniff::LengthCheck::ImplicitUnderExplicitLabel;
    let obj: DefaultDicomObject = if misdeclared {
        super::dicom::open(path).map_err(|e| e.to_string())?
    } else if has_dicm_magic(&head) {
        match OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
        {
            Ok(obj) => obj,
            // The full reader knows files that misstate their encoding (explicit VR declared,
            // implicit written); what it cannot read either is passed over with its reason.
            Err(err) => super::dicom::open(path)
                .map_err(|_| format!("cannot parse DICOM ({})", error_chain(&err)))?,
        }
    } else if looks_like_bare_dataset(&head) {
        // Bare data sets (no meta header) are rare enough to read whole.
        super::dicom::open(path).map_err(|_| "not DICOM".to_string())?
    } else {
        // Other files (pictures, reports, videos) are passed over without reading them.
        return Err("not DICOM".into());
    };
    let root: &InMemDicomObject = &obj;
    let rows = root
        .get(tags::ROWS)
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or("a DICOM object without an image (no Rows)")?;
    let columns = root
        .get(tags::COLUMNS)
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or("a DICOM object without an image (no Columns)")?;
    let sop_class = text(root, tags::SOP_CLASS_UID).unwrap_or_default();
    if sop_class == "1.2.840.10008.5.1.4.1.1.66.4" {
        return Err("a DICOM Segmentation (import it onto its image instead)".into());
    }
    let study_uid = text(root, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let series_uid = text(root, tags::SERIES_INSTANCE_UID)
        .unwrap_or_else(|| format!("(no Series Instance UID) {}", path.display()));
    let frames = root
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1) as usize;
    let instance_number = root
        .get(tags::INSTANCE_NUMBER)
        .and_then(|e| e.to_int::<i64>().ok());
    let mut slices = Vec::with_capacity(frames);
    for frame in 0..frames {
        let (position, orientation) = if root
            .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .is_some()
        {
            (
                functional(root, frame, tags::PLANE_POSITION_SEQUENCE)
                    .and_then(|g| floats::<3>(g, tags::IMAGE_POSITION_PATIENT)),
                functional(root, frame, tags::PLANE_ORIENTATION_SEQUENCE)
                    .and_then(|g| floats::<6>(g, tags::IMAGE_ORIENTATION_PATIENT)),
            )
        } else if frames == 1 {
            (
                floats::<3>(root, tags::IMAGE_POSITION_PATIENT),
                floats::<6>(root, tags::IMAGE_ORIENTATION_PATIENT),
            )
        } else {
            // A classic multi-frame object (cine, a frame series) has no per-frame geometry:
            // frames follow their stored order.
            (None, None)
        };
        slices.push(SliceHeader {
            path: path.to_path_buf(),
            frame,
            study_uid: study_uid.clone(),
            series_uid: series_uid.clone(),
            instance_number: if frames > 1 {
                Some(frame as i64)
            } else {
                instance_number
            },
            position,
            orientation,
        });
    }
    Ok(FileHeader {
        slices,
        modality: text(root, tags::MODALITY),
        series_number: root
            .get(tags::SERIES_NUMBER)
            .and_then(|e| e.to_int::<i64>().ok()),
        description: text(root, tags::SERIES_DESCRIPTION),
        rows,
        columns,
    })
}

/// Pick series `index` (0-based, as `fovea info FOLDER` lists them) or the series whose
/// Series Instance UID is `index`, and its slice `slice` (0-based along the slice normal).
pub fn pick<'a>(
    scan: &'a Scan,
    series: &str,
    slice: usize,
) -> Result<(&'a SeriesInfo, &'a SliceHeader), String> {
    let chosen = match series.trim().parse::<usize>() {
        Ok(index) => scan.series.get(index).ok_or_else(|| {
            format!(
                "series {index} does not exist: {} has {} series (0..{})",
                scan.root.display(),
                scan.series.len(),
                scan.series.len().saturating_sub(1)
            )
        })?,
        Err(_) => scan
            .series
            .iter()
            .find(|s| s.series_uid == series.trim())
            .ok_or_else(|| {
                format!(
                    "no series with Series Instance UID {series} in {}",
                    scan.root.display()
                )
            })?,
    };
    let header = chosen.slices.get(slice).ok_or_else(|| {
        format!(
            "slice {slice} does not exist: the series has {} slice(s) (0..{})",
            chosen.slices.len(),
            chosen.slices.len().saturating_sub(1)
        )
    })?;
    Ok((chosen, header))
}
