//! Format paths the pydicom corpus does not cover: DICOM without a meta header, raster files
//! of each kind, MONOCHROME1 display inversion and RT Dose scaling.

use std::path::PathBuf;

use fovea::imaging::{self, Photometric, VoiOption, WindowLevel};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dicom")
        .join(name)
}

#[test]
fn dicom_without_meta_header_reads_like_the_original() {
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
    let original = imaging::load(fixture("CT_small.dcm")).unwrap();
    let obj = dicom_object::open_file(fixture("CT_small.dcm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An ACR-NEMA style file: the bare data set, implicit VR little endian, no preamble.
    let bare = dir.path().join("bare-dataset");
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    assert_ne!(&bytes[128..132], b"DICM");
    std::fs::write(&bare, &bytes).unwrap();
    let study = imaging::load(&bare).unwrap();
    assert_eq!((study.width, study.height), (128, 128));
    assert_eq!(
        study.frames, original.frames,
        "pixels differ from the file with a meta header"
    );
    assert!(matches!(
        study.format,
        imaging::SourceFormat::Dicom {
            has_file_meta: false,
            ..
        }
    ));
}

#[test]
fn raster_images_keep_their_values() {
    let dir = tempfile::tempdir().unwrap();
    // 16-bit greyscale PNG: the full range survives.
    let grey16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(5, 3, |x, y| {
        image::Luma([(x * 10000 + y) as u16])
    });
    let grey16_path = dir.path().join("grey16.data"); // no extension: found from content
    grey16
        .save_with_format(&grey16_path, image::ImageFormat::Png)
        .unwrap();
    let study = imaging::load(&grey16_path).unwrap();
    assert_eq!(study.photometric, Photometric::Monochrome2);
    assert_eq!(study.frames[0].values[4], 40000.0);
    assert_eq!(study.frames[0].values[5 + 2], 20001.0);

    // RGBA PNG: alpha dropped, colour kept.
    let rgba = image::RgbaImage::from_fn(2, 2, |x, y| {
        image::Rgba([x as u8 * 100, y as u8 * 50, 7, 128])
    });
    let rgba_path = dir.path().join("rgba.png");
    rgba.save(&rgba_path).unwrap();
    let study = imaging::load(&rgba_path).unwrap();
    assert_eq!(study.photometric, Photometric::Rgb);
    assert_eq!(&study.frames[0].values[9..12], &[100.0, 50.0, 7.0]);

    // 8-bit grey BMP and TIFF, RGB JPEG (lossy: within a few levels).
    let grey = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 16 + y) as u8]));
    for (name, format) in [
        ("g.bmp", image::ImageFormat::Bmp),
        ("g.tiff", image::ImageFormat::Tiff),
    ] {
        let path = dir.path().join(name);
        grey.save_with_format(&path, format).unwrap();
        let study = imaging::load(&path).unwrap();
        let expected: Vec<f32> = grey.as_raw().iter().map(|&v| v as f32).collect();
        let values: Vec<f32> = if study.photometric == Photometric::Rgb {
            study.frames[0].values.chunks(3).map(|c| c[0]).collect()
        } else {
            study.frames[0].values.clone()
        };
        assert_eq!(values, expected, "{name}");
    }
    let rgb = image::RgbImage::from_fn(16, 16, |_, _| image::Rgb([200, 100, 50]));
    let jpeg_path = dir.path().join("c.jpg");
    rgb.save(&jpeg_path).unwrap();
    let study = imaging::load(&jpeg_path).unwrap();
    assert!(study.summary.lossy);
    for (got, want) in study.frames[0]
        .values
        .iter()
        .zip([200.0f32, 100.0, 50.0].iter().cycle())
    {
        assert!((got - want).abs() <= 3.0, "{got} vs {want}");
    }
}

#[test]
fn monochrome1_is_inverted_for_display() {
    let path = fixture("dicomdirtests/77654033/CR2/6247");
    let study = imaging::load(&path).unwrap();
    assert_eq!(study.photometric, Photometric::Monochrome1);
    let (lo, hi) = study.frames[0].min_max().unwrap();
    let window = WindowLevel {
        center: (lo + hi) as f64 / 2.0,
        width: (hi - lo) as f64 + 1.0,
    };
    let rgb = imaging::render_rgb8(&study, 0, &VoiOption::Custom(window)).unwrap();
    let values = &study.frames[0].values;
    let brightest = values.iter().position(|&v| v == hi).unwrap();
    let darkest = values.iter().position(|&v| v == lo).unwrap();
    // MONOCHROME1: the largest value is black, the smallest white.
    assert_eq!(rgb.as_raw()[brightest * 3], 0);
    assert_eq!(rgb.as_raw()[darkest * 3], 255);
}

#[test]
fn rt_dose_is_scaled_to_gray() {
    let path = fixture("rtdose.dcm");
    let study = imaging::load(&path).unwrap();
    let obj = dicom_object::open_file(&path).unwrap();
    let scaling: f64 = obj
        .element(dicom_dictionary_std::tags::DOSE_GRID_SCALING)
        .unwrap()
        .to_float64()
        .unwrap();
    // The stored 32-bit values straight from the data element (implicit VR little endian).
    let bytes = obj
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap();
    let raw: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (value, stored) in study.frames[0].values.iter().zip(&raw).take(50) {
        let expected = *stored as f64 * scaling;
        assert!(
            (*value as f64 - expected).abs() <= 1e-6 * expected.abs().max(1.0),
            "{value} vs {expected}"
        );
    }
    assert_eq!(study.frame_count(), 15);
}
