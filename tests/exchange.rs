//! Clinical exchange as a user runs it: `fovea inspect --seg/--capture` writes DICOM objects
//! that dciodvfy (dicom3tools, written by others) passes without errors, whose pixels equal the
//! regions' pixel masks worked out here by hand, that carry no source PHI by default, and that
//! import back as the same regions; NIfTI and COCO files written by nibabel and pycocotools
//! (tools/make_exchange_fixtures.py) land on the pixels their makers meant.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use dicom_core::header::Header;
use dicom_core::value::Value as DicomValue;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{open_file, FileMetaTableBuilder, InMemDicomObject};
use fovea::demo::ct_series::CtSeries;

#[path = "common/exchange.rs"]
mod common_exchange;
use common_exchange::{assert_valid, fixture, fovea, item, ok, text, unpack};

/// `fovea inspect --image IMAGE --question "Is there a lesion?"` plus `extra`.
fn inspect(image: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "inspect",
        "--image",
        image.to_str().unwrap(),
        "--question",
        "Is there a lesion?",
    ];
    args.extend_from_slice(extra);
    fovea(&args)
}

/// The 5-slice CT series the NIfTI fixtures were made from (the generator is deterministic).
fn ct(dir: &Path) -> CtSeries {
    ok(&fovea(&[
        "phantom",
        "--out",
        dir.to_str().unwrap(),
        "--ct-slices",
        "5",
    ]));
    CtSeries {
        slices: 5,
        ..CtSeries::default()
    }
}

/// The open slice's file (slice k along the normal).
fn slice_file(dir: &Path, k: usize) -> PathBuf {
    let scan = fovea::imaging::scan::scan(dir, &Default::default()).unwrap();
    scan.series[0].slices[k].path.clone()
}

/// Pixels whose centres lie in the box, by hand.
fn box_pixels(w: usize, h: usize, [x0, y0, x1, y1]: [f64; 4]) -> Vec<bool> {
    (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
            x >= x0 && x <= x1 && y >= y0 && y <= y1
        })
        .collect()
}

