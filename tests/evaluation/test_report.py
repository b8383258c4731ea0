"""results.json / per_object.csv / reports, comparisons across runs, W&B logging and the CLIs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from samtune.cli.eval import evaluate
from samtune.cli.report import main
from samtune.evaluation.report.compare import (
    adapter_label,
    gather,
    version_conflicts,
    write_comparison,
)
from samtune.evaluation.report.files import write_results
from samtune.evaluation.report.gallery import make_example
from samtune.evaluation.report.wandb_log import log_to_wandb
from samtune.evaluation.results import EvalResult, EvaluatedWeights, ObjectResult
from tests.helpers import REPO, make_blob_sample

CURVES = [[0.5, 0.6, 0.7], [0.7, 0.86, 0.95], [0.9, 0.92, 0.93]]
OBJECTS = [(0, "a.png", 0, 1, "nucleus"), (0, "a.png", 1, 1, "nucleus"), (1, "b.png", 0, 2, "cell")]


def _dice(iou: float) -> float:
    return 2 * iou / (1 + iou)


def make_result(shift: float = 0.0) -> EvalResult:
    """A hand-made evaluation of 3 objects in 2 images; ``shift`` lowers every IoU."""
    result = EvalResult(protocols=("point1", "clicks"), max_clicks=3, noc_thresholds=(0.85, 0.9))
    result.images = 2
    clicks_to = [{"85": 3, "90": 3}, {"85": 2, "90": 3}, {"85": 1, "90": 1}]
    for (image_id, file, obj, class_id, name), curve, to in zip(
        OBJECTS, CURVES, clicks_to, strict=True
    ):
        curve = [v - shift for v in curve]
        common = dict(image_id=image_id, file=file, object=obj, class_id=class_id, class_name=name)
        result.rows.append(
            ObjectResult(
                **common,
                protocol="point1",
                area=50,
                iou=curve[0],
                dice=_dice(curve[0]),
                pred_iou=0.8,
            )
        )
        result.rows.append(
            ObjectResult(
                **common,
                protocol="clicks",
                area=50,
                iou=curve[-1],
                dice=_dice(curve[-1]),
                pred_iou=0.9,
                clicks_to=to,
                iou_per_click=curve,
            )
        )
    rng = np.random.default_rng(0)
    for protocol in result.protocols:
        for k, curve in enumerate(CURVES):
            gt = np.zeros((20, 24), bool)
            gt[5:12, 4 + k : 14 + k] = True
            ex = make_example(
                protocol=protocol,
                iou=curve[-1],
                image=rng.integers(0, 255, (20, 24, 3), np.uint8),
                gt=gt,
                pred=np.roll(gt, 2, axis=1),
                points=np.array([[8.0, 8.0]]),
                labels=np.array([1]),
                file=f"img{k}.png",
                object_index=k,
            )
            result.gallery.offer(protocol, curve[-1], lambda ex=ex: ex)
    return result


SUMMARY = {
    "model": "sam2.1_hiera_tiny",
    "image_size": 128,
    "adapter": None,
    "checkpoint": None,
    "random_init": True,
    "data": "blobs",
    "split": "val",
    "seed": 0,
    "samtune_version": "0.1.0",
}


def test_write_results_files_and_numbers(tmp_path):
    result = make_result()
    files = write_results(result, tmp_path / "run", summary=SUMMARY)
    for key in ("results", "per_object", "report_md", "report_html", "plot_clicks"):
        assert files[key].is_file() and files[key].stat().st_size > 0
    assert files["overlays_point1"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(files["results"].read_text())
    assert data["summary"] == SUMMARY
    assert data["aggregates"] == json.loads(json.dumps(result.aggregates()))
    point1, clicks = data["aggregates"]["point1"], data["aggregates"]["clicks"]
    # hand-computed from the rows above
    assert point1["miou"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert point1["mdice"] == pytest.approx((_dice(0.5) + _dice(0.7) + _dice(0.9)) / 3)
    assert point1["per_class"]["nucleus"] == pytest.approx(
        {"n": 2, "miou": 0.6, "mdice": (_dice(0.5) + _dice(0.7)) / 2}
    )
    assert point1["per_image"]["1"]["miou"] == pytest.approx(0.9)
    assert clicks["miou_at_clicks"] == pytest.approx(np.mean(CURVES, axis=0).tolist())
    assert clicks["miou"] == pytest.approx((0.7 + 0.95 + 0.93) / 3)
    assert clicks["noc85"] == pytest.approx(2.0) and clicks["nof85"] == 1
    assert clicks["noc90"] == pytest.approx(7 / 3) and clicks["nof90"] == 1
    assert data["counts"]["objects"] == 3 and data["counts"]["images"] == 2

    with open(files["per_object"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    last = rows[-1]
    assert last["protocol"] == "clicks" and last["class_name"] == "cell"
    assert [float(v) for v in last["iou_per_click"].split(";")] == pytest.approx(CURVES[2])
    assert last["clicks_to"] == "85:1;90:1"

    md, html = files["report_md"].read_text(), files["report_html"].read_text()
    assert "RANDOM" in md and 'class="warn"' in html
    assert "| clicks | 3 | 0.8600 |" in md  # protocol, objects, mIoU
    assert "overlays_clicks.png" in md and "miou_vs_clicks.png" in html


def test_no_random_warning_for_real_weights(tmp_path):
    files = write_results(make_result(), tmp_path, summary={**SUMMARY, "random_init": False})
    assert "RANDOM" not in files["report_md"].read_text()
    assert 'class="warn"' not in files["report_html"].read_text()


def _two_runs(root: Path) -> None:
    write_results(make_result(), root / "zero", summary={**SUMMARY, "random_init": False})
    lora = {
        **SUMMARY,
        "model": "sam2.1_hiera_small",
        "adapter": "lora",
        "checkpoint": "runs/x/last.ckpt",
        "random_init": False,
    }
    write_results(make_result(shift=0.1), root / "deep" / "lora", summary=lora)


def test_compare_gathers_one_row_per_results_file(tmp_path, caplog):
    _two_runs(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    rows = gather(tmp_path)
    assert "broken" in caplog.text
    assert [(r["model"], r["adapter"]) for r in rows] == [
        ("sam2.1_hiera_tiny", "zero-shot"),
        ("sam2.1_hiera_small", "lora"),
    ]
    zero, lora = rows
    assert zero["point1/miou"] == pytest.approx(0.7)
    assert lora["point1/miou"] == pytest.approx(0.6)
    assert zero["clicks/noc85"] == pytest.approx(2.0)
    assert lora["clicks/mdice"] == pytest.approx(
        np.mean([_dice(v - 0.1) for v in (0.7, 0.95, 0.93)])
    )
    assert "box/miou" not in zero  # only the protocols that ran

    files = write_comparison(rows, tmp_path / "cmp")
    assert files["plot"].is_file() and files["html"].is_file()
    with open(files["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [t["adapter"] for t in table] == ["zero-shot", "lora"]
    assert float(table[1]["clicks/noc90"]) == pytest.approx(lora["clicks/noc90"])
    assert float(table[0]["point1/mdice"]) == pytest.approx(zero["point1/mdice"])
    md = files["md"].read_text()
    assert "point1 mIoU" in md and "clicks NoC@85" in md and "RANDOM" not in md


def test_official_checkpoint_counts_as_zero_shot():
    assert (
        adapter_label({"checkpoint": "/cache/sam2.1_hiera_large.pt", "adapter": "full"})
        == "zero-shot"
    )
    assert adapter_label({"checkpoint": "none"}) == "zero-shot"
    # a file samtune has no record of is not called tuned (nor zero-shot)
    assert adapter_label({"checkpoint": "out/tuned.pt", "adapter": None}) == "unknown"
    assert adapter_label({"checkpoint": "out/last.ckpt", "adapter": "full"}) == "full"
    # an older end-of-training evaluation of the weights in memory: no checkpoint, but tuned
    old_end_of_training = {"checkpoint": None, "base_checkpoint": None, "adapter": "frozen"}
    assert adapter_label(old_end_of_training) == "frozen"


def test_labels_follow_the_record_of_the_weights_evaluated():
    def label(weights: EvaluatedWeights, adapter: str | None = "lora") -> str:
        return adapter_label(
            {"adapter": adapter, "checkpoint": None, "evaluated": weights.as_dict()}
        )

    end = EvaluatedWeights("end_of_training", global_step=24, random_init=True)
    assert label(end) == "lora" and end.tuned is True
    assert end.label() == "weights at the end of training (step 24, no checkpoint file)"
    saved = EvaluatedWeights("end_of_training", path="r/last.ckpt", global_step=24)
    assert saved.label() == "weights at the end of training (step 24, saved as r/last.ckpt)"
    # zero-shot only for untouched base weights: official, random-init, a step-0 checkpoint
    assert label(EvaluatedWeights("base", random_init=True), None) == "zero-shot"
    assert label(EvaluatedWeights("base", path="/c/sam2.1_hiera_tiny.pt"), None) == "zero-shot"
    assert label(EvaluatedWeights("checkpoint", path="r/last.ckpt", global_step=0)) == "zero-shot"
    assert label(EvaluatedWeights("checkpoint", path="r/best.ckpt", global_step=9)) == "lora"
    assert label(EvaluatedWeights("file", path="x.pt"), None) == "unknown"
    with pytest.raises(ValueError, match="weights kind 'tuned'"):
        EvaluatedWeights("tuned")


def test_results_carry_protocol_versions_and_differing_ones_are_flagged(tmp_path, capsys):
    files = write_results(make_result(), tmp_path / "new" / "a", summary=SUMMARY)
    data = json.loads(files["results"].read_text())
    assert data["protocol_version"] == {"point1": 2, "clicks": 2}
    assert "| protocol version | point1 v2, clicks v2 |" in files["report_md"].read_text()
    same = write_results(make_result(0.1), tmp_path / "new" / "b", summary=SUMMARY)
    assert not version_conflicts(gather(tmp_path / "new"))
    # a results.json of before the versions: read, shown as unversioned, and flagged
    old = json.loads(same["results"].read_text())
    del old["protocol_version"]
    (tmp_path / "new" / "b" / "results.json").write_text(json.dumps(old))
    rows = gather(tmp_path / "new")
    assert sorted(r["protocol_versions"] for r in rows) == ["point1 v2, clicks v2", "unversioned"]
    assert version_conflicts(rows) == {
        "point1": {"v2": 1, "unversioned": 1},
        "clicks": {"v2": 1, "unversioned": 1},
    }
    assert main([str(tmp_path / "new"), "--out", str(tmp_path / "cmp")]) == 0
    assert "protocol definitions differ" in capsys.readouterr().err
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert md.index("protocol definitions differ") < md.index("| model |")
    assert "clicks: unversioned (1 result), v2 (1 result)" in md


def test_report_cli(tmp_path, capsys):
    _two_runs(tmp_path / "runs")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "comparison.md").is_file()
    assert "2 evaluation(s)" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1


def test_log_to_wandb_offline(tmp_path, monkeypatch):
    import wandb

    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))

    run = wandb.init(
        mode="offline",
        dir=str(tmp_path),
        project="samtune-test",
        settings=wandb.Settings(silent=True),
    )
    try:
        payload = log_to_wandb(make_result(), run)
        assert run.summary["eval/clicks/noc85"] == pytest.approx(2.0)
    finally:
        run.finish()
    assert set(payload) >= {
        "eval/per_object",
        "eval/protocols",
        "eval/miou_vs_clicks",
        "eval/overlays/clicks",
    }
    media = next((tmp_path / "wandb").rglob("media"))
    tables = {p.name.split("_")[0]: p for p in media.rglob("*.table.json")}
    per_object = json.loads(next(media.rglob("per_object_*.table.json")).read_text())
    assert len(per_object["data"]) == 6 and "iou_per_click" in per_object["columns"]
    assert tables and len(list(media.rglob("*.png"))) == 2


class BlobDataModule:
    """The datamodule interface the eval CLI uses: ``raw_dataset(split)`` of Samples."""

    def raw_dataset(self, split: str):
        assert split == "val"
        return [make_blob_sample((72, 90), n=2, seed=3)]


def test_eval_cli_task_writes_results(tmp_path, tiny_checkpoint):
    from omegaconf import OmegaConf

    evaluation = OmegaConf.load(REPO / "configs" / "evaluation" / "default.yaml")
    evaluation.max_clicks, evaluation.progress = 2, False
    cfg = OmegaConf.create(
        {
            "model": {
                "_target_": "samtune.models.ModelSpec",
                "name": "sam2.1_hiera_tiny",
                "image_size": 128,
                "checkpoint": str(tiny_checkpoint),
            },
            "data": {"_target_": f"{__name__}.BlobDataModule"},
            "evaluation": evaluation,
            "ckpt": "none",
            "split": "val",
            "seed": 0,
            "device": "cpu",
            "max_images": None,
            "wandb": False,
        }
    )
    files = evaluate(cfg, tmp_path, "blobs")
    data = json.loads(files["results"].read_text())
    assert data["summary"]["model"] == "sam2.1_hiera_tiny" and data["summary"]["data"] == "blobs"
    assert data["summary"]["checkpoint"] is None and data["summary"]["random_init"] is False
    assert data["summary"]["evaluated"]["kind"] == "base"
    assert adapter_label(data["summary"]) == "zero-shot"
    assert data["protocols"] == ["point1", "box", "clicks"]
    assert data["aggregates"]["clicks"]["n_objects"] == 2
    assert len(data["aggregates"]["clicks"]["miou_at_clicks"]) == 2


def test_evaluation_config_defaults():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    evaluator = instantiate(OmegaConf.load(REPO / "configs" / "evaluation" / "default.yaml"))
    assert evaluator.protocols == ("point1", "box", "clicks")
    assert evaluator.max_clicks == 20 and evaluator.noc_thresholds == (0.85, 0.9)
    eval_cfg = OmegaConf.load(REPO / "configs" / "eval.yaml")
    assert eval_cfg.ckpt == "none" and eval_cfg.split == "val" and eval_cfg.max_images is None


def test_gallery_size_zero_keeps_no_overlay_and_writes_the_rest(tmp_path):
    result = make_result()
    result.gallery = type(result.gallery)(k=0)
    result.gallery.offer("point1", 0.5, lambda: pytest.fail("k=0 must not build an example"))
    assert result.gallery.examples("point1") == ([], [])
    files = write_results(result, tmp_path / "run", summary=SUMMARY)
    assert files["report_md"].is_file() and files["results"].is_file()
    assert not any(key.startswith("overlays_") for key in files)
