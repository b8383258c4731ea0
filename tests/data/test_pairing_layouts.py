"""README's "Pairing beyond a suffix" commands, as written, on the layouts they name: the counts
check-data reports equal those counted by hand, the pairing table comes first, and each way of
pairing refuses bad input naming the file (and the row, pattern or value)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from samtune.cli.check_data import check_data
from samtune.data.datamodules.folder import FolderDataModule
from samtune.data.datamodules.volumes import VolumeDataModule
from samtune.data.datasets.base import DataSkipWarning
from samtune.data.datasets.volumes.readers import read_volume
from samtune.data.sample import DataError
from tests.data.layouts import _save_nifti, tiny_case, write_pairing_layouts
from tests.docs.test_documented_commands import read_steps, strip_comment
from tests.helpers import REPO

README = REPO / "README.md"
SECTION = "#### Pairing beyond a suffix"


def section_commands(section: str = SECTION) -> list[str]:
    """The commands of the README section's first shell block, as README.md shows them."""
    lines = README.read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(section))
    opening = next(i for i in range(head, len(lines)) if lines[i].startswith("```bash"))
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].startswith("```"))
    steps = read_steps(README)
    return [s.text for s in steps if s.kind == "shell" and opening < s.line <= closing]


def _compose(overrides: list[str], out: Path):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("check_data", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _run(command: str, out: Path, capsys) -> tuple[dict, list[str]]:
    """Run a check-data command line in-process, writing into ``out``: its report and printout."""
    argv = shlex.split(strip_comment(command))
    assert argv[0] == "samtune-check-data", command
    overrides = argv[1:] + ["model.image_size=128"]
    data = next(a.split("=", 1)[1] for a in overrides if a.startswith("data="))
    capsys.readouterr()
    report = check_data(_compose(overrides, out), out, data)
    printed = capsys.readouterr().out.splitlines()
    assert json.loads((out / "data_check.json").read_text())["ok"] == report["ok"]
    return report, printed


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    work = tmp_path_factory.mktemp("pairing_layouts")
    return work, write_pairing_layouts(work)


def test_the_section_names_every_generated_layout(layouts):
    _, truth = layouts
    commands = section_commands()
    assert len(commands) == len(truth), commands
    named = [n for c in commands for n in truth if f"/data/{n} " in c + " " or f"/data/{n}/" in c]
    assert sorted(named) == sorted(truth), commands


@pytest.mark.parametrize(
    "name", ["retina", "manifest", "ctmr", "Task02_Heart", "brats", "totalseg"]
)
def test_readme_command_counts_equal_the_hand_counts(name, layouts, tmp_path, capsys):
    work, truth = layouts
    expected = truth[name]
    (command,) = [c for c in section_commands() if f"/data/{name}/" in c or f"/data/{name} " in c]
    command = command.replace(f"/data/{name}", str(work / name))
    assert "/data/" not in command
    report, printed = _run(command, tmp_path / "run", capsys)
    assert report["ok"], "\n".join(printed)
    splits = {s: e for s, e in report["splits"].items() if e["status"] == "checked"}
    assert set(splits) == {"train", "val"}, report["splits"]

    # the pairing table: every pair once, over the splits, and printed before any count
    pairings = {s: e["pairing"] for s, e in splits.items()}
    assert sum(p["pairs"] for p in pairings.values()) == expected["pairs"]
    rows = [r for p in pairings.values() for r in p["first"]]
    assert len({r["image"] for r in rows}) == expected["pairs"]
    assert all(Path(r["image"]).exists() and Path(r["mask"]).exists() for r in rows)
    assert printed[0].startswith("samtune data check:")
    table = [i for i, line in enumerate(printed) if ": pairing: " in line]
    first_count = next(i for i, line in enumerate(printed) if line.startswith("train: ") and
                       ": pairing: " not in line)  # fmt: skip
    assert table[0] == 1 and table[-1] < first_count, printed[:12]
    manifest = next((a.split("=", 1)[1] for a in shlex.split(command) if "data.pairs=" in a), "")
    assert all(manifest in p["rule"] for p in pairings.values())  # the rule names the manifest
    for split, pairing in pairings.items():
        assert f"{split}: pairing: {pairing['rule']}: {pairing['pairs']} pairs" in printed
        for row in pairing["first"]:
            note = f"  [{row['split']}]" if row["split"] else ""
            assert f"  {row['id']}: {row['image']}  <->  {row['mask']}{note}" in printed

    if "train" in expected:  # the manifest's split column
        assert {s: e["images"] for s, e in splits.items()} == {
            "train": expected["train"], "val": expected["val"]
        }  # fmt: skip
        assert all(r["split"] == s for s, p in pairings.items() for r in p["first"])
    assert sum(e["objects"] for e in splits.values()) == expected["objects"]
    names = {e["classes"][c]["name"] for e in splits.values() for c in e["classes"]}
    assert sorted(names) == sorted(expected["classes"])
    if "volumes" in expected:
        assert sum(e["volumes"]["count"] for e in splits.values()) == expected["volumes"]
        assert sum(e["images"] for e in splits.values()) == expected["slices"]
        voxels: dict[int, int] = {}
        for entry in splits.values():
            for value, info in entry["volumes"]["classes"].items():
                voxels[int(value)] = voxels.get(int(value), 0) + info["voxels"]
        assert voxels == expected["voxels"]
        order = [
            splits["train"]["volumes"]["classes"][str(v)]["name"]
            for v in sorted(expected["voxels"])
        ]
        assert order == expected["classes"]  # value 1 is the first name, 2 the second
    else:
        assert sum(e["images"] for e in splits.values()) == expected["pairs"]


# --- bad input, one per way of pairing ------------------------------------------------------


def test_a_manifest_row_naming_a_missing_file_is_named_with_the_row(layouts, tmp_path, capsys):
    work, _ = layouts
    manifest = tmp_path / "pairs.csv"
    source = work / "manifest"
    manifest.write_text(
        "image,mask,split\n"
        f"{source}/raw/scan 0.png,{source}/annotations/gt-0.png,train\n"
        f"{source}/raw/scan 1.png,{source}/annotations/gt-1.png,train\n"
        f"{source}/raw/scan 9.png,{source}/annotations/gt-1.png,train\n"
        f"{source}/raw/scan 3.png,{source}/annotations/gt-3.png,val\n"
    )
    missing = source / "raw" / "scan 9.png"
    with pytest.raises(DataError) as err:
        FolderDataModule(pairs=str(manifest), image_size=128).raw_dataset("train")
    assert str(manifest) in str(err.value) and "row 3" in str(err.value)
    assert str(missing) in str(err.value)
    with pytest.warns(DataSkipWarning, match="row 3"):
        report, printed = _run(
            f"samtune-check-data data=folder data.pairs={manifest}", tmp_path / "run", capsys
        )
    assert not report["ok"]
    (problem,) = report["problems"]
    assert problem["file"] == str(missing)
    assert f"{manifest}: row 3: {missing} does not exist" in problem["reason"]
    assert any(f"row 3: {missing}" in line for line in printed)
    assert report["splits"]["train"]["images"] == 2  # the two good train rows are still read


def test_a_pattern_matching_nothing_names_the_pattern_and_the_folder(layouts, tmp_path):
    work, _ = layouts
    images, masks = work / "retina" / "images", work / "retina" / "masks"
    module = FolderDataModule(
        train_images=str(images), train_masks=str(masks), pair_by="pattern",
        image_pattern="{id}_test", mask_pattern="{id}_manual1", image_size=128,
    )  # fmt: skip
    with pytest.raises(DataError) as err:
        module.raw_dataset("train")
    assert str(images) in str(err.value) and "'{id}_test'" in str(err.value)
    assert "21_training.tif" in str(err.value)  # what the names there look like
    module = FolderDataModule(
        train_images=str(images), train_masks=str(masks), pair_by="pattern",
        image_pattern="{id}_training", mask_pattern="{id}_manual2", image_size=128,
    )  # fmt: skip
    with pytest.raises(DataError) as err:
        module.raw_dataset("train")
    assert str(masks) in str(err.value) and "'{id}_manual2'" in str(err.value)
    volumes = VolumeDataModule(
        images=str(work / "ctmr"), labels=str(work / "ctmr"), pair_by="pattern",
        image_pattern="{id}_volume", label_pattern="{id}_label", image_size=128,
    )  # fmt: skip
    with pytest.raises(DataError) as err:
        volumes.raw_dataset("train")
    assert str(work / "ctmr") in str(err.value) and "'{id}_volume'" in str(err.value)


def test_a_float_label_volume_with_fractions_is_refused_naming_file_and_value(tmp_path):
    image, label = tiny_case(3)
    for c in range(3):
        case = tmp_path / "brats" / f"case{c}"
        for seq in ("flair", "t1c"):
            _save_nifti(case / f"case{c}-{seq}.nii.gz", image)
        values = label.astype(np.float32)
        if c == 1:
            values[label == 2] = 1.5  # a probability map, not a label
        _save_nifti(case / f"case{c}-seg.nii.gz", values)
    module = VolumeDataModule(
        images=str(tmp_path / "brats"), image_glob="*.nii.gz", label_glob="*-seg.nii.gz",
        channels=["flair"], val_fraction=0.34, seed=0, image_size=128,
    )  # fmt: skip
    bad = tmp_path / "brats" / "case1" / "case1-seg.nii.gz"
    with pytest.raises(DataError) as err:
        for split in ("train", "val"):
            module.raw_dataset(split)
            list(module.raw_dataset(split))
    assert str(bad) in str(err.value) and "1.5" in str(err.value)


@pytest.mark.parametrize("channels", [["flair", "t1c", "t2"], ["t1c"]])
def test_case_folder_channels_are_the_named_sequences_in_order(channels, layouts):
    work, _ = layouts
    module = VolumeDataModule(
        images=str(work / "brats"), image_glob="*.nii.gz", label_glob="*-seg.nii.gz",
        channels=channels, window="abdomen", image_size=128,
    )  # fmt: skip
    dataset = module.raw_dataset("train")
    (case,) = dataset.cases
    volume = dataset.image_volume(case)
    files = [work / "brats" / case / f"{case}-{seq}.nii.gz" for seq in channels]
    expected = [dataset.intensity(read_volume(f).array) for f in files]
    if len(channels) == 1:  # one sequence is a grey image, not a red one
        np.testing.assert_array_equal(volume, expected[0])
    else:
        assert volume.shape == (*expected[0].shape, 3)
        for c, channel in enumerate(expected):
            np.testing.assert_array_equal(volume[..., c], channel)
        assert not np.array_equal(volume[..., 1], volume[..., 2])  # the sequences do differ
    sample = dataset[0]
    assert sample.image.ndim == 3 and sample.image.shape[-1] == 3
