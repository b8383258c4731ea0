"""README's "Formats as they ship" commands, as written, on files as their sources write them:
the counts check-data reports equal the hand counts, and each unreadable file or missing split
is named with the reason (and the paths looked at)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from samtune.data.datamodules.yolo import YoloDataModule
from samtune.data.datasets.volumes.readers import read_volume
from samtune.data.io import read_image, read_label_map
from samtune.data.sample import DataError
from tests.data.format_layouts import FORMAT_FOLDERS, write_format_layouts
from tests.data.test_pairing_layouts import _run
from tests.data.test_pairing_layouts import section_commands as pairing_section_commands

SECTION = "#### Formats as they ship"


def section_commands() -> list[str]:
    """The commands of the section's first shell block, as README.md shows them."""
    return pairing_section_commands(SECTION)


def _command(name: str, work: Path) -> str:
    (command,) = [c for c in section_commands() if f"/data/{name}/" in c or f"/data/{name} " in c
                  or c.endswith(f"/data/{name}")]  # fmt: skip
    command = command.replace(f"/data/{name}", str(work / name))
    assert "/data/" not in command
    return command


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    work = tmp_path_factory.mktemp("format_layouts")
    return work, write_format_layouts(work)


def test_the_section_names_every_generated_layout(layouts):
    _, truth = layouts
    commands = section_commands()
    assert len(commands) == len(truth) == len(FORMAT_FOLDERS), commands
    for name in FORMAT_FOLDERS:
        assert sum(f"/data/{name}/" in c or c.endswith(f"/data/{name}") for c in commands) == 1


def _checked(report: dict) -> dict[str, dict]:
    return {s: e for s, e in report["splits"].items() if e["status"] == "checked"}


@pytest.mark.parametrize("name", ["DRIVE", "microscopy", "mixed"])
def test_image_folders_read_as_shipped_count_as_by_hand(name, layouts, tmp_path, capsys):
    work, truth = layouts
    report, printed = _run(_command(name, work), tmp_path / "run", capsys)
    assert report["ok"], "\n".join(printed)
    splits = _checked(report)
    assert set(splits) == {"train", "val"}  # val split off train by data.val_fraction
    assert sum(e["images"] for e in splits.values()) == truth[name]["images"]
    assert sum(e["objects"] for e in splits.values()) == truth[name]["objects"]
    assert all(e["bad_files"] == 0 for e in splits.values())


@pytest.mark.parametrize("name", ["yolo_roboflow", "yolo_named", "yolo_file"])
def test_yolo_exports_read_as_shipped_count_as_by_hand(name, layouts, tmp_path, capsys):
    work, truth = layouts
    report, printed = _run(_command(name, work), tmp_path / "run", capsys)
    assert report["ok"], "\n".join(printed)
    splits = _checked(report)
    assert {s: e["images"] for s, e in splits.items()} == {
        s: t["images"] for s, t in truth[name].items()
    }
    assert {s: e["objects"] for s, e in splits.items()} == {
        s: t["objects"] for s, t in truth[name].items()
    }


def test_tiff_stacks_spacing_in_mm_from_the_files_unit(layouts, tmp_path, capsys):
    work, truth = layouts
    expected = truth["stacks"]
    report, printed = _run(_command("stacks", work), tmp_path / "run", capsys)
    assert report["ok"], "\n".join(printed)
    splits = _checked(report)
    volumes = [e["volumes"] for e in splits.values()]
    assert sum(v["count"] for v in volumes) == expected["volumes"]
    assert sum(e["images"] for e in splits.values()) == expected["slices"]
    assert sum(e["objects"] for e in splits.values()) == expected["objects"]
    assert all(v["spacing_unit"] == "mm" for v in volumes)
    for case, spacing in expected["spacing_mm"].items():
        geometry = read_volume(work / "stacks" / "images" / f"{case}.tif")
        assert geometry.spacing == pytest.approx(spacing) and geometry.spacing_unit == "mm"
    low = np.min([v["spacing"]["min"] for v in volumes], axis=0)
    high = np.max([v["spacing"]["max"] for v in volumes], axis=0)
    every = np.array(list(expected["spacing_mm"].values()))
    assert low == pytest.approx(every.min(axis=0)) and high == pytest.approx(every.max(axis=0))
    lines = [line for line in printed if "  volumes: " in line]
    assert lines and all(line.endswith(" mm") and "spacing " in line for line in lines), lines


# --- bad input and what a user sees ---------------------------------------------------------


def test_a_stack_without_calibration_is_labelled_pixel_not_mm(tmp_path, capsys):
    label = np.zeros((4, 24, 24), np.uint8)
    label[1:3, 4:12, 4:12] = 1
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(
            tmp_path / folder / "stack.tif", label * 100 if folder == "images" else label
        )
    volume = read_volume(tmp_path / "images" / "stack.tif")
    assert volume.spacing == (1.0, 1.0, 1.0) and volume.spacing_unit == "pixel"
    report, printed = _run(
        f"samtune-check-data data=volumes data.images={tmp_path / 'images'} "
        f"data.labels={tmp_path / 'labels'} data.val_fraction=0",
        tmp_path / "run",
        capsys,
    )
    assert report["splits"]["train"]["volumes"]["spacing_unit"] == "pixel"
    assert any(line.endswith(" pixel") and "  volumes: " in line for line in printed), printed


