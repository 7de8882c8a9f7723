//! Seeded procedural phantoms: medical-looking 2D images whose lesions are known exactly.
//!
//! Two families, both 8-bit greyscale:
//! - a chest radiograph: body, two lung fields, heart shadow, spine, ribs, noise; nodules
//!   inside the lungs;
//! - a head MR/CT slice in the spirit of Shepp-Logan: skull ring, brain, ventricles; a mass
//!   in one hemisphere.
//! Distractors that draw the eye can be added: a bright side-marker letter, a wire or device,
//! a border label. Sides follow the radiological convention: the patient's left is on the
//! image's right.
//!
//! Long because both families share one seeded RNG, the drawing primitives and the question
//! writer, which read best together; about 70 of its lines are its tests.
//!
//! Every case carries its lesion boxes (xyxy, image pixels) and questions of two kinds, as in
//! the paper's split: localization ("Is there a nodule in the left lung?", "Which side is the
//! lesion on?") and attribute ("Is the lesion brighter than the surrounding tissue?", "Is the
//! lesion large?").

use image::GrayImage;

/// A small, fast, seedable generator (SplitMix64): phantoms must be reproducible from a seed
/// on every platform, so fovea does not depend on a random crate's algorithm choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    ChestXray,
    HeadMr,
}

impl Family {
    pub fn modality(self) -> &'static str {
        match self {
            Family::ChestXray => "X-Ray",
            Family::HeadMr => "MRI",
        }
    }
}

/// The patient's side (radiological convention: patient's left = image right).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

/// One lesion as drawn.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lesion {
    pub side: Side,
    pub centre_px: [f64; 2],
    pub radius_px: f64,
    /// Added intensity (0..255 scale); negative for a darker-than-tissue lesion.
    pub contrast: f64,
    pub large: bool,
    pub xyxy_px: [f64; 4],
}

/// A distractor drawn to pull attention away from the anatomy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distractor {
    MarkerLetter,
    Wire,
    BorderLabel,
}

/// How a question is asked and answered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuestionAnswer {
    pub question: String,
    pub answer: String,
    /// "localization" or "attribute".
    pub label: String,
}

/// A generated case: the image, its lesions and distractors.
#[derive(Clone, Debug)]
pub struct Case {
    pub family: Family,
    pub seed: u64,
    pub image: GrayImage,
    pub lesions: Vec<Lesion>,
    pub distractors: Vec<Distractor>,
    /// Where each distractor was drawn (xyxy px), in the order of `distractors`.
    pub distractor_boxes: Vec<[f64; 4]>,
    /// A side marker was added that names the side opposite the lesion (`Recipe::conflict`).
    pub conflict: bool,
    /// A side marker was added that names the lesion's own side (`Recipe::shortcut`).
    pub shortcut: bool,
}

/// What to draw; `Default` gives the mixed distribution used for training and evaluation.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub size_px: u32,
    pub family: Option<Family>,
    /// Probability of each number of lesions (0, 1, 2).
    pub lesion_count_weights: [f64; 3],
    pub distractor_probability: f64,
    /// 0 = easiest (large, bright, no noise) .. 1 = full difficulty (curriculum).
    pub difficulty: f64,
    /// Probability that a one-lesion case also gets a side marker ("L"/"R" in the upper corner)
    /// naming the side opposite the lesion, on that side: the marker contradicts the finding. The
    /// rest of the case is drawn exactly as without it (its own random stream).
    pub conflict_probability: f64,
    /// Probability that a one-lesion case gets a side marker naming the lesion's own side, on
    /// that side: the marker agrees with the finding, a shortcut a model can learn instead of the
    /// lesion (the distracted demo model's training data). Drawn from the conflict's stream: a
    /// case gets at most one of the two.
    pub shortcut_probability: f64,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            size_px: 192,
            family: None,
            lesion_count_weights: [0.3, 0.55, 0.15],
            distractor_probability: 0.3,
            difficulty: 1.0,
            conflict_probability: 0.0,
            shortcut_probability: 0.0,
        }
    }
}

/// Image canvas in f64 so shapes add up before quantisation.
struct Canvas {
    size: usize,
    pixels: Vec<f64>,
}

