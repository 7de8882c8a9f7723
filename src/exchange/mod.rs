//! Clinical exchange: regions and maps out to PACS tools and back. DICOM Segmentation and
//! Secondary Capture objects written with dicom-object (de-identified by default, PS3.15
//! Basic Profile), and regions read from a SEG, a NIfTI mask, or COCO / VGMED boxes.
//!
//! Sits beside `case`: it knows regions (grounding) and images (imaging), nothing of models or
//! UI; the CLI and the app call it.

pub mod capture;
pub mod deid;
pub mod elements;
pub mod nifti;
pub mod regions;
pub mod seg;
pub mod seg_place;
pub mod seg_read;
pub mod segments;
pub mod source;

pub use deid::{Exporter, IdentityChoice};
pub use source::SourceImage;
