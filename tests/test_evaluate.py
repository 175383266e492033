"""`vivit evaluate`: metrics by hand, logits equal to predict_views, lists, failures, split heads, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_features_job import free_port
from video_datasets import DIRECTIONS, write_class_folders

import vivit
from vivit.evaluate import classification_metrics, evaluate


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, str]]]:
    root = tmp_path_factory.mktemp("discs")
    return root, write_class_folders(root / "val", 10, frames=10, seed=4)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- metrics, by hand
def test_single_head_metrics():
    logits = torch.tensor([[9.0, 1, 0, 0, 0, 0], [0, 9, 1, 0, 0, 0], [1, 9, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5]])
    labels = torch.tensor([0, 0, 1, 0])  # right, wrong (2nd guess), right, wrong (last guess)
    metrics = classification_metrics(logits, labels)
    assert metrics["top1"] == pytest.approx(50.0)
    assert metrics["top5"] == pytest.approx(75.0)  # the last video's label is its 6th guess
    assert metrics["mean_class_accuracy"] == pytest.approx((1 / 3 + 1) / 2 * 100)  # class 0: 1 of 3, class 1: 1 of 1


def test_split_head_metrics_follow_scenic_joint_accuracy():
    # 3 nouns then 2 verbs; each row: (noun logits, verb logits), label (noun, verb)
    noun = torch.tensor([[5.0, 0, -5], [5, 0, -5], [5, 0, -5], [5, 0, -5]])
    verb = torch.tensor([[3.0, 0], [3, 0], [3, 0], [3, 0]])
    labels = torch.tensor(
        [
            [0, 0],  # both right: the action is right
            [0, 1],  # noun right, verb wrong
            [1, 0],  # noun wrong, verb right
            [2, 1],
        ]
    )  # both the least likely: the only pair outside the joint top-5 of 6
    metrics = classification_metrics(torch.cat([noun, verb], 1), labels, (3, 2), ("noun", "verb"))
    assert metrics["noun_top1"] == pytest.approx(50.0) and metrics["verb_top1"] == pytest.approx(50.0)
    assert metrics["noun_top5"] == metrics["verb_top5"] == pytest.approx(100.0)  # k is capped at the split's size
    assert metrics["action_top1"] == pytest.approx(25.0)
    assert metrics["action_top5"] == pytest.approx(75.0)
    with pytest.raises(ValueError, match="must add up to the 5 logits"):
        classification_metrics(torch.cat([noun, verb], 1), labels, (3, 3), ("noun", "verb"))


# ---------------------------------------------------------------- the job
def test_evaluate_is_predict_views_over_a_folder(discs, tmp_path, one_thread, run_cli):
    root, items = discs
    out = tmp_path / "eval"
    code, stdout, err = run_cli(
        "evaluate",
        root / "val",
        "--model",
        "vivit_demo",
        "--views",
        "2x3",
        "--out",
        out,
        "--workers",
        "0",
        "-q",
    )
    assert code == 0, err
    predictions = read_jsonl(out / "predictions.jsonl")
    model = vivit.create_model("vivit_demo", pretrained=True).eval()
    assert [p["path"] for p in predictions] == [str(path) for path, _ in sorted(items)]
    right = 0
    for entry, (path, label) in zip(predictions, sorted(items), strict=True):
        logits = vivit.predict_views(model, path, 2, 3)
        assert torch.equal(torch.tensor(entry["logits"]), logits)  # bit for bit
        assert entry["label"] == label and entry["label_index"] == DIRECTIONS.index(label)
        assert entry["top5"][0]["label"] == DIRECTIONS[int(logits.argmax())] and len(entry["top5"]) == 4
        right += DIRECTIONS[int(logits.argmax())] == label
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["top1"] == pytest.approx(right * 10) and metrics["top1"] >= 80  # the demo model knows this task
    assert (metrics["num_videos"], metrics["num_failed"], metrics["views"], metrics["model"]) == (
        10,
        0,
        "2x3",
        "vivit_demo",
    )
    assert f"top-1 {metrics['top1']:.2f}%" in stdout and "(10 videos, 2x3 views, 0 failed to decode)" in stdout


def test_lists_failures_and_unknown_labels(discs, tmp_path, one_thread, run_cli):
    _, items = discs
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 10)
    rows = [f"{path},{label}" for path, label in items[:3]] + [f"{items[3][0]},{DIRECTIONS.index(items[3][1])}"]
    rows += ["broken.mp4,up", "gone.mp4,left"]
    listing = tmp_path / "val.csv"
    listing.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "eval"
    code, stdout, err = run_cli("evaluate", listing, "--model", "vivit_demo", "--out", out, "--workers", "2", "-q")
    assert code == 1  # some videos could not be scored
    assert "(4 videos, 1x1 views, 2 failed to decode)" in stdout
    assert "broken.mp4" in err and "gone.mp4 does not exist" in err and "SkippedVideoWarning" not in err
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["label"] for p in predictions] == [label for _, label in items[:4]] + ["up", "left"]
    assert "error" in predictions[4] and "logits" not in predictions[4] and "val.csv:6" in predictions[5]["error"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_failed"] == 2 and [f["path"] for f in metrics["failed"]] == [
        str(tmp_path / "broken.mp4"),
        str(tmp_path / "gone.mp4"),
    ]

    listing.write_text(f"{items[0][0]},rigth\n{items[1][0]},sideways\n", encoding="utf-8")
    code, stdout, err = run_cli("evaluate", listing, "--model", "vivit_demo", "-q")
    assert code == 1 and stdout == ""
    (line,) = err.splitlines()
    assert line.startswith("vivit: error: 2 labels not among the 4 known classes")
    assert "'rigth' at" in line and "val.csv:1 (close matches: 'right')" in line and "'sideways'" in line

    listing.write_text(f"{items[0][0]}\n", encoding="utf-8")
    code, _, err = run_cli("evaluate", listing, "--model", "vivit_demo", "-q")
    assert code == 1 and "have no label" in err
    assert "column" not in err

    # a header naming the label column otherwise: its name is read as a split column; the message says so
    listing.write_text(f"video,class\n{items[0][0]},right\n", encoding="utf-8")
    code, _, err = run_cli("evaluate", listing, "--model", "vivit_demo", "-q")
    assert code == 1 and "have no label" in err
    assert "the list's column 'class' is not a label column of this model (name it 'label')" in err


def test_split_heads_report_noun_verb_and_action(discs, tmp_path, one_thread, tiny_named_model):
    _, items = discs
    model = tiny_named_model("vivit_ti_st", num_classes=5).eval()
    model.pretrained_cfg = {
        "input_size": (3, 8, 32, 32),
        "frame_stride": 1,
        "resize_size": 32,
        "crop_size": 32,
        "test_views": (1, 1),
        "label_names": ("tap", "cup", "pan", "open", "wash"),
        "class_splits": (3, 2),
        "split_names": ("noun", "verb"),
    }
    rng = np.random.default_rng(0)
    rows = ["path,verb,noun"] + [
        f"{path},{rng.choice(['open', 'wash'])},{rng.choice(['tap', 'cup', '2'])}" for path, _ in items
    ]
    listing = tmp_path / "ek.csv"
    listing.write_text("\n".join(rows) + "\n", encoding="utf-8")
    metrics = evaluate(listing, model, workers=0, out_dir=tmp_path / "eval").metrics
    predictions = read_jsonl(tmp_path / "eval" / "predictions.jsonl")
    action = noun = 0
    for entry in predictions:
        logits = torch.tensor(entry["logits"])
        noun_right = int(logits[:3].argmax()) == entry["label_index"][0]
        verb_right = int(logits[3:].argmax()) == entry["label_index"][1]
        noun += noun_right
        action += noun_right and verb_right
        assert set(entry["label"]) == {"noun", "verb"} and {p["split"] for p in entry["top5"]} == {"noun", "verb"}
    assert predictions[0]["label"]["noun"] in ("tap", "cup", "pan")
    assert metrics["noun_top1"] == pytest.approx(noun * 10) and metrics["action_top1"] == pytest.approx(action * 10)
    assert {"verb_top1", "verb_top5", "noun_mean_class_accuracy", "action_top5"} <= set(metrics)


@pytest.mark.distributed
def test_two_torchrun_ranks_equal_one_process(discs, tmp_path, one_thread, run_cli):
    root, _ = discs
    (root / "val" / "up" / "zz_broken.mp4").write_bytes(b"broken" * 20)
    try:
        assert (
            run_cli(
                "evaluate",
                root / "val",
                "--model",
                "vivit_demo",
                "--out",
                tmp_path / "one",
                "--workers",
                "0",
                "-q",
            )[0]
            == 1
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "vivit",
            "evaluate",
            str(root / "val"),
            "--model",
            "vivit_demo",
            "--out",
            str(tmp_path / "two"),
            "--workers",
            "1",
            "-q",
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    finally:
        (root / "val" / "up" / "zz_broken.mp4").unlink()
    assert done.returncode != 0 and done.stdout.count("top-1") == 1, done.stderr[-3000:]  # rank 0 prints, both exit 1
    for name in ("predictions.jsonl", "metrics.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
