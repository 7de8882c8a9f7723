//! Studies and series from slice headers: grouping by Study and Series Instance UID, and the
//! order of a series' slices along its slice normal (Image Position / Orientation Patient),
//! with Instance Number as the fallback when the geometry is missing or inconsistent.
//!
//! Only headers are needed here; pixels are read on demand by whoever shows a slice.

use std::path::PathBuf;

/// What ordering and grouping need of one slice (one single-frame file, or one frame of an
/// enhanced multi-frame object).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceHeader {
    pub path: PathBuf,
    /// The frame within the file (0 for single-frame objects).
    pub frame: usize,
    pub study_uid: String,
    pub series_uid: String,
    pub instance_number: Option<i64>,
    /// Image Position (Patient): the first pixel's centre, mm.
    pub position: Option<[f64; 3]>,
    /// Image Orientation (Patient): row then column direction cosines.
    pub orientation: Option<[f64; 6]>,
}

/// How a series' slices were put in order, said to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// By position along the slice normal (row x column direction).
    Position,
    /// By Instance Number: positions or orientations were missing or disagreed.
    InstanceNumber,
    /// By file name: neither was usable.
    FileName,
}

/// One series: its slices in display order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub study_uid: String,
    pub series_uid: String,
    pub slices: Vec<SliceHeader>,
    pub ordering: Ordering,
}

/// The distance (mm, along the slice normal) from slice `index` of a series (in display order)
/// to its nearest neighbour, when the positions order the series. Headers often lack Spacing
/// Between Slices, and Slice Thickness exceeds the spacing in overlapping reconstructions (5 mm
/// slices every 2.5 mm): only the positions say how far apart slices really are.
pub fn neighbour_spacing_mm(slices: &[SliceHeader], index: usize) -> Option<f64> {
    let keys = normal_positions(slices)?;
    let here = *keys.get(index)?;
    [index.checked_sub(1), Some(index + 1)]
        .into_iter()
        .flatten()
        .filter_map(|k| keys.get(k))
        .map(|k| (k - here).abs())
        .min_by(f64::total_cmp)
}

/// Group slices by (Study, Series Instance UID), series in the order they were first seen, and
/// order each series' slices.
pub fn group(slices: Vec<SliceHeader>) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for slice in slices {
        match series
            .iter_mut()
            .find(|s| s.study_uid == slice.study_uid && s.series_uid == slice.series_uid)
        {
            Some(s) => s.slices.push(slice),
            None => series.push(Series {
                study_uid: slice.study_uid.clone(),
                series_uid: slice.series_uid.clone(),
                slices: vec![slice],
                ordering: Ordering::FileName,
            }),
        }
    }
    for s in &mut series {
        s.ordering = order(&mut s.slices);
    }
    series
}

/// Sort `slices` for display and say how. Along the normal when every slice has a position and
/// all share one orientation (within 1e-4 per cosine) and no two positions coincide; else by
/// Instance Number when every slice has one; else by file name (then frame).
pub fn order(slices: &mut [SliceHeader]) -> Ordering {
    let by_name =
        |a: &SliceHeader, b: &SliceHeader| a.path.cmp(&b.path).then(a.frame.cmp(&b.frame));
    if let Some(keys) = normal_positions(slices) {
        let mut indexed: Vec<(f64, SliceHeader)> =
            keys.into_iter().zip(slices.iter().cloned()).collect();
        indexed.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| by_name(&a.1, &b.1)));
        for (slot, (_, slice)) in slices.iter_mut().zip(indexed) {
            *slot = slice;
        }
        return Ordering::Position;
    }
    if slices.iter().all(|s| s.instance_number.is_some()) {
        slices.sort_by(|a, b| {
            a.instance_number
                .cmp(&b.instance_number)
                .then_with(|| by_name(a, b))
        });
        return Ordering::InstanceNumber;
    }
    slices.sort_by(by_name);
    Ordering::FileName
}

/// The slice normal of Image Orientation (Patient): row direction x column direction.
pub fn slice_normal(orientation: &[f64; 6]) -> [f64; 3] {
    let [r0, r1, r2, c0, c1, c2] = *orientation;
    [r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0]
}

