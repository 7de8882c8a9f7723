//! Regions drawn on the original image (boxes, ellipses, polygons, brush strokes) and the image
//! tokens they cover, mapped through the same pad/resize/crop the model input went through.

use crate::model::PixelMapping;

/// A region in original image pixels.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Region {
    /// Axis-aligned box, `[x0, y0, x1, y1]`.
    Box { xyxy_px: [f64; 4] },
    /// Ellipse inscribed in the box `[x0, y0, x1, y1]`.
    Ellipse { xyxy_px: [f64; 4] },
    /// Closed polygon.
    Polygon { points_px: Vec<[f64; 2]> },
    /// Freehand stroke of the given radius.
    Brush {
        points_px: Vec<[f64; 2]>,
        radius_px: f64,
    },
    /// A pixel mask over the whole image (imported from a DICOM SEG, NIfTI or COCO RLE):
    /// alternating run lengths in raster order (row by row), starting with unset pixels.
    Mask {
        width: u32,
        height: u32,
        runs: Vec<u32>,
    },
}

/// The image-token grid the model sees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenGrid {
    pub rows: usize,
    pub cols: usize,
    pub mapping: PixelMapping,
}

impl TokenGrid {
    fn cell_px(&self) -> (f64, f64) {
        let [width, height] = self.mapping.input;
        (
            width as f64 / self.cols as f64,
            height as f64 / self.rows as f64,
        )
    }

    /// The token whose cell holds original-pixel point (x, y), if the point reaches the model
    /// input (a centre crop leaves the sides out).
    pub fn token_at(&self, x: f64, y: f64) -> Option<usize> {
        let (cell_w, cell_h) = self.cell_px();
        let (ix, iy) = self.mapping.to_input(x, y);
        let (col, row) = ((ix / cell_w).floor(), (iy / cell_h).floor());
        (col >= 0.0 && row >= 0.0 && (col as usize) < self.cols && (row as usize) < self.rows)
            .then(|| row as usize * self.cols + col as usize)
    }

    /// The pixels of a `width x height` image whose centres fall in the given tokens' cells.
    pub fn tokens_to_pixels(&self, width: u32, height: u32, tokens: &[bool]) -> Vec<bool> {
        (0..height as usize * width as usize)
            .map(|i| {
                let (x, y) = (
                    (i % width as usize) as f64 + 0.5,
                    (i / width as usize) as f64 + 0.5,
                );
                self.token_at(x, y)
                    .is_some_and(|t| tokens.get(t).copied().unwrap_or(false))
            })
            .collect()
    }

    /// The centre of token `index` in original image pixels.
    pub fn token_centre_px(&self, index: usize) -> (f64, f64) {
        let (cell_w, cell_h) = self.cell_px();
        let (row, col) = (index / self.cols, index % self.cols);
        let (x, y) = ((col as f64 + 0.5) * cell_w, (row as f64 + 0.5) * cell_h);
        (
            x / self.mapping.scale[0] + self.mapping.offset_px[0],
            y / self.mapping.scale[1] + self.mapping.offset_px[1],
        )
    }
}

