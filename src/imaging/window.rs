//! Window/level (VOI) math and the named CT presets.
//!
//! The display path keeps full modality values; this module maps them to display intensity.
//! The formulas follow DICOM PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID) so that a window
//! read from a file shows the image the way a PACS viewer would. The WGSL image shader
//! implements the same LINEAR formula; keep the two in sync.

use std::fmt;

/// A VOI window in modality units (Hounsfield units for CT).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowLevel {
    pub center: f64,
    pub width: f64,
}

impl fmt::Display for WindowLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "C {} / W {}", self.center, self.width)
    }
}

/// The VOI LUT function of the DICOM standard (0028,1056).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VoiFunction {
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

impl VoiFunction {
    pub fn from_dicom(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "LINEAR" => Some(Self::Linear),
            "LINEAR_EXACT" => Some(Self::LinearExact),
            "SIGMOID" => Some(Self::Sigmoid),
            _ => None,
        }
    }
}

/// Which window to use when rendering: the file's own, a named preset, an explicit one, or
/// the frame's min-max range (after dicom-rs's `VoiLutOption`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum VoiOption {
    /// The file's window (first of several), falling back to min-max.
    #[default]
    Default,
    Custom(WindowLevel),
    Preset(Preset),
    /// Stretch the frame's own min..max to the full display range.
    MinMax,
}

/// Named CT windows, in Hounsfield units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    SoftTissue,
    Lung,
    Liver,
    Bone,
    Brain,
}

impl Preset {
    pub const ALL: [Preset; 5] = [
        Preset::SoftTissue,
        Preset::Lung,
        Preset::Liver,
        Preset::Bone,
        Preset::Brain,
    ];

    pub fn window(self) -> WindowLevel {
        let (center, width) = match self {
            Preset::SoftTissue => (40.0, 400.0),
            Preset::Lung => (-600.0, 1500.0),
            Preset::Liver => (90.0, 150.0),
            Preset::Bone => (480.0, 2500.0),
            Preset::Brain => (40.0, 80.0),
        };
        WindowLevel { center, width }
    }

    /// The name used on the command line and in menus.
    pub fn name(self) -> &'static str {
        match self {
            Preset::SoftTissue => "soft-tissue",
            Preset::Lung => "lung",
            Preset::Liver => "liver",
            Preset::Bone => "bone",
            Preset::Brain => "brain",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        let wanted = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        Self::ALL.into_iter().find(|preset| {
            preset.name() == wanted || (wanted == "soft" && *preset == Preset::SoftTissue)
        })
    }

    pub fn names() -> String {
        Self::ALL.map(Preset::name).join(", ")
    }
}

/// Map a modality value to display intensity in 0..=1 with the given window and function.
pub fn apply_window(value: f64, window: WindowLevel, function: VoiFunction) -> f64 {
    let WindowLevel { center, width } = window;
    match function {
        VoiFunction::Linear => {
            // PS3.3 C.11.2.1.2.1: the "-0.5" and "width - 1" make integer windows exact.
            let width = width.max(1.0);
            if width <= 1.0 {
                return if value < center - 0.5 { 0.0 } else { 1.0 };
            }
            let low = center - 0.5 - (width - 1.0) / 2.0;
            let high = center - 0.5 + (width - 1.0) / 2.0;
            if value <= low {
                0.0
            } else if value > high {
                1.0
            } else {
                (value - (center - 0.5)) / (width - 1.0) + 0.5
            }
        }
        VoiFunction::LinearExact => {
            let width = width.max(f64::MIN_POSITIVE);
            ((value - center) / width + 0.5).clamp(0.0, 1.0)
        }
        VoiFunction::Sigmoid => {
            let width = width.max(f64::MIN_POSITIVE);
            1.0 / (1.0 + (-4.0 * (value - center) / width).exp())
        }
    }
}