def test_a_missing_split_is_named_with_every_path_tried_and_the_others_read(layouts, tmp_path,
                                                                            capsys):  # fmt: skip
    work, truth = layouts
    yaml_file = work / "yolo_file" / "coco8-seg.yaml"
    report, printed = _run(
        f"samtune-check-data data=yolo data.root={yaml_file}", tmp_path / "run", capsys
    )
    assert not report["ok"]
    test = report["splits"]["test"]
    assert test["status"] == "error"
    for tried in (work / "yolo_file" / "coco8-seg" / "images" / "test",
                  work / "yolo_file" / "images" / "test"):  # fmt: skip
        assert str(tried) in test["message"]
    assert str(yaml_file) in test["message"] and "'images/test'" in test["message"]
    assert {s: e["images"] for s, e in _checked(report).items()} == {
        s: t["images"] for s, t in truth["yolo_file"].items()
    }
    # a train folder gone too: evaluation of val still has its split, train names what it tried
    copy = tmp_path / "copy"
    shutil.copytree(work / "yolo_file", copy)
    shutil.rmtree(copy / "coco8-seg" / "images" / "train")
    module = YoloDataModule(root=copy / "coco8-seg.yaml", image_size=128)
    assert len(module.raw_dataset("val")) == truth["yolo_file"]["val"]["images"]
    with pytest.raises(DataError, match=r"the train images folder 'images/train' \(train:\)"):
        module.raw_dataset("train")


def test_a_folder_of_several_yamls_names_them(layouts):
    work, _ = layouts
    with pytest.raises(DataError) as err:
        YoloDataModule(root=work / "yolo_file", image_size=128)
    assert "coco8-seg.yaml" in str(err.value) and "hyp.yaml" in str(err.value)
    assert "data.root=<file.yaml>" in str(err.value)


def test_roboflow_entries_resolve_with_and_without_their_leading_dotdot(tmp_path, layouts):
    work, truth = layouts
    shutil.copytree(work / "yolo_roboflow", tmp_path / "export")
    yaml_file = tmp_path / "export" / "data.yaml"
    # the export moved into a folder of its own, the yaml now one level below its splits
    (tmp_path / "export" / "meta").mkdir()
    yaml_file.rename(tmp_path / "export" / "meta" / "project.yaml")
    module = YoloDataModule(root=tmp_path / "export" / "meta", image_size=128)
    assert module.yaml_file.name == "project.yaml"
    for split, counted in truth["yolo_roboflow"].items():
        assert len(module.raw_dataset(split)) == counted["images"]


def test_palette_masks_read_by_index_and_grey_gifs_by_level(layouts):
    work, _ = layouts
    indices = read_label_map(work / "mixed" / "masks" / "d.png")
    assert sorted(np.unique(indices)) == [0, 1, 2, 3]  # all red, yet three objects
    vessels = read_label_map(work / "DRIVE" / "training" / "1st_manual" / "21_manual1.gif")
    with Image.open(work / "DRIVE" / "training" / "1st_manual" / "21_manual1.gif") as gif:
        assert gif.mode == "P" and np.array(gif)[0, 0] == 1  # background is index 1 there
    assert vessels[0, 0] == 0 and set(np.unique(vessels)) == {0, 255}
    rgba = read_image(work / "mixed" / "images" / "a.png")
    with Image.open(work / "mixed" / "images" / "a.png") as image:
        assert image.mode == "RGBA"
        np.testing.assert_array_equal(rgba, np.array(image)[..., :3])
    with Image.open(work / "mixed" / "images" / "d.gif") as image:
        np.testing.assert_array_equal(read_image(image.filename), np.array(image.convert("RGB")))