impl Region {
    /// Parse `x0,y0,x1,y1` (original pixels) into a box.
    pub fn parse_box(text: &str) -> Result<Region, String> {
        let values: Vec<f64> = text
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("region {text:?}: {v:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
        let [x0, y0, x1, y1] = values[..] else {
            return Err(format!("region {text:?} must be x0,y0,x1,y1"));
        };
        Ok(Region::Box {
            xyxy_px: [x0, y0, x1, y1],
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Region::Box { .. } => "box",
            Region::Ellipse { .. } => "ellipse",
            Region::Polygon { .. } => "polygon",
            Region::Brush { .. } => "brush",
            Region::Mask { .. } => "mask",
        }
    }

    /// A mask region from `width x height` pixels in raster order; `None` when no pixel is set.
    pub fn from_mask(width: u32, height: u32, pixels: &[bool]) -> Option<Region> {
        if !pixels.iter().any(|&p| p) || pixels.len() != width as usize * height as usize {
            return None;
        }
        let runs = super::mask::encode_runs(pixels);
        Some(Region::Mask {
            width,
            height,
            runs,
        })
    }

    /// The pixels the region covers on a `width x height` image, in raster order: a pixel is
    /// in when its centre is (a mask region: when its own pixel is set). No tokens involved:
    /// this is what a DICOM SEG or a NIfTI mask stores.
    pub fn pixel_mask(&self, width: u32, height: u32) -> Vec<bool> {
        let (w, h) = (width as usize, height as usize);
        if let Region::Mask {
            width: mw,
            height: mh,
            runs,
        } = self
        {
            let own = super::mask::decode_runs(runs, *mw as usize * *mh as usize);
            if (*mw, *mh) == (width, height) {
                return own;
            }
            // Another size: nearest pixel centre.
            return (0..w * h)
                .map(|i| {
                    let x = ((i % w) as f64 + 0.5) * *mw as f64 / w as f64;
                    let y = ((i / w) as f64 + 0.5) * *mh as f64 / h as f64;
                    own[(y as usize).min(*mh as usize - 1) * *mw as usize
                        + (x as usize).min(*mw as usize - 1)]
                })
                .collect();
        }
        let [x0, y0, x1, y1] = self.bounds_px();
        let mut mask = vec![false; w * h];
        let clamp = |v: f64, hi: usize| (v.max(0.0) as usize).min(hi);
        for y in clamp(y0.floor(), h)..clamp(y1.ceil() + 1.0, h) {
            for x in clamp(x0.floor(), w)..clamp(x1.ceil() + 1.0, w) {
                mask[y * w + x] = self.contains(x as f64 + 0.5, y as f64 + 0.5);
            }
        }
        mask
    }

    /// Reject shapes with no area.
    pub fn validate(&self) -> Result<(), String> {
        let ok = match self {
            Region::Box {
                xyxy_px: [x0, y0, x1, y1],
            }
            | Region::Ellipse {
                xyxy_px: [x0, y0, x1, y1],
            } => [x0, y0, x1, y1].iter().all(|v| v.is_finite()) && x1 > x0 && y1 > y0,
            Region::Polygon { points_px } => {
                points_px.len() >= 3 && polygon_area(points_px).abs() > 0.0
            }
            Region::Brush {
                points_px,
                radius_px,
            } => !points_px.is_empty() && *radius_px > 0.0,
            Region::Mask {
                width,
                height,
                runs,
            } => {
                runs.iter().map(|&r| r as u64).sum::<u64>() == *width as u64 * *height as u64
                    && runs.iter().skip(1).step_by(2).any(|&r| r > 0)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} region has zero area: {}",
                self.kind(),
                serde_json::to_string(self).unwrap_or_default()
            ))
        }
    }

    /// Raster-order indices of the image tokens the region covers.
    pub fn tokens(&self, grid: &TokenGrid) -> Vec<usize> {
        let (cell_w, cell_h) = grid.cell_px();
        let map = |x: f64, y: f64| grid.mapping.to_input(x, y);
        match self {
            Region::Box {
                xyxy_px: [x0, y0, x1, y1],
            } => {
                // A token counts when its cell overlaps the box: floor of the min, ceil of the max.
                let (ix0, iy0) = map(*x0, *y0);
                let (ix1, iy1) = map(*x1, *y1);
                let col0 = (ix0.min(ix1) / cell_w).floor().max(0.0) as usize;
                let col1 = ((ix0.max(ix1) / cell_w).ceil().max(0.0) as usize).min(grid.cols);
                let row0 = (iy0.min(iy1) / cell_h).floor().max(0.0) as usize;
                let row1 = ((iy0.max(iy1) / cell_h).ceil().max(0.0) as usize).min(grid.rows);
                let mut tokens = Vec::new();
                for row in row0..row1 {
                    for col in col0..col1 {
                        tokens.push(row * grid.cols + col);
                    }
                }
                tokens
            }
            // Curved shapes: a token counts when any of 8x8 sample points of its cell is inside.
            _ => (0..grid.rows * grid.cols)
                .filter(|&index| {
                    let (row, col) = (index / grid.cols, index % grid.cols);
                    (0..64).any(|k| {
                        let x = (col as f64 + ((k % 8) as f64 + 0.5) / 8.0) * cell_w;
                        let y = (row as f64 + ((k / 8) as f64 + 0.5) / 8.0) * cell_h;
                        let (ox, oy) = (
                            x / grid.mapping.scale[0] + grid.mapping.offset_px[0],
                            y / grid.mapping.scale[1] + grid.mapping.offset_px[1],
                        );
                        self.contains(ox, oy)
                    })
                })
                .collect(),
        }
    }