/// The window that stretches `min..=max` over the whole display range under LINEAR.
pub fn min_max_window(min: f64, max: f64) -> WindowLevel {
    // Under LINEAR, low = c - 0.5 - (w-1)/2 and high = c - 0.5 + (w-1)/2; solve for the
    // window whose low edge is `min` and whose high edge is `max`.
    let width = (max - min).max(0.0) + 1.0;
    let center = min + 0.5 + (width - 1.0) / 2.0;
    WindowLevel { center, width }
}

/// Parse "C,W" (centre first, as DICOM and the CLI write it).
pub fn parse_window(text: &str) -> Result<WindowLevel, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [center, width] = parts.as_slice() else {
        return Err(format!(
            "expected CENTER,WIDTH (for example 40,400), got {text:?}"
        ));
    };
    let center: f64 = center
        .parse()
        .map_err(|_| format!("window centre {center:?} is not a number"))?;
    let width: f64 = width
        .parse()
        .map_err(|_| format!("window width {width:?} is not a number"))?;
    if !(width > 0.0) || !center.is_finite() || !width.is_finite() {
        return Err(format!(
            "window width must be a positive number, got {width}"
        ));
    }
    Ok(WindowLevel { center, width })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_follows_the_standard() {
        // PS3.3 C.11.2.1.2.1 written out: c=40, w=400 -> low = 40-0.5-199.5 = -160,
        // high = 40-0.5+199.5 = 239.
        let window = WindowLevel {
            center: 40.0,
            width: 400.0,
        };
        assert_eq!(apply_window(-160.0, window, VoiFunction::Linear), 0.0);
        assert_eq!(apply_window(-1000.0, window, VoiFunction::Linear), 0.0);
        assert_eq!(apply_window(239.5, window, VoiFunction::Linear), 1.0);
        let mid = apply_window(39.5, window, VoiFunction::Linear);
        assert!((mid - 0.5).abs() < 1e-12);
        let value = 100.0;
        let expected = (value - 39.5) / 399.0 + 0.5;
        assert!((apply_window(value, window, VoiFunction::Linear) - expected).abs() < 1e-12);
    }

    #[test]
    fn min_max_window_maps_ends_to_ends() {
        let window = min_max_window(-1024.0, 3071.0);
        assert_eq!(apply_window(-1024.0, window, VoiFunction::Linear), 0.0);
        assert!(apply_window(3071.0, window, VoiFunction::Linear) > 0.9999);
    }

    #[test]
    fn presets_have_the_published_values() {
        assert_eq!(
            Preset::Lung.window(),
            WindowLevel {
                center: -600.0,
                width: 1500.0
            }
        );
        assert_eq!(
            Preset::SoftTissue.window(),
            WindowLevel {
                center: 40.0,
                width: 400.0
            }
        );
        assert_eq!(
            Preset::Liver.window(),
            WindowLevel {
                center: 90.0,
                width: 150.0
            }
        );
        assert_eq!(
            Preset::Bone.window(),
            WindowLevel {
                center: 480.0,
                width: 2500.0
            }
        );
        assert_eq!(
            Preset::Brain.window(),
            WindowLevel {
                center: 40.0,
                width: 80.0
            }
        );
        assert_eq!(Preset::from_name("Soft_Tissue"), Some(Preset::SoftTissue));
        assert_eq!(Preset::from_name("nope"), None);
    }

    #[test]
    fn sigmoid_and_exact_match_their_formulas() {
        let window = WindowLevel {
            center: 0.0,
            width: 100.0,
        };
        let sig = apply_window(25.0, window, VoiFunction::Sigmoid);
        assert!((sig - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        assert!((apply_window(25.0, window, VoiFunction::LinearExact) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn parse_window_rejects_nonsense() {
        assert_eq!(
            parse_window("40,400").unwrap(),
            WindowLevel {
                center: 40.0,
                width: 400.0
            }
        );
        assert!(parse_window("40").is_err());
        assert!(parse_window("40,-1").is_err());
        assert!(parse_window("a,b").is_err());
    }
}
