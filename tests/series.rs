//! Folders, DICOMDIRs and enhanced multi-frame objects as series: slices in order along the
//! slice normal whatever the file names and Instance Numbers say, chosen on the command line
//! with --series / --slice, pixels as the generator's Hounsfield units windowed by hand.

use std::path::Path;
use std::process::Output;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use fovea::demo::ct_series::CtSeries;
use fovea::imaging::scan::{scan, ScanProgress};
use fovea::imaging::series::Ordering;

mod common;

fn fovea(args: &[&str]) -> Output {
    common::fovea_command()
        .args(args)
        .output()
        .expect("fovea runs")
}

fn write_series(dir: &Path, slices: usize) -> CtSeries {
    let out = fovea(&[
        "phantom",
        "--out",
        dir.to_str().unwrap(),
        "--ct-slices",
        &slices.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    CtSeries {
        slices,
        ..CtSeries::default()
    }
}

#[test]
fn a_shuffled_ct_series_is_ordered_by_position_not_names_or_instance_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let series = write_series(dir.path(), 200);
    // A file that is not DICOM sits among the slices, as readme files do.
    std::fs::write(dir.path().join("README.txt"), "notes").unwrap();
    let found = scan(dir.path(), &ScanProgress::default()).unwrap();
    assert_eq!(found.series.len(), 1);
    assert_eq!(found.skipped.len(), 1);
    let s = &found.series[0];
    assert_eq!(s.ordering, Ordering::Position);
    assert_eq!(s.slices.len(), 200);
    // Positions by hand: z = -(200 - 1) * 2.5 / 2 + 2.5 k.
    for (k, slice) in s.slices.iter().enumerate() {
        let z = -199.0 * 2.5 / 2.0 + 2.5 * k as f64;
        let p = slice.position.unwrap();
        assert!((p[2] - z).abs() < 1e-3, "slice {k}: z {} vs {z}", p[2]);
    }
    // Neither the file names nor the Instance Numbers give that order.
    let names: Vec<_> = s.slices.iter().map(|x| x.path.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_ne!(names, sorted);
    let numbers: Vec<i64> = s
        .slices
        .iter()
        .map(|x| x.instance_number.unwrap())
        .collect();
    assert!(numbers.windows(2).any(|w| w[1] < w[0]));
    assert!(numbers.windows(2).any(|w| w[1] > w[0]));

    // `fovea convert DIR --slice K` renders slice K along the normal: the lesion's slice
    // (z = 0 is slice 99.5, so slice 100 at z = 1.25) windowed by hand (C 40, W 400, the
    // DICOM linear function) from the generator's Hounsfield units.
    let png = dir.path().join("slice.png");
    let out = fovea(&[
        "convert",
        dir.path().to_str().unwrap(),
        png.to_str().unwrap(),
        "--slice",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap().to_luma8();
    let mut worst = 0i32;
    for row in 0..128 {
        for col in 0..128 {
            let hu = (series.hu(100, col, row) + 1024.0)
                .round()
                .clamp(0.0, 4095.0)
                - 1024.0;
            let (c, w) = (40.0, 400.0);
            let level = if hu <= c - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if hu > c - 0.5 + (w - 1.0) / 2.0 {
                1.0
            } else {
                (hu - (c - 0.5)) / (w - 1.0) + 0.5
            };
            let expected = (level * 255.0f64).round() as i32;
            let got = img.get_pixel(col as u32, row as u32).0[0] as i32;
            worst = worst.max((got - expected).abs());
        }
    }
    assert!(
        worst <= 1,
        "slice pixels differ from the hand-windowed HU by {worst}"
    );
    // The lesion (130 HU, centre x = 60 mm, y = -20 mm) is in that slice: column (60 + 192) / 3.
    assert!(img.get_pixel(84, 57).0[0] > 160);

    // A choice that is missing or out of range gets one line naming the range.
    let out = fovea(&[
        "convert",
        dir.path().to_str().unwrap(),
        png.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("choose one with --slice K (0..199"),
        "{stderr}"
    );
    let out = fovea(&[
        "convert",
        dir.path().to_str().unwrap(),
        png.to_str().unwrap(),
        "--series",
        "3",
        "--slice",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("series 3 does not exist"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

/// One enhanced multi-frame object whose frames are stored head to feet (positions in the
/// per-frame functional groups), with the orientation in the shared group.
fn enhanced_multiframe(path: &Path, frames: usize) {
    let mut obj = InMemDicomObject::new_empty();
    let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    obj.put(text(
        tags::SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.5.1.4.1.1.2.1",
    ));
    obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, "2.25.77.1"));
    obj.put(text(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.77.2"));
    obj.put(text(tags::SERIES_INSTANCE_UID, VR::UI, "2.25.77.3"));
    obj.put(text(tags::MODALITY, VR::CS, "CT"));
    obj.put(text(tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string()));
    obj.put(text(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 1),
        (tags::ROWS, 4),
        (tags::COLUMNS, 4),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(us(tag, v));
    }
    let group = |tag, inner: DataElement<InMemDicomObject>| {
        DataElement::new(
            tag,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![InMemDicomObject::from_element_iter([
                inner,
            ])]),
        )
    };
    let orientation = group(
        tags::PLANE_ORIENTATION_SEQUENCE,
        text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
    );
    obj.put(DataElement::new(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![InMemDicomObject::from_element_iter([
            orientation,
        ])]),
    ));
    let per_frame: Vec<InMemDicomObject> = (0..frames)
        .map(|f| {
            let z = 10.0 * (frames - f) as f64;
            InMemDicomObject::from_element_iter([group(
                tags::PLANE_POSITION_SEQUENCE,
                text(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!("0\\0\\{z}")),
            )])
        })
        .collect();
    obj.put(DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(per_frame),
    ));
    let pixels: Vec<u16> = (0..frames).flat_map(|f| [f as u16; 16]).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2.1")
            .media_storage_sop_instance_uid("2.25.77.1"),
    )
    .unwrap()
    .write_to_file(path)
    .unwrap();
}

#[test]
fn an_enhanced_multiframe_object_is_a_series_of_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    enhanced_multiframe(&dir.path().join("enhanced.dcm"), 6);
    let found = scan(dir.path(), &ScanProgress::default()).unwrap();
    assert_eq!(found.series.len(), 1);
    let s = &found.series[0];
    assert_eq!(s.ordering, Ordering::Position);
    // Stored head to feet; shown feet to head: frames 5, 4, ..., 0.
    let frames: Vec<usize> = s.slices.iter().map(|x| x.frame).collect();
    assert_eq!(frames, [5, 4, 3, 2, 1, 0]);
    // Slice 0 along the normal is frame 5, whose pixels are all 5.
    let png = dir.path().join("f.png");
    let out = fovea(&[
        "convert",
        dir.path().to_str().unwrap(),
        png.to_str().unwrap(),
        "--slice",
        "0",
        "--window",
        "2.5,6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap().to_luma8();
    // Window C 2.5 W 6 by hand: (5 - 2) / 5 + 0.5 = 1.1 -> 255.
    assert_eq!(img.get_pixel(0, 0).0[0], 255);
}

#[test]
fn a_dicomdir_names_the_files_of_its_series() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("DICOM");
    write_series(&images, 5);
    // A DICOMDIR whose image records name four of the five files (as IDs relative to it).
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let records: Vec<InMemDicomObject> = names[..4]
        .iter()
        .map(|name| {
            InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::DIRECTORY_RECORD_TYPE,
                    VR::CS,
                    PrimitiveValue::from("IMAGE"),
                ),
                DataElement::new(
                    tags::REFERENCED_FILE_ID,
                    VR::CS,
                    PrimitiveValue::Strs(vec!["DICOM".to_string(), name.clone()].into()),
                ),
            ])
        })
        .collect();
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::DIRECTORY_RECORD_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(records),
    ));
    let dicomdir = dir.path().join("DICOMDIR");
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid("1.2.840.10008.1.3.10")
            .media_storage_sop_instance_uid("2.25.78"),
    )
    .unwrap()
    .write_to_file(&dicomdir)
    .unwrap();
    let found = scan(&dicomdir, &ScanProgress::default()).unwrap();
    assert_eq!(found.series.len(), 1);
    assert_eq!(found.series[0].slices.len(), 4);
    let out = fovea(&["info", dicomdir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 slice(s) 128 x 128"), "{stdout}");
    // No patient data in the listing.
    assert!(!stdout.contains("Phantom^CT") && !stdout.contains("PHANTOM-CT"));
}

/// Two studies in one folder: their series are listed study by study, under study headings.
#[test]
fn two_studies_in_one_folder_are_listed_study_by_study() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [0u64, 1] {
        let series = CtSeries {
            slices: 3,
            seed,
            ..CtSeries::default()
        };
        fovea::demo::ct_series::write(&dir.path().join(format!("study{seed}")), &series).unwrap();
    }
    let found = scan(dir.path(), &ScanProgress::default()).unwrap();
    assert_eq!(found.series.len(), 2);
    assert_eq!(found.studies(), 2);
    assert_eq!((found.series[0].study, found.series[1].study), (0, 1));
    assert!(found.starts_study(0) && found.starts_study(1));
    assert_ne!(found.series[0].study_uid, found.series[1].study_uid);
    let out = fovea(&["info", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("study 1:\n  [0] CT #3") && stdout.contains("study 2:\n  [1] CT #3"),
        "{stdout}"
    );
}

/// pydicom's own test DICOMDIR (tests/data/pydicom-corpus, fetched by
/// tools/fetch_pydicom_corpus.sh; CI requires it): pydicom 3.0.2's FileSet finds 13 series
/// in 6 studies holding 31 images, with these slice counts; so does fovea. And the whole
/// corpus folder scans without a panic, every file either in a series or passed over.
#[test]
fn pydicoms_dicomdir_and_corpus_folder_scan_as_pydicom_reads_them() {
    let corpus =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom-corpus");
    let required = std::env::var("FOVEA_REQUIRE_CORPUS").is_ok_and(|v| v == "1");
    if !corpus.join("dicomdirtests/DICOMDIR").exists() {
        assert!(
            !required,
            "FOVEA_REQUIRE_CORPUS=1 but the pydicom corpus is missing"
        );
        eprintln!("pydicom corpus not fetched: skipped");
        return;
    }
    let found = scan(
        &corpus.join("dicomdirtests/DICOMDIR"),
        &ScanProgress::default(),
    )
    .unwrap();
    let mut counts: Vec<usize> = found.series.iter().map(|s| s.slices.len()).collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 4, 5, 7]);
    assert_eq!(found.studies(), 6);
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    let all = scan(&corpus, &ScanProgress::default()).unwrap();
    let files: std::collections::BTreeSet<_> = all
        .series
        .iter()
        .flat_map(|s| s.slices.iter().map(|x| x.path.clone()))
        .collect();
    let total = walkdir_count(&corpus);
    assert_eq!(files.len() + all.skipped.len(), total);
    eprintln!(
        "corpus: {} series from {} files, {} passed over",
        all.series.len(),
        files.len(),
        all.skipped.len()
    );
}

fn walkdir_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                walkdir_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}
