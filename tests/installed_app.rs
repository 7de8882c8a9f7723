//! The window of an installed fovea: tools/package.sh check-deb installs the .deb, starts
//! `/usr/bin/fovea --screenshot W.png` under Xvfb on the first demo case (nothing from the
//! source tree: another folder, a fresh HOME, no FOVEA_ASSETS) and runs this test on W.png
//! with `FOVEA_INSTALLED_WINDOW=W.png cargo test --test installed_app -- --ignored`.
//!
//! What the window must show, checked on its pixels: the size fovea asks for, egui's dark
//! panels around the image, the case's grey image in the central pane and the triage map over
//! it in inferno's warm colours (the app's default colormap), with the colour bar beside it.
//! A window that opened without the demo model or its case (an empty central pane), or a
//! frame that was never drawn (black), fails.

use std::path::PathBuf;

/// Counts of pixel kinds in a rectangle (x0, y0, x1, y1).
struct Counts {
    grey: usize,
    warm: usize,
    panel: usize,
    black: usize,
    all: usize,
}

fn count(img: &image::RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> Counts {
    let mut counts = Counts {
        grey: 0,
        warm: 0,
        panel: 0,
        black: 0,
        all: 0,
    };
    for y in y0..y1 {
        for x in x0..x1 {
            let [r, g, b] = img.get_pixel(x, y).0.map(i32::from);
            counts.all += 1;
            let spread = r.max(g).max(b) - r.min(g).min(b);
            if r + g + b == 0 {
                counts.black += 1;
            }
            if spread <= 6 && (40..=230).contains(&r) {
                counts.grey += 1;
            }
            // egui's dark panel fill, (27, 27, 27), give or take the anti-aliasing.
            if spread <= 2 && (22..=32).contains(&r) {
                counts.panel += 1;
            }
            // Inferno's upper half: orange to pale yellow (red high, blue well below).
            if r >= 200 && g >= 90 && b + 60 <= r {
                counts.warm += 1;
            }
        }
    }
    counts
}

#[test]
#[ignore = "run by tools/package.sh check-deb on the window an installed fovea saved"]
fn the_installed_fovea_showed_the_demo_case() {
    let path = PathBuf::from(
        std::env::var_os("FOVEA_INSTALLED_WINDOW")
            .expect("FOVEA_INSTALLED_WINDOW: the PNG `fovea --screenshot` saved"),
    );
    let img = image::open(&path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .to_rgb8();
    // The inner size fovea asks for (src/app/mod.rs), at one pixel per point under Xvfb.
    assert_eq!(img.dimensions(), (1400, 900), "{}", path.display());

    // Left and right side panels: egui's dark fill, the cases list and controls on it.
    let left = count(&img, (0, 40, 300, 880));
    let right = count(&img, (1000, 40, 1400, 880));
    for (name, side) in [("left", &left), ("right", &right)] {
        assert!(
            side.panel * 2 > side.all,
            "the {name} panel is not egui's dark panel: {} of {} pixels",
            side.panel,
            side.all
        );
    }
    // The central pane: the image (grey) under the triage map (warm colours).
    let centre = count(&img, (340, 120, 980, 840));
    assert!(
        centre.black * 10 < centre.all * 9,
        "the central pane is black: the frame was not drawn"
    );
    assert!(
        centre.grey > 20_000,
        "no grey image in the central pane: {} grey pixels",
        centre.grey
    );
    assert!(
        centre.warm > 500,
        "no triage map over the image: {} warm pixels",
        centre.warm
    );
    // Outside the central pane nothing is warm but the icon-free chrome: the heat is the map's.
    assert!(
        left.warm < 50,
        "warm pixels in the left panel ({}): the map is not where the image is",
        left.warm
    );
}
