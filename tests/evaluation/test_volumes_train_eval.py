"""Volumes end to end: VolumeDataModule, samtune-train and samtune-eval with per-volume 3D Dice.

The volumes are tiny synthetic NIfTI files (32 x 32 x 6). The 3D Dice written by
``samtune-eval`` is checked against numpy: the evaluator's per-object masks, put back at their
slices by hand and scored against the label files read with nibabel.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from samtune.data import VolumeDataModule
from samtune.data.datamodules.base import seeded_split
from samtune.data.datamodules.volumes import VolumeGroupSampler
from samtune.evaluation import Evaluator
from samtune.evaluation.evaluator import evaluate_dataset
from samtune.evaluation.report.volumes import write_per_volume_csv
from samtune.evaluation.results import EvalResult, ObjectResult
from samtune.evaluation.volumes import volume_evaluation
from samtune.models import ModelSpec
from samtune.models.weights import load_model
from tests.helpers import REPO, TINY_VOLUME_SHAPE, write_cases

SHAPE = TINY_VOLUME_SHAPE
CLASSES = {1: "liver", 2: "kidney"}


def datamodule(images: Path, labels: Path, **kwargs) -> VolumeDataModule:
    options = dict(
        images=images,
        labels=labels,
        window="abdomen",
        classes=CLASSES,
        val_fraction=0.34,
        image_size=128,
        batch_size=2,
        seed=1,  # its first two training batches hold an empty slice
    )
    options.update(kwargs)
    return VolumeDataModule(**options)


# ---------------------------------------------------------------------------------- datamodule


def test_split_is_by_case_seeded_and_disjoint(tmp_path):
    images, labels = write_cases(tmp_path, n=5)
    dm = datamodule(images, labels, val_fraction=0.4, seed=3)
    train, val = dm.raw_dataset("train"), dm.raw_dataset("val")
    assert len(val.cases) == 2 and len(train.cases) == 3
    assert sorted(train.cases + val.cases) == [f"case{i:02d}" for i in range(5)]
    # every slice of a case is on one side
    assert {s.meta["volume"] for s in train} == set(train.cases)
    assert {s.meta["volume"] for s in val} == set(val.cases)
    again = datamodule(images, labels, val_fraction=0.4, seed=3)
    assert again.raw_dataset("val").cases == val.cases
    chosen = {
        tuple(p.case for p in datamodule(images, labels, val_fraction=0.4, seed=s).split_cases()[1])
        for s in range(6)
    }
    assert len(chosen) > 1  # the seed chooses the cases


def test_seeded_split_sizes():
    for n, fraction, n_val in ((5, 0.4, 2), (10, 0.2, 2), (2, 0.1, 1), (1, 0.4, 0), (4, 0.0, 0)):
        train, val = seeded_split(n, fraction, seed=7)
        assert len(val) == n_val and sorted(train + val) == list(range(n))
    with pytest.raises(ValueError, match="val_fraction"):
        seeded_split(4, 1.0, seed=0)


def test_explicit_val_folders_and_per_split_empty_rates(tmp_path):
    images, labels = write_cases(tmp_path / "train", n=2)
    val_images, val_labels = write_cases(tmp_path / "val", n=1)
    dm = datamodule(
        images, labels, val_images=val_images, val_labels=val_labels, empty_slice_rate=1.0
    )
    train, val = dm.raw_dataset("train"), dm.raw_dataset("val")
    assert train.cases == ["case00", "case01"] and val.cases == ["case00"]
    assert len(train) == 2 * SHAPE[2]  # empty slices kept for training
    assert len(val) == 4 and all(s.masks.shape[0] > 0 for s in val)  # only slices with objects
    with pytest.raises(ValueError, match="no test_images"):
        dm.raw_dataset("test")
    with pytest.raises(ValueError, match="val_images and val_labels"):
        datamodule(images, labels, val_images=val_images)
    with pytest.raises(ValueError, match="unknown CT window preset"):
        datamodule(images, labels, window="liver")


def test_grouped_sampler_covers_every_slice_volume_group_by_group():
    volume_of = ["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["d"] * 2
    sampler = VolumeGroupSampler(volume_of, group=2, seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(len(volume_of))) and len(sampler) == len(volume_of)
    assert first != second  # a new order each epoch
    assert list(VolumeGroupSampler(volume_of, group=2, seed=0)) == first  # and repeatable
    volumes = [volume_of[i] for i in first]
    first_seen: dict[str, int] = {}
    for position, volume in enumerate(volumes):
        first_seen.setdefault(volume, position)
    ordered = sorted(first_seen, key=first_seen.get)
    start = 0
    for g in range(0, len(ordered), 2):  # each group: two whole volumes, one contiguous block
        members = ordered[g : g + 2]
        size = sum(volume_of.count(m) for m in members)
        assert set(volumes[start : start + size]) == set(members)
        start += size
    assert start == len(volumes)


def test_train_loader_batches_empty_slices_without_masks(tmp_path):
    images, labels = write_cases(tmp_path)
    dm = datamodule(images, labels, empty_slice_rate=1.0)
    loader = dm.train_dataloader()
    batches = [b for _, b in zip(range(2), loader)]  # what the smoke run below trains on
    masks = [m for b in batches for m in b["masks"]]
    assert all(b["images"].shape[1:] == (3, 128, 128) for b in batches)
    assert any(m.shape == (0, 128, 128) for m in masks), "no empty slice in the trained batches"
    assert any(m.shape[0] > 0 for m in masks)


def test_classes_override_from_the_command_line_grammar(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    images, labels = write_cases(tmp_path, n=2)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose(
            overrides=[
                "+data=volumes",
                "+model.image_size=128",
                f"data.images={images}",
                f"data.labels={labels}",
                "data.window=abdomen",
                "data.classes={1: liver, 2: kidney}",
            ]
        )
    dm = instantiate(cfg.data)
    assert isinstance(dm, VolumeDataModule)
    train = dm.raw_dataset("train")
    assert train.classes == CLASSES
    assert train[0].meta["class_names"] == CLASSES


# ----------------------------------------------------------------------- per-volume, by hand


def _row(dataset, index: int, obj: int, class_id: int, mask: np.ndarray, protocol: str):
    return ObjectResult(
        image_id=index, file=dataset[index].meta["file"], object=obj, class_id=class_id,
        class_name=CLASSES[class_id], protocol=protocol, area=int(mask.sum()), iou=0.0,
        dice=0.0, pred_iou=0.0, mask=mask,
    )  # fmt: skip


def test_volume_evaluation_equals_numpy_on_hand_made_masks(tmp_path):
    images, labels = write_cases(tmp_path, n=2)
    dataset = datamodule(images, labels, val_images=images, val_labels=labels).raw_dataset("val")
    result = EvalResult(protocols=("box",), max_clicks=1, noc_thresholds=(0.9,))
    truth = {
        c: nib.load(str(labels / f"{c}_seg.nii.gz")).get_fdata().astype(int) for c in dataset.cases
    }
    expected_pred = {c: np.zeros((3, *SHAPE), bool) for c in dataset.cases}
    for index in range(len(dataset)):
        sample = dataset[index]
        case, k = sample.meta["volume"], sample.meta["slice"]
        if k == 3:
            continue  # no prediction on this slice: its ground truth must count as missed
        for obj, (class_id, gt) in enumerate(zip(sample.class_ids.tolist(), sample.masks)):
            mask = np.roll(gt, 1, axis=1) if class_id == 1 else gt.copy()
            result.rows.append(_row(dataset, index, obj, class_id, mask, "box"))
            expected_pred[case][class_id][:, :, k] |= mask
    volumes = volume_evaluation(result, dataset)
    assert volumes["cases"] == ["case00", "case01"] and volumes["classes"] == {
        "1": "liver",
        "2": "kidney",
    }
    box = volumes["protocols"]["box"]
    for case in dataset.cases:
        for class_id in (1, 2):
            pred, gt = expected_pred[case][class_id], truth[case] == class_id
            reference = 2 * np.sum(pred & gt) / (pred.sum() + gt.sum())
            assert box["per_volume"][case][str(class_id)] == pytest.approx(reference, abs=1e-12)
            assert 0 < reference < 1
            assert box["voxels"][case][str(class_id)] == {
                "gt": int(gt.sum()),
                "pred": int(pred.sum()),
            }
    class_means = [np.mean([box["per_volume"][c][k] for c in dataset.cases]) for k in ("1", "2")]
    assert box["mean"] == pytest.approx(np.mean(class_means), abs=1e-12)
    path = write_per_volume_csv(volumes, tmp_path / "per_volume.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4 and {r["class_name"] for r in rows} == {"liver", "kidney"}
    # stopped early: a volume not fully evaluated is left out, not scored with misses
    partial = volume_evaluation(result, dataset, evaluated_items=len(dataset) - 1)
    assert partial["cases"] == ["case00"] and list(partial["excluded"]) == ["case01"]
    result.rows[0].mask = None
    with pytest.raises(ValueError, match="keep_masks=True"):
        volume_evaluation(result, dataset)


class _PerfectEvaluator:
    """Predicts each object's own ground truth; records the keep_masks it ran with."""

    def __init__(self) -> None:
        self.keep_masks = False
        self.ran_with: list[bool] = []

    def evaluate(self, model, dataset, *, device="cpu", max_images=None) -> EvalResult:
        self.ran_with.append(self.keep_masks)
        result = EvalResult(protocols=("point1",), max_clicks=1, noc_thresholds=(0.9,))
        for index in range(len(dataset)):
            sample = dataset[index]
            for obj, (class_id, gt) in enumerate(zip(sample.class_ids.tolist(), sample.masks)):
                row = _row(dataset, index, obj, class_id, gt.copy(), "point1")
                row.mask = row.mask if self.keep_masks else None
                result.rows.append(row)
        return result


