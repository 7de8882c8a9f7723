//! The native file dialogs (rfd), behind the app's `FileDialog` trait so tests (and headless
//! runs, where rfd returns nothing) can answer instead.

use std::path::PathBuf;

use super::state::FileDialog;

/// The native dialog, through rfd.
pub struct NativeDialog;

impl FileDialog for NativeDialog {
    fn open_image(&mut self) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .add_filter(
                "Images",
                &["dcm", "dicom", "png", "jpg", "jpeg", "tif", "tiff", "bmp"],
            )
            .add_filter("All files", &["*"])
            .pick_file()
    }
    fn save_file(&mut self, suggested_name: &str) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .set_file_name(suggested_name)
            .save_file()
    }
    fn open_folder(&mut self) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .set_title("Open a model folder (config.json + safetensors)")
            .pick_folder()
    }
    fn open_study_folder(&mut self) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .set_title("Open a folder of DICOM files (series are found in it)")
            .pick_folder()
    }
    fn open_regions_file(&mut self) -> Option<PathBuf> {
        rfd::FileDialog::new()
            .set_title("Import regions")
            .add_filter(
                "Regions (DICOM SEG, NIfTI, COCO, VGMED)",
                &["dcm", "nii", "gz", "json", "jsonl"],
            )
            .add_filter("All files", &["*"])
            .pick_file()
    }
}