#[test]
fn a_seg_with_the_regions_and_the_triage_mask_validates_and_imports_back() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("ct");
    ct(&series);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let seg = out.join("case.seg.dcm");
    let record = out.join("case.json");
    let boxed = [70.0, 45.0, 100.5, 70.0];
    let stderr = ok(&inspect(
        &series,
        &[
            "--slice",
            "2",
            "--region",
            "70,45,100.5,70",
            "--seg",
            seg.to_str().unwrap(),
            "--seg-map-threshold",
            "0.5",
            "--keep-identity",
            "--json",
            record.to_str().unwrap(),
        ],
    ));
    assert!(
        stderr.contains("3 segment(s), patient identity kept"),
        "{stderr}"
    );
    assert_valid(&seg);

    let obj = open_file(&seg).unwrap();
    let source = open_file(slice_file(&series, 2)).unwrap();
    assert_eq!(text(&obj, tags::SOP_CLASS_UID), uids::SEGMENTATION_STORAGE);
    assert_eq!(text(&obj, tags::SEGMENTATION_TYPE), "BINARY");
    assert_eq!(text(&obj, tags::NUMBER_OF_FRAMES), "3");
    // References: the source's SOP Instance, study, series and Frame of Reference (identity
    // kept), and its geometry.
    // The Derivation Image functional group, per frame or shared.
    let frame0 = &obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let group = frame0
        .get(tags::DERIVATION_IMAGE_SEQUENCE)
        .map(|_| frame0)
        .unwrap_or_else(|| item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE));
    let derivation = item(
        item(group, tags::DERIVATION_IMAGE_SEQUENCE),
        tags::SOURCE_IMAGE_SEQUENCE,
    );
    assert_eq!(
        text(derivation, tags::REFERENCED_SOP_INSTANCE_UID),
        text(&source, tags::SOP_INSTANCE_UID)
    );
    for tag in [
        tags::STUDY_INSTANCE_UID,
        tags::FRAME_OF_REFERENCE_UID,
        tags::PATIENT_ID,
    ] {
        assert_eq!(text(&obj, tag), text(&source, tag), "{tag}");
    }
    let referenced_series = item(&obj, tags::REFERENCED_SERIES_SEQUENCE);
    assert_eq!(
        text(referenced_series, tags::SERIES_INSTANCE_UID),
        text(&source, tags::SERIES_INSTANCE_UID)
    );
    let frame0 = &obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let position = item(frame0, tags::PLANE_POSITION_SEQUENCE)
        .get(tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_multi_float64()
        .unwrap();
    let expected = source
        .get(tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_multi_float64()
        .unwrap();
    assert_eq!(position, expected);

    // Segments: the drawn box MANUAL, the two maps AUTOMATIC with their algorithm named.
    let segments = obj.get(tags::SEGMENT_SEQUENCE).unwrap().items().unwrap();
    let kinds: Vec<(String, String)> = segments
        .iter()
        .map(|s| {
            (
                text(s, tags::SEGMENT_LABEL),
                text(s, tags::SEGMENT_ALGORITHM_TYPE),
            )
        })
        .collect();
    assert_eq!(kinds[0], ("region 1".to_string(), "MANUAL".to_string()));
    assert_eq!(kinds[1].1, "AUTOMATIC");
    assert_eq!(kinds[2].1, "AUTOMATIC");
    assert!(text(&segments[1], tags::SEGMENT_ALGORITHM_NAME)
        .starts_with("fovea VGRefine attention triage"));

    // Frame 1's pixels are the box's pixel mask, by hand (pixel centres inside the box).
    let (w, h) = (128usize, 128usize);
    let bytes = obj.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(unpack(&bytes, 0, w * h), box_pixels(w, h, boxed));
    // Frame 2 is the kept tokens' cells: the record's knocked-out tokens are the others. The
    // demo model's grid is 12 x 12 over a 128 px square (pad and resize: no offset).
    let record_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let knocked: BTreeSet<usize> = record_json["knockout"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (rows, cols) = (
        record_json["model"]["grid"][0].as_u64().unwrap() as usize,
        record_json["model"]["grid"][1].as_u64().unwrap() as usize,
    );
    assert_eq!((rows, cols), (12, 12));
    let kept_by_hand: Vec<bool> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
            let token = (y / (128.0 / 12.0)) as usize * 12 + (x / (128.0 / 12.0)) as usize;
            !knocked.contains(&token)
        })
        .collect();
    assert_eq!(unpack(&bytes, 1, w * h), kept_by_hand);

    // Import back: the same box (shape restored, pixels checked), fovea's own maps skipped.
    let again = out.join("again.json");
    let stderr = ok(&inspect(
        &series,
        &[
            "--slice",
            "2",
            "--regions-from",
            seg.to_str().unwrap(),
            "--json",
            again.to_str().unwrap(),
        ],
    ));
    assert!(stderr.contains("1 region(s) imported"), "{stderr}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&again).unwrap()).unwrap();
    assert_eq!(again["regions"], record_json["regions"]);

    // The SEG is refused on another slice of the series, with the reason.
    let wrong = inspect(
        &series,
        &["--slice", "1", "--regions-from", seg.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("lies on another image of this series"),
        "{stderr}"
    );
}

/// A CT slice full of identifying values in the attributes PS3.15's Basic Profile names.
fn identified_source(path: &Path, from: &Path) -> Vec<String> {
    let mut obj = open_file(from).unwrap().into_inner();
    let phi: Vec<(Tag, VR, &str)> = vec![
        (tags::PATIENT_NAME, VR::PN, "Doe^Jane^Q"),
        (tags::PATIENT_ID, VR::LO, "MRN-4471923"),
        (tags::PATIENT_BIRTH_DATE, VR::DA, "19580214"),
        (tags::PATIENT_SEX, VR::CS, "F"),
        (tags::PATIENT_AGE, VR::AS, "068Y"),
        (tags::PATIENT_ADDRESS, VR::LO, "12 Elm Street Springfield"),
        (Tag(0x0010, 0x1000), VR::LO, "OTHER-ID-8812"),
        (tags::ISSUER_OF_PATIENT_ID, VR::LO, "SPRINGFIELD-GENERAL"),
        (tags::STUDY_DATE, VR::DA, "20240917"),
        (tags::STUDY_TIME, VR::TM, "134502"),
        (tags::SERIES_DATE, VR::DA, "20240918"),
        (tags::ACCESSION_NUMBER, VR::SH, "ACC-99812"),
        (tags::STUDY_ID, VR::SH, "ST-5531"),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN, "House^Gregory"),
        (tags::PERFORMING_PHYSICIAN_NAME, VR::PN, "Cuddy^Lisa"),
        (tags::OPERATORS_NAME, VR::PN, "Wilson^James"),
        (tags::INSTITUTION_NAME, VR::LO, "Princeton Plainsboro"),
        (tags::INSTITUTION_ADDRESS, VR::ST, "1 Hospital Road"),
        (tags::STATION_NAME, VR::SH, "CTSTATION7"),
        (tags::DEVICE_SERIAL_NUMBER, VR::LO, "SN-77123"),
        (tags::STUDY_DESCRIPTION, VR::LO, "CHEST JANE DOE FOLLOWUP"),
        (tags::SERIES_DESCRIPTION, VR::LO, "AXIAL DOE"),
        (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.826.0.1.99.7.1"),
        (tags::SERIES_INSTANCE_UID, VR::UI, "1.2.826.0.1.99.7.2"),
        (tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.99.7.3"),
        (tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.826.0.1.99.7.4"),
    ];
    for (tag, vr, value) in &phi {
        obj.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
    }
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
            .media_storage_sop_instance_uid("1.2.826.0.1.99.7.3"),
    )
    .unwrap()
    .write_to_file(path)
    .unwrap();
    // The values no export may contain (Patient's Sex "F" is too short to search for alone,
    // and is checked on its element).
    phi.iter()
        .map(|(_, _, v)| v.to_string())
        .filter(|v| v.len() > 1)
        .chain(["Doe".to_string(), "Jane".to_string()])
        .collect()
}

/// Every element's value as text, into sequences.
fn all_values(obj: &InMemDicomObject, out: &mut Vec<(Tag, String)>) {
    for element in obj.iter() {
        match element.value() {
            DicomValue::Sequence(seq) => {
                for item in seq.items() {
                    all_values(item, out);
                }
            }
            DicomValue::Primitive(p) => out.push((element.tag(), p.to_str().to_string())),
            DicomValue::PixelSequence(_) => {}
        }
    }
}

#[test]
fn default_exports_carry_no_source_phi_and_keep_their_references_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("ct");
    ct(&series);
    let source = dir.path().join("identified.dcm");
    let secrets = identified_source(&source, &slice_file(&series, 2));
    let seg = dir.path().join("deid.seg.dcm");
    let capture = dir.path().join("deid.sc.dcm");
    let stderr = ok(&inspect(
        &source,
        &[
            "--region",
            "70,45,100,70",
            "--seg",
            seg.to_str().unwrap(),
            "--capture",
            capture.to_str().unwrap(),
        ],
    ));
    assert!(
        stderr.contains("de-identified (PS3.15 Basic Profile)"),
        "{stderr}"
    );
    for file in [&seg, &capture] {
        assert_valid(file);
        let obj = open_file(file).unwrap();
        let mut values = Vec::new();
        all_values(&obj, &mut values);
        assert!(values.len() > 40, "{} elements", values.len());
        for (tag, value) in &values {
            for secret in &secrets {
                assert!(
                    !value.contains(secret.as_str()),
                    "{}: {tag} = {value:?} contains the source's {secret:?}",
                    file.display()
                );
            }
        }
        // Nor anywhere in the file's bytes (the meta header included).
        let bytes = std::fs::read(file).unwrap();
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{}: the bytes contain {secret:?}",
                file.display()
            );
        }
        assert_eq!(text(&obj, tags::PATIENT_SEX), "");
        assert_eq!(text(&obj, tags::PATIENT_BIRTH_DATE), "");
        assert_eq!(text(&obj, tags::STUDY_DATE), "");
        assert_eq!(text(&obj, tags::PATIENT_IDENTITY_REMOVED), "YES");
        let code = item(&obj, tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE);
        assert_eq!(text(code, tags::CODE_VALUE), "113100");
        assert!(text(&obj, tags::PATIENT_NAME).starts_with("ANON-"));
    }
    // One export run remaps consistently: the SEG and the capture share the study, the
    // pseudonym and the (remapped) source instance.
    let (a, b) = (open_file(&seg).unwrap(), open_file(&capture).unwrap());
    assert_eq!(
        text(&a, tags::STUDY_INSTANCE_UID),
        text(&b, tags::STUDY_INSTANCE_UID)
    );
    assert_eq!(text(&a, tags::PATIENT_ID), text(&b, tags::PATIENT_ID));
    let capture_ref = text(
        item(&b, tags::SOURCE_IMAGE_SEQUENCE),
        tags::REFERENCED_SOP_INSTANCE_UID,
    );
    let seg_ref = text(
        item(
            item(&a, tags::REFERENCED_SERIES_SEQUENCE),
            tags::REFERENCED_INSTANCE_SEQUENCE,
        ),
        tags::REFERENCED_SOP_INSTANCE_UID,
    );
    assert_eq!(capture_ref, seg_ref);
    assert!(capture_ref.starts_with("2.25."));
    // The capture is the overlay picture, RGB.
    assert_eq!(text(&b, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    assert_eq!(
        text(&b, tags::SOP_CLASS_UID),
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE
    );

    // "Keep patient identity for PACS" writes the source's.
    let kept = dir.path().join("kept.sc.dcm");
    ok(&inspect(
        &source,
        &["--capture", kept.to_str().unwrap(), "--keep-identity"],
    ));
    assert_valid(&kept);
    let kept = open_file(&kept).unwrap();
    assert_eq!(text(&kept, tags::PATIENT_NAME), "Doe^Jane^Q");
    assert_eq!(text(&kept, tags::STUDY_INSTANCE_UID), "1.2.826.0.1.99.7.1");
    assert_eq!(text(&kept, tags::STUDY_DATE), "20240917");
}

/// The HU of the generator at pixel (c, r) of slice k, stored and decoded as the file holds it.
fn hu(series: &CtSeries, k: usize, c: usize, r: usize) -> f64 {
    (series.hu(k, c, r) + 1024.0).round().clamp(0.0, 4095.0) - 1024.0
}

#[test]
fn nifti_label_maps_from_slicer_and_dcm2niix_conventions_land_on_their_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ct");
    let series = ct(&folder);
    for k in [0usize, 2, 4] {
        let record = dir.path().join(format!("r{k}.json"));
        for file in ["ct-labels-slicer.nii.gz", "ct-labels-flipped.nii"] {
            let stderr = ok(&inspect(
                &folder,
                &[
                    "--slice",
                    &k.to_string(),
                    "--regions-from",
                    fixture(file).to_str().unwrap(),
                    "--json",
                    record.to_str().unwrap(),
                ],
            ));
            assert!(
                stderr.contains("placed through the NIfTI affine"),
                "{stderr}"
            );
            assert!(stderr.contains("2 region(s) imported"), "{stderr}");
            let value: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
            let regions: Vec<fovea::grounding::region::Region> = value["regions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.as_object_mut().unwrap().remove("tokens");
                    serde_json::from_value(r).unwrap()
                })
                .collect();
            // Label 1 (lesion, 100..500 HU) and 2 (spine, > 500 HU) by hand from the HU.
            for (region, (lo, hi)) in regions.iter().zip([(100.0, 500.0), (500.0, f64::MAX)]) {
                let got = region.pixel_mask(128, 128);
                let expected: Vec<bool> = (0..128 * 128)
                    .map(|i| {
                        let v = hu(&series, k, i % 128, i / 128);
                        v > lo && v <= hi
                    })
                    .collect();
                let wrong = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
                assert_eq!(wrong, 0, "{file} slice {k}: {wrong} pixels differ");
                assert!(expected.iter().any(|&p| p));
            }
        }
    }
}

