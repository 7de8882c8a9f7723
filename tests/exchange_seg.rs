//! DICOM SEG with the tools that read and write most SEGs, and SEGs on the right slice. In
//! their own file beside tests/exchange.rs, which is already near the 600-line limit.
//!
//! - highdicom (tools/make_seg_fixtures.py, committed results) indexed fovea's SEGs by source
//!   instance, the keep-identity one by the slice's UID and the de-identified one by the
//!   remapped UID of that export, and got the regions' pixel masks; the SEGs fovea writes now
//!   carry the same references in the same places, and dciodvfy finds no error in them.
//! - A SEG highdicom wrote on two slices of the phantom series lands on those two slices only.
//! - A SEG of another slice is refused with its distance, worked out here from the series'
//!   spacing; a SEG without any geometry is placed with a note.

use std::path::{Path, PathBuf};
use std::process::Output;

use dicom_core::header::Header;
use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject};
use fovea::demo::ct_series::{self, CtSeries};
use fovea::exchange::regions::{import, Target};

#[path = "common/exchange.rs"]
mod common_exchange;
use common_exchange::{assert_valid, fixture, fovea, item, items, ok, text, unpack};

/// A phantom CT series of `slices` slices, written by the generator the fixtures came from.
fn series(dir: &Path, slices: usize) -> CtSeries {
    let series = CtSeries {
        slices,
        ..CtSeries::default()
    };
    ct_series::write(dir, &series).unwrap();
    series
}

fn slice_file(dir: &Path, k: usize) -> PathBuf {
    let scan = fovea::imaging::scan::scan(dir, &Default::default()).unwrap();
    scan.series[0].slices[k].path.clone()
}

fn target(path: &Path) -> Target<'_> {
    Target {
        path,
        frame: 0,
        width: 128,
        height: 128,
        dicom: true,
        slice_spacing_mm: None,
    }
}

/// Pixels whose centres lie in the box (inclusive edges, as fovea's boxes), by hand.
fn box_pixels([x0, y0, x1, y1]: [f64; 4]) -> Vec<bool> {
    (0..128 * 128)
        .map(|i| {
            let (x, y) = ((i % 128) as f64 + 0.5, (i / 128) as f64 + 0.5);
            x >= x0 && x <= x1 && y >= y0 && y <= y1
        })
        .collect()
}

/// Row-major runs, alternating off / on starting with off, back to pixels.
fn from_runs(runs: &serde_json::Value) -> Vec<bool> {
    let mut pixels = Vec::new();
    for (k, run) in runs.as_array().unwrap().iter().enumerate() {
        pixels.extend(std::iter::repeat_n(
            k % 2 == 1,
            run.as_u64().unwrap() as usize,
        ));
    }
    pixels
}