    /// The region's bounding box `[x0, y0, x1, y1]` in pixels (a brush includes its radius).
    pub fn bounds_px(&self) -> [f64; 4] {
        let points: Vec<[f64; 2]> = match self {
            Region::Box {
                xyxy_px: [x0, y0, x1, y1],
            }
            | Region::Ellipse {
                xyxy_px: [x0, y0, x1, y1],
            } => vec![[*x0, *y0], [*x1, *y1]],
            Region::Polygon { points_px } => points_px.clone(),
            Region::Brush {
                points_px,
                radius_px,
            } => points_px
                .iter()
                .flat_map(|[x, y]| {
                    [
                        [x - radius_px, y - radius_px],
                        [x + radius_px, y + radius_px],
                    ]
                })
                .collect(),
            Region::Mask { width, runs, .. } => super::mask::run_corners(*width as usize, runs),
        };
        let fold = |axis: usize, init: f64, f: fn(f64, f64) -> f64| {
            points.iter().map(|p| p[axis]).fold(init, f)
        };
        [
            fold(0, f64::INFINITY, f64::min),
            fold(1, f64::INFINITY, f64::min),
            fold(0, f64::NEG_INFINITY, f64::max),
            fold(1, f64::NEG_INFINITY, f64::max),
        ]
    }

    /// Width and height of the region's bounding box, in pixels.
    pub fn extent_px(&self) -> [f64; 2] {
        let [x0, y0, x1, y1] = self.bounds_px();
        [(x1 - x0).max(0.0), (y1 - y0).max(0.0)]
    }

    /// Area in square pixels: exact for a box, an ellipse (pi a b) and a polygon (shoelace); a
    /// brush stroke counts the pixels whose centre it covers.
    pub fn area_px(&self) -> f64 {
        match self {
            Region::Box {
                xyxy_px: [x0, y0, x1, y1],
            } => (x1 - x0).abs() * (y1 - y0).abs(),
            Region::Ellipse {
                xyxy_px: [x0, y0, x1, y1],
            } => std::f64::consts::PI * (x1 - x0).abs() / 2.0 * (y1 - y0).abs() / 2.0,
            Region::Polygon { points_px } => polygon_area(points_px).abs(),
            Region::Mask { runs, .. } => runs.iter().skip(1).step_by(2).map(|&r| r as f64).sum(),
            Region::Brush { .. } => {
                let [x0, y0, x1, y1] = self.bounds_px();
                let (x0, x1) = (x0.floor() as i64, x1.ceil() as i64);
                let (y0, y1) = (y0.floor() as i64, y1.ceil() as i64);
                let mut count = 0usize;
                for y in y0..y1 {
                    for x in x0..x1 {
                        count += usize::from(self.contains(x as f64 + 0.5, y as f64 + 0.5));
                    }
                }
                count as f64
            }
        }
    }

    /// The region's size in words: `W x H px, A px²`, and in millimetres when the pixel spacing
    /// (`[row, column]` mm, DICOM's order) is known.
    pub fn size_text(&self, spacing_mm: Option<[f64; 2]>) -> String {
        let [w, h] = self.extent_px();
        let area = self.area_px();
        match spacing_mm {
            Some([row, col]) => format!(
                "{:.1} x {:.1} mm, {:.1} mm² ({w:.0} x {h:.0} px)",
                w * col,
                h * row,
                area * row * col
            ),
            None => format!("{w:.0} x {h:.0} px, {area:.0} px² (spacing unknown)"),
        }
    }

    /// Whether an original-pixel point lies inside the region.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        match self {
            Region::Box {
                xyxy_px: [x0, y0, x1, y1],
            } => x >= *x0 && x <= *x1 && y >= *y0 && y <= *y1,
            Region::Ellipse {
                xyxy_px: [x0, y0, x1, y1],
            } => {
                let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
                let (rx, ry) = ((x1 - x0) / 2.0, (y1 - y0) / 2.0);
                ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
            }
            Region::Polygon { points_px } => point_in_polygon(points_px, x, y),
            Region::Brush {
                points_px,
                radius_px,
            } => points_px
                .iter()
                .any(|[px, py]| (px - x).powi(2) + (py - y).powi(2) <= radius_px * radius_px),
            Region::Mask {
                width,
                height,
                runs,
            } => {
                if x < 0.0 || y < 0.0 || x >= *width as f64 || y >= *height as f64 {
                    return false;
                }
                super::mask::runs_contain(runs, y as usize * *width as usize + x as usize)
            }
        }
    }
}

impl Region {
    /// The outline of a mask region as pixel edges between set and unset pixels (each
    /// `[from, to]` in pixels), for drawing; other kinds draw their own shapes.
    pub fn mask_edges(&self) -> Vec<[[f64; 2]; 2]> {
        let Region::Mask {
            width,
            height,
            runs,
        } = self
        else {
            return Vec::new();
        };
        let (w, h) = (*width as usize, *height as usize);
        super::mask::edges(w, h, &super::mask::decode_runs(runs, w * h))
    }
}

