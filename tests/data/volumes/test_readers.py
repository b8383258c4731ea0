"""Volume readers: NIfTI files and DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samtune.data.datasets.volumes import (
    read_geometry,
    read_volume,
)
from samtune.data.sample import DataError
from tests.data.volumes.helpers import (
    ORIGIN_LPS,
    SHAPE,
    SPACING,
    dicom_affine_ras,
    make_case,
    write_dicom_series,
)
from tests.helpers import nifti_affine, save_nifti


def test_nifti_roundtrip_keeps_array_order_spacing_and_affine(tmp_path):
    hu, label = make_case()
    image = read_volume(save_nifti(tmp_path / "case01.nii.gz", hu))
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, hu)
    assert image.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(image.affine, nifti_affine())
    lab = read_volume(save_nifti(tmp_path / "case01_seg.nii", label), label=True)
    assert np.issubdtype(lab.array.dtype, np.integer)
    np.testing.assert_array_equal(lab.array, label)
    geometry = read_geometry(tmp_path / "case01.nii.gz")
    assert geometry.shape == SHAPE and geometry.spacing == pytest.approx(SPACING)


def test_nifti_labels_stored_as_float_become_integers_and_fractions_fail(tmp_path):
    _, label = make_case()
    lab = read_volume(save_nifti(tmp_path / "f.nii.gz", label.astype(np.float32)), label=True)
    assert lab.array.dtype == np.uint8
    np.testing.assert_array_equal(lab.array, label)
    bad = label.astype(np.float32)
    bad[0, 0, 0] = 1.5
    with pytest.raises(DataError, match=r"bad\.nii\.gz.*whole numbers.*1\.5"):
        read_volume(save_nifti(tmp_path / "bad.nii.gz", bad), label=True)


def test_unreadable_and_non_3d_files_name_the_file(tmp_path):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match="junk.nii.gz"):
        read_volume(junk)
    flat = save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 5, 3, 2), np.float32))
    with pytest.raises(DataError, match=r"flat\.nii\.gz.*3D.*\(4, 5, 3, 2\)"):
        read_volume(flat)
    with pytest.raises(DataError, match="missing.nii.gz"):
        read_volume(tmp_path / "missing.nii.gz")


@pytest.mark.parametrize(
    ("row_cos", "col_cos", "slope"),
    [
        ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), 1.0),  # axial
        ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), 0.5),  # sagittal: slices advance along -x
    ],
)
def test_dicom_series_matches_source_order_and_hu(tmp_path, row_cos, col_cos, slope):
    hu, _ = make_case()
    folder = write_dicom_series(
        tmp_path / "case01", hu, row_cos=row_cos, col_cos=col_cos, slope=slope
    )
    (folder / "notes.txt").write_text("not dicom")
    volume = read_volume(folder)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, hu)
    assert volume.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(volume.affine, dicom_affine_ras(row_cos, col_cos), atol=1e-9)


def test_dicom_without_positions_falls_back_to_instance_number(tmp_path):
    hu, _ = make_case()
    folder = write_dicom_series(tmp_path / "case01", hu, with_position=False, seed=3)
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, hu)
    assert volume.spacing == pytest.approx(SPACING)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    hu, _ = make_case()
    folder = write_dicom_series(tmp_path / "gap", hu)
    files = sorted(folder.iterdir())
    middle = next(
        f for f in files if abs(float(_position(f)[2]) - (ORIGIN_LPS[2] + 5 * 2.5)) < 1e-6
    )
    middle.unlink()
    with pytest.raises(DataError, match=r"gap.*slice spacing varies"):
        read_volume(folder)


def _position(file: Path):
    import pydicom

    return pydicom.dcmread(file, stop_before_pixels=True).ImagePositionPatient