def test_compressed_tiffs_read_back_as_written(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (24, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 5, (24, 32)).astype(np.uint16)
    for compression in ("lzw", "zlib", "packbits"):
        tifffile.imwrite(tmp_path / "i.tif", rgb, photometric="rgb", compression=compression)
        np.testing.assert_array_equal(read_image(tmp_path / "i.tif"), rgb)
        tifffile.imwrite(tmp_path / "m.tif", labels, compression=compression)
        np.testing.assert_array_equal(read_label_map(tmp_path / "m.tif"), labels)
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.dstack([x * 4, y * 5, (x + y) * 2]).astype(np.uint8)
    tifffile.imwrite(tmp_path / "j.tif", smooth, photometric="rgb", compression="jpeg")
    assert np.abs(read_image(tmp_path / "j.tif").astype(int) - smooth).mean() < 2  # lossy
    tifffile.imwrite(tmp_path / "jm.tif", labels.astype(np.uint8), compression="jpeg")
    with pytest.raises(DataError) as err:
        read_label_map(tmp_path / "jm.tif")
    assert str(tmp_path / "jm.tif") in str(err.value) and "JPEG-compressed" in str(err.value)


def test_a_codec_that_is_not_installed_is_named_with_the_file(tmp_path, monkeypatch):
    path = tmp_path / "21_training.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), photometric="rgb", compression="lzw")

    def without_imagecodecs(self, *args, **kwargs):  # what tifffile raises without the package
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", without_imagecodecs)
    with pytest.raises(DataError) as err:
        read_image(path)
    assert str(err.value) == (
        f"{path}: cannot read image: TIFF compression LZW needs the imagecodecs package, which "
        "is not installed (pip install imagecodecs)"
    )


def test_an_unreadable_gif_mask_is_named_and_the_rest_counted(layouts, tmp_path, capsys):
    work, truth = layouts
    shutil.copytree(work / "mixed", tmp_path / "mixed")
    bad = tmp_path / "mixed" / "masks" / "c.gif"
    bad.write_bytes(b"GIF89a\x00\x01garbage")
    command = shlex.join([
        "samtune-check-data", "data=folder", f"data.train_images={tmp_path / 'mixed' / 'images'}",
        f"data.train_masks={tmp_path / 'mixed' / 'masks'}", "data.on_error=skip",
    ])  # fmt: skip
    with pytest.warns(UserWarning):
        report, printed = _run(command, tmp_path / "run", capsys)
    assert not report["ok"]
    (problem,) = report["problems"]
    assert problem["file"] == str(tmp_path / "mixed" / "images" / "c.tif")
    assert f"{bad}: cannot read" in problem["reason"]
    assert sum(e["images"] for e in _checked(report).values()) == truth["mixed"]["images"] - 1


def test_evaluation_of_val_needs_only_val(layouts, tmp_path, tiny_checkpoint):
    """A yaml whose train and test folders are not shipped still evaluates its val split."""
    import json

    from samtune.cli import eval as eval_cli
    from tests.cli.test_data_layouts_train_eval import _run as run_task

    work, truth = layouts
    shutil.copytree(work / "yolo_file", tmp_path / "export")
    shutil.rmtree(tmp_path / "export" / "coco8-seg" / "images" / "train")
    run_task(
        eval_cli.task,
        "eval",
        ["data=yolo", f"data.root={tmp_path / 'export' / 'coco8-seg.yaml'}",
         "model.image_size=128", f"ckpt={tiny_checkpoint}", "evaluation.max_clicks=2",
         "evaluation.progress=false", "max_images=1"],
        tmp_path / "eval",
    )  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["summary"]["split"] == "val"
    assert set(results["aggregates"]) == {"point1", "box", "clicks"}


@pytest.mark.parametrize("path_key", ["absent", "empty", "elsewhere", "here", "gone"])
def test_the_path_key_set_empty_or_absent(path_key, layouts, tmp_path):
    """``path:`` absent or empty: the yaml's folder; a folder that exists: that one; a folder of
    the exporter's machine that does not exist here: the yaml's folder again."""
    work, truth = layouts
    export = tmp_path / "export"
    shutil.copytree(work / "yolo_named", export)
    yaml_file = export / "cells.v2i.yolov8.yaml"
    body = yaml_file.read_text().replace("path:\n", "")
    line = {
        "absent": "",
        "empty": "path: ''\n",
        "elsewhere": f"path: {export}\n",
        "here": "path: .\n",
        "gone": "path: /content/datasets/cells\n",
    }[path_key]
    if path_key == "elsewhere":  # the yaml kept apart from its dataset, path: naming it
        yaml_file.unlink()
        yaml_file = tmp_path / "cells.yaml"
    yaml_file.write_text(line + body)
    module = YoloDataModule(root=yaml_file, image_size=128)
    for split, counted in truth["yolo_named"].items():
        assert len(module.raw_dataset(split)) == counted["images"]


def test_one_folder_of_mixed_extensions_pairs_images_and_masks_by_stem(tmp_path):
    from samtune.data.datasets.folder import FolderDataset
    from tests.data.layouts import make_scene

    names = {"x": (".jpg", "_mask.png"), "y": (".tif", "_mask.gif"), "z": (".png", "_label.tif")}
    objects = 0
    for i, (stem, (image_ext, mask_name)) in enumerate(names.items()):
        scene = make_scene(90 + i, n=2 + i)
        objects += len(scene.masks)
        Image.fromarray(scene.image).save(tmp_path / f"{stem}{image_ext}")
        labels = np.zeros(scene.image.shape[:2], np.uint8)
        for k, mask in enumerate(scene.masks):
            labels[mask] = 40 * (k + 1)
        Image.fromarray(labels).save(tmp_path / f"{stem}{mask_name}")
    dataset = FolderDataset(images=tmp_path, masks=tmp_path)
    assert len(dataset) == 3 and dataset.counts["objects"] == objects
    pairs = {Path(r.image).name: Path(r.mask).name for r in dataset.pairing.rows}
    assert pairs == {f"{s}{e}": f"{s}{m}" for s, (e, m) in names.items()}
