// fovea's image + attention overlay pipeline: one full-rect triangle pair per pane.
// Raw modality values go to the GPU; window/level, MONOCHROME1 inversion, the colormap, the
// heatmap blending and the token-mask outline happen here.
// Keep `Uniforms` in sync with `OverlayUniforms` in src/app/overlay.rs, and the colormap stops
// with `Colormap::stops` in src/render.rs.

struct Uniforms {
    image_size: vec2<f32>,      // image pixels
    grid_size: vec2<f32>,       // tokens (cols, rows)
    view_min: vec2<f32>,        // visible image region, image pixels
    view_max: vec2<f32>,
    input_origin: vec2<f32>,    // model-input mapping: input = (image - origin) * scale
    input_scale: vec2<f32>,
    input_size: vec2<f32>,      // model input (width, height), pixels
    window_center: f32,
    window_width: f32,
    invert: f32,
    is_colour: f32,
    colour_scale: f32,
    heat_opacity: f32,
    heat_smooth: f32,
    colormap: f32,              // 0 inferno, 1 viridis, 2 jet, 3 diverging (0.5 = zero)
    mask_mode: f32,             // 0 none, 1 outline, 2 fill
    show_heat: f32,
};

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var image_tex: texture_2d<f32>;
@group(0) @binding(2) var heat_tex: texture_2d<f32>;
@group(0) @binding(3) var mask_tex: texture_2d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // Two triangles covering the callback rect (clip space -1..1), uv 0..1 top-left origin.
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0), vec2<f32>(0.0, 1.0),
    );
    let uv = corners[index];
    var out: VertexOut;
    out.position = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn inferno(t: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 9>(
        vec3<f32>(0.001, 0.000, 0.014), vec3<f32>(0.122, 0.047, 0.282), vec3<f32>(0.333, 0.059, 0.427),
        vec3<f32>(0.533, 0.133, 0.416), vec3<f32>(0.729, 0.212, 0.333), vec3<f32>(0.890, 0.349, 0.200),
        vec3<f32>(0.976, 0.549, 0.039), vec3<f32>(0.976, 0.788, 0.196), vec3<f32>(0.988, 1.000, 0.643),
    );
    let p = clamp(t, 0.0, 1.0) * 8.0;
    let i = min(u32(floor(p)), 7u);
    return mix(stops[i], stops[i + 1u], p - f32(i));
}

fn viridis(t: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 11>(
        vec3<f32>(0.267, 0.005, 0.329), vec3<f32>(0.283, 0.141, 0.458), vec3<f32>(0.254, 0.265, 0.530),
        vec3<f32>(0.207, 0.372, 0.553), vec3<f32>(0.164, 0.471, 0.558), vec3<f32>(0.128, 0.567, 0.551),
        vec3<f32>(0.135, 0.659, 0.518), vec3<f32>(0.267, 0.749, 0.441), vec3<f32>(0.478, 0.821, 0.318),
        vec3<f32>(0.741, 0.873, 0.150), vec3<f32>(0.993, 0.906, 0.144),
    );
    let p = clamp(t, 0.0, 1.0) * 10.0;
    let i = min(u32(floor(p)), 9u);
    return mix(stops[i], stops[i + 1u], p - f32(i));
}

fn jet(t: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 6>(
        vec3<f32>(0.0, 0.0, 0.5), vec3<f32>(0.0, 0.0, 1.0), vec3<f32>(0.0, 1.0, 1.0),
        vec3<f32>(1.0, 1.0, 0.0), vec3<f32>(1.0, 0.0, 0.0), vec3<f32>(0.5, 0.0, 0.0),
    );
    let p = clamp(t, 0.0, 1.0) * 5.0;
    let i = min(u32(floor(p)), 4u);
    return mix(stops[i], stops[i + 1u], p - f32(i));
}

fn diverging(t: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 5>(
        vec3<f32>(0.230, 0.299, 0.754), vec3<f32>(0.552, 0.690, 0.996), vec3<f32>(0.865, 0.865, 0.865),
        vec3<f32>(0.958, 0.603, 0.482), vec3<f32>(0.706, 0.016, 0.150),
    );
    let p = clamp(t, 0.0, 1.0) * 4.0;
    let i = min(u32(floor(p)), 3u);
    return mix(stops[i], stops[i + 1u], p - f32(i));
}

fn colormap(t: f32) -> vec3<f32> {
    if (u.colormap < 0.5) { return inferno(t); }
    if (u.colormap < 1.5) { return viridis(t); }
    if (u.colormap < 2.5) { return jet(t); }
    return diverging(t);
}