impl Canvas {
    fn new(size: usize, value: f64) -> Self {
        Canvas {
            size,
            pixels: vec![value; size * size],
        }
    }

    /// Add `value` inside an axis-aligned ellipse with soft edges (`edge_px` wide).
    fn ellipse(&mut self, cx: f64, cy: f64, rx: f64, ry: f64, value: f64, edge_px: f64) {
        let (x0, x1) = (
            (cx - rx - edge_px).floor().max(0.0) as usize,
            ((cx + rx + edge_px).ceil() as usize).min(self.size),
        );
        let (y0, y1) = (
            (cy - ry - edge_px).floor().max(0.0) as usize,
            ((cy + ry + edge_px).ceil() as usize).min(self.size),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let dx = (x as f64 + 0.5 - cx) / rx;
                let dy = (y as f64 + 0.5 - cy) / ry;
                let distance = (dx * dx + dy * dy).sqrt();
                let distance_px = (distance - 1.0) * rx.min(ry);
                let weight = (0.5 - distance_px / edge_px.max(1e-6)).clamp(0.0, 1.0);
                self.pixels[y * self.size + x] += value * weight;
            }
        }
    }

    /// Add a Gaussian blob (sigma = radius / 2).
    fn blob(&mut self, cx: f64, cy: f64, radius: f64, value: f64) {
        let sigma = radius / 2.0;
        let reach = 3.0 * sigma;
        let (x0, x1) = (
            (cx - reach).floor().max(0.0) as usize,
            ((cx + reach).ceil() as usize).min(self.size),
        );
        let (y0, y1) = (
            (cy - reach).floor().max(0.0) as usize,
            ((cy + reach).ceil() as usize).min(self.size),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let d2 = (x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2);
                self.pixels[y * self.size + x] += value * (-d2 / (2.0 * sigma * sigma)).exp();
            }
        }
    }

    /// Add `value` along a thick polyline.
    fn line(&mut self, points: &[(f64, f64)], width: f64, value: f64) {
        for pair in points.windows(2) {
            let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
            let steps = ((bx - ax).hypot(by - ay) * 2.0).ceil().max(1.0) as usize;
            for step in 0..=steps {
                let t = step as f64 / steps as f64;
                let (x, y) = (ax + (bx - ax) * t, ay + (by - ay) * t);
                let r = width / 2.0;
                for yy in
                    (y - r).floor().max(0.0) as usize..((y + r).ceil() as usize).min(self.size)
                {
                    for xx in
                        (x - r).floor().max(0.0) as usize..((x + r).ceil() as usize).min(self.size)
                    {
                        let pixel = &mut self.pixels[yy * self.size + xx];
                        *pixel = pixel.max(value);
                    }
                }
            }
        }
    }

    fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, value: f64) {
        for y in y0.max(0.0) as usize..(y1 as usize).min(self.size) {
            for x in x0.max(0.0) as usize..(x1 as usize).min(self.size) {
                self.pixels[y * self.size + x] = value;
            }
        }
    }

    fn noise(&mut self, rng: &mut Rng, sigma: f64) {
        for pixel in &mut self.pixels {
            *pixel += rng.normal() * sigma;
        }
    }

    fn into_image(self) -> GrayImage {
        let size = self.size as u32;
        GrayImage::from_raw(
            size,
            size,
            self.pixels
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        )
        .unwrap_or_else(|| GrayImage::new(size, size))
    }
}

fn weighted_choice(rng: &mut Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut pick = rng.unit() * total;
    for (i, &w) in weights.iter().enumerate() {
        if pick < w {
            return i;
        }
        pick -= w;
    }
    weights.len() - 1
}

