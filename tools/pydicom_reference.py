#!/usr/bin/env python3
"""Write pydicom's view of every corpus file to tests/fixtures/dicom/pydicom_expected.json.

The Rust DICOM decoder is tested against this file; the Rust tests never run
Python.  Run it once after ``tools/fetch_pydicom_corpus.sh``; see tools/README.md.

Usage::

    python3 tools/pydicom_reference.py [--corpus DIR] [--out FILE]

Needs (exact pins in tools/pydicom_reference_requirements.txt):
pydicom==3.0.2 numpy pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle.
The versions actually imported are written to ``generator``.

Which files are DICOM
---------------------
Every regular file under the corpus root is tried (the ``.complete`` marker
written by the fetch script excepted), whatever its extension.  Each is read
with ``pydicom.dcmread(path, force=True)``:

* dcmread raises and the file has ``DICM`` at offset 128 -> ``rejected``
  (``error`` = exception type and message);
* dcmread raises otherwise, or the parsed data set has no Pixel Data, no file
  meta elements and no SOP Class UID -> ``not_dicom`` (``error`` says why);
* no (7FE0,0010) Pixel Data / Float / Double Float Pixel Data -> ``no_pixel_data``;
* ``ds.pixel_array`` or the modality LUT raises -> ``rejected``;
* otherwise -> ``decoded``.

Record fields (JSON object per file, ``files`` sorted by ``path``)
------------------------------------------------------------------
Always: ``path`` (relative to the corpus root, ``/``-separated; the committed
fixtures live at tests/fixtures/dicom/<path>), ``size`` (bytes), ``fixture``
(bool: file is in the committed subset), ``status`` (``decoded`` |
``rejected`` | ``no_pixel_data`` | ``not_dicom``), ``error`` (for
``rejected`` and ``not_dicom``: ``"<ExceptionType>: <message>"`` or the skip
reason), ``warnings`` (only if pydicom warned: list of messages, in order).

Header facts (whenever dcmread succeeded and the file counts as DICOM; null
when absent): ``has_preamble`` (``DICM`` at offset 128), ``has_file_meta``,
``transfer_syntax_uid``, ``lossy`` (transfer syntax is in
LOSSY_TRANSFER_SYNTAXES below), ``sop_class_uid``, ``modality``, ``rows``,
``columns``, ``number_of_frames`` (as in the file, null if absent),
``samples_per_pixel``, ``photometric_interpretation`` (as in the file),
``bits_allocated``, ``bits_stored``, ``high_bit``, ``pixel_representation``,
``planar_configuration``, ``rescale_slope``, ``rescale_intercept``,
``has_modality_lut_sequence``, ``window_center``, ``window_width`` (first
value if multi-valued), ``dose_grid_scaling``, ``lossy_image_compression``,
``pixel_data_keyword``.

Decoded only: ``decoded_photometric`` (photometric interpretation of the
array ``ds.pixel_array`` returns, as reported by pydicom's decoder metadata),
``decoded_properties`` (that whole metadata dict: the Image Pixel values that
describe the returned array), ``dtype`` / ``modality_dtype`` (numpy dtype of
the raw and the modality-LUT arrays, e.g. ``u1``, ``i2``, ``f8``),
``frame_count`` (frames decoded), ``frames`` (below), and for PALETTE COLOR
``palette_rgb`` = ``{"dtype", "frames": [...]}`` or ``palette_error``.

Per-frame values (``frames``, at most the first 8 frames)
---------------------------------------------------------
``raw`` is the frame of ``ds.pixel_array`` (pydicom 3 defaults: YBR_FULL and
YBR_FULL_422 converted to RGB, bit-packed 1-bit data unpacked to one value per
pixel, multi-sample data always returned colour-by-pixel i.e. samples last).
``modality`` is ``pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)`` for
that frame, converted to float64.

* ``shape``: ``[rows, cols]`` or ``[rows, cols, samples]``.
* ``min``, ``max``, ``mean``: of the modality values (float64; ``mean`` is
  ``numpy.mean``, i.e. pairwise summation: compare with a relative tolerance).
* ``sha256_raw``: sha256 (hex) of the raw frame in C order (row-major, samples
  interleaved last) with every value written as a little-endian int64
  (``np.ascontiguousarray(a.astype('<i8')).tobytes()``), or as a little-endian
  IEEE float64 when the array is floating point (float / double float pixel
  data).
* ``sha256_modality``: sha256 (hex) of the modality values in the same order,
  every value a little-endian IEEE float64 (``'<f8'``).
* ``thumb``: 8 rows of 8 block means of the modality values.  Rows are split
  with ``numpy.array_split(range(rows), 8)`` and columns with
  ``numpy.array_split(range(cols), 8)``.  For n items split into 8 parts the
  first ``n % 8`` parts hold ``n // 8 + 1`` items and the rest ``n // 8``
  (e.g. 60 -> 8,8,8,8,7,7,7,7; 3 -> 1,1,1,0,0,0,0,0).  Block (i, j) is the
  mean over all values whose row is in part i and column in part j, over
  all samples for multi-sample frames (i.e. the mean of the per-sample block
  means, since every sample has the same count).  An empty block (fewer than
  8 rows or columns) is ``null``.

For PALETTE COLOR files ``palette_rgb`` holds the same fields
(``shape``, ``min``, ``max``, ``mean``, ``sha256_raw`` as '<i8', ``thumb``)
computed on ``pydicom.pixels.apply_color_lut(raw_frame, ds)``; ``sha256_modality``
is omitted there.  If apply_color_lut raises, ``palette_error`` is set instead.

All floats are written with Python's shortest round-trip repr; NaN/inf never
occur in a written value (they would be written as null).  Output is sorted by
path and contains no timestamps, so reruns are byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.pixels.utils import as_pixel_options

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / "tests" / "data" / "pydicom-corpus"
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "dicom" / "pydicom_expected.json"
MARKER_NAME = ".complete"
MAX_FRAMES = 8
THUMB = 8

PACKAGES = [
    "pydicom",
    "numpy",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
]

# Lossy transfer syntaxes (PS3.5 / PS3.6 Table A-1).  Everything else
# (native, deflate, RLE, JPEG lossless .57/.70, JPEG-LS lossless .80,
# JPEG 2000 lossless .90/.92, HTJ2K lossless .201/.202, JPEG XL lossless
# .110) is lossless.
LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
    # retired JPEG processes that allow lossy coding
    "1.2.840.10008.1.2.4.52": "JPEG Extended (Process 3 & 5) (retired)",
    "1.2.840.10008.1.2.4.53": "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8) (retired)",
    "1.2.840.10008.1.2.4.54": "JPEG Spectral Selection, Non-Hierarchical (Process 7 & 9) (retired)",
    "1.2.840.10008.1.2.4.55": "JPEG Full Progression, Non-Hierarchical (Process 10 & 12) (retired)",
    "1.2.840.10008.1.2.4.56": "JPEG Full Progression, Non-Hierarchical (Process 11 & 13) (retired)",
    "1.2.840.10008.1.2.4.59": "JPEG Extended, Hierarchical (Process 16 & 18) (retired)",
    "1.2.840.10008.1.2.4.60": "JPEG Extended, Hierarchical (Process 17 & 19) (retired)",
    "1.2.840.10008.1.2.4.61": "JPEG Spectral Selection, Hierarchical (Process 20 & 22) (retired)",
    "1.2.840.10008.1.2.4.62": "JPEG Spectral Selection, Hierarchical (Process 21 & 23) (retired)",
    "1.2.840.10008.1.2.4.63": "JPEG Full Progression, Hierarchical (Process 24 & 26) (retired)",
    "1.2.840.10008.1.2.4.64": "JPEG Full Progression, Hierarchical (Process 25 & 27) (retired)",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Lossy (Near-Lossless)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.4.93": "JPEG 2000 Part 2 Multi-component",
    "1.2.840.10008.1.2.4.100": "MPEG2 Main Profile / Main Level",
    "1.2.840.10008.1.2.4.100.1": "Fragmentable MPEG2 MP@ML",
    "1.2.840.10008.1.2.4.101": "MPEG2 Main Profile / High Level",
    "1.2.840.10008.1.2.4.101.1": "Fragmentable MPEG2 MP@HL",
    "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.102.1": "Fragmentable MPEG-4 AVC/H.264 HP@4.1",
    "1.2.840.10008.1.2.4.103": "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.103.1": "Fragmentable MPEG-4 AVC/H.264 BD HP@4.1",
    "1.2.840.10008.1.2.4.104": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    "1.2.840.10008.1.2.4.104.1": "Fragmentable MPEG-4 AVC/H.264 HP@4.2 2D",
    "1.2.840.10008.1.2.4.105": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    "1.2.840.10008.1.2.4.105.1": "Fragmentable MPEG-4 AVC/H.264 HP@4.2 3D",
    "1.2.840.10008.1.2.4.106": "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    "1.2.840.10008.1.2.4.106.1": "Fragmentable MPEG-4 AVC/H.264 Stereo HP@4.2",
    "1.2.840.10008.1.2.4.107": "HEVC/H.265 Main Profile / Level 5.1",
    "1.2.840.10008.1.2.4.108": "HEVC/H.265 Main 10 Profile / Level 5.1",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression (of lossy JPEG)",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.4.204": "JPIP HTJ2K Referenced (lossy)",
    "1.2.840.10008.1.2.4.205": "JPIP HTJ2K Referenced Deflate (lossy)",
    "1.2.840.10008.1.2.4.94": "JPIP Referenced (may be lossy)",
    "1.2.840.10008.1.2.4.95": "JPIP Referenced Deflate (may be lossy)",
}

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# The committed subset: copied to tests/fixtures/dicom/<same relative path>
# (see tests/fixtures/dicom/ORIGIN.md); records for them carry "fixture": true.
SUBSET = {
    "CT_small.dcm": "CT, explicit VR LE, signed 16-bit, rescale; has a Patient Name (PHI test)",
    "MR_small.dcm": "MR, explicit VR LE, signed 16-bit; reference for the MR_small_* variants",
    "MR_small_bigendian.dcm": "explicit VR big endian, 16-bit signed (same pixels as MR_small)",
    "MR_small_implicit.dcm": "implicit VR little endian (same pixels as MR_small)",
    "MR_small_RLE.dcm": "RLE lossless, 16-bit signed (same pixels as MR_small)",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless .4.80 (same pixels as MR_small)",
    "MR_small_jp2klossless.dcm": "JPEG 2000 lossless .4.90 (same pixels as MR_small)",
    "image_dfl.dcm": "deflated explicit VR LE .1.99",
    "SC_rgb_small_odd_jpeg.dcm": "JPEG baseline .4.50, 3x3 odd size, YBR_FULL -> RGB",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": "JPEG baseline .4.50 with YBR_FULL_422 -> RGB",
    "JPGExtended.dcm": "JPEG extended .4.51, 12-bit",
    "SC_rgb_jpeg_gdcm.dcm": "JPEG lossless SV1 .4.70, RGB",
    "JPEGLSNearLossless_08.dcm": "JPEG-LS near-lossless .4.81, 8-bit",
    "JPEG2000.dcm": "JPEG 2000 .4.91 (lossy), signed 16-bit",
    "rtdose.dcm": "RT Dose, multi-frame (15 frames, tests the 8-frame cap), 32-bit, implicit VR, DoseGridScaling",
    "SC_rgb_small_odd.dcm": "RGB native, 3x3 odd size, planar configuration 0",
    "ExplVR_BigEnd.dcm": "RGB native big endian, planar configuration 1",
    "SC_ybr_full_422_uncompressed.dcm": "YBR_FULL_422 native (subsampled) -> RGB",
    "examples_palette.dcm": "PALETTE COLOR (16-bit LUT entries)",
    "dicomdirtests/77654033/CR2/6247": "MONOCHROME1, 12 of 16 bits, no file extension",
    "liver_1frame.dcm": "1-bit (BitsAllocated 1) SEG",
    "ExplVR_LitEndNoMeta.dcm": "no file meta header, no preamble (no pixel data)",
}
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "dicom"
FIXTURE_LIMIT = 1_000_000


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _exc(e: BaseException) -> str:
    msg = str(e).strip()
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _clean_msg(msg: str, corpus: Path) -> str:
    # never leak the absolute path of the machine that ran the script
    return msg.replace(str(corpus) + os.sep, "").replace(str(corpus), "")


def _num(v):
    """First value of a possibly multi-valued numeric element, as float/int."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        if len(v) == 0:
            return None
        v = v[0]
    if v == "" or v is None:
        return None
    f = float(v)
    if not math.isfinite(f):
        return None
    return int(f) if f.is_integer() and isinstance(v, int) else f


