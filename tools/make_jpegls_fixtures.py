#!/usr/bin/env python3
"""Write JPEG-LS reference fixtures for the Rust JPEG-LS decoder's tests.

Every fixture is a `.jls` codestream plus the expected samples (`.raw`:
pixel-interleaved, row-major, colour transform undone; 1 byte per sample
when bits <= 8, else 2 bytes little-endian), listed in `manifest.json`.

The expected samples never come from the Rust decoder: they are decoded by
CharLS (through imagecodecs) and by libjpeg (pylibjpeg-libjpeg), which must
agree (libjpeg does not apply HP colour transforms, so for those the
documented inverse is applied to its output here); lossless cases must also
equal the original image.

LSE segments with MAXVAL below 2^P - 1 are not taken from CharLS: CharLS
2.4.3 writes such a MAXVAL but keeps coding with RANGE and LIMIT of 2^P - 1,
unlike T.87 A.2.1, and neither libjpeg nor the HP/UBC reference decodes
those streams as CharLS does. Those cases (`ubc_*`) come from the HP/UBC
reference encoder (SPMG/JPEG-LS V.2.1, `locoe`, which takes MAXVAL from the
PGM header), decoded by its `locod` and by libjpeg, which must agree, and
equal to the original when lossless. Pass `--ubc DIR` (holding locoe and
locod) to regenerate them; without it the existing ubc_* fixtures are kept.
The UBC code is in GDCM's history (commit 650a4c659, Utilities/jpeg_ls);
for a 64-bit build: `typedef unsigned int dword` in both global.h, drop
`#define POW2`, set `msgfile = stdout` at the start of the encoder's main,
and write `if (feof(tablefile))`; that build reads and writes 16-bit PGM
samples in native (little-endian) order.

Sources:
- generated images (seeded RNG), encoded with CharLS 2.x through its C API
  (ctypes on the libcharls shipped inside imagecodecs), which exposes
  interleave mode, NEAR, HP colour transforms and preset parameters;
- streams with restart markers, assembled from CharLS-coded strips (every
  restart interval is coded independently: contexts reset, previous line 0;
  CharLS and libjpeg must both decode the joined stream to the strips);
- the JPEG-LS files of pydicom's test corpus (MIT licensed), each frame's
  codestream and pixel_array (as unsigned stored bit patterns).

Usage (in a venv with jpegls_fixtures_requirements.txt installed):
    python make_jpegls_fixtures.py [--out DIR] [--corpus DIR] [--ubc DIR] [--bench DIR]
"""
import argparse
import ctypes
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import imagecodecs
import libjpeg
import pydicom
from pydicom.encaps import generate_frames

HERE = os.path.dirname(os.path.abspath(__file__))
ILV_NAMES = {0: "none", 1: "line", 2: "sample"}
HP_NAMES = {0: "none", 1: "hp1", 2: "hp2", 3: "hp3"}


# --------------------------------------------------------------------------
# CharLS C API through ctypes
# --------------------------------------------------------------------------
class _FrameInfo(ctypes.Structure):
    _fields_ = [("width", ctypes.c_uint32), ("height", ctypes.c_uint32),
                ("bits_per_sample", ctypes.c_int32), ("component_count", ctypes.c_int32)]


class _PcParams(ctypes.Structure):
    _fields_ = [("maximum_sample_value", ctypes.c_int32), ("threshold1", ctypes.c_int32),
                ("threshold2", ctypes.c_int32), ("threshold3", ctypes.c_int32),
                ("reset_value", ctypes.c_int32)]


def _load_charls():
    base = os.path.dirname(imagecodecs.__file__)
    libs = glob.glob(os.path.join(base, os.pardir, "imagecodecs.libs", "libcharls*.so*"))
    libs += glob.glob(os.path.join(base, "*charls*.dll"))
    if not libs:
        sys.exit("libcharls not found inside the imagecodecs installation")
    lib = ctypes.CDLL(libs[0])
    lib.charls_jpegls_encoder_create.restype = ctypes.c_void_p
    lib.charls_get_version_string.restype = ctypes.c_char_p
    lib.charls_get_error_message.restype = ctypes.c_char_p
    return lib