/// The tags under each frame's functional groups, the shared ones and the dimension index:
/// where a reader looks for the references.
fn layout(obj: &InMemDicomObject) -> Vec<String> {
    fn walk(obj: &InMemDicomObject, prefix: &str, out: &mut Vec<String>) {
        for element in obj.iter() {
            let path = format!("{prefix}/{}", element.tag());
            out.push(path.clone());
            for nested in element.items().unwrap_or(&[]) {
                walk(nested, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)[0],
        "frame",
        &mut out,
    );
    for shared in items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE) {
        walk(shared, "shared", &mut out);
    }
    for dimension in items(obj, tags::DIMENSION_INDEX_SEQUENCE) {
        out.push(format!(
            "dimension {}",
            text(dimension, tags::DIMENSION_INDEX_POINTER)
        ));
    }
    out.sort();
    out
}

#[test]
fn highdicom_indexes_foveas_seg_by_source_instance() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("fovea-seg-highdicom.json")).unwrap(),
    )
    .unwrap();
    let boxed = [70.0, 45.0, 100.5, 70.0];
    let by_hand = box_pixels(boxed);
    let dir = tempfile::tempdir().unwrap();
    let ct = dir.path().join("ct");
    series(&ct, 5);
    let source = open_file(slice_file(&ct, 2)).unwrap();
    let source_uid = text(&source, tags::SOP_INSTANCE_UID);
    for (name, extra) in [
        ("fovea-keep.seg.dcm", vec!["--keep-identity"]),
        ("fovea-deid.seg.dcm", vec![]),
    ] {
        // What highdicom got, asked by source instance: segment 1 is the box's pixel mask.
        let read = &expected["segs"][name];
        let highdicom_box = from_runs(&read["segments"][0]["runs"]);
        assert_eq!(highdicom_box, by_hand, "{name}: highdicom's segment 1");
        assert_eq!(
            read["segments"][0]["pixels"].as_u64().unwrap() as usize,
            by_hand.iter().filter(|&&p| p).count()
        );
        let asked = read["source_sop_instance_uid"].as_str().unwrap();
        assert_eq!(asked == source_uid, name == "fovea-keep.seg.dcm", "{name}");

        // The SEG fovea writes now, on the same slice: valid, laid out as the one highdicom
        // read, each frame naming the source (as that export names it) for highdicom to index.
        let seg = dir.path().join(name);
        let record = dir.path().join(format!("{name}.json"));
        let mut args = vec![
            "inspect",
            "--image",
            ct.to_str().unwrap(),
            "--slice",
            "2",
            "--question",
            "Is there a lesion?",
            "--region",
            "70,45,100.5,70",
            "--seg",
            seg.to_str().unwrap(),
            "--json",
            record.to_str().unwrap(),
        ];
        args.extend(extra);
        ok(&fovea(&args));
        assert_valid(&seg);
        let fresh = open_file(&seg).unwrap();
        let verified = open_file(fixture(name)).unwrap();
        assert_eq!(layout(&fresh), layout(&verified), "{name}");
        let named = text(
            item(
                item(&fresh, tags::REFERENCED_SERIES_SEQUENCE),
                tags::REFERENCED_INSTANCE_SEQUENCE,
            ),
            tags::REFERENCED_SOP_INSTANCE_UID,
        );
        if name == "fovea-keep.seg.dcm" {
            assert_eq!(named, source_uid);
        } else {
            assert!(named.starts_with("2.25.") && named != source_uid, "{named}");
        }
        let frames = items(&fresh, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
        assert_eq!(frames.len(), 2, "{name}: the box and the triage mask");
        for frame in frames {
            let derivation = item(frame, tags::DERIVATION_IMAGE_SEQUENCE);
            let code = item(derivation, tags::DERIVATION_CODE_SEQUENCE);
            assert_eq!(text(code, tags::CODE_VALUE), "113076");
            let reference = item(derivation, tags::SOURCE_IMAGE_SEQUENCE);
            assert_eq!(text(reference, tags::REFERENCED_SOP_INSTANCE_UID), named);
            assert_eq!(
                text(reference, tags::REFERENCED_SOP_CLASS_UID),
                text(&source, tags::SOP_CLASS_UID)
            );
            assert_eq!(text(reference, tags::SPATIAL_LOCATIONS_PRESERVED), "YES");
            let purpose = item(reference, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE);
            assert_eq!(
                (
                    text(purpose, tags::CODE_VALUE),
                    text(purpose, tags::CODING_SCHEME_DESIGNATOR)
                ),
                ("121322".to_string(), "DCM".to_string())
            );
        }
        // The pixels highdicom returned for both segments are the fresh SEG's frames (the demo
        // model is deterministic, so the triage mask is the same).
        let bytes = fresh.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        for (k, segment) in read["segments"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                unpack(&bytes, k, 128 * 128),
                from_runs(&segment["runs"]),
                "{name}: segment {}",
                k + 1
            );
        }
    }
    // The keep-identity SEG highdicom read names slice 2 of the regenerated series, and goes
    // back onto it as the box.
    let imported = import(&fixture("fovea-keep.seg.dcm"), &target(&slice_file(&ct, 2))).unwrap();
    assert_eq!(imported.regions.len(), 1, "{:?}", imported.notes);
    assert_eq!(imported.regions[0].region.pixel_mask(128, 128), by_hand);
}