def _int(v):
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _str(v):
    if v is None:
        return None
    s = str(v)
    return s


def _get(ds, keyword):
    """Element value or None; never raises (bad values read as None)."""
    try:
        if keyword not in ds:
            return None
        return ds[keyword].value
    except Exception:  # noqa: BLE001 - malformed element in a test file
        return None


def _float_or_none(x: float):
    x = float(x)
    return x if math.isfinite(x) else None


def _splits(n: int) -> list[np.ndarray]:
    return np.array_split(np.arange(n), THUMB)


def _thumb(values: np.ndarray) -> list[list]:
    """8x8 block means; values is (rows, cols) or (rows, cols, samples) float64."""
    rows, cols = values.shape[0], values.shape[1]
    out = []
    for ri in _splits(rows):
        line = []
        for ci in _splits(cols):
            if ri.size == 0 or ci.size == 0:
                line.append(None)
                continue
            block = values[ri[0] : ri[-1] + 1, ci[0] : ci[-1] + 1]
            line.append(_float_or_none(block.mean(dtype=np.float64)))
        out.append(line)
    return out


def _sha256(a: np.ndarray, dtype: str) -> str:
    return hashlib.sha256(np.ascontiguousarray(a.astype(dtype)).tobytes()).hexdigest()


def _raw_dtype(a: np.ndarray) -> str:
    return "<f8" if a.dtype.kind == "f" else "<i8"


