//! `fovea info` and `fovea convert` as a user runs them: PHI stays hidden, bad input gets one
//! clear line naming the file with exit code 2, and no output file is left behind.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dicom")
        .join(name)
}

fn fovea(args: &[&std::ffi::OsStr]) -> Output {
    common::fovea_command()
        .args(args)
        .output()
        .expect("fovea runs")
}

fn os(text: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(text)
}

/// Assert the run failed the way every bad input must: exit 2, one line on stderr that names
/// the file, nothing on stdout, no panic.
fn assert_clean_failure(output: &Output, file: &Path, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what}: exit code, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{what}: expected one error line, got: {stderr}"
    );
    assert!(stderr.starts_with("fovea: error: "), "{what}: {stderr}");
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    assert!(
        stderr.contains(name),
        "{what}: error does not name the file {name}: {stderr}"
    );
}

#[test]
fn info_hides_patient_name_unless_asked() {
    let file = fixture("CT_small.dcm");
    // Read the patient's name with dicom-object directly, so the test does not trust fovea.
    let obj = dicom_object::open_file(&file).expect("CT_small.dcm opens");
    let name = obj
        .element(dicom_dictionary_std::tags::PATIENT_NAME)
        .expect("CT_small.dcm has a patient name")
        .to_str()
        .expect("name is text")
        .trim()
        .to_string();
    assert!(!name.is_empty());
    let first_component = name.split('^').next().unwrap().to_string();

    let hidden = fovea(&[os("info"), file.as_os_str()]);
    assert!(
        hidden.status.success(),
        "{}",
        String::from_utf8_lossy(&hidden.stderr)
    );
    let text = String::from_utf8_lossy(&hidden.stdout);
    assert!(
        !text.contains(&first_component),
        "PHI printed without --show-phi:\n{text}"
    );
    assert!(text.contains("CT"), "modality missing:\n{text}");
    assert!(text.contains("128 x 128"), "size missing:\n{text}");
    assert!(
        text.contains("hidden"),
        "should say that identifying fields are hidden:\n{text}"
    );

    let json = fovea(&[os("info"), os("--json"), file.as_os_str()]);
    let json_text = String::from_utf8_lossy(&json.stdout);
    assert!(
        !json_text.contains(&first_component),
        "PHI in JSON without --show-phi:\n{json_text}"
    );

    let shown = fovea(&[os("info"), os("--show-phi"), file.as_os_str()]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&first_component),
        "--show-phi should print the name:\n{text}"
    );
}

#[test]
fn convert_applies_the_lung_preset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ct-lung.png");
    let file = fixture("CT_small.dcm");
    let run = fovea(&[
        os("convert"),
        file.as_os_str(),
        out.as_os_str(),
        os("--preset"),
        os("lung"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = image::open(&out).expect("output PNG opens").to_luma8();
    assert_eq!(png.dimensions(), (128, 128));

    // The expected grey level from the DICOM standard's LINEAR window, written out here on
    // values read with dicom-pixeldata's own modality conversion (not fovea's).
    use dicom_pixeldata::PixelDecoder;
    let obj = dicom_object::open_file(&file).unwrap();
    let decoded = obj.decode_pixel_data().unwrap();
    let hu: Vec<f64> = decoded
        .to_vec_with_options::<f64>(
            &dicom_pixeldata::ConvertOptions::new()
                .with_modality_lut(dicom_pixeldata::ModalityLutOption::Default)
                .with_voi_lut(dicom_pixeldata::VoiLutOption::Identity),
        )
        .unwrap();
    let (center, width) = (-600.0, 1500.0);
    let mut worst = 0i32;
    for (index, &value) in hu.iter().enumerate() {
        let level = if value <= center - 0.5 - (width - 1.0) / 2.0 {
            0.0
        } else if value > center - 0.5 + (width - 1.0) / 2.0 {
            1.0
        } else {
            (value - (center - 0.5)) / (width - 1.0) + 0.5
        };
        let expected = (level * 255.0).round() as i32;
        let got = png.as_raw()[index] as i32;
        worst = worst.max((expected - got).abs());
    }
    assert!(
        worst <= 1,
        "grey levels differ from the LINEAR window formula by up to {worst}"
    );
}

#[test]
fn bad_inputs_get_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ct = std::fs::read(fixture("CT_small.dcm")).unwrap();

    let empty = dir.path().join("empty.dcm");
    std::fs::write(&empty, b"").unwrap();

    let truncated = dir.path().join("truncated.dcm");
    std::fs::write(&truncated, &ct[..ct.len() * 6 / 10]).unwrap();

    let unknown_ts = dir.path().join("unknown-syntax.dcm");
    let explicit_le = b"1.2.840.10008.1.2.1";
    let position = ct
        .windows(explicit_le.len())
        .position(|w| w == explicit_le)
        .expect("CT_small.dcm names its transfer syntax");
    let mut patched = ct.clone();
    patched[position..position + explicit_le.len()].copy_from_slice(b"1.2.840.99999.1.2.1");
    std::fs::write(&unknown_ts, &patched).unwrap();

    let no_pixels = dir.path().join("no-pixels.dcm");
    let mut obj = dicom_object::open_file(fixture("CT_small.dcm")).unwrap();
    obj.remove_element(dicom_dictionary_std::tags::PIXEL_DATA);
    obj.write_to_file(&no_pixels).unwrap();

    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, png_header_bomb(30_000, 30_000)).unwrap();

    let not_an_image = dir.path().join("notes.png");
    std::fs::write(&not_an_image, b"this is a text file, not a picture\n").unwrap();

    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();

    let missing = dir.path().join("missing.dcm");

    let cases: [(&Path, &str); 8] = [
        (&empty, "zero-byte file"),
        (&truncated, "truncated DICOM"),
        (&unknown_ts, "unknown transfer syntax"),
        (&no_pixels, "DICOM without pixel data"),
        (&bomb, "30000x30000 PNG header bomb"),
        (&not_an_image, "text file"),
        (&directory, "directory"),
        (&missing, "missing file"),
    ];
    for (file, what) in cases {
        let info = fovea(&[os("info"), file.as_os_str()]);
        assert_clean_failure(&info, file, what);
        assert!(info.stdout.is_empty(), "{what}: printed to stdout");

        let out = dir
            .path()
            .join(format!("out-{}.png", what.replace(' ', "-")));
        let convert = fovea(&[os("convert"), file.as_os_str(), out.as_os_str()]);
        assert_clean_failure(&convert, file, what);
        assert!(!out.exists(), "{what}: output file left behind");
    }
    // Nothing half-written anywhere in the folder.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn bad_arguments_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let file = fixture("CT_small.dcm");
    let out = dir.path().join("x.png");
    let bad_preset = fovea(&[
        os("convert"),
        file.as_os_str(),
        out.as_os_str(),
        os("--preset"),
        os("kidney"),
    ]);
    assert_eq!(bad_preset.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_preset.stderr).contains("lung"),
        "should list the presets"
    );
    let bad_frame = fovea(&[
        os("convert"),
        file.as_os_str(),
        out.as_os_str(),
        os("--frame"),
        os("3"),
    ]);
    assert_clean_failure(&bad_frame, &file, "frame out of range");
    assert!(!out.exists());
    let not_png = fovea(&[
        os("convert"),
        file.as_os_str(),
        dir.path().join("x.jpg").as_os_str(),
    ]);
    assert_eq!(not_png.status.code(), Some(2));
}

