"""Volume readers (NIfTI, DICOM series), image/label pairing, and VolumeSliceDataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from samtune.data.datasets.volumes import (
    VolumeSliceDataset,
    case_name,
    pair_volumes,
    read_geometry,
    read_volume,
)
from samtune.data.sample import DataError
from tests.helpers import NIFTI_SPACING, nifti_affine, save_nifti

SHAPE = (32, 32, 12)
SPACING = NIFTI_SPACING
ORIGIN_LPS = (-12.0, 30.0, 100.0)


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer HU noise with two ellipsoids (class 1 at HU 60, class 2 at HU 300), and labels."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-120, 40, size=SHAPE).astype(np.float32)
    hu[:, :, 0] = -1000  # air, far below any window
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    label = np.zeros(SHAPE, dtype=np.uint8)
    ball1 = ((ii - 10) / 5) ** 2 + ((jj - 12) / 4) ** 2 + ((kk - 5) / 2.5) ** 2 <= 1
    ball2 = ((ii - 22) / 4) ** 2 + ((jj - 20) / 5) ** 2 + ((kk - 7) / 2) ** 2 <= 1
    label[ball1], hu[ball1] = 1, 60
    label[ball2], hu[ball2] = 2, 300
    return hu, label


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    *,
    row_cos=(1.0, 0.0, 0.0),
    col_cos=(0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    with_position: bool = True,
    seed: int = 0,
) -> Path:
    """One CT slice per file, files named in shuffled order; stored = (HU - intercept) / slope."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    ni, nj, nk = hu.shape
    normal = np.cross(row_cos, col_cos)
    series, study = generate_uid(), generate_uid()
    for n, k in enumerate(np.random.default_rng(seed).permutation(nk)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.Rows, ds.Columns = nj, ni
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # (between rows, between columns)
        ds.SliceThickness = SPACING[2]
        ds.InstanceNumber = int(k) + 1
        if with_position:
            ds.ImageOrientationPatient = [*row_cos, *col_cos]
            ds.ImagePositionPatient = [
                float(v) for v in np.add(ORIGIN_LPS, normal * SPACING[2] * k)
            ]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.rint((hu[:, :, k] - intercept) / slope).T  # rows = j, columns = i
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{n:04d}.dcm", enforce_file_format=True)
    return folder


def dicom_affine_ras(row_cos, col_cos) -> np.ndarray:
    """Hand-built reference: LPS columns = direction x spacing, then flip x and y to RAS."""
    lps = np.eye(4)
    lps[:3, 0] = np.multiply(row_cos, SPACING[0])
    lps[:3, 1] = np.multiply(col_cos, SPACING[1])
    lps[:3, 2] = np.cross(row_cos, col_cos) * SPACING[2]
    lps[:3, 3] = ORIGIN_LPS
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


# Readers ------------------------------------------------------------------------------------


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


# Pairing -----------------------------------------------------------------------------------


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


# Dataset -----------------------------------------------------------------------------------


@pytest.fixture
def nifti_pair(tmp_path):
    hu, label = make_case()
    save_nifti(tmp_path / "img" / "case01.nii.gz", hu)
    save_nifti(tmp_path / "lab" / "case01_seg.nii.gz", label)
    return tmp_path / "img", tmp_path / "lab", hu, label


def test_dataset_counts_follow_empty_slice_rate(nifti_pair):
    images, labels, _, label = nifti_pair
    with_objects = [k for k in range(SHAPE[2]) if label[:, :, k].any()]
    assert len(with_objects) == 7
    none = VolumeSliceDataset(images=images, labels=labels, window="abdomen", empty_slice_rate=0.0)
    assert len(none) == len(with_objects)
    assert [s.meta["slice"] for s in none] == with_objects
    every = VolumeSliceDataset(images=images, labels=labels, window="abdomen", empty_slice_rate=1.0)
    assert len(every) == SHAPE[2]
    assert sum(s.masks.shape[0] == 0 for s in every) == SHAPE[2] - len(with_objects)
    along0 = VolumeSliceDataset(images=images, labels=labels, axis=0, empty_slice_rate=1.0)
    assert len(along0) == SHAPE[0] and along0[0].image.shape == (SHAPE[1], SHAPE[2], 3)


def test_dataset_partial_rate_is_deterministic_and_nested(nifti_pair):
    images, labels, _, _ = nifti_pair

    def kept(rate, seed=0):
        ds = VolumeSliceDataset(images=images, labels=labels, empty_slice_rate=rate, seed=seed)
        return ds.slices_of("case01")

    low, high = kept(0.3), kept(0.7)
    assert kept(0.3) == low and kept(0.7) == high
    assert set(low) <= set(high)
    assert 7 <= len(low) <= len(high) <= 12
    assert any(len(kept(0.5, seed)) not in (7, 12) for seed in range(5))


def test_dataset_sample_image_masks_and_meta(nifti_pair):
    images, labels, hu, label = nifti_pair
    ds = VolumeSliceDataset(
        images=images,
        labels=labels,
        window={"level": 40, "width": 400},
        mode="semantic",
        classes={1: "liver", 2: "tumour"},
    )
    sample = next(s for s in ds if s.meta["slice"] == 6)
    expected = np.clip(np.floor((hu[:, :, 6].astype(np.float64) + 160) * 255 / 400 + 0.5), 0, 255)
    np.testing.assert_array_equal(sample.image[..., 0], expected.astype(np.uint8))
    np.testing.assert_array_equal(sample.image[..., 0], sample.image[..., 2])
    assert sample.class_ids.tolist() == [1, 2]
    np.testing.assert_array_equal(sample.masks[0], label[:, :, 6] == 1)
    np.testing.assert_array_equal(sample.masks[1], label[:, :, 6] == 2)
    meta = sample.meta
    assert meta["volume"] == "case01" and meta["axis"] == 2 and meta["slice"] == 6
    assert meta["file"].endswith("case01.nii.gz") and meta["class_names"] == {
        1: "liver",
        2: "tumour",
    }
    assert meta["spacing"] == pytest.approx(SPACING) and meta["pixel_spacing"] == pytest.approx(
        SPACING[:2]
    )
    assert sorted(s.meta["image_id"] for s in ds) == list(range(len(ds)))
    assert ds.volume_shapes == {"case01": SHAPE}
    np.testing.assert_array_equal(ds.label_volume("case01"), label)


def test_dataset_classes_filter_and_pickle_drops_cache(nifti_pair):
    images, labels, _, label = nifti_pair
    ds = VolumeSliceDataset(images=images, labels=labels, classes={2: "b"})
    assert ds.slices_of("case01") == [k for k in range(SHAPE[2]) if (label[:, :, k] == 2).any()]
    assert all(set(s.class_ids.tolist()) == {2} for s in ds)
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone._cache) == 0 and len(clone) == len(ds)
    np.testing.assert_array_equal(clone[0].masks, ds[0].masks)


def test_dataset_rejects_bad_options(nifti_pair):
    images, labels, _, _ = nifti_pair
    with pytest.raises(ValueError, match="unknown CT window preset 'liver'"):
        VolumeSliceDataset(images=images, labels=labels, window="liver")
    with pytest.raises(ValueError, match="axis"):
        VolumeSliceDataset(images=images, labels=labels, axis=3)
    with pytest.raises(ValueError, match="empty_slice_rate"):
        VolumeSliceDataset(images=images, labels=labels, empty_slice_rate=1.5)