def _stats(values: np.ndarray) -> dict:
    return {
        "min": _float_or_none(values.min()),
        "max": _float_or_none(values.max()),
        "mean": _float_or_none(values.mean(dtype=np.float64)),
    }


def _frame_record(raw: np.ndarray, modality: np.ndarray) -> dict:
    mod = modality.astype(np.float64)
    rec = {"shape": list(raw.shape)}
    rec.update(_stats(mod))
    rec["sha256_raw"] = _sha256(raw, _raw_dtype(raw))
    rec["sha256_modality"] = _sha256(mod, "<f8")
    rec["thumb"] = _thumb(mod)
    return rec


def _palette_record(rgb: np.ndarray) -> dict:
    vals = rgb.astype(np.float64)
    rec = {"shape": list(rgb.shape)}
    rec.update(_stats(vals))
    rec["sha256_raw"] = _sha256(rgb, _raw_dtype(rgb))
    rec["thumb"] = _thumb(vals)
    return rec


def _header(ds, raw_bytes: bytes) -> dict:
    fm = getattr(ds, "file_meta", None)
    tsuid = None
    if fm is not None and "TransferSyntaxUID" in fm:
        tsuid = str(fm.TransferSyntaxUID)
    return {
        "has_preamble": len(raw_bytes) >= 132 and raw_bytes[128:132] == b"DICM",
        "has_file_meta": fm is not None and len(fm) > 0,
        "transfer_syntax_uid": tsuid,
        "lossy": tsuid in LOSSY_TRANSFER_SYNTAXES,
        "sop_class_uid": _str(_get(ds, "SOPClassUID")),
        "modality": _str(_get(ds, "Modality")),
        "rows": _int(_get(ds, "Rows")),
        "columns": _int(_get(ds, "Columns")),
        "number_of_frames": _int(_get(ds, "NumberOfFrames")),
        "samples_per_pixel": _int(_get(ds, "SamplesPerPixel")),
        "photometric_interpretation": _str(_get(ds, "PhotometricInterpretation")),
        "bits_allocated": _int(_get(ds, "BitsAllocated")),
        "bits_stored": _int(_get(ds, "BitsStored")),
        "high_bit": _int(_get(ds, "HighBit")),
        "pixel_representation": _int(_get(ds, "PixelRepresentation")),
        "planar_configuration": _int(_get(ds, "PlanarConfiguration")),
        "rescale_slope": _num(_get(ds, "RescaleSlope")),
        "rescale_intercept": _num(_get(ds, "RescaleIntercept")),
        "has_modality_lut_sequence": "ModalityLUTSequence" in ds,
        "window_center": _num(_get(ds, "WindowCenter")),
        "window_width": _num(_get(ds, "WindowWidth")),
        "dose_grid_scaling": _num(_get(ds, "DoseGridScaling")),
        "lossy_image_compression": _str(_get(ds, "LossyImageCompression")),
        "pixel_data_keyword": next((k for k in PIXEL_KEYWORDS if k in ds), None),
    }


