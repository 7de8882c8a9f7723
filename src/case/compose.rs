//! CPU pictures of attention for exports and the command line: colormaps, heatmap blending,
//! token-mask outlines and region outlines over the image the model saw. The desktop app
//! draws the same things on the GPU (shaders/); the colormap stops here are shared with it.

use image::{Rgb, RgbImage};

use super::font;

/// Colormaps for attention heatmaps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Colormap {
    #[default]
    Inferno,
    Viridis,
    Jet,
    /// Blue (negative) - white (zero) - red (positive), for signed maps (causal drops) scaled
    /// so that 0.5 is zero.
    Diverging,
}

impl Colormap {
    /// Stops from 0 to 1, evenly spaced (keep in sync with shaders/overlay.wgsl).
    pub fn stops(self) -> &'static [[f32; 3]] {
        match self {
            Colormap::Inferno => &[
                [0.001, 0.000, 0.014],
                [0.122, 0.047, 0.282],
                [0.333, 0.059, 0.427],
                [0.533, 0.133, 0.416],
                [0.729, 0.212, 0.333],
                [0.890, 0.349, 0.200],
                [0.976, 0.549, 0.039],
                [0.976, 0.788, 0.196],
                [0.988, 1.000, 0.643],
            ],
            Colormap::Viridis => &[
                [0.267, 0.005, 0.329],
                [0.283, 0.141, 0.458],
                [0.254, 0.265, 0.530],
                [0.207, 0.372, 0.553],
                [0.164, 0.471, 0.558],
                [0.128, 0.567, 0.551],
                [0.135, 0.659, 0.518],
                [0.267, 0.749, 0.441],
                [0.478, 0.821, 0.318],
                [0.741, 0.873, 0.150],
                [0.993, 0.906, 0.144],
            ],
            Colormap::Jet => &[
                [0.0, 0.0, 0.5],
                [0.0, 0.0, 1.0],
                [0.0, 1.0, 1.0],
                [1.0, 1.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.5, 0.0, 0.0],
            ],
            Colormap::Diverging => &[
                [0.230, 0.299, 0.754],
                [0.552, 0.690, 0.996],
                [0.865, 0.865, 0.865],
                [0.958, 0.603, 0.482],
                [0.706, 0.016, 0.150],
            ],
        }
    }

    /// Colour of `t` in 0..=1.
    pub fn color(self, t: f32) -> [f32; 3] {
        let stops = self.stops();
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let position = t * (stops.len() - 1) as f32;
        let index = (position.floor() as usize).min(stops.len() - 2);
        let fraction = position - index as f32;
        let (a, b) = (stops[index], stops[index + 1]);
        [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * fraction)
    }
}

/// Levels of a signed map for [`Colormap::Diverging`]: 0.5 at zero, 0 and 1 at -/+ the largest
/// magnitude (white where knocking a cell out changes nothing).
pub fn diverging_levels(values: &[f32]) -> Vec<f32> {
    let reach = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    values
        .iter()
        .map(|v| {
            if reach > 0.0 {
                0.5 + v / (2.0 * reach)
            } else {
                0.5
            }
        })
        .collect()
}

/// Scale a map to 0..1 by its own min and max.
pub fn normalise(values: &[f32]) -> Vec<f32> {
    crate::grounding::triage::min_max_normalise(values)
}