#[test]
fn nifti_and_coco_on_a_png_follow_their_tools_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("scan.png");
    image::RgbImage::from_pixel(160, 120, image::Rgb([40, 40, 40]))
        .save(&png)
        .unwrap();
    let disk: Vec<bool> = (0..160 * 120)
        .map(|i| {
            let (x, y) = ((i % 160) as f64 + 0.5, (i / 160) as f64 + 0.5);
            (x - 100.0).powi(2) + (y - 50.0).powi(2) <= 400.0
        })
        .collect();
    let target = fovea::exchange::regions::Target {
        path: &png,
        frame: 0,
        width: 160,
        height: 120,
        dicom: false,
        slice_spacing_mm: None,
    };
    let nifti = fovea::exchange::regions::import(&fixture("png-disk.nii.gz"), &target).unwrap();
    assert_eq!(nifti.regions.len(), 1);
    assert_eq!(nifti.regions[0].region.pixel_mask(160, 120), disk);
    let transposed =
        fovea::exchange::regions::import(&fixture("png-disk-transposed.nii.gz"), &target)
            .unwrap_err()
            .to_string();
    assert!(transposed.contains("looks transposed"), "{transposed}");

    // COCO: pycocotools' compressed RLE is the disk; the polygon and the bare bbox as drawn;
    // the other image's annotation is not ours.
    let coco = fovea::exchange::regions::import(&fixture("scan.coco.json"), &target).unwrap();
    assert_eq!(coco.regions.len(), 3);
    assert_eq!(coco.regions[0].region.pixel_mask(160, 120), disk);
    assert_eq!(coco.regions[0].name, "nodule 1");
    assert_eq!(
        coco.regions[1].region,
        fovea::grounding::region::Region::Polygon {
            points_px: vec![[10.0, 10.0], [50.0, 10.0], [30.0, 40.0]]
        }
    );
    assert_eq!(
        coco.regions[2].region,
        fovea::grounding::region::Region::Box {
            xyxy_px: [120.0, 90.0, 140.0, 100.0]
        }
    );
    assert_eq!(coco.regions[2].name, "marker 3");

    // VGMED rows for this image name their boxes; distractor boxes stay distractors.
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"image\": \"other.png\", \"original_bboxes\": [[1, 1, 2, 2]]}\n\
         {\"image\": \"imgs/scan.png\", \"label\": \"nodule\", \"original_bboxes\": [[80, 30, 120, 70]], \"distractor_bboxes\": [[5, 5, 25, 20]]}\n\
         {\"image\": \"imgs/scan.png\", \"label\": \"nodule\", \"original_bboxes\": [[80, 30, 120, 70]]}\n",
    )
    .unwrap();
    let vgmed = fovea::exchange::regions::import(&rows, &target).unwrap();
    assert_eq!(vgmed.regions.len(), 2);
    assert!(!vgmed.regions[0].distractor && vgmed.regions[1].distractor);
    assert_eq!(vgmed.regions[0].name, "nodule");
    // A SEG cannot go onto a PNG: one clear line.
    let err = fovea::exchange::regions::import(
        &fixture("scan.coco.json"),
        &fovea::exchange::regions::Target {
            width: 100,
            ..target
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("160 x 120 px, the open image 100 x 120"),
        "{err}"
    );
}