/// Generate one case from a seed.
pub fn generate(seed: u64, recipe: &Recipe) -> Case {
    let mut rng = Rng::new(seed);
    let family = recipe.family.unwrap_or(if rng.chance(0.5) {
        Family::ChestXray
    } else {
        Family::HeadMr
    });
    let count = weighted_choice(&mut rng, &recipe.lesion_count_weights);
    let size = recipe.size_px as f64;
    let hard = recipe.difficulty.clamp(0.0, 1.0);
    let mut canvas = Canvas::new(recipe.size_px as usize, 0.0);
    // Anatomy: returns the two "side" regions (patient right = image left) lesions go in.
    let sides: [(Side, f64, f64, f64, f64); 2] = match family {
        Family::ChestXray => {
            canvas.ellipse(size * 0.5, size * 0.55, size * 0.46, size * 0.52, 70.0, 6.0);
            let lung_y = size * 0.47;
            let (lung_rx, lung_ry) = (size * 0.16, size * 0.27);
            let right_lung_x = size * 0.31; // patient's right lung: image left
            let left_lung_x = size * 0.69;
            canvas.ellipse(right_lung_x, lung_y, lung_rx, lung_ry, -45.0, 5.0);
            canvas.ellipse(left_lung_x, lung_y, lung_rx, lung_ry, -45.0, 5.0);
            canvas.ellipse(
                size * 0.56,
                size * 0.62,
                size * 0.13,
                size * 0.12,
                55.0,
                6.0,
            ); // heart
            canvas.ellipse(size * 0.5, size * 0.55, size * 0.03, size * 0.45, 95.0, 2.0); // spine
            for rib in 0..6 {
                let y = size * (0.26 + 0.075 * rib as f64);
                canvas.ellipse(size * 0.29, y, size * 0.16, size * 0.008, 22.0, 1.5);
                canvas.ellipse(size * 0.71, y, size * 0.16, size * 0.008, 22.0, 1.5);
            }
            [
                (
                    Side::Right,
                    right_lung_x,
                    lung_y,
                    lung_rx * 0.75,
                    lung_ry * 0.7,
                ),
                (
                    Side::Left,
                    left_lung_x,
                    lung_y,
                    lung_rx * 0.75,
                    lung_ry * 0.7,
                ),
            ]
        }
        Family::HeadMr => {
            let (cx, cy) = (size * 0.5, size * 0.5);
            canvas.ellipse(cx, cy, size * 0.40, size * 0.46, 190.0, 3.0); // skull
            canvas.ellipse(cx, cy, size * 0.36, size * 0.42, -120.0, 3.0); // brain inside
            canvas.ellipse(
                cx - size * 0.07,
                cy - size * 0.03,
                size * 0.045,
                size * 0.12,
                -35.0,
                3.0,
            );
            canvas.ellipse(
                cx + size * 0.07,
                cy - size * 0.03,
                size * 0.045,
                size * 0.12,
                -35.0,
                3.0,
            );
            canvas.ellipse(cx, cy + size * 0.22, size * 0.10, size * 0.06, 12.0, 4.0);
            [
                (Side::Right, cx - size * 0.2, cy, size * 0.1, size * 0.22),
                (Side::Left, cx + size * 0.2, cy, size * 0.1, size * 0.22),
            ]
        }
    };
    let mut lesions = Vec::new();
    let first_side = if rng.chance(0.5) { 0 } else { 1 };
    for index in 0..count {
        // Two lesions: one on each side, so "which side" stays answerable for one-lesion cases.
        let (side, cx, cy, rx, ry) = sides[(first_side + index) % 2];
        let large = rng.chance(0.5);
        let radius = if large {
            size * rng.range(0.07, 0.09)
        } else {
            size * rng.range(0.035, 0.05)
        };
        let radius = radius * (1.0 + 0.4 * (1.0 - hard));
        let angle = rng.range(0.0, 2.0 * std::f64::consts::PI);
        let reach = rng.unit().sqrt();
        let (x, y) = (cx + angle.cos() * rx * reach, cy + angle.sin() * ry * reach);
        let bright = family == Family::ChestXray || rng.chance(0.7);
        let strength = rng.range(55.0, 90.0) * (1.0 + 0.5 * (1.0 - hard));
        let contrast = if bright { strength } else { -strength * 0.6 };
        canvas.blob(x, y, radius, contrast);
        lesions.push(Lesion {
            side,
            centre_px: [x, y],
            radius_px: radius,
            contrast,
            large,
            xyxy_px: [x - radius, y - radius, x + radius, y + radius],
        });
    }
    let mut distractors = Vec::new();
    let mut distractor_boxes = Vec::new();
    if rng.chance(recipe.distractor_probability) {
        let distractor = [
            Distractor::MarkerLetter,
            Distractor::Wire,
            Distractor::BorderLabel,
        ][rng.below(3)];
        distractor_boxes.push(draw_distractor(&mut canvas, &mut rng, distractor, size));
        distractors.push(distractor);
    }
    // The side marker draws from a stream of its own, so every other pixel stays as it was.
    let mut marker_rng = Rng::new(seed ^ 0x00C0_FF1C_7000_0001);
    let draw = marker_rng.unit();
    let (conflict, shortcut) = match lesions.as_slice() {
        [_] if draw < recipe.conflict_probability => (true, false),
        [_] if draw < recipe.conflict_probability + recipe.shortcut_probability => (false, true),
        _ => (false, false),
    };
    if conflict || shortcut {
        // Patient right is image left: a marker for side S sits in S's upper corner.
        let named = if conflict {
            lesions[0].side.other()
        } else {
            lesions[0].side
        };
        distractor_boxes.push(draw_marker(
            &mut canvas,
            size,
            named == Side::Right,
            named == Side::Left,
        ));
        distractors.push(Distractor::MarkerLetter);
    }
    canvas.noise(&mut rng, 2.0 + 6.0 * hard);
    Case {
        family,
        seed,
        image: canvas.into_image(),
        lesions,
        distractors,
        distractor_boxes,
        conflict,
        shortcut,
    }
}

