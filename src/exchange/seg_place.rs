//! Where a SEG's frames lie against the open slice, for the SEGs whose UIDs cannot say: one in
//! the same Frame of Reference that references other instances, and a de-identified export,
//! whose UIDs were all remapped but whose Image Position / Orientation (Patient) are still the
//! patient's (they identify no one). A frame is on the open slice when its plane has the
//! slice's orientation, lies within half a slice spacing of it along the normal, and its first
//! pixel is within half a pixel of the slice's (else its pixels would land shifted).

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::elements::{first_item, floats};
use super::source::SourceImage;

/// A SEG frame's plane: Image Position (Patient) and, when given, its orientation.
pub struct Plane {
    pub position: [f64; 3],
    pub orientation: Option<[f64; 6]>,
}

/// The open slice's plane and the tolerances that say whether a frame lies on it.
pub struct OpenSlice {
    position: [f64; 3],
    orientation: [f64; 6],
    /// The slice spacing (mm) and which attribute gave it; `None`: unknown.
    spacing: Option<(f64, &'static str)>,
    /// Pixel spacing along a row (between columns) and along a column (between rows), mm.
    pixel_mm: Option<[f64; 2]>,
}

/// Where one frame lies relative to the open slice.
pub struct Placement {
    same_orientation: bool,
    /// Signed distance from the open slice's plane along its normal (mm).
    distance_mm: f64,
    /// The frame's first pixel from the slice's, along its rows and along its columns (mm).
    shift_mm: [f64; 2],
    /// Half the slice spacing (or 1 µm when the spacing is unknown).
    tolerance_mm: f64,
    half_pixel_mm: [f64; 2],
}

/// Direction cosines agree to DS precision (exports round them to a few decimals).
const COSINE_TOLERANCE: f64 = 1e-3;
/// Without a known spacing, only a frame exactly in the plane counts.
const EXACT_MM: f64 = 1e-3;

impl Placement {
    pub fn on_slice(&self) -> bool {
        self.same_orientation
            && self.distance_mm.abs() <= self.tolerance_mm
            && (0..2).all(|a| self.shift_mm[a].abs() <= self.half_pixel_mm[a])
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn positive(value: Option<[f64; 1]>) -> Option<f64> {
    value.map(|v| v[0]).filter(|v| *v > 0.0)
}

impl OpenSlice {
    /// The open slice, when its header gives a position and orientation. Its slice spacing is
    /// the distance to its nearest neighbour in the open series (`series_spacing_mm`), else
    /// Spacing Between Slices, else Slice Thickness, from its header, else from the SEG's
    /// Pixel Measures (a SEG written on this series carries the source's).
    pub fn of(
        source: &SourceImage,
        seg: &InMemDicomObject,
        seg_shared: Option<&InMemDicomObject>,
        series_spacing_mm: Option<f64>,
    ) -> Option<OpenSlice> {
        let (position, orientation) = (source.position?, source.orientation?);
        let source_measures = first_item(&source.header, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .and_then(|s| first_item(s, tags::PIXEL_MEASURES_SEQUENCE));
        let seg_measures = seg_shared
            .and_then(|s| first_item(s, tags::PIXEL_MEASURES_SEQUENCE))
            .or_else(|| {
                seg.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
                    .and_then(|e| e.items())
                    .and_then(|items| items.first())
                    .and_then(|item| first_item(item, tags::PIXEL_MEASURES_SEQUENCE))
            });
        let between = |obj: Option<&InMemDicomObject>| {
            obj.and_then(|o| positive(floats::<1>(o, tags::SPACING_BETWEEN_SLICES)))
        };
        let thickness = |obj: Option<&InMemDicomObject>| {
            obj.and_then(|o| positive(floats::<1>(o, tags::SLICE_THICKNESS)))
        };
        let spacing = series_spacing_mm
            .filter(|v| *v > 0.0)
            .map(|v| (v, "the distance to the neighbouring slice in the series"))
            .or_else(|| {
                between(Some(&source.header))
                    .or_else(|| between(source_measures))
                    .map(|v| (v, "the open image's Spacing Between Slices"))
            })
            .or_else(|| {
                source
                    .slice_thickness
                    .map(|v| (v, "the open image's Slice Thickness"))
            })
            .or_else(|| between(seg_measures).map(|v| (v, "the SEG's Spacing Between Slices")))
            .or_else(|| thickness(seg_measures).map(|v| (v, "the SEG's Slice Thickness")));
        // Pixel Spacing is (between rows, between columns): a step along a row is a column step.
        let pixel_mm = source.pixel_spacing.map(|[row, column]| [column, row]);
        Some(OpenSlice {
            position,
            orientation,
            spacing,
            pixel_mm,
        })
    }

    fn axes(orientation: &[f64; 6]) -> [[f64; 3]; 3] {
        let row = [orientation[0], orientation[1], orientation[2]];
        let column = [orientation[3], orientation[4], orientation[5]];
        [
            row,
            column,
            crate::imaging::series::slice_normal(orientation),
        ]
    }

    /// Where `plane` lies against this slice.
    pub fn place(&self, plane: &Plane) -> Placement {
        let [row, column, normal] = Self::axes(&self.orientation);
        let offset = [
            plane.position[0] - self.position[0],
            plane.position[1] - self.position[1],
            plane.position[2] - self.position[2],
        ];
        let same_orientation = plane.orientation.is_none_or(|o| {
            o.iter()
                .zip(&self.orientation)
                .all(|(a, b)| (a - b).abs() <= COSINE_TOLERANCE)
        });
        Placement {
            same_orientation,
            distance_mm: dot(offset, normal),
            shift_mm: [dot(offset, row), dot(offset, column)],
            tolerance_mm: self.spacing.map_or(EXACT_MM, |(s, _)| s / 2.0),
            half_pixel_mm: self
                .pixel_mm
                .map_or([EXACT_MM; 2], |[a, b]| [a / 2.0, b / 2.0]),
        }
    }

    /// Why no frame lies on this slice, as the end of a sentence "... it lies {why}".
    pub fn why_not(&self, placements: &[Option<Placement>], planes: &[Option<Plane>]) -> String {
        let aligned: Vec<&Placement> = placements
            .iter()
            .flatten()
            .filter(|p| p.same_orientation)
            .collect();
        let Some(nearest) = aligned
            .iter()
            .min_by(|a, b| a.distance_mm.abs().total_cmp(&b.distance_mm.abs()))
        else {
            let theirs = planes
                .iter()
                .flatten()
                .find_map(|p| p.orientation)
                .unwrap_or_default();
            return format!(
                "in planes oriented {}, not as the open slice ({})",
                cosines(&theirs),
                cosines(&self.orientation)
            );
        };
        if nearest.distance_mm.abs() > nearest.tolerance_mm {
            let spacing = match self.spacing {
                Some((mm, from)) => format!("more than half the slice spacing: {mm} mm, {from}"),
                None => "the slice spacing is unknown, so only a frame in the plane counts".into(),
            };
            let elsewhere = aligned
                .iter()
                .any(|p| (p.distance_mm - nearest.distance_mm).abs() > EXACT_MM);
            let frames = if elsewhere { "its nearest frame; " } else { "" };
            return format!(
                "{:.1} mm from the open slice ({frames}{spacing})",
                nearest.distance_mm.abs()
            );
        }
        format!(
            "in the open slice's plane but shifted {:.1} mm along its rows and {:.1} mm along its columns, so its pixels would not fall on the open image's",
            nearest.shift_mm[0], nearest.shift_mm[1]
        )
    }
}

fn cosines(values: &[f64; 6]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.3}"))
        .collect::<Vec<_>>()
        .join("\\")
}

/// The instances (and frames) a SEG's frames reference, for a message; at most three named.
pub fn describe_references(referenced: &[Option<(String, u32)>]) -> String {
    let distinct: std::collections::BTreeSet<&(String, u32)> =
        referenced.iter().flatten().collect();
    if distinct.is_empty() {
        return "no image".into();
    }
    let mut named: Vec<String> = distinct
        .iter()
        .take(3)
        .map(|(uid, frame)| format!("{uid} frame {frame}"))
        .collect();
    if distinct.len() > 3 {
        named.push(format!("and {} more", distinct.len() - 3));
    }
    named.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An oblique slice (rows along (cos 30°, sin 30°, 0), columns along z, so the normal is
    /// (sin 30°, -cos 30°, 0)): a frame moved 3 mm along the normal and 0.4 mm along the rows
    /// lies 3 mm away, off a 5 mm spacing's half-slice only when moved more than 2.5 mm.
    #[test]
    fn distances_by_hand_on_an_oblique_slice() {
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let slice = OpenSlice {
            position: [10.0, 20.0, 30.0],
            orientation: [c, s, 0.0, 0.0, 0.0, 1.0],
            spacing: Some((5.0, "test")),
            pixel_mm: Some([1.0, 1.0]),
        };
        let moved = |along_normal: f64, along_rows: f64| Plane {
            position: [
                10.0 + along_normal * s + along_rows * c,
                20.0 - along_normal * c + along_rows * s,
                30.0,
            ],
            orientation: Some([c, s, 0.0, 0.0, 0.0, 1.0]),
        };
        let far = slice.place(&moved(3.0, 0.4));
        assert!((far.distance_mm - 3.0).abs() < 1e-9, "{}", far.distance_mm);
        assert!((far.shift_mm[0] - 0.4).abs() < 1e-9 && far.shift_mm[1].abs() < 1e-9);
        assert!(!far.on_slice());
        assert!(slice.place(&moved(-2.4, 0.4)).on_slice());
        // Half a pixel is the most a frame may be shifted within the plane.
        assert!(!slice.place(&moved(0.0, 0.6)).on_slice());
        let placements = [Some(far)];
        let why = slice.why_not(&placements, &[Some(moved(3.0, 0.4))]);
        assert!(why.starts_with("3.0 mm from the open slice"), "{why}");
        // Another orientation is never on the slice, whatever its position.
        let turned = Plane {
            position: [10.0, 20.0, 30.0],
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        };
        assert!(!slice.place(&turned).on_slice());
    }
}
