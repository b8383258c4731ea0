"""COCO datasets: RLE (compressed and not) and polygons, the bundled nuclei json, and bad input."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from samtune.data.datasets.base import DataSkipWarning
from samtune.data.datasets.coco import CocoDataset
from samtune.data.datasets.demo import NUCLEI_MINI
from samtune.data.sample import DataError

H, W = 24, 32


def _compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """Column-major run lengths written out by hand, starting with a background run."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [mask.shape[0], mask.shape[1]], "counts": runs}


def _box(y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _write_coco(tmp_path, annotations, images=None, name="ann.json"):
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    images = images or [
        {"id": 1, "file_name": "a.png", "height": H, "width": W},
        {"id": 2, "file_name": "b.png", "height": H, "width": W},
    ]
    rng = np.random.default_rng(0)
    for entry in images:
        path = root / entry["file_name"]
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    cats = [{"id": 1, "name": "cell"}, {"id": 7, "name": "debris"}]
    data = {"images": images, "annotations": annotations, "categories": cats}
    ann_file = tmp_path / name
    ann_file.write_text(json.dumps(data))
    return root, ann_file


def _ann(ann_id, image_id, segmentation, category=1, **extra):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": segmentation,
        **extra,
    }


@pytest.fixture
def mixed_coco(tmp_path):
    """Image 1: compressed RLE, uncompressed RLE, polygon, crowd, empty mask; image 2: only empty."""
    a, b = _box(2, 8, 3, 12), _box(10, 20, 15, 30)
    polygon = [[20.0, 1.0, 30.0, 1.0, 30.0, 6.0, 20.0, 6.0]]
    anns = [
        _ann(10, 1, _compressed(a)),
        _ann(11, 1, _uncompressed(b), category=7),
        _ann(12, 1, polygon),
        _ann(13, 1, _compressed(_box(0, 24, 0, 32)), iscrowd=1),
        _ann(14, 1, _compressed(np.zeros((H, W), bool))),
        _ann(15, 2, _uncompressed(np.zeros((H, W), bool))),
    ]
    root, ann_file = _write_coco(tmp_path, anns)
    return root, ann_file, a, b, polygon


def test_rle_and_polygons_decode_to_the_right_masks(mixed_coco):
    root, ann_file, a, b, polygon = mixed_coco
    ds = CocoDataset(root=root, ann_file=ann_file)
    assert len(ds) == 1  # image 2 is left without objects
    sample = ds[0]
    assert sample.masks.shape == (3, H, W) and sample.masks.dtype == bool
    np.testing.assert_array_equal(sample.masks[0], a)
    np.testing.assert_array_equal(sample.masks[1], b)
    reference = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, H, W))).astype(
        bool
    )
    np.testing.assert_array_equal(sample.masks[2], reference)
    assert sample.masks[2].sum() > 30  # the 10x5 rectangle, give or take the border convention
    assert sample.class_ids.tolist() == [1, 7, 1]
    assert sample.meta["class_names"] == {1: "cell", 7: "debris"}
    assert sample.meta["image_id"] == 1 and sample.meta["orig_size"] == (H, W)
    assert sample.meta["file"].endswith("a.png") and sample.meta["annotation_ids"] == [10, 11, 12]
    assert ds.stats == {
        "images": 1,
        "objects": 3,
        "dropped_empty": 2,
        "dropped_small": 0,
        "dropped_images": 1,
        "crowd_ignored": 1,
        "skipped": 0,
    }


def test_min_area_drops_small_masks(tmp_path):
    anns = [_ann(1, 1, _compressed(_box(0, 2, 0, 2))), _ann(2, 1, _compressed(_box(5, 15, 5, 15)))]
    root, ann_file = _write_coco(
        tmp_path, anns, images=[{"id": 1, "file_name": "a.png", "height": H, "width": W}]
    )
    ds = CocoDataset(root=root, ann_file=ann_file, min_area=5)
    assert ds.stats["dropped_small"] == 1 and ds.stats["objects"] == 1
    assert ds[0].masks.shape[0] == 1 and ds[0].masks[0].sum() == 100