#[test]
fn a_highdicom_seg_on_two_slices_lands_on_those_slices_only() {
    let file = fixture("highdicom-two-slices.seg.dcm");
    let dir = tempfile::tempdir().unwrap();
    let ct = dir.path().join("ct");
    let geometry = series(&ct, 5);
    // The masks the fixture script drew, restated: a box (half-open pixel ranges) on slice 1,
    // a disk of radius 15 px around pixel centre (80, 70) on slice 3.
    let boxed: Vec<bool> = (0..128 * 128)
        .map(|i| (20..50).contains(&(i % 128)) && (30..60).contains(&(i / 128)))
        .collect();
    let disk: Vec<bool> = (0..128 * 128)
        .map(|i| {
            let (x, y) = ((i % 128) as f64 + 0.5, (i / 128) as f64 + 0.5);
            (x - 80.0).powi(2) + (y - 70.0).powi(2) <= 225.0
        })
        .collect();
    for k in 0..5 {
        let slice = slice_file(&ct, k);
        let result = import(&file, &target(&slice));
        match k {
            1 | 3 => {
                let imported = result.unwrap();
                let (label, mask) = if k == 1 {
                    ("box", &boxed)
                } else {
                    ("disk", &disk)
                };
                assert_eq!(imported.regions.len(), 1, "slice {k}: {:?}", imported.notes);
                assert_eq!(imported.regions[0].name, label);
                assert_eq!(&imported.regions[0].region.pixel_mask(128, 128), mask);
            }
            _ => {
                let message = format!("{:#}", result.unwrap_err());
                // The nearest frame is one slice away: the series' spacing.
                let nearest = format!("{:.1} mm from the open slice", geometry.slice_spacing_mm);
                assert!(
                    message.contains("lies on another image of this series")
                        && message.contains(&nearest),
                    "slice {k}: {message}"
                );
            }
        }
    }
    // Through the binary as a user runs it: slice 3 gets the disk.
    let stderr = ok(&fovea(&[
        "inspect",
        "--image",
        ct.to_str().unwrap(),
        "--slice",
        "3",
        "--question",
        "Is there a lesion?",
        "--regions-from",
        file.to_str().unwrap(),
    ]));
    assert!(stderr.contains("1 region(s) imported"), "{stderr}");
}

/// `fovea inspect --image CT --slice K --question "Is there a lesion?"` plus `extra`.
fn inspect_slice(ct: &Path, slice: usize, extra: &[&str]) -> Output {
    let slice = slice.to_string();
    let mut args = vec![
        "inspect",
        "--image",
        ct.to_str().unwrap(),
        "--slice",
        &slice,
        "--question",
        "Is there a lesion?",
    ];
    args.extend_from_slice(extra);
    fovea(&args)
}

/// A default (de-identified) SEG of slice K with the box 60,40,110,80; its standard error.
fn export_seg(ct: &Path, slice: usize, seg: &Path) -> String {
    let seg = seg.to_str().unwrap();
    ok(&inspect_slice(
        ct,
        slice,
        &["--region", "60,40,110,80", "--seg", seg],
    ))
}

/// `--regions-from SEG` onto slice K.
fn import_cli(ct: &Path, slice: usize, seg: &Path) -> Output {
    inspect_slice(ct, slice, &["--regions-from", seg.to_str().unwrap()])
}

fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

