//! Pixel masks as alternating run lengths in raster order (unset pixels first): what a
//! `Region::Mask` stores for regions imported from a DICOM SEG, a NIfTI file or a COCO RLE.
//! Plain functions on runs and pixels; `region.rs` wraps them.

/// Run lengths of `pixels` (raster order), starting with the unset run (possibly 0).
pub fn encode_runs(pixels: &[bool]) -> Vec<u32> {
    let mut runs = Vec::new();
    let (mut current, mut length) = (false, 0u32);
    for &p in pixels {
        if p == current {
            length += 1;
        } else {
            runs.push(length);
            current = p;
            length = 1;
        }
    }
    runs.push(length);
    runs
}

/// Expand alternating run lengths (unset first) into `n` pixels.
pub fn decode_runs(runs: &[u32], n: usize) -> Vec<bool> {
    let mut pixels = Vec::with_capacity(n);
    for (k, &run) in runs.iter().enumerate() {
        pixels.extend(std::iter::repeat_n(k % 2 == 1, run as usize));
    }
    pixels.resize(n, false);
    pixels
}

/// Whether raster index `index` falls in a set run.
pub fn runs_contain(runs: &[u32], index: usize) -> bool {
    let mut at = 0usize;
    for (k, &run) in runs.iter().enumerate() {
        at += run as usize;
        if index < at {
            return k % 2 == 1;
        }
    }
    false
}

/// The top-left and bottom-right pixel corners of each row piece of each set run, on an image
/// `width` pixels wide (their extremes bound the mask).
pub fn run_corners(width: usize, runs: &[u32]) -> Vec<[f64; 2]> {
    let w = width.max(1);
    let mut points = Vec::new();
    let mut at = 0usize;
    for (k, &run) in runs.iter().enumerate() {
        if k % 2 == 1 && run > 0 {
            let (first, last) = (at, at + run as usize - 1);
            for y in first / w..=last / w {
                let x0 = if y == first / w { first % w } else { 0 };
                let x1 = if y == last / w { last % w } else { w - 1 };
                points.push([x0 as f64, y as f64]);
                points.push([x1 as f64 + 1.0, y as f64 + 1.0]);
            }
        }
        at += run as usize;
    }
    points
}

/// The unit pixel edges between set and unset pixels of a `w x h` mask (`[from, to]`).
pub fn edges(w: usize, h: usize, pixels: &[bool]) -> Vec<[[f64; 2]; 2]> {
    let at = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && pixels[y as usize * w + x as usize]
    };
    let mut edges = Vec::new();
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            if !at(x, y) {
                continue;
            }
            let (fx, fy) = (x as f64, y as f64);
            if !at(x, y - 1) {
                edges.push([[fx, fy], [fx + 1.0, fy]]);
            }
            if !at(x, y + 1) {
                edges.push([[fx, fy + 1.0], [fx + 1.0, fy + 1.0]]);
            }
            if !at(x - 1, y) {
                edges.push([[fx, fy], [fx, fy + 1.0]]);
            }
            if !at(x + 1, y) {
                edges.push([[fx + 1.0, fy], [fx + 1.0, fy + 1.0]]);
            }
        }
    }
    edges
}
