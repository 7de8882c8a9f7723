"""Fixtures for tests/exchange.rs, written by other tools' code (nibabel, pycocotools, pydicom),
not by fovea: NIfTI masks of the synthetic CT series in the conventions 3D Slicer / dcm2niix
use, a 2-D NIfTI for a PNG, and COCO annotations with a pycocotools-compressed RLE mask.

Run once (outputs are committed):
    cargo build --release
    pip install -r tools/exchange_fixtures_requirements.txt
    python tools/make_exchange_fixtures.py

The CT series comes from `fovea phantom --ct-slices 5` (deterministic); its geometry is read
back with pydicom, and the masks are computed from its Hounsfield units as pydicom decodes them.
"""

import json
import pathlib
import subprocess
import tempfile

import nibabel as nib
import numpy as np
import pydicom
from pycocotools import mask as coco_mask

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "exchange"
FOVEA = ROOT / "target" / "release" / "fovea"


def ct_series(folder):
    subprocess.run([str(FOVEA), "phantom", "--out", str(folder), "--ct-slices", "5"], check=True)
    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    # Order along the normal, as every DICOM-to-NIfTI converter does.
    row = np.array(slices[0].ImageOrientationPatient[:3], float)
    col = np.array(slices[0].ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))
    return slices, row, col, normal


def lps_to_ras_affine(slices, row, col, normal):
    """Voxel (i = column, j = row, k = slice) to RAS mm: nibabel's DICOM orientation docs."""
    dr, dc = (float(v) for v in slices[0].PixelSpacing)  # row spacing, column spacing
    p0 = np.array(slices[0].ImagePositionPatient, float)
    pn = np.array(slices[-1].ImagePositionPatient, float)
    step = (pn - p0) / (len(slices) - 1)
    lps = np.eye(4)
    lps[:3, 0] = row * dc
    lps[:3, 1] = col * dr
    lps[:3, 2] = step
    lps[:3, 3] = p0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        slices, row, col, normal = ct_series(pathlib.Path(tmp) / "ct")
        hu = np.stack([s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])
        # hu[k, r, c]. Labels: 1 lesion (100..500 HU), 2 spine (> 500 HU).
        labels = np.zeros(hu.shape, np.uint8)
        labels[(hu > 100) & (hu <= 500)] = 1
        labels[hu > 500] = 2
        volume = np.transpose(labels, (2, 1, 0))  # [i = column, j = row, k = slice]
        affine = lps_to_ras_affine(slices, row, col, normal)

        # 1. As 3D Slicer saves a labelmap of the series: i, j, k as the DICOM axes, RAS affine.
        image = nib.Nifti1Image(volume, affine)
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
        nib.save(image, str(OUT / "ct-labels-slicer.nii.gz"))

        # 2. As dcm2niix writes by default: rows flipped (j runs posterior to anterior), slices
        # reversed, int16, qform only (sform_code 0).
        flipped = volume[:, ::-1, ::-1].astype(np.int16)
        flip = np.eye(4)
        flip[1, 1], flip[1, 3] = -1.0, volume.shape[1] - 1
        flip[2, 2], flip[2, 3] = -1.0, volume.shape[2] - 1
        image = nib.Nifti1Image(flipped, affine @ flip)
        image.set_qform(affine @ flip, code=1)
        image.set_sform(None, code=0)
        nib.save(image, str(OUT / "ct-labels-flipped.nii"))

    # 3. A 2-D mask for a 160 x 120 PNG (no geometry): a disk, saved as nibabel users do from a
    # (rows, columns) array: transposed to (x, y).
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (((xx + 0.5 - 100) ** 2 + (yy + 0.5 - 50) ** 2) <= 20 ** 2).astype(np.uint8)
    nib.save(nib.Nifti1Image(disk.T.copy(), np.eye(4)), str(OUT / "png-disk.nii.gz"))
    nib.save(nib.Nifti1Image(disk.copy(), np.eye(4)), str(OUT / "png-disk-transposed.nii.gz"))

    # 4. COCO for the same image: the disk as a compressed RLE, a polygon, a bare bbox.
    rle = coco_mask.encode(np.asfortranarray(disk))
    rle["counts"] = rle["counts"].decode("ascii")
    coco = {
        "images": [{"id": 7, "file_name": "scan.png", "width": w, "height": h}],
        "categories": [{"id": 3, "name": "nodule"}, {"id": 4, "name": "marker"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "segmentation": rle, "iscrowd": 1,
             "area": float(coco_mask.area(rle)), "bbox": coco_mask.toBbox(rle).tolist()},
            {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0,
             "segmentation": [[10.0, 10.0, 50.0, 10.0, 30.0, 40.0]], "area": 600.0,
             "bbox": [10.0, 10.0, 40.0, 30.0]},
            {"id": 3, "image_id": 7, "category_id": 4, "iscrowd": 0, "segmentation": [],
             "bbox": [120.0, 90.0, 20.0, 10.0], "area": 200.0},
            {"id": 4, "image_id": 8, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25.0},
        ],
    }
    (OUT / "scan.coco.json").write_text(json.dumps(coco, indent=1))
    # pycocotools' own decoding of the RLE, to compare with fovea's.
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    assert (decoded == disk).all()
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