def _decoded_properties(ds) -> dict:
    """Re-run the decoder ds.pixel_array uses, to get pydicom's own metadata
    about the returned array (its photometric interpretation etc.)."""
    tsuid = ds.file_meta.TransferSyntaxUID
    opts = {k: v for k, v in ds._pixel_array_opts.items() if k != "use_pdh"}
    arr, props = get_decoder(tsuid).as_array(
        ds, validate=True, raw=False, **as_pixel_options(ds, **opts)
    )
    return arr, props


def process(path: Path, corpus: Path) -> dict:
    """One record; every warning raised while handling the file is recorded."""
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        rec = _process(path, corpus)
    caught: list[str] = []
    for w in ws:
        m = _clean_msg(str(w.message).strip(), corpus)
        if m not in caught:
            caught.append(m)
    if caught:
        rec["warnings"] = caught
    return rec


def _process(path: Path, corpus: Path) -> dict:
    rel = path.relative_to(corpus).as_posix()
    rec: dict = {"path": rel, "size": path.stat().st_size, "fixture": rel in SUBSET}
    raw_bytes = path.read_bytes()
    has_preamble = len(raw_bytes) >= 132 and raw_bytes[128:132] == b"DICM"

    try:
        ds = pydicom.dcmread(io.BytesIO(raw_bytes), force=True)
    except Exception as e:  # noqa: BLE001
        rec["status"] = "rejected" if has_preamble else "not_dicom"
        rec["error"] = _clean_msg(_exc(e), corpus)
        return rec

    fm = getattr(ds, "file_meta", None)
    has_meta = fm is not None and len(fm) > 0
    has_pixels = any(k in ds for k in PIXEL_KEYWORDS)
    if not (has_pixels or has_meta or "SOPClassUID" in ds):
        tags = ", ".join(f"{e.tag} {e.VR}" for e in list(ds)[:3])
        rec["status"] = "not_dicom"
        rec["error"] = (
            "dcmread(force=True) found no Pixel Data, no file meta and no SOP Class UID"
            f" ({len(ds)} top-level element(s) parsed: {tags or 'none'})"
        )
        return rec

    rec.update(_header(ds, raw_bytes))
    if not has_pixels:
        rec["status"] = "no_pixel_data"
        return rec

    try:
        arr = ds.pixel_array
        arr2, props = _decoded_properties(ds)
        if arr.shape != arr2.shape or not np.array_equal(arr, arr2):
            raise AssertionError("re-decode for metadata differs from ds.pixel_array")
        mod_all = np.asarray(apply_modality_lut(arr, ds))
    except Exception as e:  # noqa: BLE001
        rec["status"] = "rejected"
        rec["error"] = _clean_msg(_exc(e), corpus)
        return rec

    nframes = int(props.get("number_of_frames", 1) or 1)
    spp = int(props.get("samples_per_pixel", 1) or 1)
    if nframes == 1:
        frames_raw, frames_mod = arr[None, ...], mod_all[None, ...]
    else:
        frames_raw, frames_mod = arr, mod_all
    if frames_raw.ndim != (3 if spp == 1 else 4):
        rec["status"] = "rejected"
        rec["error"] = f"unexpected array shape {list(arr.shape)}"
        return rec

    rec["status"] = "decoded"
    rec["decoded_photometric"] = str(props.get("photometric_interpretation"))
    rec["decoded_properties"] = {k: props[k] for k in sorted(props)}
    rec["dtype"] = arr.dtype.str.lstrip("<>|=")
    rec["modality_dtype"] = mod_all.dtype.str.lstrip("<>|=")
    rec["frame_count"] = int(frames_raw.shape[0])
    rec["frames"] = [
        _frame_record(frames_raw[i], frames_mod[i])
        for i in range(min(MAX_FRAMES, frames_raw.shape[0]))
    ]

    if rec["photometric_interpretation"] == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
            rgb_frames = rgb[None, ...] if nframes == 1 else rgb
            rec["palette_rgb"] = {
                "dtype": rgb.dtype.str.lstrip("<>|="),
                "frames": [
                    _palette_record(rgb_frames[i])
                    for i in range(min(MAX_FRAMES, rgb_frames.shape[0]))
                ],
            }
        except Exception as e:  # noqa: BLE001
            rec["palette_error"] = _clean_msg(_exc(e), corpus)

    return rec