/// A valid PNG signature and IHDR (with a correct CRC) that claims a huge image.
fn png_header_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&ihdr);
    bytes.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    bytes.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    bytes.extend_from_slice(idat);
    bytes.extend_from_slice(&crc32(idat).to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(b"IEND");
    bytes.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    bytes
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Pixel Spacing read the way a clinician needs it: a usable spacing in mm with its source
/// (Imager Pixel Spacing is said to be at the detector), and a spacing of 0 shown as unknown,
/// never as "0 x 0 mm".
#[test]
fn info_says_where_the_spacing_comes_from_and_when_it_is_unknown() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let phantom = dir.path().join("phantom");
    let output = fovea(&[
        os("phantom"),
        os("--out"),
        phantom.as_os_str(),
        os("--n"),
        os("1"),
        os("--dicom"),
    ]);
    assert!(output.status.success());
    let source = phantom.join("case-00000.dcm");
    let cases = [
        (
            tags::PIXEL_SPACING,
            "0\\0",
            "unknown (Pixel Spacing is 0 x 0 mm): sizes in pixels",
            None,
        ),
        (
            tags::IMAGER_PIXEL_SPACING,
            "0.2\\0.25",
            "0.2 x 0.25 mm (Imager Pixel Spacing (at the detector))",
            Some([0.2, 0.25]),
        ),
        (
            tags::PIXEL_SPACING,
            "0.5\\0.5",
            "0.5 x 0.5 mm (Pixel Spacing)",
            Some([0.5, 0.5]),
        ),
    ];
    for (index, (tag, value, said, json_mm)) in cases.into_iter().enumerate() {
        let mut obj = dicom_object::open_file(&source).unwrap();
        obj.remove_element(tags::PIXEL_SPACING);
        obj.put(DataElement::new(tag, VR::DS, PrimitiveValue::from(value)));
        let file = dir.path().join(format!("spacing-{index}.dcm"));
        obj.write_to_file(&file).unwrap();
        let output = fovea(&[os("info"), file.as_os_str()]);
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("pixel spacing"))
            .unwrap_or_else(|| panic!("{value}: no spacing line in {text}"));
        assert!(line.ends_with(said), "{value}: {line:?}");
        let json = dir.path().join(format!("spacing-{index}.json"));
        let output = fovea(&[os("info"), file.as_os_str(), os("--json")]);
        std::fs::write(&json, &output.stdout).unwrap();
        let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            record["pixel_spacing_mm"],
            serde_json::json!(json_mm),
            "{value}"
        );
    }
}
