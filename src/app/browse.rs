//! The app's side of a series: opening a folder or DICOMDIR, choosing a series and a slice,
//! and showing the scan's result when it arrives (the browser itself is in series.rs).

use std::path::Path;
use std::sync::Arc;

use super::series::SeriesBrowser;
use super::state::{Command, FoveaApp};
use crate::imaging;

impl FoveaApp {
    /// Start reading the series of a folder or DICOMDIR (`progress` may throttle, for tests).
    pub fn open_series(&mut self, path: &Path, progress: Arc<imaging::scan::ScanProgress>) {
        let repaint = self.worker.repaint_handle();
        self.browser = Some(SeriesBrowser::start(
            path.to_path_buf(),
            progress,
            move || repaint(),
        ));
        self.persisted.recent.retain(|p| p != path);
        self.persisted.recent.insert(0, path.to_path_buf());
        self.persisted.recent.truncate(10);
        self.status = format!("reading the series in {}", path.display());
    }

    /// Show slice `slice` of the open series, keeping the view (zoom, pan, window) as it is.
    pub(super) fn set_slice(&mut self, slice: usize, direction: i64) {
        let Some(browser) = self.browser.as_mut() else {
            return;
        };
        let count = browser.current().map_or(0, |s| s.slices.len());
        if count == 0 {
            return;
        }
        let slice = slice.min(count - 1);
        match browser.load(slice, direction) {
            Ok((study, frame)) => {
                browser.slice = slice;
                let (view, window) = (self.view, self.image.as_ref().map(|i| i.window));
                let same_series = self.image.is_some();
                self.show_study(study, frame);
                if same_series {
                    self.view = view;
                    if let (Some(window), Some(image)) = (window, self.image.as_mut()) {
                        image.window = window;
                    }
                }
            }
            Err(err) => self.status = format!("cannot show slice {slice}: {err}"),
        }
    }

    /// Show series `index` at its middle slice, fitted.
    pub(super) fn set_series(&mut self, index: usize) {
        let Some(browser) = self.browser.as_mut() else {
            return;
        };
        let Some(count) = browser
            .scan
            .as_ref()
            .and_then(|s| s.series.get(index))
            .map(|s| s.slices.len())
        else {
            return;
        };
        browser.series = index;
        self.image = None;
        self.set_slice(count / 2, 1);
    }

    /// Take the folder scan's result when it arrives, and show its first series.
    pub(super) fn poll_browser(&mut self) {
        if let Some(browser) = self.browser.as_mut() {
            if browser.poll() {
                match (&browser.scan, &browser.failed) {
                    (Some(scan), _) => {
                        self.status = format!(
                            "{} series in {} ({} file(s) passed over) in {:.1} s",
                            scan.series.len(),
                            browser.root.display(),
                            scan.skipped.len(),
                            browser.started.elapsed().as_secs_f64()
                        );
                        self.commands.insert(0, Command::SetSeries(0));
                    }
                    (None, Some(err)) => self.status = err.clone(),
                    _ => {}
                }
            }
        }
    }
}