/// A block side-marker letter ("L" or "R") in the upper left or right corner, as
/// radiographers place them; returns its box.
fn draw_marker(canvas: &mut Canvas, size: f64, left_corner: bool, letter_l: bool) -> [f64; 4] {
    let (x, y) = (
        if left_corner {
            size * 0.05
        } else {
            size * 0.83
        },
        size * 0.05,
    );
    let (w, h, stroke) = (size * 0.1, size * 0.13, size * 0.025);
    canvas.rect(x, y, x + stroke, y + h, 250.0);
    if letter_l {
        canvas.rect(x, y + h - stroke, x + w, y + h, 250.0);
    } else {
        canvas.rect(x, y, x + w, y + stroke, 250.0); // R: bowl and leg
        canvas.rect(x + w - stroke, y, x + w, y + h / 2.0, 250.0);
        canvas.rect(
            x,
            y + h / 2.0 - stroke / 2.0,
            x + w,
            y + h / 2.0 + stroke / 2.0,
            250.0,
        );
        canvas.line(&[(x + w / 2.0, y + h / 2.0), (x + w, y + h)], stroke, 250.0);
    }
    [x, y, x + w, y + h]
}

/// Draw `distractor` where `rng` says; returns its box (xyxy px).
fn draw_distractor(
    canvas: &mut Canvas,
    rng: &mut Rng,
    distractor: Distractor,
    size: f64,
) -> [f64; 4] {
    match distractor {
        Distractor::MarkerLetter => {
            let left_corner = rng.chance(0.5);
            let letter_l = rng.chance(0.5);
            draw_marker(canvas, size, left_corner, letter_l)
        }
        Distractor::Wire => {
            let start = (rng.range(0.1, 0.9) * size, 0.0);
            let points: Vec<(f64, f64)> = (0..=12)
                .map(|k| {
                    let t = k as f64 / 12.0;
                    (start.0 + (t * 6.0).sin() * size * 0.08, t * size * 0.9)
                })
                .collect();
            canvas.line(&points, 2.0, 245.0);
            let (last_x, last_y) = points[points.len() - 1];
            canvas.ellipse(last_x, last_y, size * 0.03, size * 0.02, 200.0, 1.0);
            let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
            let fold =
                |v: &[f64], f: fn(f64, f64) -> f64, init: f64| v.iter().copied().fold(init, f);
            [
                fold(&xs, f64::min, f64::INFINITY).min(last_x - size * 0.03) - 1.0,
                fold(&ys, f64::min, f64::INFINITY) - 1.0,
                fold(&xs, f64::max, f64::NEG_INFINITY).max(last_x + size * 0.03) + 1.0,
                last_y + size * 0.02 + 1.0,
            ]
        }
        Distractor::BorderLabel => {
            let y = if rng.chance(0.5) { 0.0 } else { size * 0.9 };
            canvas.rect(
                size * 0.05,
                y + size * 0.02,
                size * 0.45,
                y + size * 0.08,
                235.0,
            );
            for k in 0..6 {
                let x = size * (0.08 + 0.06 * k as f64);
                canvas.rect(x, y + size * 0.035, x + size * 0.03, y + size * 0.065, 40.0);
            }
            [size * 0.05, y + size * 0.02, size * 0.45, y + size * 0.08]
        }
    }
}

