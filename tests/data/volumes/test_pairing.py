"""Pairing image and label volumes by case name, and checking that each pair shares one grid."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.datasets.volumes import (
    VolumeSliceDataset,
    case_name,
    pair_volumes,
)
from samtune.data.sample import DataError
from tests.data.volumes.helpers import (
    dicom_affine_ras,
    make_case,
    write_dicom_series,
)
from tests.helpers import nifti_affine, save_nifti


def test_case_name_rule():
    assert case_name("a/case01.nii.gz", role="label") == "case01"
    assert case_name("a/case01_seg.nii.gz", role="label") == "case01"
    assert case_name("a/case01_label.nii", role="label") == "case01"
    assert case_name("a/case01_0000.nii.gz", role="image") == "case01"
    assert case_name("a/case01_seg.nii.gz", role="image") == "case01_seg"
    assert case_name("series/case07", role="image") == "case07"


def test_pairs_by_name_with_suffixes_and_mixed_formats(tmp_path):
    hu, label = make_case()
    save_nifti(tmp_path / "img" / "case01.nii.gz", hu)
    save_nifti(tmp_path / "lab" / "case01_seg.nii.gz", label)
    write_dicom_series(tmp_path / "img" / "case02", hu)
    dicom_affine = dicom_affine_ras((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    save_nifti(tmp_path / "lab" / "case02_label.nii.gz", label, affine=dicom_affine)
    pairs = pair_volumes(tmp_path / "img", tmp_path / "lab")
    assert [p.case for p in pairs] == ["case01", "case02"]
    assert pairs[0].label.name == "case01_seg.nii.gz"
    assert pairs[1].image == tmp_path / "img" / "case02"
    ds = VolumeSliceDataset(images=tmp_path / "img", labels=tmp_path / "lab", window="bone")
    from_dicom = [s for s in ds if s.meta["volume"] == "case02"]
    from_nifti = [s for s in ds if s.meta["volume"] == "case01"]
    assert len(from_dicom) == len(from_nifti) == 7
    for a, b in zip(from_dicom, from_nifti, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)


def test_pairs_within_one_folder(tmp_path):
    hu, label = make_case()
    save_nifti(tmp_path / "case01.nii.gz", hu)
    save_nifti(tmp_path / "case01_seg.nii.gz", label)
    (pair,) = pair_volumes(tmp_path, tmp_path)
    assert (pair.image.name, pair.label.name) == ("case01.nii.gz", "case01_seg.nii.gz")


def test_missing_partner_names_both_sides(tmp_path):
    hu, label = make_case()
    image = save_nifti(tmp_path / "img" / "case02.nii.gz", hu)
    save_nifti(tmp_path / "img" / "case01.nii.gz", hu)
    save_nifti(tmp_path / "lab" / "case01.nii.gz", label)
    with pytest.raises(DataError) as err:
        pair_volumes(tmp_path / "img", tmp_path / "lab")
    message = str(err.value)
    assert str(image) in message and str(tmp_path / "lab") in message
    assert "case02_seg.nii.gz" in message
    lonely = save_nifti(tmp_path / "lab" / "case03_seg.nii.gz", label)
    with pytest.raises(DataError, match="case03"):
        pair_volumes(
            [tmp_path / "img" / "case01.nii.gz"], [tmp_path / "lab" / "case01.nii.gz", lonely]
        )


def test_shape_mismatch_names_both_files_and_shapes(tmp_path):
    hu, label = make_case()
    image = save_nifti(tmp_path / "img" / "case01.nii.gz", hu)
    lab = save_nifti(tmp_path / "lab" / "case01.nii.gz", label[:, :, :11])
    with pytest.raises(DataError) as err:
        pair_volumes(tmp_path / "img", tmp_path / "lab")
    message = str(err.value)
    assert str(image) in message and str(lab) in message
    assert "(32, 32, 12)" in message and "(32, 32, 11)" in message


def test_spacing_mismatch_names_both_files_and_spacings(tmp_path):
    hu, label = make_case()
    image = save_nifti(tmp_path / "img" / "case01.nii.gz", hu)
    close = nifti_affine((0.8, 0.7, 2.5 * (1 + 1e-4)))
    save_nifti(tmp_path / "ok" / "case01.nii.gz", label, affine=close)
    assert len(pair_volumes(tmp_path / "img", tmp_path / "ok")) == 1
    lab = save_nifti(
        tmp_path / "lab" / "case01.nii.gz", label, affine=nifti_affine((0.8, 0.7, 2.6))
    )
    with pytest.raises(DataError) as err:
        pair_volumes(tmp_path / "img", tmp_path / "lab")
    message = str(err.value)
    assert str(image) in message and str(lab) in message
    assert "2.5" in message and "2.6" in message


def test_orientation_mismatch_names_both_files(tmp_path):
    hu, label = make_case()
    image = write_dicom_series(tmp_path / "img" / "case01", hu)
    lab = save_nifti(tmp_path / "lab" / "case01.nii.gz", label)  # RAS affine, series is LPS
    with pytest.raises(DataError) as err:
        pair_volumes(tmp_path / "img", tmp_path / "lab")
    message = str(err.value)
    assert "orientation" in message and str(image) in message and str(lab) in message
    assert "LPS" in message and "RAS" in message
