"""`--backend openvino` and `--precision` of the jobs through the command line (`vivit predict`, its
`--timeline`, `vivit features`, `vivit evaluate`, `vivit export openvino`), on the bundled demo model.

Bounds (README "Speed"): OpenVINO fp32 logits within `FP32_TOLERANCE` (1e-4) of PyTorch's, bf16 within
`BF16_TOL`; the command line shows probabilities, so logits are compared as centred log-probabilities
(log p - mean log p = z - mean z, whose difference is at most twice the logits' max abs difference).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")

from vivit.backends import FP32_TOLERANCE
from vivit.features import read_features

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import finetune

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.openvino, pytest.mark.slow]

BF16_TOL = 3e-2  # as tests/test_openvino.py; the demo's conversion measures 2.4e-2 on random clips U(-1, 1)
INT8_TOL = 0.1  # as tests/test_openvino.py
LABELS = ("right", "left", "down", "up")  # vivit_demo's classes


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six held-out clips of the demo's task (moving discs, seed 300) as uint8 frame files `(T, H, W, 3)`,
    a labelled list of them, and a 24-frame video for timelines."""
    root = tmp_path_factory.mktemp("backend_cli")
    video, labels, _ = finetune.MovingDiscs().sample(6, torch.Generator().manual_seed(300))
    frames = ((video + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    paths = {}
    for i, clip in enumerate(frames):
        paths[f"clip{i}"] = root / "videos" / f"clip{i}.npy"
        paths[f"clip{i}"].parent.mkdir(exist_ok=True)
        np.save(paths[f"clip{i}"], clip)
    listing = root / "list.csv"
    listing.write_text(
        "".join(f"{paths[f'clip{i}']},{LABELS[int(label)]}\n" for i, label in enumerate(labels)), encoding="utf-8"
    )
    paths["list"] = listing
    paths["long"] = root / "long.npy"
    np.save(paths["long"], np.concatenate(list(frames[:3])))  # 24 frames: three windows of 8
    return paths


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("VIVIT_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


def _predictions(out: str) -> dict[str, dict[str, float]]:
    """video -> {label: probability} of `vivit predict --json` (every class: the demo has 4 < top-k 5)."""
    records = [json.loads(line) for line in out.splitlines()]
    return {r["video"]: {p["label"]: p["probability"] for p in r["predictions"]} for r in records}


def _centred_log_probs(probs: dict[str, float]) -> np.ndarray:
    logp = np.log(np.array([probs[label] for label in LABELS], dtype=np.float64))
    return logp - logp.mean()


def _check_same_answers(ref: dict[str, dict[str, float]], got: dict[str, dict[str, float]], bound: float) -> float:
    assert ref.keys() == got.keys()
    worst = 0.0
    for video in ref:
        assert max(got[video], key=got[video].get) == max(ref[video], key=ref[video].get), video  # top-1
        worst = max(worst, float(np.abs(_centred_log_probs(got[video]) - _centred_log_probs(ref[video])).max()))
    assert worst <= 2 * bound, worst
    return worst


def test_predict_on_openvino_matches_pytorch_and_converts_once(clips, cache, run_cli, monkeypatch):
    import vivit.backends as backends

    conversions = []
    build = backends.build_openvino_graph

    def counted(*args, **kwargs):
        conversions.append(kwargs.get("precision", args[1] if len(args) > 1 else "fp32"))
        return build(*args, **kwargs)

    monkeypatch.setattr(backends, "build_openvino_graph", counted)
    videos = [clips[f"clip{i}"] for i in range(6)]
    code, out, _ = run_cli("predict", *videos, "--json", "-q")
    assert code == 0
    ref = _predictions(out)
    code, out, err = run_cli("predict", *videos, "--json", "--backend", "openvino")
    assert code == 0, err
    assert "converted vivit_demo to OpenVINO (fp32), checked against PyTorch" in err
    _check_same_answers(ref, _predictions(out), FP32_TOLERANCE)
    assert conversions == ["fp32"]  # the first use converts ...
    (graph,) = (cache / "openvino").glob("*.xml")
    written = graph.stat().st_mtime_ns
    code, out, err = run_cli("predict", *videos, "--json", "--backend", "openvino", "--precision", "bf16")
    assert code == 0, err
    _check_same_answers(ref, _predictions(out), BF16_TOL)
    code, out, err = run_cli("predict", *videos, "--json", "--backend", "openvino")
    assert code == 0, err
    _check_same_answers(ref, _predictions(out), FP32_TOLERANCE)
    # ... later ones (fp32 and bf16 share the float graph) read it from the cache, unchanged
    assert conversions == ["fp32"] and "converted" not in err
    assert [p.name for p in (cache / "openvino").glob("*.xml")] == [graph.name]
    assert graph.stat().st_mtime_ns == written


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_predict_on_pytorch_bf16_and_int8(clips, cache, run_cli, precision):
    videos = [clips[f"clip{i}"] for i in range(6)]
    ref = _predictions(run_cli("predict", *videos, "--json", "-q")[1])
    code, out, err = run_cli("predict", *videos, "--json", "-q", "--precision", precision)
    assert code == 0, err
    # optimize_for_inference's bounds on the Scenic fixtures (README "Speed"): bf16 3e-2, int8 0.2
    _check_same_answers(ref, _predictions(out), 3e-2 if precision == "bf16" else 0.2)


def test_openvino_int8_is_calibrated_on_the_given_videos(clips, cache, run_cli, one_error_line):
    videos = [clips[f"clip{i}"] for i in range(6)]
    code, _, err = run_cli("predict", *videos, "--backend", "openvino", "--precision", "int8")
    assert code == 2
    one_error_line(err, "--calibration VIDEO")
    ref = _predictions(run_cli("predict", *videos, "--json", "-q")[1])
    calibration = [arg for video in videos for arg in ("--calibration", video)]
    code, out, err = run_cli(
        "predict", *videos, "--json", "-q", "--backend", "openvino", "--precision", "int8", *calibration
    )
    assert code == 0, err
    _check_same_answers(ref, _predictions(out), INT8_TOL)
    (graph,) = (cache / "openvino").glob("*-int8-*.xml")
    from vivit.backends import load_openvino

    stored = load_openvino(graph)  # static: calibrated on the six clips, its drift measured on them at conversion
    assert stored.precision == "int8" and stored.validation["calibration_clips"] == 6
    assert stored.validation["int8"]["max_abs_diff"] <= INT8_TOL


def test_timeline_on_openvino(clips, cache, run_cli):
    ref = json.loads(run_cli("predict", clips["long"], "--timeline", "--json", "-q")[1])
    code, out, err = run_cli("predict", clips["long"], "--timeline", "--json", "-q", "--backend", "openvino")
    assert code == 0, err
    got = json.loads(out)
    assert len(got["windows"]) == len(ref["windows"]) == 3
    for a, b in zip(ref["windows"], got["windows"], strict=True):
        assert a["predictions"][0]["label"] == b["predictions"][0]["label"]
        assert a["predictions"][0]["probability"] == pytest.approx(b["predictions"][0]["probability"], abs=1e-4)


def test_features_and_evaluate_on_openvino(clips, cache, tmp_path, run_cli):
    videos = clips["clip0"].parent
    for backend in ("pytorch", "openvino"):
        code, _, err = run_cli(
            "features", videos, "--model", "vivit_demo", "--out", tmp_path / backend, "--workers", "0", "-q",
            "--backend", backend,
        )  # fmt: skip
        assert code == 0, err
    # features of another engine are not taken for done: a run on PyTorch into the OpenVINO folder recomputes
    code, _, err = run_cli(
        "features", videos, "--model", "vivit_demo", "--out", tmp_path / "openvino", "--workers", "0"
    )
    assert code == 0 and "6 written, 0 already done" in err
    code, _, err = run_cli(
        "features", videos, "--model", "vivit_demo", "--out", tmp_path / "openvino", "--workers", "0",
        "--backend", "openvino",
    )  # fmt: skip
    assert code == 0 and "6 written, 0 already done" in err
    _, meta = read_features(tmp_path / "openvino" / "clip0.npy.safetensors")
    assert meta["weights"] == "released; engine openvino fp32"
    for i in range(6):
        ref, _ = read_features(tmp_path / "pytorch" / f"clip{i}.npy.safetensors")
        got, _ = read_features(tmp_path / "openvino" / f"clip{i}.npy.safetensors")
        assert ref["features"].shape == got["features"].shape == (1, 64)
        assert (ref["features"] - got["features"]).abs().max().item() <= FP32_TOLERANCE
    metrics = {}
    for backend in ("pytorch", "openvino"):
        code, _, err = run_cli(
            "evaluate", clips["list"], "--model", "vivit_demo", "--workers", "0", "-q", "--backend", backend,
            "--out", tmp_path / f"eval_{backend}",
        )  # fmt: skip
        assert code == 0, err
        metrics[backend] = json.loads((tmp_path / f"eval_{backend}" / "metrics.json").read_text())
    assert metrics["openvino"]["top1"] == metrics["pytorch"]["top1"]
    assert metrics["openvino"]["num_videos"] == 6


def test_backend_options_are_checked_before_any_work(clips, cache, run_cli, one_error_line):
    video = clips["clip0"]
    cases = [
        (("--calibration", video), "--calibration is for --backend openvino --precision int8"),
        (
            ("--backend", "openvino", "--device", "cuda:1"),
            "--device cuda:1: --backend openvino --precision fp32 runs on the CPU",
        ),
        (("--precision", "bf16", "--device", "cuda"), "runs on the CPU"),
        (("--backend", "onnx"), "invalid choice: 'onnx'"),
        (("--precision", "fp16"), "invalid choice: 'fp16'"),
        (("--backend", "openvino", "--precision", "int8", "--calibration", "missing.npy"), "missing.npy"),
    ]
    for extra, fragment in cases:
        code, out, err = run_cli("predict", video, *extra)
        assert code in (1, 2) and out == ""
        one_error_line(err, fragment)
    code, _, err = run_cli(
        "features", video, "--model", "vivit_demo", "--out", cache.parent / "f", "--per-frame", "--backend", "openvino"
    )
    assert code == 2
    one_error_line(err, "--per-frame needs per-token outputs")
    assert not (cache / "openvino").exists()  # nothing was converted


def test_missing_openvino_names_the_extra(clips, tmp_path):
    script = (
        "import sys; sys.modules['openvino'] = None\n"  # as if it were not installed
        "from vivit.cli import main\n"
        f"sys.exit(main(['predict', {str(clips['clip0'])!r}, '--backend', 'openvino']))\n"
    )
    env = {"VIVIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    import os

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vivit: error: the OpenVINO backend needs openvino"), done.stderr
    assert "pip install" in lines[0] and "openvino" in lines[0].split("pip install")[1]
    assert not (tmp_path / "cache").exists()


def test_export_openvino_through_the_command_line(cache, tmp_path, run_cli, one_error_line):
    from vivit.backends import load_openvino

    out = tmp_path / "demo.xml"
    code, stdout, err = run_cli("export", "openvino", "vivit_demo", "--out", out, "-q")
    assert code == 0, err
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert "max abs logit difference" in stdout
    backend = load_openvino(out, "fp32")
    assert backend.pretrained_cfg["label_names"] == LABELS
    code, _, err = run_cli("export", "openvino", "vivit_demo", "--out", tmp_path / "demo.onnx")
    assert code == 2
    one_error_line(err, ".xml")