/// fovea's own default (de-identified) SEG of slice 12 names no image of the series any more,
/// but its frames still say where they lie: onto slice 3 it is refused, 9 slices of 2.5 mm
/// away; onto slice 11 (one slice) too; onto slice 12 it is placed. Turned to another
/// orientation it is refused on slice 12. A SEG carrying no geometry at all (of a source
/// without any) is placed with the note.
#[test]
fn a_seg_of_another_slice_is_refused_with_its_distance() {
    let dir = tempfile::tempdir().unwrap();
    let ct = dir.path().join("ct");
    let geometry = series(&ct, 16);
    let seg = dir.path().join("slice12.seg.dcm");
    let stderr = export_seg(&ct, 12, &seg);
    assert!(stderr.contains("de-identified"), "{stderr}");
    assert_valid(&seg);
    let z = |k: usize| geometry.position(k)[2];
    for (slice, other) in [(3usize, 12usize), (11, 12)] {
        let stderr = refused(&import_cli(&ct, slice, &seg));
        let distance = format!("{:.1} mm from the open slice", (z(other) - z(slice)).abs());
        assert!(
            stderr.contains(&distance)
                && stderr.contains("names no image of this series")
                && stderr.contains(seg.to_str().unwrap()),
            "slice {slice}: {stderr}"
        );
    }
    assert_eq!((z(12) - z(3)).abs(), 22.5);
    let stderr = ok(&import_cli(&ct, 12, &seg));
    assert!(
        stderr.contains("1 region(s) imported")
            && stderr.contains("placed by Image Position (Patient)"),
        "{stderr}"
    );

    // The same SEG in coronal planes: not on the axial slice 12.
    let mut turned = open_file(&seg).unwrap();
    let mut shared = item(&turned, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).clone();
    let mut orientation = item(&shared, tags::PLANE_ORIENTATION_SEQUENCE).clone();
    orientation.put(dicom_core::DataElement::new(
        tags::IMAGE_ORIENTATION_PATIENT,
        dicom_core::VR::DS,
        dicom_core::PrimitiveValue::from("1\\0\\0\\0\\0\\-1"),
    ));
    let sequence = |tag, item: InMemDicomObject| {
        dicom_core::DataElement::new(
            tag,
            dicom_core::VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        )
    };
    shared.put(sequence(tags::PLANE_ORIENTATION_SEQUENCE, orientation));
    turned.put(sequence(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, shared));
    let turned_path = dir.path().join("coronal.seg.dcm");
    turned.write_to_file(&turned_path).unwrap();
    let message = format!(
        "{:#}",
        import(&turned_path, &target(&slice_file(&ct, 12))).unwrap_err()
    );
    assert!(message.contains("in planes oriented"), "{message}");

    // A source without geometry (no position, orientation, spacing or Frame of Reference):
    // its SEG carries none, and is placed on slice 3 with the note.
    let mut bare = open_file(slice_file(&ct, 12)).unwrap();
    for tag in [
        tags::IMAGE_POSITION_PATIENT,
        tags::IMAGE_ORIENTATION_PATIENT,
        tags::PIXEL_SPACING,
        tags::FRAME_OF_REFERENCE_UID,
        tags::POSITION_REFERENCE_INDICATOR,
    ] {
        bare.remove_element(tag);
    }
    let bare_path = dir.path().join("bare.dcm");
    bare.write_to_file(&bare_path).unwrap();
    let bare_seg = dir.path().join("bare.seg.dcm");
    ok(&fovea(&[
        "inspect",
        "--image",
        bare_path.to_str().unwrap(),
        "--question",
        "Is there a lesion?",
        "--region",
        "60,40,110,80",
        "--seg",
        bare_seg.to_str().unwrap(),
    ]));
    assert_valid(&bare_seg);
    let obj = open_file(&bare_seg).unwrap();
    for frame in items(&obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE) {
        assert!(frame.get(tags::PLANE_POSITION_SEQUENCE).is_none());
    }
    let stderr = ok(&import_cli(&ct, 3, &bare_seg));
    assert!(
        stderr.contains("1 region(s) imported") && stderr.contains("carries no patient geometry"),
        "{stderr}"
    );
}

/// An overlapping reconstruction: 5 mm thick slices every 2.5 mm, and no Spacing Between
/// Slices (as many CT series are written). Half the Slice Thickness would let a SEG of the
/// neighbouring slice, 2.5 mm away, pass as this slice's; the series' positions say the
/// slices are 2.5 mm apart, so it is refused (1.25 mm is half that spacing), in the CLI and
/// through the import the app calls.
#[test]
fn a_seg_of_the_neighbouring_slice_is_refused_when_slices_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let ct = dir.path().join("ct");
    let geometry = series(&ct, 16);
    for k in 0..16 {
        let path = slice_file(&ct, k);
        let mut obj = open_file(&path).unwrap();
        obj.put(dicom_core::DataElement::new(
            tags::SLICE_THICKNESS,
            dicom_core::VR::DS,
            dicom_core::PrimitiveValue::from("5"),
        ));
        obj.write_to_file(&path).unwrap();
    }
    let seg = dir.path().join("slice12.seg.dcm");
    export_seg(&ct, 12, &seg);
    let gap = (geometry.position(12)[2] - geometry.position(11)[2]).abs();
    assert_eq!(gap, 2.5);
    let stderr = refused(&import_cli(&ct, 11, &seg));
    assert!(
        stderr.contains("2.5 mm from the open slice")
            && stderr.contains("the distance to the neighbouring slice in the series"),
        "{stderr}"
    );
    assert!(ok(&import_cli(&ct, 12, &seg)).contains("1 region(s) imported"));

    // The import the app calls, given the spacing its series browser measures.
    let scan = fovea::imaging::scan::scan(&ct, &Default::default()).unwrap();
    let spacing = scan.series[0].slice_spacing_mm(11);
    assert_eq!(spacing, Some(2.5));
    let on_11 = Target {
        slice_spacing_mm: spacing,
        ..target(&scan.series[0].slices[11].path)
    };
    let message = format!("{:#}", import(&seg, &on_11).unwrap_err());
    assert!(message.contains("2.5 mm from the open slice"), "{message}");
    // Without the series (one file opened on its own) only the header speaks: half of 5 mm.
    assert!(import(&seg, &target(&scan.series[0].slices[11].path)).is_ok());
}