fn polygon_area(points: &[[f64; 2]]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let [x0, y0] = points[i];
            let [x1, y1] = points[(i + 1) % n];
            x0 * y1 - x1 * y0
        })
        .sum::<f64>()
        / 2.0
}

fn point_in_polygon(points: &[[f64; 2]], x: f64, y: f64) -> bool {
    let mut inside = false;
    let n = points.len();
    for i in 0..n {
        let [xi, yi] = points[i];
        let [xj, yj] = points[(i + n - 1) % n];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes by hand: a 30 x 20 px box at 0.5 mm rows / 0.25 mm columns is 7.5 mm wide, 10 mm
    /// high, 600 px² = 75 mm²; an ellipse in that box pi*15*10 px²; a right triangle with legs 30
    /// and 20 px 300 px²; a brush dot of radius 5 px on a pixel centre covers the 81 pixel centres
    /// within 5 px (integer offsets with dx² + dy² <= 25).
    #[test]
    fn sizes_and_areas_in_pixels_and_millimetres() {
        let boxed = Region::Box {
            xyxy_px: [10.0, 40.0, 40.0, 60.0],
        };
        assert_eq!(boxed.extent_px(), [30.0, 20.0]);
        assert_eq!(boxed.area_px(), 600.0);
        assert_eq!(
            boxed.size_text(Some([0.5, 0.25])),
            "7.5 x 10.0 mm, 75.0 mm² (30 x 20 px)"
        );
        assert_eq!(
            boxed.size_text(None),
            "30 x 20 px, 600 px² (spacing unknown)"
        );
        let ellipse = Region::Ellipse {
            xyxy_px: [10.0, 40.0, 40.0, 60.0],
        };
        assert!((ellipse.area_px() - std::f64::consts::PI * 150.0).abs() < 1e-9);
        let triangle = Region::Polygon {
            points_px: vec![[0.0, 0.0], [30.0, 0.0], [0.0, 20.0]],
        };
        assert_eq!(triangle.area_px(), 300.0);
        assert_eq!(triangle.extent_px(), [30.0, 20.0]);
        let dot = Region::Brush {
            points_px: vec![[50.5, 50.5]],
            radius_px: 5.0,
        };
        // Pixel centres (50.5 + dx, 50.5 + dy) with dx² + dy² <= 25, dx, dy in -5..=5.
        let by_hand = (-5i32..=5)
            .flat_map(|dx| (-5i32..=5).map(move |dy| dx * dx + dy * dy))
            .filter(|&d| d <= 25)
            .count();
        assert_eq!(by_hand, 81);
        assert_eq!(dot.area_px(), 81.0);
        assert_eq!(dot.extent_px(), [10.0, 10.0]);
    }

    fn grid_336() -> TokenGrid {
        // A 672x504 image padded to 672x672 (offset 84 rows), resized to 336: scale 0.5.
        TokenGrid {
            rows: 24,
            cols: 24,
            mapping: PixelMapping {
                scale: [0.5, 0.5],
                offset_px: [0.0, -84.0],
                input: [336, 336],
            },
        }
    }

    #[test]
    fn box_tokens_use_floor_and_ceil() {
        // Original (100, 16) .. (130, 40) -> input (50, 50) .. (65, 62); cells of 14 px:
        // cols floor(50/14)=3 .. ceil(65/14)=5 (exclusive), rows floor(50/14)=3 .. ceil(62/14)=5.
        let region = Region::Box {
            xyxy_px: [100.0, 16.0, 130.0, 40.0],
        };
        assert_eq!(
            region.tokens(&grid_336()),
            vec![3 * 24 + 3, 3 * 24 + 4, 4 * 24 + 3, 4 * 24 + 4]
        );
    }

    #[test]
    fn one_token_everything_and_nothing() {
        let grid = grid_336();
        // Exactly one cell: input (14, 14)..(28, 28) = original (28, -56)..(56, -28) in the pad.
        assert_eq!(
            Region::Box {
                xyxy_px: [28.0, -56.0, 56.0, -28.0]
            }
            .tokens(&grid),
            vec![24 + 1]
        );
        // The whole padded square covers all 576 tokens.
        assert_eq!(
            Region::Box {
                xyxy_px: [0.0, -84.0, 672.0, 588.0]
            }
            .tokens(&grid)
            .len(),
            576
        );
        // Outside the image entirely: no token.
        assert!(Region::Box {
            xyxy_px: [2000.0, 2000.0, 2100.0, 2100.0]
        }
        .tokens(&grid)
        .is_empty());
        assert!(Region::Box {
            xyxy_px: [5.0, 5.0, 5.0, 9.0]
        }
        .validate()
        .is_err());
    }

    #[test]
    fn curved_shapes_cover_their_cells() {
        let grid = grid_336();
        let ellipse = Region::Ellipse {
            xyxy_px: [100.0, 16.0, 130.0, 40.0],
        };
        let tokens = ellipse.tokens(&grid);
        assert!(!tokens.is_empty() && tokens.iter().all(|t| [75, 76, 99, 100].contains(t)));
        let polygon = Region::Polygon {
            points_px: vec![[0.0, -84.0], [672.0, -84.0], [0.0, 588.0]],
        };
        let covered = polygon.tokens(&grid).len();
        assert!(covered > 576 / 2 && covered < 576, "{covered}");
        let brush = Region::Brush {
            points_px: vec![[42.0, -42.0]],
            radius_px: 3.0,
        };
        assert_eq!(brush.tokens(&grid), vec![24 + 1]);
    }

    /// A mask region by hand: an L of 5 pixels on a 4 x 3 image (rows "X...", "X...",
    /// "XXX."), stored as runs [0, 1, 3, 1, 3, 3, 1]: it gives back its pixels, counts 5 px,
    /// is bounded by pixel edges (0, 0)..(3, 3), contains a point by its pixel, resamples by
    /// nearest pixel centre, and a box's pixel mask takes the pixels whose centres it holds.
    #[test]
    fn masks_by_hand() {
        let pixels: Vec<bool> = "X...X...XXX.".chars().map(|c| c == 'X').collect();
        let mask = Region::from_mask(4, 3, &pixels).unwrap();
        assert_eq!(
            mask,
            Region::Mask {
                width: 4,
                height: 3,
                runs: vec![0, 1, 3, 1, 3, 3, 1]
            }
        );
        assert!(mask.validate().is_ok());
        assert_eq!(mask.pixel_mask(4, 3), pixels);
        assert_eq!(mask.area_px(), 5.0);
        assert_eq!(mask.bounds_px(), [0.0, 0.0, 3.0, 3.0]);
        assert!(mask.contains(2.9, 2.1) && !mask.contains(3.1, 2.1) && !mask.contains(1.5, 0.5));
        // Twice the size: each pixel becomes 2 x 2.
        let doubled = mask.pixel_mask(8, 6);
        assert_eq!(doubled.iter().filter(|&&p| p).count(), 20);
        assert!(doubled[5 * 8 + 5] && !doubled[5 * 8 + 6]);
        // The outline: 12 unit edges around the L (perimeter 3 + 3 + 1 + 2 + 2 + 1).
        assert_eq!(mask.mask_edges().len(), 12);
        assert!(Region::from_mask(4, 3, &[false; 12]).is_none());
        // A box from x 0.6 to 2.4 holds the centres 1.5 (and not 0.5 or 2.5) in x.
        let boxed = Region::Box {
            xyxy_px: [0.6, 0.0, 2.4, 1.0],
        };
        let expected: Vec<bool> = ".X..........".chars().map(|c| c == 'X').collect();
        assert_eq!(boxed.pixel_mask(4, 3), expected);
    }

    /// A token's cell is found from a pixel through the model's mapping: on a 336 px input
    /// from a 672 px image (scale 0.5) with a 24 x 24 grid of 14 px cells, pixel (30, 60) is
    /// input (15, 30): column 1, row 2, token 49; the pixels of token 49 are a 28 x 28 block.
    #[test]
    fn tokens_back_to_pixels() {
        let grid = TokenGrid {
            rows: 24,
            cols: 24,
            mapping: PixelMapping {
                input: [336, 336],
                scale: [0.5, 0.5],
                offset_px: [0.0, 0.0],
            },
        };
        assert_eq!(grid.token_at(30.0, 60.0), Some(2 * 24 + 1));
        assert_eq!(grid.token_at(-1.0, 5.0), None);
        assert_eq!(grid.token_at(672.5, 5.0), None);
        let mut tokens = vec![false; 576];
        tokens[49] = true;
        let pixels = grid.tokens_to_pixels(672, 672, &tokens);
        assert_eq!(pixels.iter().filter(|&&p| p).count(), 28 * 28);
        assert!(pixels[56 * 672 + 28] && !pixels[56 * 672 + 27] && !pixels[84 * 672 + 28]);
    }
}