def test_bundled_nuclei_counts_match_pycocotools():
    for split, n_images, n_objects in (("train", 24, 677), ("val", 8, 250)):
        ann_file = NUCLEI_MINI / "annotations" / f"{split}.json"
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(ann_file))
        direct = len(coco.getAnnIds(iscrowd=False))
        ds = CocoDataset(root=NUCLEI_MINI / "images", ann_file=ann_file)
        assert (len(ds), ds.stats["objects"], direct) == (n_images, n_objects, n_objects)
        assert ds.stats["dropped_empty"] == 0 and ds.stats["skipped"] == 0
    sample = ds[3]
    image_id = sample.meta["image_id"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    expected = np.stack([coco.annToMask(ann).astype(bool) for ann in anns])
    np.testing.assert_array_equal(sample.masks, expected)
    info = coco.loadImgs([image_id])[0]
    assert sample.image.shape == (info["height"], info["width"], 3)


def test_missing_image_file_names_json_and_file(tmp_path):
    anns = [_ann(1, 1, _compressed(_box(2, 8, 3, 12))), _ann(2, 2, _compressed(_box(2, 8, 3, 12)))]
    root, ann_file = _write_coco(tmp_path, anns)
    (root / "b.png").unlink()
    with pytest.raises(DataError, match=r"ann\.json: image file .*b\.png not found"):
        CocoDataset(root=root, ann_file=ann_file)


@pytest.mark.parametrize(
    "segmentation, problem",
    [
        ({"size": [H, W], "counts": "0000garbage"}, "alphabet"),
        ({"size": [H, W], "counts": [5, 3, 2]}, "add up to 10 pixels"),
        (
            {"size": [H + 1, W], "counts": _compressed(_box(2, 8, 3, 12))["counts"]},
            "RLE size 25x32 differs",
        ),
        ([[1.0, 2.0, 3.0, 4.0]], "polygon needs"),
        ("not a segmentation", "segmentation must be"),
    ],
)
def test_invalid_segmentation_names_json_and_annotation(tmp_path, segmentation, problem):
    root, ann_file = _write_coco(
        tmp_path, [_ann(1, 1, _compressed(_box(2, 8, 3, 12))), _ann(99, 2, segmentation)]
    )
    with pytest.raises(
        DataError, match=r"ann\.json: annotation id 99 of image .*b\.png: .*" + problem
    ):
        CocoDataset(root=root, ann_file=ann_file)


def test_truncated_compressed_rle_is_invalid(tmp_path):
    counts = _compressed(_box(2, 8, 3, 12))["counts"]
    root, ann_file = _write_coco(tmp_path, [_ann(5, 1, {"size": [H, W], "counts": counts[:-2]})])
    with pytest.raises(DataError, match=r"annotation id 5 .*a\.png"):
        CocoDataset(root=root, ann_file=ann_file)


def test_real_image_size_differs_from_json(tmp_path):
    root, ann_file = _write_coco(tmp_path, [_ann(1, 1, _compressed(_box(2, 8, 3, 12)))])
    Image.fromarray(np.zeros((H, W + 4, 3), np.uint8)).save(root / "a.png")
    ds = CocoDataset(root=root, ann_file=ann_file)  # sizes are checked when images are read
    with pytest.raises(
        DataError, match=r"ann\.json: image .*a\.png is 24x36 \(HxW\) but the json says 24x32"
    ):
        ds[0]


def test_corrupt_image_bytes_name_the_file(tmp_path):
    root, ann_file = _write_coco(tmp_path, [_ann(1, 1, _compressed(_box(2, 8, 3, 12)))])
    (root / "a.png").write_bytes(b"definitely not a png")
    ds = CocoDataset(root=root, ann_file=ann_file)
    with pytest.raises(DataError, match=r"a\.png: cannot read image"):
        ds[0]


def test_structural_json_errors(tmp_path):
    root, ann_file = _write_coco(tmp_path, [_ann(3, 42, _compressed(_box(2, 8, 3, 12)))])
    with pytest.raises(DataError, match=r"ann\.json: annotation id 3 points at image id 42"):
        CocoDataset(root=root, ann_file=ann_file)
    ann_file.write_text("{not json")
    with pytest.raises(DataError, match=r"ann\.json: cannot read COCO json"):
        CocoDataset(root=root, ann_file=ann_file)
    with pytest.raises(DataError, match=r"nope\.json: annotation file not found"):
        CocoDataset(root=root, ann_file=tmp_path / "nope.json")


def test_skip_mode_counts_and_reports(tmp_path):
    anns = [
        _ann(1, 1, _compressed(_box(2, 8, 3, 12))),
        _ann(2, 2, {"size": [H, W], "counts": [1, 2]}),
        _ann(3, 3, _compressed(_box(2, 8, 3, 12))),
        _ann(4, 4, _compressed(_box(2, 8, 3, 12))),
    ]
    images = [
        {"id": i, "file_name": f"{name}.png", "height": H, "width": W}
        for i, name in enumerate("abcd", 1)
    ]
    root, ann_file = _write_coco(tmp_path, anns, images=images)
    (root / "c.png").unlink()
    (root / "d.png").write_bytes(b"garbage")
    with pytest.warns(DataSkipWarning) as caught:
        ds = CocoDataset(root=root, ann_file=ann_file, on_error="skip")
    assert [str(w.message).split(":")[0].rsplit("/", 1)[-1] for w in caught] == ["b.png", "c.png"]
    assert len(ds) == 2 and ds.stats["skipped"] == 2
    assert [file.rsplit("/", 1)[-1] for file, _ in ds.skipped] == ["b.png", "c.png"]
    assert "annotation id 2" in ds.skipped[0][1] and "not found" in ds.skipped[1][1]
    assert ds[0] is not None
    with pytest.warns(DataSkipWarning, match=r"skipping .*d\.png: .*cannot read image"):
        assert ds[1] is None  # fails only when read
    assert ds.stats["skipped"] == 3 and ds.skipped[-1][0].endswith("d.png")
