//! A folder or DICOMDIR open as studies and series: the header scan runs on its own thread
//! (`fovea-scan`) while the UI keeps drawing its progress; thumbnails are made there too (the
//! middle slice of each series). Slices are decoded when shown, through a cache bounded in
//! bytes, and the next slices in the scrolling direction are decoded ahead on the
//! `fovea-slices` thread so scrolling does not wait on the disk.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{mpsc, Arc};

use crate::imaging::scan::{Scan, ScanProgress, SeriesInfo};
use crate::imaging::{self, Study};

/// Decoded slices kept at most (bytes of modality values); 512 MiB holds 500 CT slices of
/// 512 x 512.
pub const CACHE_BYTES: usize = 512 << 20;

/// Studies by file, least recently used first out, bounded in bytes.
#[derive(Default)]
pub struct SliceCache {
    entries: VecDeque<(PathBuf, Arc<Study>)>,
    bytes: usize,
    pub limit: usize,
}

fn study_bytes(study: &Study) -> usize {
    study.frames.iter().map(|f| f.values.len() * 4).sum()
}

impl SliceCache {
    pub fn new(limit: usize) -> SliceCache {
        SliceCache {
            limit,
            ..Default::default()
        }
    }

    pub fn get(&mut self, path: &Path) -> Option<Arc<Study>> {
        let index = self.entries.iter().position(|(p, _)| p == path)?;
        let entry = self.entries.remove(index)?;
        let study = entry.1.clone();
        self.entries.push_back(entry);
        Some(study)
    }

