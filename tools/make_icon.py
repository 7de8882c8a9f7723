#!/usr/bin/env python3
"""Draw fovea's icon: assets/icon/fovea.png (256x256 RGBA), made once and committed.

A grey radiograph-like disc on a dark rounded square, with an attention "hot spot" (the
inferno colours fovea's heatmaps use) off centre, the fovea of the eye that looks at it.
Needs Pillow only: python3 tools/make_icon.py
"""
import math
import pathlib

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
OUT = pathlib.Path(__file__).resolve().parent.parent / "assets" / "icon" / "fovea.png"


def inferno(t):
    """A few stops of matplotlib's inferno, interpolated (t in 0..1)."""
    stops = [(0.0, (0, 0, 4)), (0.25, (87, 16, 110)), (0.5, (188, 55, 84)),
             (0.75, (249, 142, 9)), (1.0, (252, 255, 164))]
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return tuple(round(a + (b - a) * f) for a, b in zip(c0, c1))
    return stops[-1][1]


def main():
    icon = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((8, 8, SIZE - 8, SIZE - 8), radius=48, fill=(22, 27, 38, 255))
    # The image: a soft grey disc.
    disc = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(disc).ellipse((40, 40, SIZE - 40, SIZE - 40), fill=150)
    disc = disc.filter(ImageFilter.GaussianBlur(6))
    grey = Image.merge("RGBA", (disc, disc, disc, disc.point(lambda v: 255 if v else 0)))
    icon.alpha_composite(grey)
    # The attention spot: a Gaussian in inferno colours, alpha rising with the heat.
    spot = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    cx, cy, sigma = 150, 104, 30
    pixels = spot.load()
    for y in range(SIZE):
        for x in range(SIZE):
            heat = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))
            if heat > 0.04:
                r, g, b = inferno(heat)
                pixels[x, y] = (r, g, b, round(255 * min(1.0, heat * 1.4)))
    icon.alpha_composite(spot)
    # The pupil ring around the spot.
    draw = ImageDraw.Draw(icon)
    draw.ellipse((cx - 46, cy - 46, cx + 46, cy + 46), outline=(240, 240, 240, 255), width=6)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    icon.save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