CHARLS = _load_charls()


def charls_encode(img, bits, near=0, ilv=0, transform=0, preset=None, comment=None,
                  app=None, options=0):
    """Encode an (h, w) or (h, w, c) array with CharLS."""
    h, w = img.shape[:2]
    comps = 1 if img.ndim == 2 else img.shape[2]
    dtype = np.uint8 if bits <= 8 else np.uint16
    arr = img.astype(dtype)
    # CharLS takes planar input for ILV 0 and pixel-interleaved input otherwise.
    raw = np.ascontiguousarray(arr.transpose(2, 0, 1) if comps > 1 and ilv == 0 else arr).tobytes()
    lib = CHARLS
    enc = ctypes.c_void_p(lib.charls_jpegls_encoder_create())

    def check(e, what):
        if e:
            raise RuntimeError(f"CharLS {what}: {lib.charls_get_error_message(e).decode()}")
    try:
        fi = _FrameInfo(w, h, bits, comps)
        check(lib.charls_jpegls_encoder_set_frame_info(enc, ctypes.byref(fi)), "frame")
        check(lib.charls_jpegls_encoder_set_near_lossless(enc, ctypes.c_int32(near)), "near")
        check(lib.charls_jpegls_encoder_set_interleave_mode(enc, ctypes.c_int32(ilv)), "ilv")
        check(lib.charls_jpegls_encoder_set_encoding_options(enc, ctypes.c_int32(options)), "opt")
        if transform:
            check(lib.charls_jpegls_encoder_set_color_transformation(enc, ctypes.c_int32(transform)), "hp")
        if preset is not None:
            pc = _PcParams(*preset)
            check(lib.charls_jpegls_encoder_set_preset_coding_parameters(enc, ctypes.byref(pc)), "lse")
        size = ctypes.c_size_t(0)
        check(lib.charls_jpegls_encoder_get_estimated_destination_size(enc, ctypes.byref(size)), "size")
        cap = size.value + 4096
        dst = ctypes.create_string_buffer(cap)
        check(lib.charls_jpegls_encoder_set_destination_buffer(enc, dst, ctypes.c_size_t(cap)), "dst")
        if comment is not None:
            check(lib.charls_jpegls_encoder_write_comment(enc, comment, ctypes.c_size_t(len(comment))), "com")
        if app is not None:
            check(lib.charls_jpegls_encoder_write_application_data(
                enc, ctypes.c_int32(app[0]), app[1], ctypes.c_size_t(len(app[1]))), "app")
        src = ctypes.create_string_buffer(raw, len(raw))
        check(lib.charls_jpegls_encoder_encode_from_buffer(
            enc, src, ctypes.c_size_t(len(raw)), ctypes.c_uint32(0)), "encode")
        n = ctypes.c_size_t(0)
        check(lib.charls_jpegls_encoder_get_bytes_written(enc, ctypes.byref(n)), "written")
        return dst.raw[:n.value]
    finally:
        lib.charls_jpegls_encoder_destroy(enc)