// DICOM PS3.3 C.11.2.1.2.1 LINEAR window (same as imaging::window::apply_window).
fn window_level(value: f32) -> f32 {
    let width = max(u.window_width, 1.0);
    let low = u.window_center - 0.5 - (width - 1.0) / 2.0;
    let high = u.window_center - 0.5 + (width - 1.0) / 2.0;
    if (value <= low) { return 0.0; }
    if (value > high) { return 1.0; }
    return (value - (u.window_center - 0.5)) / max(width - 1.0, 1e-6) + 0.5;
}

fn heat_at(cell: vec2<f32>) -> f32 {
    let size = vec2<i32>(u.grid_size);
    if (u.heat_smooth < 0.5) {
        let c = clamp(vec2<i32>(floor(cell)), vec2<i32>(0), size - vec2<i32>(1));
        return textureLoad(heat_tex, c, 0).r;
    }
    // Bilinear between cell centres (R32Float is not filterable everywhere: do it by hand).
    let p = cell - vec2<f32>(0.5);
    let base = vec2<i32>(floor(p));
    let f = p - floor(p);
    let c00 = clamp(base, vec2<i32>(0), size - vec2<i32>(1));
    let c11 = clamp(base + vec2<i32>(1), vec2<i32>(0), size - vec2<i32>(1));
    let a = textureLoad(heat_tex, vec2<i32>(c00.x, c00.y), 0).r;
    let b = textureLoad(heat_tex, vec2<i32>(c11.x, c00.y), 0).r;
    let c = textureLoad(heat_tex, vec2<i32>(c00.x, c11.y), 0).r;
    let d = textureLoad(heat_tex, vec2<i32>(c11.x, c11.y), 0).r;
    return mix(mix(a, b, f.x), mix(c, d, f.x), f.y);
}

fn mask_at(cell: vec2<i32>) -> f32 {
    let size = vec2<i32>(u.grid_size);
    if (any(cell < vec2<i32>(0)) || any(cell >= size)) { return 0.0; }
    return textureLoad(mask_tex, cell, 0).r;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let image_px = mix(u.view_min, u.view_max, in.uv);
    // Where this pixel falls on the model's token grid (derivatives taken in uniform flow).
    let input_px = (image_px - u.input_origin) * u.input_scale;
    let cell = input_px / u.input_size * u.grid_size;
    let edge = fwidth(cell) * 1.5;
    var rgb = vec3<f32>(0.08, 0.08, 0.08);
    let inside = all(image_px >= vec2<f32>(0.0)) && all(image_px < u.image_size);
    if (inside) {
        let texel = textureLoad(image_tex, vec2<i32>(floor(image_px)), 0);
        if (u.is_colour > 0.5) {
            rgb = clamp(texel.rgb * u.colour_scale, vec3<f32>(0.0), vec3<f32>(1.0));
        } else {
            var level = window_level(texel.r);
            if (u.invert > 0.5) { level = 1.0 - level; }
            rgb = vec3<f32>(level);
        }
    }
    let in_grid = all(input_px >= vec2<f32>(0.0)) && all(input_px < u.input_size);
    if (in_grid) {
        if (u.show_heat > 0.5) {
            rgb = mix(rgb, colormap(heat_at(cell)), u.heat_opacity);
        }
        let c = vec2<i32>(floor(cell));
        let here = mask_at(c);
        if (u.mask_mode > 1.5 && here > 0.5) {
            rgb = mix(rgb, vec3<f32>(0.0, 0.0, 0.0), 0.55);
        }
        if (u.mask_mode > 0.5 && u.mask_mode < 1.5) {
            // Outline: this cell differs from a neighbour, and we are within ~1.5 screen px of
            // the shared edge (fwidth gives cells per screen pixel).
            let f = fract(cell);
            var border = false;
            if (f.x < edge.x && mask_at(c - vec2<i32>(1, 0)) != here) { border = true; }
            if (f.x > 1.0 - edge.x && mask_at(c + vec2<i32>(1, 0)) != here) { border = true; }
            if (f.y < edge.y && mask_at(c - vec2<i32>(0, 1)) != here) { border = true; }
            if (f.y > 1.0 - edge.y && mask_at(c + vec2<i32>(0, 1)) != here) { border = true; }
            if (border) { rgb = vec3<f32>(0.0, 0.86, 1.0); }
        }
    }
    return vec4<f32>(rgb, 1.0);
}
