"""NRRD / MetaImage (SimpleITK) and multi-page TIFF stacks read like NIfTI, geometry included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from samtune.data import VolumeDataModule
from samtune.data.datasets.volumes import pair_volumes, read_geometry, read_volume
from samtune.data.sample import DataError
from tests.helpers import make_tiny_case, save_nifti

CLASSES = {1: "liver", 2: "kidney"}
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-12.0, 30.0, 7.5)
DIRECTION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # LPS, rotated


def save_itk(path: Path, array: np.ndarray) -> Path:
    """``array[i, j, k]`` written with SPACING, ORIGIN and DIRECTION (ITK's LPS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION.ravel().tolist())
    sitk.WriteImage(image, str(path), useCompression=path.suffix != ".mhd")
    return path


def ras_affine() -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = DIRECTION * np.asarray(SPACING)[None, :]
    lps[:3, 3] = ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_itk_files_equal_the_same_volume_as_nifti(tmp_path, suffix):
    hu, label = make_tiny_case(0)
    itk = save_itk(tmp_path / f"ct{suffix}", hu)
    nifti = save_nifti(tmp_path / "ct.nii.gz", hu, affine=ras_affine())
    a, b = read_volume(itk), read_volume(nifti)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    assert a.spacing == pytest.approx(SPACING)
    assert read_geometry(itk).shape == hu.shape
    lab = read_volume(save_itk(tmp_path / f"seg{suffix}", label), label=True)
    assert np.issubdtype(lab.array.dtype, np.integer)
    np.testing.assert_array_equal(lab.array, label)


def test_tiff_stack_spacing_from_imagej_metadata(tmp_path):
    hu, label = make_tiny_case(1)
    stack = np.ascontiguousarray(label.transpose(2, 1, 0))  # pages = slices, [k, j, i]
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"})  # fmt: skip
    volume = read_volume(path, label=True)
    np.testing.assert_array_equal(volume.array, label)
    assert volume.spacing == pytest.approx((0.25e-3, 0.25e-3, 1.5e-3))  # um, read as mm
    assert volume.spacing_unit == "mm"
    flat = tmp_path / "one.tif"
    tifffile.imwrite(flat, stack[0])
    with pytest.raises(DataError, match=r"one\.tif: a single 2-D image, not a stack"):
        read_volume(flat)
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"NRRD0004\ntype: garbage\n\n")
    with pytest.raises(DataError, match=r"broken\.nrrd: cannot read with SimpleITK"):
        read_volume(broken)


def test_tiff_stack_with_pages_of_different_sizes_is_named_as_such(tmp_path):
    path = tmp_path / "ragged.tif"
    with tifffile.TiffWriter(path) as tif:
        for shape in [(12, 10), (12, 10), (9, 10)]:
            tif.write(np.zeros(shape, np.uint8), contiguous=False)
    with pytest.raises(DataError, match=r"ragged\.tif: the pages .* differ in size: page 0 is "
                       r"12 x 10, page 2 is 9 x 10 \(3 pages\)"):  # fmt: skip
        read_volume(path)
    with pytest.raises(DataError, match=r"ragged\.tif: the pages"):
        read_geometry(path)


def test_mixed_formats_pair_and_slice_like_nifti(tmp_path):
    for i in range(2):
        hu, label = make_tiny_case(i)
        save_itk(tmp_path / "ct" / f"case{i:02d}.mha", hu)
        save_itk(tmp_path / "labels" / f"case{i:02d}_seg.nrrd", label)
        save_nifti(tmp_path / "nii" / f"case{i:02d}.nii.gz", hu, affine=ras_affine())
        save_nifti(tmp_path / "niil" / f"case{i:02d}_seg.nii.gz", label, affine=ras_affine())
    (tmp_path / "ct" / "notes.raw").write_bytes(b"")  # a companion-like file, passed over
    pairs = pair_volumes(tmp_path / "ct", tmp_path / "labels")
    assert [p.case for p in pairs] == ["case00", "case01"]
    options = dict(window="abdomen", classes=CLASSES, val_fraction=0.5, image_size=64)
    itk = VolumeDataModule(images=tmp_path / "ct", labels=tmp_path / "labels", **options)
    nii = VolumeDataModule(images=tmp_path / "nii", labels=tmp_path / "niil", **options)
    a, b = itk.raw_dataset("val"), nii.raw_dataset("val")
    assert len(a) == len(b) > 0
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i].image, b[i].image)
        np.testing.assert_array_equal(a[i].masks, b[i].masks)