# --------------------------------------------------------------------------
# Independent decoding and cross-checks
# --------------------------------------------------------------------------
def hp_inverse(t, bits, a):
    """Inverse HP transform (formulas as published by HP / CharLS)."""
    if t == 0:
        return a
    a = a.astype(np.int64)
    rng_, mask = 1 << bits, (1 << bits) - 1
    v1, v2, v3 = a[..., 0], a[..., 1], a[..., 2]
    if t == 1:
        r, g, b = (v1 + v2 - rng_ // 2) & mask, v2, (v3 + v2 - rng_ // 2) & mask
    elif t == 2:
        r = (v1 + v2 - rng_ // 2) & mask
        g = v2
        b = (v3 + ((r + g) >> 1) - rng_ // 2) & mask
    else:
        g = (v1 - ((v2 + v3) >> 2) + rng_ // 4) & mask
        r, b = (v3 + g - rng_ // 2) & mask, (v2 + g - rng_ // 2) & mask
    out = a.copy()
    out[..., 0], out[..., 1], out[..., 2] = r, g, b
    return out


def reference_decode(stream, bits, transform=0, libjpeg_ok=True):
    """Decode with CharLS and libjpeg; they must agree. Returns (array, refs)."""
    d = np.asarray(imagecodecs.jpegls_decode(stream)).astype(np.int64)
    refs = ["charls"]
    if libjpeg_ok:
        lj = np.asarray(libjpeg.decode(stream)).astype(np.int64)
        lj = hp_inverse(transform, bits, lj)
        if lj.shape != d.shape or not np.array_equal(lj, d):
            raise SystemExit("CharLS and libjpeg disagree on a fixture")
        refs.append("libjpeg")
    return d, refs


# --------------------------------------------------------------------------
# Test images
# --------------------------------------------------------------------------
def pattern(kind, h, w, comps, maxval, rng):
    y, x = np.mgrid[0:h, 0:w]
    planes = []
    for c in range(comps):
        if kind == "noise":
            p = rng.integers(0, maxval + 1, (h, w))
        elif kind == "flat":
            p = np.full((h, w), (maxval * (2 + c)) // 7)
        elif kind == "gradient":
            p = ((x * 3 + y * 5 + c * 7) * maxval) // max(1, 3 * w + 5 * h + 7 * comps)
        elif kind == "runs":
            # Long flat runs, interrupted by steps and isolated spikes.
            p = np.full((h, w), maxval // 3)
            for row in range(0, h, 3):
                s = int(rng.integers(0, max(1, w)))
                p[row, s:] = int(rng.integers(0, maxval + 1))
            spikes = rng.random((h, w)) < 0.04
            p = np.where(spikes, rng.integers(0, maxval + 1, (h, w)), p)
        elif kind == "mixed":
            p = ((x + 2 * y) * maxval) // max(1, w + 2 * h)
            p = p + rng.integers(-2, 3, (h, w))
            p[h // 2:, : w // 2] = maxval // 2 + c
            p[h // 2:, w // 2:] = rng.integers(0, maxval + 1, (h - h // 2, w - w // 2))
        else:
            raise ValueError(kind)
        planes.append(np.clip(p, 0, maxval))
    a = np.stack(planes, -1)
    return a[..., 0] if comps == 1 else a


# --------------------------------------------------------------------------
# Restart-marker streams
# --------------------------------------------------------------------------
def find_marker(data, start):
    i = start
    while i + 1 < len(data):
        if data[i] == 0xFF and data[i + 1] >= 0x80:
            return i
        i += 1
    return len(data)


def split_stream(s):
    """Header bytes before the first SOS, and [(sos_segment, ecs)] per scan."""
    i, header_end, scans = 2, None, []
    while i < len(s):
        assert s[i] == 0xFF
        m = s[i + 1]
        if m == 0xD9:
            break
        ln = (s[i + 2] << 8) | s[i + 3]
        seg = s[i:i + 2 + ln]
        i += 2 + ln
        if m == 0xDA:
            if header_end is None:
                header_end = i - len(seg)
            end = find_marker(s, i)
            scans.append((seg, s[i:end]))
            i = end
    return s[:header_end], scans


def restart_stream(img, bits, near, ilv, interval):
    """Codestream of `img` with a restart marker every `interval` lines."""
    h = img.shape[0]
    header, full_scans = split_stream(charls_encode(img, bits, near, ilv))
    strips = [split_stream(charls_encode(img[y:y + interval], bits, near, ilv))[1]
              for y in range(0, h, interval)]
    out = bytearray(header)
    out += bytes([0xFF, 0xDD, 0, 4, interval >> 8, interval & 0xFF])
    for k, (sos, _) in enumerate(full_scans):
        out += sos
        for j, strip in enumerate(strips):
            if j:
                out += bytes([0xFF, 0xD0 + (j - 1) % 8])
            out += strip[k][1]
    out += b"\xff\xd9"
    return bytes(out)


# --------------------------------------------------------------------------
# Fixture writing
# --------------------------------------------------------------------------
class Writer:
    def __init__(self, out, keep_prefix=None):
        self.out = out
        self.cases = []
        os.makedirs(out, exist_ok=True)
        kept = []
        manifest = os.path.join(out, "manifest.json")
        if keep_prefix and os.path.exists(manifest):
            with open(manifest) as f:
                kept = [c for c in json.load(f)["cases"] if c["name"].startswith(keep_prefix)]
        keep = {c["file"] for c in kept} | {c["raw"] for c in kept}
        for f in glob.glob(os.path.join(out, "*.jls")) + glob.glob(os.path.join(out, "*.raw")):
            if os.path.basename(f) not in keep:
                os.remove(f)
        self.kept = kept

    def add(self, name, stream, expected, *, bits, near, ilv, transform, refs, source,
            original=None, restart=0):
        expected = np.asarray(expected).astype(np.int64)
        h, w = expected.shape[:2]
        comps = 1 if expected.ndim == 2 else expected.shape[2]
        if original is not None:
            orig = np.asarray(original).astype(np.int64)
            if near == 0 and not np.array_equal(orig, expected):
                raise SystemExit(f"{name}: lossless decode differs from the original")
            if near > 0 and transform == 0 and np.abs(orig - expected).max() > near:
                raise SystemExit(f"{name}: near-lossless error exceeds NEAR")
        raw_bytes = 1 if bits <= 8 else 2
        raw = expected.astype("<u1" if raw_bytes == 1 else "<u2").tobytes()
        with open(os.path.join(self.out, name + ".jls"), "wb") as f:
            f.write(stream)
        with open(os.path.join(self.out, name + ".raw"), "wb") as f:
            f.write(raw)
        case = {
            "name": name, "file": name + ".jls", "raw": name + ".raw", "raw_bytes": raw_bytes,
            "width": w, "height": h, "components": comps, "bits": bits, "near": near,
            "interleave": ILV_NAMES[ilv], "transform": HP_NAMES[transform], "restart": restart,
            "ref": "+".join(refs), "lossless_original": original is not None and near == 0,
        }
        if source:
            case["source"] = source
        self.cases.append(case)

    def generated(self, name, img, bits, near=0, ilv=0, transform=0, preset=None,
                  libjpeg_ok=True, **kw):
        s = charls_encode(img, bits, near, ilv, transform, preset, **kw)
        d, refs = reference_decode(s, bits, transform, libjpeg_ok)
        if not libjpeg_ok:
            refs.append("original")
        self.add(name, s, d, bits=bits, near=near, ilv=ilv if img.ndim == 3 else 0,
                 transform=transform, refs=refs, source=None,
                 original=img)

    def finish(self):
        charls = CHARLS.charls_get_version_string().decode()
        self.cases += [c for c in self.kept if c["name"] not in {k["name"] for k in self.cases}]
        with open(os.path.join(self.out, "manifest.json"), "w") as f:
            f.write("{\n" + json.dumps({
                "encoder": f"CharLS {charls} (C API via ctypes, from imagecodecs {imagecodecs.__version__})",
                "refs": {
                    "charls": f"CharLS {charls} decoder via imagecodecs.jpegls_decode",
                    "libjpeg": f"libjpeg (pylibjpeg-libjpeg {libjpeg.__version__}); HP inverse applied here",
                    "ubc": "HP/UBC reference decoder locod (SPMG/JPEG-LS V.2.1)",
                    "pydicom": f"pydicom {pydicom.__version__} pixel_array, unsigned stored bits",
                    "original": "equals the lossless original image (for pydicom: its uncompressed twin file)",
                },
                "raw": "expected samples, row-major, pixel-interleaved, transform undone; "
                       "raw_bytes 1 = u8, 2 = u16 little-endian",
                "generated": "cases named g*: seeded images coded by the CharLS encoder; "
                             "ubc_*: coded by the HP/UBC reference encoder (SPMG/JPEG-LS V.2.1)",
            })[1:-1] + ',\n"cases": [\n')
            f.write(",\n".join(json.dumps(c) for c in self.cases))
            f.write("\n]}\n")


# Uncompressed twins of corpus files, to check lossless decodes against.
CORPUS_ORIGINALS = {"MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm"}


def corpus_cases(wr, corpus):
    """The JPEG-LS files of pydicom's test corpus."""
    files = sorted(glob.glob(os.path.join(corpus, "**", "*"), recursive=True))
    for path in files:
        if os.path.isdir(path):
            continue
        try:
            ds = pydicom.dcmread(path, force=True)
            ts = str(ds.file_meta.TransferSyntaxUID)
        except Exception:
            continue
        if ts not in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
            continue
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        arr = ds.pixel_array
        arr = arr.reshape((nframes,) + arr.shape[-3 if ds.SamplesPerPixel > 1 else -2:])
        frames = list(generate_frames(ds.PixelData, number_of_frames=nframes))
        base = os.path.splitext(os.path.relpath(path, corpus))[0].replace(os.sep, "_")
        for i, frame in enumerate(frames):
            hdr = frame[frame.find(b"\xff\xf7"):]
            bits = hdr[4]
            expected = arr[i].astype(np.int64) & ((1 << bits) - 1)
            d, refs = reference_decode(frame, bits)
            if not np.array_equal(d, expected):
                raise SystemExit(f"{path}: pydicom pixel_array differs from CharLS")
            sos = frame.find(b"\xff\xda")
            ns = frame[sos + 4]
            near, ilv = frame[sos + 5 + 2 * ns], frame[sos + 6 + 2 * ns]
            name = f"pydicom_{base}" + (f"_f{i}" if nframes > 1 else "")
            refs = refs + ["pydicom"]
            original = None
            twin = CORPUS_ORIGINALS.get(os.path.basename(path))
            if twin and os.path.exists(os.path.join(os.path.dirname(path), twin)):
                tw = pydicom.dcmread(os.path.join(os.path.dirname(path), twin)).pixel_array
                original = tw.reshape(arr.shape)[i].astype(np.int64) & ((1 << bits) - 1)
                refs.append("original")
            wr.add(name, frame, expected, bits=bits, near=near, ilv=ilv, transform=0,
                   refs=refs, original=original,
                   source=f"pydicom corpus {os.path.relpath(path, corpus)} frame {i}")


def generated_cases(wr):
    rng = np.random.default_rng(20240611)
    # Every bit depth and NEAR on a mixed (run + regular mode) 17x13 image.
    for bits in (2, 5, 8, 10, 12, 15, 16):
        maxval = (1 << bits) - 1
        for near in (0, 1, 3) + ((7,) if bits == 8 else ()):
            if near > maxval // 2:
                continue
            img = pattern("mixed", 13, 17, 1, maxval, rng)
            wr.generated(f"g{bits:02}_mono_mixed_17x13_n{near}", img, bits, near)
    # Patterns: flat (run mode), noise (regular mode), gradients, interrupted runs.
    for bits in (8, 12, 16):
        maxval = (1 << bits) - 1
        for kind in ("flat", "noise", "gradient", "runs"):
            for near in (0, 2):
                img = pattern(kind, 20, 32, 1, maxval, rng)
                wr.generated(f"g{bits:02}_mono_{kind}_32x20_n{near}", img, bits, near)
    # Odd sizes.
    for bits in (8, 12):
        maxval = (1 << bits) - 1
        for (w, h) in ((1, 1), (1, 23), (29, 1), (17, 13), (2, 2)):
            for near in (0, 1):
                img = pattern("runs" if w * h > 4 else "noise", h, w, 1, maxval, rng)
                wr.generated(f"g{bits:02}_mono_odd_{w}x{h}_n{near}", img, bits, near)
    # Three (and four) components, every interleave mode.
    for bits in (5, 8, 12, 16):
        maxval = (1 << bits) - 1
        for ilv in (0, 1, 2):
            for near in (0, 3):
                for kind in ("mixed", "runs") if bits in (8, 16) else ("mixed",):
                    img = pattern(kind, 13, 17, 3, maxval, rng)
                    wr.generated(f"g{bits:02}_rgb_{kind}_17x13_{ILV_NAMES[ilv]}_n{near}",
                                 img, bits, near, ilv)
    for ilv in (0, 1, 2):
        img = pattern("mixed", 9, 11, 4, 255, rng)
        wr.generated(f"g08_4comp_mixed_11x9_{ILV_NAMES[ilv]}_n0", img, 8, 0, ilv)
    img = pattern("flat", 6, 300, 3, 255, rng)
    img[3, 290] = 7
    wr.generated("g08_rgb_longrun_300x6_sample_n0", img, 8, 0, 2)
    # HP colour transforms (CharLS writes them for 8 and 16 bits, ILV 1 and 2).
    for bits in (8, 16):
        maxval = (1 << bits) - 1
        for t in (1, 2, 3):
            for ilv in (1, 2):
                img = pattern("mixed", 13, 17, 3, maxval, rng)
                wr.generated(f"g{bits:02}_rgb_hp{t}_17x13_{ILV_NAMES[ilv]}_n0", img, bits, 0, ilv, t)
    img = pattern("mixed", 13, 17, 3, 255, rng)
    wr.generated("g08_rgb_hp2_17x13_sample_n2", img, 8, 2, 2, 2)
    # LSE preset coding parameters.
    img = pattern("mixed", 24, 40, 1, 4095, rng)
    wr.generated("g12_mono_lse_thresholds_40x24_n0", img, 12, 0, preset=(0, 10, 20, 30, 32))
    wr.generated("g12_mono_lse_thresholds_40x24_n1", img, 12, 1, preset=(0, 10, 20, 30, 16))
    img = pattern("mixed", 13, 17, 3, 65535, rng)
    wr.generated("g16_rgb_lse_jai_17x13_none_n0", img, 16, 0, 0, options=4)
    # COM and APPn segments.
    img = pattern("mixed", 13, 17, 1, 255, rng)
    wr.generated("g08_mono_com_app_17x13_n0", img, 8, 0, comment=b"fovea test",
                 app=(5, b"some application data"))
    # Restart intervals (DRI + RSTm, wrapping past RST7).
    for (name, bits, comps, ilv, near, interval) in (
            ("g08_mono_restart", 8, 1, 0, 0, 4), ("g12_mono_restart", 12, 1, 0, 2, 3),
            ("g08_rgb_restart_none", 8, 3, 0, 0, 5), ("g08_rgb_restart_line", 8, 3, 1, 0, 4),
            ("g16_rgb_restart_sample", 16, 3, 2, 1, 4)):
        img = pattern("mixed", 41, 19, comps, (1 << bits) - 1, rng)
        s = restart_stream(img, bits, near, ilv, interval)
        d, refs = reference_decode(s, bits)
        strips = [reference_decode(charls_encode(img[y:y + interval], bits, near, ilv), bits)[0]
                  for y in range(0, img.shape[0], interval)]
        if not np.array_equal(np.concatenate(strips), d):
            raise SystemExit(f"{name}: restart stream differs from its strips")
        wr.add(f"{name}_19x41_n{near}", s, d, bits=bits, near=near, ilv=ilv if comps > 1 else 0,
               transform=0, refs=refs, source="CharLS-coded strips joined with DRI/RSTm",
               original=img, restart=interval)


def ubc_cases(wr, ubc):
    """LSE with MAXVAL < 2^P - 1, coded by the HP/UBC reference encoder."""
    rng = np.random.default_rng(4242)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, dec = (os.path.join(tmp, n) for n in ("in.pgm", "out.jls", "dec.pgm"))
        for bits, maxval, near, kind in ((12, 3000, 0, "mixed"), (12, 3000, 2, "mixed"),
                                         (10, 1000, 0, "runs"), (8, 200, 0, "mixed"),
                                         (16, 40000, 3, "mixed"), (16, 40000, 0, "noise")):
            img = pattern(kind, 24, 40, 1, maxval, rng)
            with open(src, "wb") as f:
                f.write(f"P5\n40 24\n{maxval}\n".encode())
                f.write(img.astype("<u2" if maxval > 255 else "u1").tobytes())
            subprocess.run([os.path.join(ubc, "locoe"), f"-e{near}", src, "-o" + dst],
                           check=False, capture_output=True)
            subprocess.run([os.path.join(ubc, "locod"), "-i" + dst, "-o" + dec],
                           check=False, capture_output=True)
            with open(dst, "rb") as f:
                s = f.read()
            with open(dec, "rb") as f:
                raw = f.read()
            header_end = [i for i, b in enumerate(raw) if b == 10][2] + 1
            u = np.frombuffer(raw[header_end:], dtype="<u2" if maxval > 255 else "u1")
            u = u.reshape(img.shape).astype(np.int64)
            if s[s.find(b"\xff\xf7") + 4] != bits or b"\xff\xf8" not in s:
                raise SystemExit(f"UBC stream for MAXVAL {maxval} lacks the expected P / LSE")
            lj = np.asarray(libjpeg.decode(s)).astype(np.int64)
            if not np.array_equal(lj, u):
                raise SystemExit(f"UBC and libjpeg disagree on MAXVAL {maxval} NEAR {near}")
            wr.add(f"ubc_{bits:02}_mono_lse_maxval{maxval}_{kind}_40x24_n{near}", s, u, bits=bits,
                   near=near, ilv=0, transform=0, refs=["ubc", "libjpeg"] + (["original"] if near == 0 else []),
                   source="HP/UBC reference encoder, LSE MAXVAL from the PGM header", original=img)


def bench(out):
    """A 512x512 16-bit image for timing (not a fixture: too large)."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:512, 0:512]
    img = np.clip((x * 60 + y * 40) + rng.normal(0, 300, (512, 512)), 0, 65535).astype(np.uint16)
    img[100:200, 50:400] = 1000
    s = charls_encode(img, 16)
    d, _ = reference_decode(s, 16)
    with open(os.path.join(out, "bench_512x512_16bit.jls"), "wb") as f:
        f.write(s)
    with open(os.path.join(out, "bench_512x512_16bit.raw"), "wb") as f:
        f.write(d.astype("<u2").tobytes())
    print(f"bench: {len(s)} bytes in {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, os.pardir, "fixtures"))
    ap.add_argument("--corpus", default=os.environ.get(
        "PYDICOM_CORPUS", os.path.join(HERE, os.pardir, "tests", "data", "pydicom-corpus")))
    ap.add_argument("--ubc", help="directory with the HP/UBC reference locoe and locod")
    ap.add_argument("--bench", help="also write a 512x512 16-bit timing case here")
    args = ap.parse_args()
    wr = Writer(os.path.normpath(args.out), keep_prefix=None if args.ubc else "ubc_")
    if os.path.isdir(args.corpus):
        corpus_cases(wr, args.corpus)
    else:
        print(f"note: no pydicom corpus at {args.corpus}; corpus cases skipped")
    generated_cases(wr)
    if args.ubc:
        ubc_cases(wr, args.ubc)
    wr.finish()
    total = sum(os.path.getsize(f) for f in glob.glob(os.path.join(wr.out, "*")))
    print(f"{len(wr.cases)} cases, {total} bytes in {wr.out}")
    if args.bench:
        bench(args.bench)


if __name__ == "__main__":
    main()