/// Bad input gets one line naming the file (exit 2), before the model runs, and no output.
#[test]
fn bad_exchange_input_gets_one_clear_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("scan.png");
    image::RgbImage::from_pixel(160, 120, image::Rgb([40, 40, 40]))
        .save(&png)
        .unwrap();
    let seg = dir.path().join("out.seg.dcm");
    let garbage = dir.path().join("mask.nii");
    std::fs::write(&garbage, vec![7u8; 400]).unwrap();
    let broken_json = dir.path().join("boxes.json");
    std::fs::write(&broken_json, "{\"images\": [").unwrap();
    let missing = dir.path().join("nowhere.nii.gz");
    let volume = fixture("ct-labels-slicer.nii.gz");
    let cases: Vec<(Vec<&str>, &Path, &str)> = vec![
        (
            vec!["--seg", seg.to_str().unwrap()],
            &png,
            "a DICOM export refers to a DICOM image",
        ),
        (
            vec!["--regions-from", garbage.to_str().unwrap()],
            &garbage,
            "not a NIfTI-1 mask",
        ),
        (
            vec!["--regions-from", broken_json.to_str().unwrap()],
            &broken_json,
            "not JSON",
        ),
        (
            vec!["--regions-from", missing.to_str().unwrap()],
            &missing,
            "cannot read",
        ),
        (
            vec!["--regions-from", volume.to_str().unwrap()],
            Path::new("ct-labels-slicer.nii.gz"),
            "has no patient geometry to place a 128 x 128 x 5 volume",
        ),
    ];
    for (extra, named, what) in cases {
        let out = inspect(&png, &extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let last = stderr.trim_end().lines().last().unwrap_or("");
        assert!(
            last.starts_with("fovea: error: ") && last.contains(what),
            "{what}: {stderr}"
        );
        let name = named.file_name().unwrap().to_string_lossy().to_string();
        assert!(last.contains(&name), "{what}: names {name}: {stderr}");
        // Refused before the model ran: no answer printed.
        assert!(
            out.stdout.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(!seg.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