def _compact(text: str) -> str:
    """Put innermost lists of scalars (thumb rows, shapes) on one line."""
    pat = re.compile(r"\[\s*((?:-?[0-9.eE+-]+|null|true|false)(?:,\s*(?:-?[0-9.eE+-]+|null|true|false))*)\s*\]")
    return pat.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--no-copy",
        action="store_true",
        help="do not copy the SUBSET files into tests/fixtures/dicom/",
    )
    args = ap.parse_args(argv)
    corpus = args.corpus.resolve()
    if not corpus.is_dir():
        print(f"corpus {corpus} missing: run tools/fetch_pydicom_corpus.sh first", file=sys.stderr)
        return 1

    # Keep pydicom's logging quiet; warnings are recorded per file instead.
    import logging

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)

    paths = sorted(
        (p for p in corpus.rglob("*") if p.is_file() and p.name != MARKER_NAME),
        key=lambda p: p.relative_to(corpus).as_posix(),
    )
    files = [process(p, corpus) for p in paths]
    missing = sorted(set(SUBSET) - {f["path"] for f in files})
    if missing:
        print(f"error: subset files missing from corpus: {missing}", file=sys.stderr)
        return 1

    generator = {
        "script": "tools/pydicom_reference.py",
        "corpus": "pydicom 3.0.2 wheel, pydicom/data/test_files/",
        "versions": _versions(),
        "max_frames": MAX_FRAMES,
        "thumb": "8x8 block means of modality values; rows and cols split with numpy.array_split(n, 8); mean over samples; empty block = null",
        "sha256_raw": "sha256 of ds.pixel_array frame, C order, samples last, each value little-endian int64 (float arrays: little-endian float64)",
        "sha256_modality": "sha256 of apply_modality_lut frame, C order, samples last, each value little-endian float64",
    }
    doc = {"generator": generator, "files": files}
    text = _compact(json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=True)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)

    if not args.no_copy:
        total = 0
        for rel in sorted(SUBSET):
            src = corpus / rel
            dst = FIXTURE_DIR / rel
            data = src.read_bytes()
            total += len(data)
            if not dst.exists() or dst.read_bytes() != data:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(data)
        if total >= FIXTURE_LIMIT:
            print(f"error: fixture subset is {total} bytes (limit {FIXTURE_LIMIT})", file=sys.stderr)
            return 1
        print(f"fixture subset: {len(SUBSET)} files, {total} bytes in {FIXTURE_DIR}")

    counts: dict[str, int] = {}
    for f in files:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    print(f"{len(files)} files -> {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
