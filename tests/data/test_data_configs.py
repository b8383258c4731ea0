"""Every config in configs/data composes with Hydra and instantiates a working datamodule."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from samtune.data.datamodules.base import SamDataModule
from tests.helpers import REPO, tiny_dataset, write_cases

CONFIG_DIR = REPO / "configs"
DATA_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
CLIP_CONFIGS = ("ctc", "frames", "volume_clips", "vos")


def _overrides(name: str, tmp_path) -> list[str]:
    if name == "coco":
        return [
            f"data.root={tmp_path / 'images'}",
            f"data.train_json={tmp_path / 'train.json'}",
            f"data.val_json={tmp_path / 'val.json'}",
        ]
    if name == "folder":
        return [
            f"data.train_images={tmp_path / 'images'}",
            f"data.train_masks={tmp_path / 'masks'}",
            "data.val_fraction=0.5",
        ]
    if name == "volumes":
        images, labels = write_cases(tmp_path / "volumes", n=2)
        return [f"data.images={images}", f"data.labels={labels}", "data.val_fraction=0.5"]
    from tests.data import clip_layouts
    from tests.data import layouts as data_layouts

    clip_sampling = ["data.num_frames=3", "data.val_fraction=0.5"]
    if name == "vos":
        clip_layouts.write_vos(tmp_path / name, "davis", {"train": 2}, n_frames=4)
        return [f"data.root={tmp_path / name}", *clip_sampling]
    if name == "frames":
        clip_layouts.write_frames(tmp_path / name, n_videos=2, n_frames=4)
        folder = tmp_path / name
        return [
            f"data.images={folder / 'images'}",
            f"data.labels={folder / 'labels'}",
            *clip_sampling,
        ]
    if name == "ctc":
        for sequence in ("01", "02"):
            clip_layouts.write_ctc(tmp_path / name, sequence, n_frames=4, seg_frames=(0, 2))
        return [f"data.root={tmp_path / name}", *clip_sampling]
    if name == "volume_clips":
        images, labels = write_cases(tmp_path / "volumes", n=2)
        return [f"data.images={images}", f"data.labels={labels}", *clip_sampling]

    root = tmp_path / name
    if name == "per_object":
        data_layouts.write_per_object_nested(root, n=2)
    elif name == "yolo":
        data_layouts.write_yolo(root, {"train": 2, "val": 1})
    elif name == "labelme":
        data_layouts.write_labelme(root, n=2)
    elif name == "semantic":
        data_layouts.write_semantic(root, n=2)
        return [
            f"data.train_images={root / 'images'}",
            f"data.train_masks={root / 'masks'}",
            "data.classes={1: tumour, 2: stroma}",
            "data.val_fraction=0.5",
        ]
    else:
        return []
    return [f"data.root={root}", "data.val_fraction=0.5"]


def test_all_expected_configs_exist():
    assert DATA_CONFIGS == [
        "coco", "ctc", "folder", "frames", "labelme", "nuclei_mini", "per_object", "semantic",
        "synthetic", "volume_clips", "volumes", "vos", "yolo",
    ]  # fmt: skip


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_config_composes_and_instantiates(name, tmp_path):
    tiny_dataset(tmp_path)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(
            overrides=[f"+data={name}", "+model.image_size=128", *_overrides(name, tmp_path)]
        )
    assert cfg.data.image_size == 128 and cfg.data.skip_log is None
    dm = instantiate(cfg.data)
    assert isinstance(dm, SamDataModule) and dm.image_size == 128
    assert dm.augment is not None and dm.augment.get("hflip") == cfg.data.augment.get("hflip")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    if name in CLIP_CONFIGS:  # clips: B x T x 3 x S x S, T = data.num_frames
        assert batch["frames"].shape[1:] == (3, 3, 128, 128)
        assert batch["masks"][0].shape[1:] == (3, 128, 128)
    else:
        assert batch["images"].shape[1:] == (3, 128, 128)
    assert len(dm.raw_dataset("val")) >= 1


@pytest.mark.parametrize(
    "name", ["coco", "folder", "per_object", "yolo", "labelme", "semantic", *CLIP_CONFIGS]
)
def test_required_paths_are_marked_missing(name):
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(overrides=[f"+data={name}", "+model.image_size=128"])
    # paths every task needs are ??? (missing); a split's files only the tasks that read it
    required, per_split = {
        "coco": (["root"], ["train_json", "val_json", "test_json"]),  # or found in an export
        "folder": ([], ["train_images", "train_masks", "val_images", "val_masks"]),
        "per_object": (["root"], []),
        "yolo": (["root"], []),
        "labelme": (["root"], []),
        "semantic": (["classes"], ["train_images", "train_masks", "val_images", "val_masks"]),
        "vos": (["root"], ["val_split", "test_split"]),
        "frames": (["images", "labels"], ["val_images", "val_labels"]),
        "ctc": (["root"], ["sequences", "val_sequences"]),
        "volume_clips": (["images", "labels"], ["val_images", "val_labels"]),
    }[name]
    keys = required + per_split
    assert [key for key in keys if OmegaConf.is_missing(cfg.data, key)] == required
    assert all(cfg.data[key] is None for key in per_split)