def test_evaluate_dataset_keeps_masks_only_for_scoring(tmp_path):
    images, labels = write_cases(tmp_path, n=1)
    dataset = datamodule(images, labels, val_images=images, val_labels=labels).raw_dataset("val")
    evaluator = _PerfectEvaluator()
    result, volumes = evaluate_dataset(evaluator, None, dataset)
    assert evaluator.ran_with == [True] and evaluator.keep_masks is False
    assert all(row.mask is None for row in result.rows)
    assert volumes["protocols"]["point1"]["per_volume"] == {"case00": {"1": 1.0, "2": 1.0}}
    evaluator.keep_masks = True
    result, _ = evaluate_dataset(evaluator, None, dataset)
    assert all(row.mask is not None for row in result.rows)
    plain = [dataset[i] for i in range(2)]  # a list of Samples is no volume dataset
    assert evaluate_dataset(_PerfectEvaluator(), None, plain)[1] is None


# --------------------------------------------------------------------- the CLIs, end to end


def _run(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _data_args(images: Path, labels: Path) -> list[str]:
    return [
        "data=volumes",
        f"data.images={images}",
        f"data.labels={labels}",
        "data.window=abdomen",
        "data.classes={1: liver, 2: kidney}",
        "data.val_fraction=0.34",
        "data.batch_size=2",
        "data.seed=1",
        "model.image_size=128",
    ]


def test_train_then_eval_writes_per_volume_dice_equal_to_numpy(tmp_path, tiny_checkpoint):
    images, labels = write_cases(tmp_path / "data")
    args = _data_args(images, labels)
    train_args = [
        "experiment=smoke",
        *args,
        "data.empty_slice_rate=1.0",  # empty slices in the batches: the step must skip them
        f"model.checkpoint={tiny_checkpoint}",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "evaluate_after_training=false",
        f"hydra.run.dir={tmp_path / 'train'}",
    ]
    train = _run("samtune.cli.train", train_args, cwd=tmp_path)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-5000:]
    last = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert "VolumeDataModule" in train.stdout and "volumes 2" in train.stdout

    out = tmp_path / "eval"
    ev = _run(
        "samtune.cli.eval",
        [*args, "model.checkpoint=null", f"ckpt={last}", "evaluation.max_clicks=2",
         "evaluation.progress=false", f"hydra.run.dir={out}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["aggregates"]) == {"point1", "box", "clicks"}  # slice-level mIoU kept
    volumes = results["volumes"]
    assert volumes["classes"] == {"1": "liver", "2": "kidney"} and len(volumes["cases"]) == 1
    report = (out / "report.md").read_text()
    assert "Per volume (3D Dice)" in report and "Dice liver" in report
    assert "Per volume (3D Dice)" in (out / "report.html").read_text()
    csv_rows = list(csv.DictReader((out / "per_volume.csv").open()))
    assert len(csv_rows) == 3 * 2  # protocols x classes, one volume

    # reference: the same model and data in this process, masks stacked and scored with numpy
    spec = ModelSpec(name="sam2.1_hiera_tiny", image_size=128, checkpoint=None)
    model, _ = load_model(str(last), spec)
    dataset = datamodule(images, labels).raw_dataset("val")
    assert dataset.cases == volumes["cases"]
    result = Evaluator(max_clicks=2, progress=False, keep_masks=True).evaluate(model, dataset)
    case = volumes["cases"][0]
    truth = nib.load(str(labels / f"{case}_seg.nii.gz")).get_fdata().astype(int)
    predicted_voxels = 0
    for protocol in ("point1", "box", "clicks"):
        stacked = np.zeros((3, *SHAPE), dtype=bool)
        for row in result.protocol_rows(protocol):
            meta = dataset[row.image_id].meta
            stacked[row.class_id][:, :, meta["slice"]] |= row.mask
        for class_id in (1, 2):
            pred, gt = stacked[class_id], truth == class_id
            reference = 2 * np.sum(pred & gt) / (pred.sum() + gt.sum())
            predicted_voxels += int(pred.sum())
            got = volumes["protocols"][protocol]["per_volume"][case][str(class_id)]
            assert got == pytest.approx(reference, abs=1e-9), (protocol, class_id)
            row = next(
                r for r in csv_rows if r["protocol"] == protocol and r["class_id"] == str(class_id)
            )
            assert float(row["dice"]) == pytest.approx(reference, abs=1e-6)
            assert int(row["gt_voxels"]) == int(gt.sum()) and int(row["pred_voxels"]) == int(
                pred.sum()
            )
        per_class = volumes["protocols"][protocol]["class_mean"]
        assert volumes["protocols"][protocol]["mean"] == pytest.approx(
            np.mean(list(per_class.values()))
        )
    assert predicted_voxels > 0  # the comparison is not between two empty predictions
    assert not math.isnan(volumes["protocols"]["box"]["mean"])