    pub fn insert(&mut self, path: PathBuf, study: Arc<Study>) {
        if self.contains(&path) {
            return;
        }
        self.bytes += study_bytes(&study);
        self.entries.push_back((path, study));
        while self.bytes > self.limit && self.entries.len() > 1 {
            if let Some((_, old)) = self.entries.pop_front() {
                self.bytes -= study_bytes(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.entries.iter().any(|(p, _)| p == path)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What the scan thread sends back.
pub struct ScanDone {
    pub scan: Result<Scan, String>,
    /// The middle slice of each series, at most 64 px on a side (RGB8, default window).
    pub thumbnails: Vec<Option<image::RgbImage>>,
}

/// The open folder or DICOMDIR.
pub struct SeriesBrowser {
    pub root: PathBuf,
    pub progress: Arc<ScanProgress>,
    receiver: mpsc::Receiver<ScanDone>,
    pub scan: Option<Scan>,
    pub failed: Option<String>,
    pub thumbnails: Vec<Option<image::RgbImage>>,
    pub thumbnail_textures: Vec<Option<egui::TextureHandle>>,
    /// The series and slice shown (indices into `scan`).
    pub series: usize,
    pub slice: usize,
    pub cache: SliceCache,
    prefetch: Option<mpsc::Sender<PathBuf>>,
    prefetched: Option<mpsc::Receiver<(PathBuf, Arc<Study>)>>,
    /// Files asked of the prefetcher that have not arrived yet.
    pending: std::collections::HashSet<PathBuf>,
    pub started: std::time::Instant,
}

impl SeriesBrowser {
    /// Start scanning `root` on the `fovea-scan` thread; `progress` may carry a throttle
    /// (tests simulate a slow network share with it).
    pub fn start(
        root: PathBuf,
        progress: Arc<ScanProgress>,
        repaint: impl Fn() + Send + 'static,
    ) -> SeriesBrowser {
        let (sender, receiver) = mpsc::channel();
        let (thread_root, thread_progress) = (root.clone(), progress.clone());
        let spawned = std::thread::Builder::new()
            .name("fovea-scan".into())
            .spawn(move || {
                let scan =
                    imaging::scan::scan(&thread_root, &thread_progress).map_err(|e| e.to_string());
                let thumbnails = match &scan {
                    Ok(scan) => scan.series.iter().map(thumbnail).collect(),
                    Err(_) => Vec::new(),
                };
                let _ = sender.send(ScanDone { scan, thumbnails });
                repaint();
            });
        let mut browser = SeriesBrowser {
            root,
            progress,
            receiver,
            scan: None,
            failed: None,
            thumbnails: Vec::new(),
            thumbnail_textures: Vec::new(),
            series: 0,
            slice: 0,
            cache: SliceCache::new(CACHE_BYTES),
            prefetch: None,
            prefetched: None,
            pending: Default::default(),
            started: std::time::Instant::now(),
        };
        if let Err(err) = spawned {
            browser.failed = Some(format!("cannot start the scan thread: {err}"));
        }
        browser.start_prefetcher();
        browser
    }

    fn start_prefetcher(&mut self) {
        let (requests, inbox) = mpsc::channel::<PathBuf>();
        let (outbox, results) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("fovea-slices".into())
            .spawn(move || {
                for path in inbox {
                    if let Ok(study) = imaging::load(&path) {
                        if outbox.send((path, Arc::new(study))).is_err() {
                            return;
                        }
                    }
                }
            });
        if spawned.is_ok() {
            self.prefetch = Some(requests);
            self.prefetched = Some(results);
        }
    }

    /// Take the scan's result when it has arrived; true on the frame it does.
    pub fn poll(&mut self) -> bool {
        if let Some(results) = &self.prefetched {
            while let Ok((path, study)) = results.try_recv() {
                self.pending.remove(&path);
                self.cache.insert(path, study);
            }
        }
        if self.scan.is_some() || self.failed.is_some() {
            return false;
        }
        match self.receiver.try_recv() {
            Ok(done) => {
                match done.scan {
                    Ok(scan) => {
                        self.thumbnail_textures = vec![None; scan.series.len()];
                        self.thumbnails = done.thumbnails;
                        self.scan = Some(scan);
                    }
                    Err(err) => self.failed = Some(err),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// "312 of 500 files" while scanning.
    pub fn progress_text(&self) -> String {
        format!(
            "reading headers: {} of {} files",
            self.progress.read.load(AtomicOrdering::Relaxed),
            self.progress.found.load(AtomicOrdering::Relaxed)
        )
    }

    pub fn current(&self) -> Option<&SeriesInfo> {
        self.scan.as_ref()?.series.get(self.series)
    }

    /// The shown slice's distance to its nearest neighbour, when `path` / `frame` is the shown
    /// slice (an import onto it checks a SEG frame's distance against half of it).
    pub fn slice_spacing_mm(&self, path: &std::path::Path, frame: usize) -> Option<f64> {
        let series = self.current()?;
        let header = series.slices.get(self.slice)?;
        (header.path == path && header.frame == frame)
            .then(|| series.slice_spacing_mm(self.slice))
            .flatten()
    }

    /// The study and frame of slice `slice` of the current series: from the cache, else read
    /// now; the next slices in `direction` are queued for the prefetcher.
    pub fn load(&mut self, slice: usize, direction: i64) -> Result<(Arc<Study>, usize), String> {
        let series = self.current().ok_or("no series")?;
        let header = series.slices.get(slice).ok_or("no such slice")?;
        let (path, frame) = (header.path.clone(), header.frame);
        let step = if direction < 0 { -1 } else { 1 };
        let ahead: Vec<PathBuf> = (1..=4i64)
            .map(|n| slice as i64 + step * n)
            .filter(|&k| k >= 0)
            .filter_map(|k| series.slices.get(k as usize))
            .map(|s| s.path.clone())
            .filter(|p| *p != path)
            .collect();
        let study = match self.cache.get(&path) {
            Some(study) => study,
            None => {
                let study = Arc::new(imaging::load(&path).map_err(|e| e.to_string())?);
                self.cache.insert(path.clone(), study.clone());
                study
            }
        };
        if let Some(prefetch) = &self.prefetch {
            for next in ahead {
                // Each file is asked for once until it arrives (or is found in the cache).
                if !self.cache.contains(&next) && self.pending.insert(next.clone()) {
                    let _ = prefetch.send(next);
                }
            }
        }
        Ok((study, frame))
    }
}

/// A 64 px thumbnail of a series' middle slice.
fn thumbnail(series: &SeriesInfo) -> Option<image::RgbImage> {
    let header = series.slices.get(series.slices.len() / 2)?;
    let study = imaging::load(&header.path).ok()?;
    let rgb = imaging::render_rgb8(&study, header.frame, &imaging::VoiOption::Default).ok()?;
    let scale = 64.0 / rgb.width().max(rgb.height()) as f32;
    let (w, h) = (
        ((rgb.width() as f32 * scale).round() as u32).max(1),
        ((rgb.height() as f32 * scale).round() as u32).max(1),
    );
    Some(image::imageops::resize(
        &rgb,
        w,
        h,
        image::imageops::FilterType::Triangle,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache keeps at most its byte bound, dropping the least recently used study first
    /// (a `get` makes a study recent again).
    #[test]
    fn the_cache_drops_the_least_recently_used_within_its_bound() {
        let fixture =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava/test_image.png");
        let study = Arc::new(imaging::load(&fixture).unwrap());
        let one = study_bytes(&study);
        assert_eq!(one, 40 * 28 * 3 * 4);
        let mut cache = SliceCache::new(2 * one + one / 2);
        let (a, b, c) = (PathBuf::from("a"), PathBuf::from("b"), PathBuf::from("c"));
        cache.insert(a.clone(), study.clone());
        cache.insert(b.clone(), study.clone());
        assert!(cache.get(&a).is_some());
        cache.insert(c.clone(), study.clone());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), 2 * one);
        assert!(cache.contains(&a) && cache.contains(&c) && !cache.contains(&b));
        // Inserting what is there changes nothing.
        cache.insert(c.clone(), study);
        assert_eq!(cache.len(), 2);
    }
}