impl Case {
    /// The organ word used in questions.
    fn place(&self, side: Side) -> String {
        match self.family {
            Family::ChestXray => format!("the {} lung", side.name()),
            Family::HeadMr => format!("the {} hemisphere", side.name()),
        }
    }

    fn lesion_word(&self) -> &'static str {
        match self.family {
            Family::ChestXray => "nodule",
            Family::HeadMr => "lesion",
        }
    }

    /// All questions this case can answer, localization first.
    pub fn questions(&self) -> Vec<QuestionAnswer> {
        let mut out = Vec::new();
        let qa = |question: String, answer: &str, label: &str| QuestionAnswer {
            question,
            answer: answer.to_string(),
            label: label.to_string(),
        };
        let word = self.lesion_word();
        for side in [Side::Left, Side::Right] {
            let present = self.lesions.iter().any(|l| l.side == side);
            out.push(qa(
                format!("Is there a {word} in {}?", self.place(side)),
                if present { "yes" } else { "no" },
                "localization",
            ));
        }
        if let [lesion] = self.lesions.as_slice() {
            out.push(qa(
                format!("Which side is the {word} on?"),
                lesion.side.name(),
                "localization",
            ));
            let brighter = if lesion.contrast > 0.0 { "yes" } else { "no" };
            out.push(qa(
                format!("Is the {word} brighter than the surrounding tissue?"),
                brighter,
                "attribute",
            ));
            out.push(qa(
                format!("Is the {word} large?"),
                if lesion.large { "yes" } else { "no" },
                "attribute",
            ));
        }
        out
    }

    /// Boxes of the lesions a question is about (all lesions on the asked side, or all).
    pub fn boxes_for(&self, question: &str) -> Vec<[f64; 4]> {
        let side = if question.contains(" left ") {
            Some(Side::Left)
        } else if question.contains(" right ") {
            Some(Side::Right)
        } else {
            None
        };
        self.lesions
            .iter()
            .filter(|l| side.is_none_or(|s| l.side == s))
            .map(|l| l.xyxy_px)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conflict case is the same case with one more marker, naming the side opposite its one
    /// lesion, in that side's upper corner (patient right = image left); no other case changes.
    #[test]
    fn conflict_markers_contradict_the_lesion_and_change_nothing_else() {
        let plain = Recipe::default();
        let conflicting = Recipe {
            conflict_probability: 1.0,
            ..Recipe::default()
        };
        let mut conflicts = 0;
        for seed in 0..80 {
            let a = generate(seed, &plain);
            let b = generate(seed, &conflicting);
            assert_eq!(a.lesions, b.lesions, "seed {seed}");
            assert!(!a.conflict);
            if a.lesions.len() != 1 {
                assert!(!b.conflict);
                assert_eq!(a.image, b.image, "seed {seed}");
                continue;
            }
            conflicts += 1;
            assert!(b.conflict);
            assert_eq!(b.distractors.len(), a.distractors.len() + 1);
            assert_eq!(b.distractors.last(), Some(&Distractor::MarkerLetter));
            let marker = *b.distractor_boxes.last().unwrap();
            let opposite = b.lesions[0].side.other();
            let centre_x = (marker[0] + marker[2]) / 2.0;
            let half = plain.size_px as f64 / 2.0;
            assert_eq!(centre_x < half, opposite == Side::Right, "seed {seed}");
            // The marker is drawn: its stroke along the left edge is bright in b, not in a.
            let (x, y) = (
                (marker[0] + 1.0) as u32,
                ((marker[1] + marker[3]) / 2.0) as u32,
            );
            assert!(b.image.get_pixel(x, y)[0] > 200, "seed {seed}");
            assert!(b.image.get_pixel(x, y)[0] > a.image.get_pixel(x, y)[0]);
        }
        assert!(conflicts >= 20, "{conflicts} one-lesion cases");
    }

    /// A shortcut marker names the lesion's own side, in its corner; a case never gets both.
    #[test]
    fn shortcut_markers_agree_with_the_lesion() {
        let shortcut = Recipe {
            shortcut_probability: 1.0,
            ..Recipe::default()
        };
        let half = shortcut.size_px as f64 / 2.0;
        let mut agreeing = 0;
        for seed in 0..60 {
            let a = generate(seed, &Recipe::default());
            let b = generate(seed, &shortcut);
            assert_eq!(a.lesions, b.lesions, "seed {seed}");
            assert!(!b.conflict);
            assert_eq!(b.shortcut, b.lesions.len() == 1, "seed {seed}");
            if b.shortcut {
                agreeing += 1;
                let marker = *b.distractor_boxes.last().unwrap();
                let centre_x = (marker[0] + marker[2]) / 2.0;
                assert_eq!(centre_x < half, b.lesions[0].side == Side::Right);
            }
        }
        assert!(agreeing >= 15, "{agreeing} one-lesion cases");
        // Half conflict, half shortcut: every one-lesion case gets exactly one of the two.
        let both = Recipe {
            conflict_probability: 0.5,
            shortcut_probability: 0.5,
            ..Recipe::default()
        };
        let cases: Vec<Case> = (0..200).map(|seed| generate(seed, &both)).collect();
        let one = cases.iter().filter(|c| c.lesions.len() == 1);
        assert!(one.clone().all(|c| c.conflict != c.shortcut));
        let conflicts = one.clone().filter(|c| c.conflict).count();
        assert!((30..=80).contains(&conflicts), "{conflicts} conflicts");
    }

    #[test]
    fn same_seed_same_case() {
        let recipe = Recipe::default();
        let a = generate(42, &recipe);
        let b = generate(42, &recipe);
        assert_eq!(a.image, b.image);
        assert_eq!(a.lesions, b.lesions);
        assert_ne!(generate(43, &recipe).image, a.image);
    }

    #[test]
    fn lesions_are_where_their_boxes_say() {
        let recipe = Recipe {
            lesion_count_weights: [0.0, 1.0, 0.0],
            distractor_probability: 0.0,
            ..Recipe::default()
        };
        for seed in 0..40 {
            let case = generate(seed, &recipe);
            let [lesion] = case.lesions.as_slice() else {
                panic!("one lesion expected")
            };
            let [x0, y0, x1, y1] = lesion.xyxy_px;
            assert!(
                x0 >= 0.0 && y0 >= 0.0 && x1 <= 192.0 && y1 <= 192.0,
                "box inside the image: {:?}",
                lesion.xyxy_px
            );
            // Radiological convention: the patient's left is on the image's right.
            let on_right_half = lesion.centre_px[0] > 96.0;
            assert_eq!(on_right_half, lesion.side == Side::Left, "seed {seed}");
            // The lesion changes the pixels at its centre the way its contrast says, relative
            // to the same case drawn without it.
            let plain = generate(
                seed,
                &Recipe {
                    lesion_count_weights: [1.0, 0.0, 0.0],
                    ..recipe.clone()
                },
            );
            let (cx, cy) = (lesion.centre_px[0] as u32, lesion.centre_px[1] as u32);
            let with = case.image.get_pixel(cx, cy)[0] as f64;
            let without = plain.image.get_pixel(cx, cy)[0] as f64;
            if lesion.contrast > 0.0 {
                assert!(with > without + 20.0, "seed {seed}: {with} vs {without}");
            } else {
                assert!(with < without - 10.0, "seed {seed}: {with} vs {without}");
            }
        }
    }

    #[test]
    fn answers_follow_the_lesions() {
        for seed in 0..30 {
            let case = generate(seed, &Recipe::default());
            for qa in case.questions() {
                if qa.question.starts_with("Is there") {
                    let side = if qa.question.contains("left") {
                        Side::Left
                    } else {
                        Side::Right
                    };
                    let present = case.lesions.iter().any(|l| l.side == side);
                    assert_eq!(qa.answer, if present { "yes" } else { "no" });
                    assert_eq!(case.boxes_for(&qa.question).is_empty(), !present);
                }
            }
        }
    }
}