/// Blend a token-grid heatmap over `base` (nearest cells), opacity `alpha`.
pub fn blend_heatmap(
    base: &RgbImage,
    grid: (usize, usize),
    values: &[f32],
    colormap: Colormap,
    alpha: f32,
) -> RgbImage {
    let (rows, cols) = grid;
    let levels = normalise(values);
    let (width, height) = base.dimensions();
    RgbImage::from_fn(width, height, |x, y| {
        let col = (x as usize * cols / width as usize).min(cols - 1);
        let row = (y as usize * rows / height as usize).min(rows - 1);
        let colour = colormap.color(levels[row * cols + col]);
        let pixel = base.get_pixel(x, y);
        Rgb([0, 1, 2].map(|c| {
            let mixed = pixel[c] as f32 * (1.0 - alpha) + colour[c] * 255.0 * alpha;
            mixed.round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// Draw the outline of the token set `tokens` (cell edges between inside and outside).
pub fn outline_tokens(img: &mut RgbImage, grid: (usize, usize), tokens: &[usize], colour: Rgb<u8>) {
    let (rows, cols) = grid;
    let mut inside = vec![false; rows * cols];
    for &t in tokens {
        if t < inside.len() {
            inside[t] = true;
        }
    }
    let (width, height) = img.dimensions();
    let cell = |x: u32, y: u32| -> Option<usize> {
        let col = (x as usize * cols / width as usize).min(cols - 1);
        let row = (y as usize * rows / height as usize).min(rows - 1);
        Some(row * cols + col)
    };
    for y in 0..height {
        for x in 0..width {
            let Some(here) = cell(x, y) else { continue };
            if !inside[here] {
                continue;
            }
            let neighbours = [
                (x.checked_sub(1), Some(y)),
                (Some(x + 1).filter(|&v| v < width), Some(y)),
                (Some(x), y.checked_sub(1)),
                (Some(x), Some(y + 1).filter(|&v| v < height)),
            ];
            let edge = neighbours.iter().any(|(nx, ny)| match (nx, ny) {
                (Some(nx), Some(ny)) => cell(*nx, *ny).is_some_and(|n| !inside[n]),
                _ => true,
            });
            if edge {
                img.put_pixel(x, y, colour);
            }
        }
    }
}

/// Draw a rectangle outline (input-image pixel coordinates), 2 px wide.
pub fn draw_rect(img: &mut RgbImage, x0: f64, y0: f64, x1: f64, y1: f64, colour: Rgb<u8>) {
    let (width, height) = img.dimensions();
    let clamp_x = |v: f64| (v.round().max(0.0) as u32).min(width.saturating_sub(1));
    let clamp_y = |v: f64| (v.round().max(0.0) as u32).min(height.saturating_sub(1));
    let (x0, x1, y0, y1) = (
        clamp_x(x0.min(x1)),
        clamp_x(x0.max(x1)),
        clamp_y(y0.min(y1)),
        clamp_y(y0.max(y1)),
    );
    for t in 0..2u32 {
        for x in x0..=x1 {
            img.put_pixel(x, (y0 + t).min(height - 1), colour);
            img.put_pixel(x, y1.saturating_sub(t), colour);
        }
        for y in y0..=y1 {
            img.put_pixel((x0 + t).min(width - 1), y, colour);
            img.put_pixel(x1.saturating_sub(t), y, colour);
        }
    }
}

/// Panels side by side with a gap.
pub fn side_by_side(panels: &[RgbImage], gap_px: u32) -> RgbImage {
    let height = panels.iter().map(|p| p.height()).max().unwrap_or(1);
    let width = panels.iter().map(|p| p.width()).sum::<u32>()
        + gap_px * panels.len().saturating_sub(1) as u32;
    let mut out = RgbImage::from_pixel(width.max(1), height, Rgb([24, 24, 24]));
    let mut x = 0;
    for panel in panels {
        image::imageops::replace(&mut out, panel, x as i64, 0);
        x += panel.width() + gap_px;
    }
    out
}

/// A value as a label: 3 significant digits, scientific outside 0.01..1000.
pub fn label_value(value: f32) -> String {
    let magnitude = value.abs();
    if value == 0.0 || (0.01..1000.0).contains(&magnitude) {
        format!("{value:.3}")
    } else {
        format!("{value:.2e}")
    }
}

/// Font scale for a picture `width` px wide.
fn font_scale(width: u32) -> u32 {
    if width >= 300 {
        2
    } else {
        1
    }
}

/// `panel` under a title band: `title` and, on a second line, `subtitle`.
pub fn titled(panel: &RgbImage, title: &str, subtitle: &str) -> RgbImage {
    let scale = font_scale(panel.width());
    let line = font::line_height(scale);
    let band = 3 * line + line / 2;
    let width = panel
        .width()
        .max(font::text_width(title, scale).max(font::text_width(subtitle, scale)) + 2 * scale);
    let mut out = RgbImage::from_pixel(width, panel.height() + band, Rgb([24, 24, 24]));
    font::draw_text(
        &mut out,
        scale,
        line / 2,
        title,
        scale,
        Rgb([235, 235, 235]),
    );
    font::draw_text(
        &mut out,
        scale,
        2 * line,
        subtitle,
        scale,
        Rgb([170, 170, 170]),
    );
    image::imageops::replace(&mut out, panel, 0, band as i64);
    out
}

/// A vertical colour bar for values `lo..hi` (top: `hi`), `height` px tall, with the two values
/// beside it and `caption` under them.
pub fn colour_bar(colormap: Colormap, height: u32, lo: &str, hi: &str, caption: &str) -> RgbImage {
    let scale = font_scale(height);
    let line = font::line_height(scale);
    let bar = 6 * scale + 4;
    let text = [lo, hi, caption]
        .iter()
        .map(|t| font::text_width(t, scale))
        .max()
        .unwrap_or(0);
    let height = height.max(4 * line);
    let width = bar + 3 * scale + text + 2 * scale;
    let mut out = RgbImage::from_pixel(width, height, Rgb([24, 24, 24]));
    for y in 0..height {
        let t = 1.0 - y as f32 / (height - 1).max(1) as f32;
        let colour = colormap
            .color(t)
            .map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8);
        for x in 0..bar {
            out.put_pixel(x, y, Rgb(colour));
        }
    }
    let left = bar + 3 * scale;
    let white = Rgb([235, 235, 235]);
    font::draw_text(&mut out, left, 0, hi, scale, white);
    font::draw_text(&mut out, left, height - line, lo, scale, white);
    font::draw_text(
        &mut out,
        left,
        height / 2 - line / 2,
        caption,
        scale,
        Rgb([170, 170, 170]),
    );
    out
}

/// A scale bar in the lower left of `img`: the longest of 1, 2, 5, 10, 20, 50, 100 or 200 mm
/// that fits in a quarter of the width at `column_spacing_mm` per pixel, white on a black edge,
/// with its length written above it. Returns the bar's length in mm and in pixels, or `None`
/// when not even 1 mm fits (or the spacing is not positive).
/// The longest round length (200, 100, 50, 20, 10, 5, 2 or 1 mm) that fits in `room_px`
/// pixels of `mm_per_px` each (the viewport's bar uses it too).
pub fn scale_bar_mm(room_px: f64, mm_per_px: f64) -> Option<f64> {
    if !(mm_per_px.is_finite() && mm_per_px > 0.0) {
        return None;
    }
    [200.0, 100.0, 50.0, 20.0, 10.0, 5.0, 2.0, 1.0]
        .into_iter()
        .find(|mm| mm / mm_per_px <= room_px)
}

pub fn scale_bar(img: &mut RgbImage, column_spacing_mm: f64) -> Option<(f64, u32)> {
    if !(column_spacing_mm.is_finite() && column_spacing_mm > 0.0) {
        return None;
    }
    let mm = scale_bar_mm(img.width() as f64 / 4.0, column_spacing_mm)?;
    let length = (mm / column_spacing_mm).round() as u32;
    let scale = font_scale(img.width());
    let thick = 2 * scale;
    let margin = 2 * scale + 1;
    let line = font::line_height(scale);
    if length < 2 || img.height() < margin + thick + line + 2 || img.width() < margin + length + 2 {
        return None;
    }
    let y0 = img.height() - margin - thick;
    // A black edge one pixel around the bar, then the bar.
    for y in y0 - 1..=y0 + thick {
        for x in margin - 1..=margin + length {
            img.put_pixel(x, y, Rgb([0, 0, 0]));
        }
    }
    for y in y0..y0 + thick {
        for x in margin..margin + length {
            img.put_pixel(x, y, Rgb([255, 255, 255]));
        }
    }
    font::draw_text(
        img,
        margin,
        y0 - 1 - line,
        &format!("{mm} MM"),
        scale,
        Rgb([255, 255, 255]),
    );
    Some((mm, length))
}

/// Upscale with nearest neighbour so tiny model inputs stay visible.
pub fn upscale_to(img: &RgbImage, min_side_px: u32) -> RgbImage {
    let side = img.width().max(img.height()).max(1);
    if side >= min_side_px {
        return img.clone();
    }
    let factor = min_side_px.div_ceil(side);
    image::imageops::resize(
        img,
        img.width() * factor,
        img.height() * factor,
        image::imageops::FilterType::Nearest,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn diverging_levels_put_zero_at_the_middle() {
        // Largest magnitude 4: -4 -> 0, 0 -> 0.5, 2 -> 0.75, 4 -> 1; all zero -> 0.5.
        let levels = super::diverging_levels(&[-4.0, 0.0, 2.0, 4.0]);
        assert_eq!(levels, vec![0.0, 0.5, 0.75, 1.0]);
        assert_eq!(super::diverging_levels(&[0.0, 0.0]), vec![0.5, 0.5]);
        // White in the middle, blue below, red above.
        let [r, g, b] = super::Colormap::Diverging.color(0.5);
        assert!((r - g).abs() < 1e-6 && (g - b).abs() < 1e-6);
        let (low, high) = (
            super::Colormap::Diverging.color(0.0),
            super::Colormap::Diverging.color(1.0),
        );
        assert!(low[2] > low[0] && high[0] > high[2]);
    }

    use super::*;

    /// 0.5 mm per pixel on a 192 px image: a quarter of the width is 48 px = 24 mm, so the bar is
    /// 20 mm = 40 px; at 0.05 mm per pixel 5 mm = 100 px exceed 48 px, 2 mm = 40 px fit; at 2 mm
    /// per pixel 50 mm = 25 px.
    #[test]
    fn scale_bar_is_the_longest_round_length_in_a_quarter_of_the_width() {
        for (spacing, mm, px) in [(0.5, 20.0, 40), (0.05, 2.0, 40), (2.0, 50.0, 25)] {
            let mut img = RgbImage::from_pixel(192, 192, Rgb([40, 40, 40]));
            assert_eq!(scale_bar(&mut img, spacing), Some((mm, px)), "{spacing}");
            // The lowest row with white in it is the bar's: exactly `px` white pixels.
            let row = (0..192)
                .map(|y| {
                    (0..192)
                        .filter(|&x| img.get_pixel(x, y).0 == [255, 255, 255])
                        .count()
                })
                .filter(|&whites| whites > 0)
                .last();
            assert_eq!(row, Some(px as usize), "{spacing}");
        }
        let mut img = RgbImage::from_pixel(192, 192, Rgb([40, 40, 40]));
        assert_eq!(scale_bar(&mut img, 0.0), None);
        assert_eq!(scale_bar(&mut img, 500.0), None, "200 mm is under 2 px");
    }

    #[test]
    fn colormap_ends_are_the_stops() {
        assert_eq!(Colormap::Jet.color(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(Colormap::Jet.color(1.0), [0.5, 0.0, 0.0]);
        // Halfway between stop 2 (cyan) and 3 (yellow) of 6 stops: t = 0.5.
        assert_eq!(Colormap::Jet.color(0.5), [0.5, 1.0, 0.5]);
    }

    #[test]
    fn outline_marks_the_border_of_a_token_block() {
        let mut img = RgbImage::new(40, 40);
        outline_tokens(&mut img, (4, 4), &[5], Rgb([255, 0, 0]));
        // Token 5 is row 1, col 1: pixels 10..20 in x and y; its border is red, its centre not.
        assert_eq!(img.get_pixel(10, 15)[0], 255);
        assert_eq!(img.get_pixel(15, 15)[0], 0);
        assert_eq!(img.get_pixel(25, 25)[0], 0);
    }
}
