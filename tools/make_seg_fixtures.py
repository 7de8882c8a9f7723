"""DICOM SEG both ways with highdicom (the library behind IDC's and Slicer's SEG tooling), for
tests/exchange.rs. Run once (outputs are committed to tests/fixtures/exchange/):

    cargo build --release        # or set FOVEA=target/debug/fovea
    pip install -r tools/seg_fixtures_requirements.txt
    python tools/make_seg_fixtures.py

1. fovea -> highdicom. On slice 2 of `fovea phantom --ct-slices 5` (deterministic), fovea
   writes a SEG with a drawn box and the triage mask, once keeping the identity and once
   de-identified. highdicom's Segmentation.get_pixels_by_source_instance on each must equal
   the pixel masks computed here by hand: the box's (pixel centres inside it) and the tokens
   VGRefine kept (the record's knocked-out tokens are the others, 12 x 12 cells over 128 px).
   The keep-identity SEG is asked for slice 2's SOP Instance UID; the de-identified one for the
   remapped UID its own Common Instance Reference names (the only name of the source it keeps).
   Asking either for slice 1's UID must fail (nothing there). Both SEGs are kept as
   fovea-keep.seg.dcm / fovea-deid.seg.dcm, and what highdicom returned as
   fovea-seg-highdicom.json (per SEG: the UID asked, the frames' shape, per segment its pixel
   count and its mask as row-major runs, alternating off/on starting with off).
2. highdicom -> fovea. highdicom writes a BINARY SEG on the five source slices with segment 1
   ("box") on slice 1 and segment 2 ("disk") on slice 3, nothing elsewhere:
   highdicom-two-slices.seg.dcm. The masks (box x 20..50, y 30..60 half-open, disk centre
   (80, 70) px radius 15 px, pixel centres) are restated in the Rust test, which imports the
   file onto every slice of a freshly written phantom (same UIDs: the generator is
   deterministic).
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "exchange"
FOVEA = pathlib.Path(os.environ.get("FOVEA", ROOT / "target" / "release" / "fovea"))
BOX = (70.0, 45.0, 100.5, 70.0)  # x0, y0, x1, y1 in pixels (fovea's --region)


def phantom(folder):
    subprocess.run([str(FOVEA), "phantom", "--out", str(folder), "--ct-slices", "5"], check=True)
    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    row = np.array(slices[0].ImageOrientationPatient[:3], float)
    col = np.array(slices[0].ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))
    return slices


def runs(mask):
    """Row-major run lengths, alternating off/on, starting with off."""
    flat = mask.reshape(-1).astype(bool)
    out, current, count = [], False, 0
    for value in flat:
        if value == current:
            count += 1
        else:
            out.append(count)
            current, count = value, 1
    out.append(count)
    return [int(v) for v in out]


def fovea_to_highdicom(tmp, slices):
    rows, cols = slices[0].Rows, slices[0].Columns
    yy, xx = np.mgrid[0:rows, 0:cols]
    cx, cy = xx + 0.5, yy + 0.5
    box = (cx >= BOX[0]) & (cx <= BOX[2]) & (cy >= BOX[1]) & (cy <= BOX[3])
    report = {"highdicom": hd.__version__, "pydicom": pydicom.__version__, "box": BOX, "segs": {}}
    for name, extra in [("fovea-keep.seg.dcm", ["--keep-identity"]), ("fovea-deid.seg.dcm", [])]:
        seg_path, record_path = tmp / name, tmp / (name + ".json")
        subprocess.run([str(FOVEA), "inspect", "--image", str(tmp / "ct"), "--slice", "2",
                        "--question", "Is there a lesion?",
                        "--region", ",".join(str(v) for v in BOX),
                        "--seg", str(seg_path), "--json", str(record_path)] + extra, check=True)
        record = json.loads(record_path.read_text())
        grid_rows, grid_cols = record["model"]["grid"]
        knocked = set(record["knockout"]["tokens"])
        token = (cy // (rows / grid_rows)).astype(int) * grid_cols + (cx // (cols / grid_cols)).astype(int)
        kept = ~np.isin(token, list(knocked))
        seg = hd.seg.segread(seg_path)
        ds = pydicom.dcmread(seg_path)
        if extra:
            uid = slices[2].SOPInstanceUID
        else:
            uid = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
            assert uid != slices[2].SOPInstanceUID and uid.startswith("2.25.")
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[1, 2])
        assert pixels.shape == (1, rows, cols, 2), pixels.shape
        assert (pixels[0, :, :, 0].astype(bool) == box).all(), f"{name}: segment 1 != the box's pixel mask"
        assert (pixels[0, :, :, 1].astype(bool) == kept).all(), f"{name}: segment 2 != the kept tokens' cells"
        try:
            seg.get_pixels_by_source_instance(source_sop_instance_uids=[slices[1].SOPInstanceUID])
            raise AssertionError(f"{name}: highdicom found frames for slice 1")
        except KeyError:
            pass
        (OUT / name).write_bytes(seg_path.read_bytes())
        report["segs"][name] = {
            "source_sop_instance_uid": uid,
            "shape": list(pixels.shape),
            "segments": [
                {"number": n + 1, "pixels": int(pixels[0, :, :, n].sum()), "runs": runs(pixels[0, :, :, n])}
                for n in range(2)
            ],
        }
        print(f"{name}: highdicom by source instance {uid}: {pixels.shape}, segment 1 = box "
              f"({int(box.sum())} px), segment 2 = kept tokens ({int(kept.sum())} px)")
    (OUT / "fovea-seg-highdicom.json").write_text(json.dumps(report, indent=1) + "\n")


def highdicom_to_fovea(slices):
    rows, cols = slices[0].Rows, slices[0].Columns
    yy, xx = np.mgrid[0:rows, 0:cols]
    cx, cy = xx + 0.5, yy + 0.5
    masks = np.zeros((len(slices), rows, cols, 2), dtype=bool)
    masks[1, :, :, 0] = (xx >= 20) & (xx < 50) & (yy >= 30) & (yy < 60)
    masks[3, :, :, 1] = (cx - 80.0) ** 2 + (cy - 70.0) ** 2 <= 15.0**2
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n + 1,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, label in enumerate(["box", "disk"])
    ]
    seg = hd.seg.Segmentation(
        source_images=slices,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=50,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="highdicom",
        manufacturer_model_name="make_seg_fixtures.py",
        software_versions=hd.__version__,
        device_serial_number="1",
    )
    path = OUT / "highdicom-two-slices.seg.dcm"
    seg.save_as(path)
    back = hd.seg.segread(path)
    assert back.number_of_frames == 2, back.number_of_frames
    for k, n in [(1, 0), (3, 1)]:
        got = back.get_pixels_by_source_instance([slices[k].SOPInstanceUID], segment_numbers=[n + 1])
        assert (got[0, :, :, 0].astype(bool) == masks[k, :, :, n]).all()
    print(f"{path.name}: 2 frames, box {int(masks[1, :, :, 0].sum())} px on slice 1 "
          f"({slices[1].SOPInstanceUID}), disk {int(masks[3, :, :, 1].sum())} px on slice 3 "
          f"({slices[3].SOPInstanceUID})")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        slices = phantom(tmp / "ct")
        fovea_to_highdicom(tmp, slices)
        highdicom_to_fovea(slices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