/// Each slice's position along the shared slice normal, or `None` when the geometry cannot
/// order the series.
fn normal_positions(slices: &[SliceHeader]) -> Option<Vec<f64>> {
    let first = slices.first()?.orientation?;
    let normal = slice_normal(&first);
    if normal.iter().map(|v| v * v).sum::<f64>() < 1e-6 {
        return None;
    }
    let mut keys = Vec::with_capacity(slices.len());
    for slice in slices {
        let orientation = slice.orientation?;
        if orientation
            .iter()
            .zip(&first)
            .any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return None;
        }
        let p = slice.position?;
        keys.push(p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2]);
    }
    let mut sorted = keys.clone();
    sorted.sort_by(f64::total_cmp);
    if sorted.windows(2).any(|w| (w[1] - w[0]).abs() < 1e-6) && slices.len() > 1 {
        return None;
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An oblique series (rotated 30 degrees about x), 20 slices 2.5 mm apart, whose files are
    /// shuffled and whose Instance Numbers run backwards against the positions: the order is
    /// the positions' along the normal, computed by hand as (0, -sin 30, cos 30) . p.
    #[test]
    fn slices_follow_the_normal_not_the_instance_numbers() {
        let (s, c) = (30f64.to_radians().sin(), 30f64.to_radians().cos());
        // Row (1, 0, 0), column (0, cos, sin): normal = row x column = (0, -sin, cos).
        let orientation = [1.0, 0.0, 0.0, 0.0, c, s];
        let normal = [0.0, -s, c];
        let slice = |k: usize| SliceHeader {
            path: PathBuf::from(format!("f{:02}.dcm", (k * 7) % 20)),
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            instance_number: Some(100 - k as i64),
            position: Some([
                -120.0,
                -80.0 + normal[1] * 2.5 * k as f64,
                40.0 + normal[2] * 2.5 * k as f64,
            ]),
            orientation: Some(orientation),
            ..SliceHeader::default()
        };
        let mut shuffled: Vec<SliceHeader> = [
            7, 3, 19, 0, 12, 5, 16, 1, 9, 14, 2, 18, 6, 11, 4, 17, 8, 13, 10, 15,
        ]
        .iter()
        .map(|&k| slice(k))
        .collect();
        // Another series in the same folder stays apart.
        shuffled.insert(
            5,
            SliceHeader {
                series_uid: "1.2.3.5".into(),
                ..slice(3)
            },
        );
        let series = group(shuffled);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].ordering, Ordering::Position);
        let numbers: Vec<i64> = series[0]
            .slices
            .iter()
            .map(|s| s.instance_number.unwrap())
            .collect();
        assert_eq!(numbers, (81..=100).rev().collect::<Vec<i64>>());
        assert_eq!(series[1].slices.len(), 1);
        // Neighbours are 2.5 mm apart along the oblique normal, at either end too; the single
        // slice of the other series has none.
        for index in [0, 7, 19] {
            let spacing = neighbour_spacing_mm(&series[0].slices, index).unwrap();
            assert!((spacing - 2.5).abs() < 1e-9, "{index}: {spacing}");
        }
        assert_eq!(neighbour_spacing_mm(&series[0].slices, 20), None);
        assert_eq!(neighbour_spacing_mm(&series[1].slices, 0), None);
    }

    /// Without positions, Instance Number orders; without either, the file name does.
    #[test]
    fn fallbacks_are_instance_number_then_file_name() {
        let slice = |name: &str, number: Option<i64>| SliceHeader {
            path: PathBuf::from(name),
            instance_number: number,
            ..SliceHeader::default()
        };
        let mut slices = vec![
            slice("a", Some(3)),
            slice("b", Some(1)),
            slice("c", Some(2)),
        ];
        assert_eq!(order(&mut slices), Ordering::InstanceNumber);
        let names: Vec<_> = slices.iter().map(|s| s.path.to_str().unwrap()).collect();
        assert_eq!(names, ["b", "c", "a"]);
        let mut slices = vec![slice("c", None), slice("a", Some(1)), slice("b", None)];
        assert_eq!(order(&mut slices), Ordering::FileName);
        let names: Vec<_> = slices.iter().map(|s| s.path.to_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // Two slices at one position cannot be ordered by it: Instance Number decides.
        let at = |name: &str, number: i64| SliceHeader {
            position: Some([0.0, 0.0, 5.0]),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            ..slice(name, Some(number))
        };
        let mut slices = vec![at("x", 2), at("y", 1)];
        assert_eq!(order(&mut slices), Ordering::InstanceNumber);
    }
}
