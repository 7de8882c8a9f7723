"""Cross-check fovea's DICOM exports with pydicom (a reader no one here wrote): the SEG's
pixel_array (pydicom unpacks the 1-bit frames itself) against a box's pixel mask computed here
with numpy, its references against the source slice, and the Secondary Capture's pixels
against the --overlay PNG. Run after `cargo build --release`:

    pip install -r tools/exchange_fixtures_requirements.txt
    python tools/check_dicom_exports.py
"""

import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOVEA = ROOT / "target" / "release" / "fovea"


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        subprocess.run([str(FOVEA), "phantom", "--out", str(tmp / "ct"), "--ct-slices", "9"], check=True)
        box = (40.0, 30.5, 90.0, 77.0)
        seg, sc, png = tmp / "a.seg.dcm", tmp / "a.sc.dcm", tmp / "a.png"
        subprocess.run([str(FOVEA), "inspect", "--image", str(tmp / "ct"), "--slice", "4",
                        "--question", "Is there a lesion?", "--region", ",".join(map(str, box)),
                        "--seg", str(seg), "--capture", str(sc), "--overlay", str(png),
                        "--keep-identity"], check=True)
        ds = pydicom.dcmread(seg)
        frames = ds.pixel_array  # (segments, rows, cols)
        yy, xx = np.mgrid[0:ds.Rows, 0:ds.Columns]
        cx, cy = xx + 0.5, yy + 0.5
        expected = (cx >= box[0]) & (cx <= box[2]) & (cy >= box[1]) & (cy <= box[3])
        assert frames.shape[0] == ds.NumberOfFrames == 2, frames.shape
        assert (frames[0].astype(bool) == expected).all(), "segment 1 != the box's pixel mask"
        # The source: slice 4 along the normal is the one at z = -10 + 2.5 * 4 = 0 mm.
        sources = [pydicom.dcmread(p) for p in (tmp / "ct").iterdir()]
        source = [s for s in sources if abs(float(s.ImagePositionPatient[2])) < 1e-6][0]
        ref = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        pos = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
        assert [float(v) for v in pos] == [float(v) for v in source.ImagePositionPatient]
        labels = [(s.SegmentLabel, s.SegmentAlgorithmType) for s in ds.SegmentSequence]
        capture = pydicom.dcmread(sc).pixel_array
        overlay = np.asarray(Image.open(png).convert("RGB"))
        assert capture.shape == overlay.shape and (capture == overlay).all(), "capture != overlay PNG"
        print(f"pydicom {pydicom.__version__}: SEG {frames.shape}, segment 1 = box mask "
              f"({int(expected.sum())} px), references match; segments {labels}; "
              f"Secondary Capture {capture.shape} equals the overlay PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
