"""The `vivit` command line, run in-process through `vivit.cli.main` (one real subprocess checks the entry point)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from scenic_fixtures import DATA, load_forward_fixture, model_args_from_config

import vivit
from vivit import cli
from vivit.data.video import VideoDecoderMissingError, read_video
from vivit.models.registry import _REGISTRY, register_model
from vivit.models.vivit import MODEL_CLASSES

SCENIC_FIXTURE = "m1_spacetime_tubelet_token"
SCENIC_CHECKPOINT = DATA / "checkpoints" / f"{SCENIC_FIXTURE}.checkpoint"
LABELS = ["up", "down", "left", "right"]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_named_model) -> dict[str, Path]:
    """Two tiny saved models (Model 1 with label names and 2x3 test views, Model 2 without a cfg) and clips."""
    root = tmp_path_factory.mktemp("cli")
    st = tiny_named_model("vivit_ti_st", depth=2)
    st.pretrained_cfg = {
        "input_size": (3, 8, 32, 32),
        "frame_stride": 1,
        "resize_size": 36,
        "crop_size": 32,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "test_views": (2, 3),
        "num_classes": 4,
        "label_names": LABELS,
    }
    st.save_pretrained(root / "tiny_st")
    tiny_named_model("vivit_ti_fe", depth=2).save_pretrained(root / "tiny_fe")
    rng = np.random.default_rng(0)
    np.save(root / "a.npy", rng.integers(0, 256, (20, 40, 48, 3), dtype=np.uint8))
    np.savez(root / "b.npz", frames=rng.integers(0, 256, (12, 36, 36, 3), dtype=np.uint8))
    np.save(root / "c.npy", rng.integers(0, 256, (9, 32, 40, 3), dtype=np.uint8))
    (root / "garbage.npy").write_bytes(b"this is not an array" * 10)
    data = (root / "tiny_st" / "model.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    return {p.name.split(".")[0]: p for p in root.iterdir()}


@pytest.fixture
def st_args(files: dict[str, Path]) -> list[str]:
    return ["--model", "vivit_ti_st", "--weights", str(files["tiny_st"]), "-q"]


@pytest.fixture
def fe_args(files: dict[str, Path]) -> list[str]:
    return ["--model", "vivit_ti_fe", "--weights", str(files["tiny_fe"]), "-q"]


@pytest.fixture
def temp_entry():
    """Register entries for one test (removed afterwards so the registry stays the real one)."""
    added: list[str] = []

    def add(name: str, variant: str, args: dict) -> str:
        register_model(name, MODEL_CLASSES[variant], args)
        added.append(name)
        return name

    yield add
    for name in added:
        del _REGISTRY[name]


# ---------------------------------------------------------------- list
def test_list_all_patterns_and_pretrained_filter(run_cli, one_error_line):
    code, out, _ = run_cli("list")
    assert code == 0 and out.split() == vivit.list_models()
    code, out, _ = run_cli("list", "vivit_b_*")
    assert code == 0 and out.split() == vivit.list_models("vivit_b_*") and "vivit_b_fe" in out.split()
    code, out, _ = run_cli("list", "--pretrained")
    names = out.split()
    assert code == 0 and names == vivit.list_models(pretrained=True)
    assert "vivit_b_fe_k400" in names and "vivit_b_fe" not in names
    code, out, _ = run_cli("list", "fe_k4", "--pretrained")  # no wildcard: a substring
    assert out.split() == ["vivit_b_fe_k400", "vivit_l_fe_k400"]
    code, out, err = run_cli("list", "no_such_thing")
    assert code == 1 and out == ""
    one_error_line(err, "no_such_thing")


# ---------------------------------------------------------------- info
def test_info_architecture_params_and_macs(run_cli):
    code, out, _ = run_cli("info", "vivit_b_fe")
    assert code == 0
    assert "115.1M" in out  # the paper's Table 6 (Model 2, L_t=4)
    macs = float(re.search(r"GMACs\s+([\d.]+) per view of 1x3x32x224x224", out)[1])
    assert 281 < macs < 286  # paper: 284.4 "GFLOPs" (multiply-adds)
    assert "FactorizedEncoderViViT" in out and "2x16x16" in out and "16x14x14 tokens" in out
    assert "no pretrained weights" in out and "vivit_b_fe_k400" in out


def test_info_pretrained_entry(run_cli):
    code, out, _ = run_cli("info", "vivit_b_fe_k400")
    assert code == 0
    for expected in (
        "115.1M",
        "frame stride   2",
        "resize short side to 256",
        "centre crop 224",
        "mean (0.5, 0.5, 0.5)",
        "4 clips x 3 crops",
        "kinetics400",
        "top1 78.4%",
        "Apache-2.0",
        "scenic-bucket/vivit/kinetics_400/vivit_base_16x2_fe/checkpoint",
    ):
        assert expected in out, expected
    code, out, _ = run_cli("info", "vivit_l_fe_ek100")
    assert "noun 300 + verb 97" in out and "4 clips x 1 crop " in out and "action_top1 43.6%" in out


def test_info_override(run_cli):
    code, out, _ = run_cli("info", "vivit_ti_st", "--override", "num_frames=16", "--override", "img_size=[112, 160]")
    assert code == 0 and "16 frames of 112x160" in out and "8x7x10 tokens" in out


# ---------------------------------------------------------------- predict
def test_predict_text_top_k(files, st_args, run_cli):
    code, out, err = run_cli("predict", files["a"], files["b"], *st_args, "--top-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 8
    assert lines[0] == f"{files['a']} (vivit_ti_st, 2x3 views)"  # test views from the checkpoint's cfg
    probs = [float(re.match(r"\s+([\d.]+)%  (\w+)$", line)[1]) for line in lines[1:4]]
    assert probs == sorted(probs, reverse=True)
    assert all(re.match(r"\s+[\d.]+%  (up|down|left|right)$", line) for line in lines[1:4] + lines[5:8])


def test_predict_json_matches_predict_views(files, st_args, run_cli):
    code, out, _ = run_cli("predict", files["a"], files["b"], *st_args, "--json", "--top-k", "10", "--views", "1x3")
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["video"] for r in results] == [str(files["a"]), str(files["b"])]
    model = vivit.create_model("vivit_ti_st", pretrained=files["tiny_st"])
    for result in results:
        assert result["views"] == [1, 3] and result["model"] == "vivit_ti_st"
        preds = result["predictions"]
        assert len(preds) == 4  # top-k is capped by the class count
        assert sum(p["probability"] for p in preds) == pytest.approx(1.0, abs=1e-5)
        expected = vivit.predict_views(model, read_video(result["video"]), 1, 3).softmax(-1)
        for p in preds:
            assert p["label"] == LABELS[p["index"]]
            assert p["probability"] == pytest.approx(expected[p["index"]].item(), abs=1e-6)


def test_predict_model_without_label_names_or_preprocessing(files, fe_args, run_cli):
    loud = [a for a in fe_args if a != "-q"]
    code, out, err = run_cli("predict", files["c"], *loud, "--json", "--top-k", "2")
    assert code == 0
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert [p["label"] for p in result["predictions"]] == [str(p["index"]) for p in result["predictions"]]
    assert result["views"] == [4, 3]  # Kinetics default views at the model's own input size
    assert err.splitlines()[0] == (
        "vivit: the weights carry no preprocessing config: using Kinetics defaults at the model's input size"
    )
    code, quiet_out, err = run_cli("predict", files["c"], *fe_args, "--json", "--top-k", "2")
    assert code == 0 and quiet_out == out and err == ""  # -q silences the note too


def test_predict_keeps_going_after_a_bad_video(files, st_args, run_cli, one_error_line):
    code, out, err = run_cli("predict", files["a"], files["garbage"], files["b"], *st_args, "--top-k", "1")
    assert code == 1
    assert out.count("vivit_ti_st, 2x3 views") == 2  # both good videos were classified
    error, *summary = err.splitlines()
    one_error_line(error, "garbage.npy")
    # the summary reports the failure even with -q
    assert summary == ["vivit: 2 of 3 videos classified, 1 failed:", f"  {files['garbage']}"]


def test_predict_keeps_going_after_a_missing_video(files, st_args, run_cli, tmp_path):
    missing = tmp_path / "gone.mp4"
    code, out, err = run_cli("predict", files["a"], missing, *st_args, "--json", "--top-k", "1")
    assert code == 1
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["video"] == str(files["a"]) and len(first["predictions"]) == 1  # still classified
    assert second == {
        "video": str(missing),
        "model": "vivit_ti_st",
        "weights": second["weights"],
        "error": f"{missing} does not exist",
    }
    assert err.splitlines()[-2:] == ["vivit: 1 of 2 videos classified, 1 failed:", f"  {missing}"]


# ---------------------------------------------------------------- the bundled demo
def _demo_assets_missing() -> str | None:
    if "vivit_demo" not in vivit.list_models():
        return "vivit_demo is not registered yet"
    assets = resources.files("vivit") / "assets"
    for name in ("vivit_demo.safetensors", "sample_clip.npz"):
        if not (assets / name).is_file():
            return f"vivit/assets/{name} is missing"
    return None


def test_predict_without_arguments_classifies_the_sample_clip(run_cli):
    if reason := _demo_assets_missing():
        pytest.skip(reason)
    code, out, err = run_cli("predict", "-q")
    assert code == 0, err
    header, top, *_ = out.splitlines()
    true_label = re.search(r"true label: (.+)$", header)[1]
    assert "sample_clip.npz (vivit_demo," in header
    assert top.split("%  ")[1] == true_label  # the shipped demo gets its own sample right
    code, out, _ = run_cli("predict", "-q", "--json")
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["true_label"] == true_label and result["predictions"][0]["label"] == true_label


# ---------------------------------------------------------------- convert
def _scenic_entry(temp_entry) -> tuple[str, dict]:
    fixture = load_forward_fixture(SCENIC_FIXTURE)
    variant, args = model_args_from_config(fixture["meta"]["config"])
    return temp_entry("test_cli_scenic_m1", variant, args), fixture


def test_convert_scenic_checkpoint_and_reload(temp_entry, tmp_path, run_cli):
    name, fixture = _scenic_entry(temp_entry)
    out = tmp_path / "m1.safetensors"
    code, stdout, err = run_cli("convert", SCENIC_CHECKPOINT, "--model", name, "--out", out)
    assert code == 0, err
    assert f"create_model('{name}', pretrained='{out}')" in stdout
    with safe_open(str(out), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["config"])["model_class"] == "SpatioTemporalViViT"
    assert metadata["converted_from"] == SCENIC_CHECKPOINT.name
    # the file describes its own architecture: the generic registered name loads it as well
    for model in (vivit.create_model(name, pretrained=out), vivit.create_model("vivit_ti_st", pretrained=out)):
        with torch.no_grad():
            assert (model(fixture["video"]) - fixture["logits"]).abs().max() <= 1e-5


def test_convert_to_directory(files, tmp_path, run_cli):
    out = tmp_path / "converted"
    code, _, _ = run_cli("convert", files["tiny_st"] / "model.safetensors", "--model", "vivit_ti_st", "--out", out)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    a = vivit.create_model("vivit_ti_st", pretrained=files["tiny_st"])
    b = vivit.create_model("vivit_ti_st", pretrained=out)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert b.pretrained_cfg["label_names"] == LABELS  # the preprocessing and labels travel along


def test_convert_scenic_checkpoint_with_size_overrides(tmp_path, run_cli):
    out = tmp_path / "m1.safetensors"
    code, _, err = run_cli(
        "convert",
        SCENIC_CHECKPOINT,
        "--model",
        "vivit_ti_st",
        "--out",
        out,
        "--override",
        "img_size=16",
        "--override",
        "num_frames=8",
    )
    assert code == 0, err
    fixture = load_forward_fixture(SCENIC_FIXTURE)
    with torch.no_grad():
        logits = vivit.create_model("vivit_ti_st", pretrained=out)(fixture["video"])
    assert (logits - fixture["logits"]).abs().max() <= 1e-5


def test_convert_transformers_both_ways_without_a_model_name(tmp_path, run_cli):
    """An HF ViViT folder -> vivit (its config names the architecture) -> transformers again."""
    transformers = pytest.importorskip("transformers")
    config = transformers.VivitConfig(
        image_size=32,
        num_frames=8,
        tubelet_size=[2, 8, 8],
        hidden_size=192,
        num_hidden_layers=1,
        num_attention_heads=3,
        intermediate_size=384,
        num_labels=4,
        id2label=dict(enumerate(LABELS)),
    )
    torch.manual_seed(0)
    hf = transformers.VivitForVideoClassification(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.1)
    hf.save_pretrained(tmp_path / "hf")
    code, stdout, err = run_cli("convert", tmp_path / "hf", "--out", tmp_path / "ours")
    assert code == 0, err
    assert f"create_model('local-dir:{tmp_path / 'ours'}', pretrained=True)" in stdout
    code, stdout, err = run_cli("convert", tmp_path / "ours", "--to", "transformers", "--out", tmp_path / "back")
    assert code == 0, err
    assert "VivitForVideoClassification.from_pretrained" in stdout
    back = transformers.VivitForVideoClassification.from_pretrained(tmp_path / "back").eval()
    ours = vivit.create_model(f"local-dir:{tmp_path / 'ours'}", pretrained=True)
    video = torch.randn(1, 8, 3, 32, 32)  # HF's (B, T, C, H, W)
    with torch.no_grad():
        expected = hf(pixel_values=video).logits
        assert (back(pixel_values=video).logits - expected).abs().max() <= 1e-5
        assert (ours(video.permute(0, 2, 1, 3, 4)) - expected).abs().max() <= 1e-5
    assert [back.config.id2label[i] for i in range(4)] == LABELS


def test_convert_inflation_settings(tmp_path, run_cli, one_error_line):
    """--inflation takes a kernel or key=value settings; a bad one is a usage error."""
    vit = {
        k.removeprefix("src/"): v
        for k, v in np.load(DATA / "init" / "m4_tubelet_gap_from_vit_gap_average_tile.npz").items()
        if k.startswith("src/")
    }
    np.savez(tmp_path / "vit.npz", **vit)  # a Google-layout ViT: width 32, 4 heads, 2 blocks, 4x4 patches
    tiny = [
        "--override",
        "embed_dim=32",
        "--override",
        "num_heads=4",
        "--override",
        "depth=2",
        "--override",
        "mlp_dim=64",
        "--override",
        "patch_size=4",
        "--override",
        "img_size=16",
        "--override",
        "num_frames=8",
    ]
    out = tmp_path / "m3.safetensors"
    code, _, err = run_cli(
        "convert",
        tmp_path / "vit.npz",
        "--model",
        "vivit_ti_fsa",
        "--out",
        out,
        "--inflation",
        "kernel=average,temporal_init=copy",
        *tiny,
    )
    assert code == 0, err
    m3 = vivit.create_model("vivit_ti_fsa", pretrained=out)
    blk = m3.blocks[1]
    assert torch.equal(blk.temporal_attn.proj.weight, blk.attn.proj.weight)  # copy, not the default identity
    assert torch.allclose(m3.patch_embed.proj.weight[:, :, 0], m3.patch_embed.proj.weight[:, :, 1])  # average
    code, _, err = run_cli(
        "convert",
        tmp_path / "vit.npz",
        "--model",
        "vivit_ti_fsa",
        "--out",
        out,
        "--inflation",
        "kernel",
        "--to",
        "vivit",
        *tiny,
    )
    assert code == 1
    one_error_line(err, "inflation kernel must be one of 'central', 'average', got 'kernel'")
    code, _, err = run_cli(
        "convert",
        tmp_path / "vit.npz",
        "--model",
        "vivit_ti_fsa",
        "--out",
        tmp_path / "hf",
        "--to",
        "transformers",
        *tiny,
    )
    assert code == 1
    one_error_line(err, "transformers' ViViT is Model 1", "not FactorizedSelfAttentionViViT")
    code, _, err = run_cli("convert", tmp_path / "vit.npz", "--out", out)
    assert code == 2
    one_error_line(err, "--model is required for", "vit.npz")


# ---------------------------------------------------------------- errors: one line, the right status
@pytest.mark.parametrize(
    "argv",
    [
        ["info", "vivit_nope"],
        ["predict", "{a}", "--model", "vivit_b_fee_k400"],
        ["features", "{a}", "--model", "vivit_nope", "--out", "{tmp}/features"],
        ["convert", "{a}", "--model", "vivit_nope", "--out", "{tmp}/x.safetensors"],
    ],
    ids=["info", "predict", "features", "convert"],
)
def test_unknown_model(files, tmp_path, argv, run_cli, one_error_line):
    code, out, err = run_cli(*(a.format(a=files["a"], tmp=tmp_path) for a in argv))
    assert code == 2 and out == ""
    line = one_error_line(err, "unknown model", "'vivit list'")
    if "fee" in line:
        assert "did you mean" in line and "vivit_b_fe_k400" in line


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["frob"], ["invalid choice"]),
        (["predict", "{a}", "--views", "4x2"], ["crops 1 or 3", "vivit predict --help"]),
        (["predict", "{a}", "--top-k", "0"], ["positive integer"]),
        (["predict", "{a}", "--override", "no_equals_sign"], ["KEY=VALUE"]),
        (["predict", "{a}", "--override", "num_framez=16"], ["num_framez", "not an argument"]),
        (["predict", "{a}", "--model", "vivit_ti_st"], ["no pretrained weights", "--weights"]),
        (["features", "{a}", "--out", "x.safetensors"], ["--model"]),
        (["convert", "{a}", "--model", "vivit_ti_st"], ["--out"]),
        # found by attack 22b: a million workers started processes until memory ran out
        (["features", "{a}", "--model", "vivit_demo", "--out", "o", "--workers", "1000000"], ["at most 256"]),
        (["evaluate", "{a}", "--model", "vivit_demo", "--workers", "257"], ["at most 256"]),
        (["export", "vivit_demo", "--out", "m.onnx"], ["format first", "'vivit export onnx vivit_demo"]),
    ],
    ids=[
        "command",
        "views",
        "top-k",
        "override-syntax",
        "override-name",
        "no-weights",
        "features-model",
        "convert-out",
        "features-workers",
        "evaluate-workers",
        "export-format-first",
    ],
)
def test_usage_errors(files, st_args, argv, fragments, run_cli, one_error_line):
    argv = [a.format(a=files["a"]) for a in argv]
    if argv[0] == "predict" and "--model" not in argv:
        argv += st_args
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    one_error_line(err, *fragments)


def test_missing_files(files, st_args, tmp_path, run_cli, one_error_line):
    code, out, err = run_cli("predict", tmp_path / "nope.mp4", *st_args)
    assert code == 1 and out == ""
    one_error_line(err, "nope.mp4", "does not exist")
    code, _, err = run_cli("predict", files["a"], "--model", "vivit_ti_st", "--weights", tmp_path / "none")
    assert code == 1
    one_error_line(err, "--weights", "does not exist")
    code, _, err = run_cli(
        "convert", tmp_path / "none.ckpt", "--model", "vivit_ti_st", "--out", tmp_path / "x.safetensors"
    )
    assert code == 1
    one_error_line(err, "none.ckpt", "does not exist")


def test_corrupted_checkpoints(files, tmp_path, run_cli, one_error_line):
    code, out, err = run_cli("predict", files["a"], "--model", "vivit_ti_st", "--weights", files["truncated"])
    assert code == 1 and out == ""
    one_error_line(err, "truncated.safetensors", "corrupted")
    damaged = tmp_path / "damaged.checkpoint"
    damaged.write_bytes(SCENIC_CHECKPOINT.read_bytes()[:5000])
    code, _, err = run_cli("convert", damaged, "--model", "vivit_ti_st", "--out", tmp_path / "x.safetensors")
    assert code == 1
    one_error_line(err, "damaged.checkpoint")
    assert not (tmp_path / "x.safetensors").exists()


def test_offline_without_cache(files, tmp_path, monkeypatch, run_cli, one_error_line):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path / "vivit"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, out, err = run_cli("predict", "--model", "vivit_b_fe_k400", files["a"])
    assert code == 1 and out == ""
    one_error_line(err, "vivit_b_fe_k400", "offline")


def test_missing_pyav(files, st_args, tmp_path, monkeypatch, run_cli, one_error_line):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    with pytest.raises(VideoDecoderMissingError, match=re.escape("needs PyAV: pip install av")):
        read_video(video)
    code, out, err = run_cli("predict", video, *st_args)
    assert code == 1 and out == ""
    one_error_line(err, "needs PyAV: pip install av")
    assert read_video(files["a"]).shape == (20, 40, 48, 3)  # arrays still need no decoder


def test_debug_env_shows_the_traceback(files, monkeypatch):
    monkeypatch.setenv("VIVIT_DEBUG", "1")
    with pytest.raises(ValueError, match="corrupted"):
        cli.main(["predict", str(files["a"]), "--model", "vivit_ti_st", "--weights", str(files["truncated"])])


# ---------------------------------------------------------------- video reading
def test_read_video_arrays(files, tmp_path):
    assert read_video(files["b"]).shape == (12, 36, 36, 3)
    np.save(tmp_path / "float.npy", np.zeros((2, 4, 4, 3), np.float32))
    np.save(tmp_path / "gray.npy", np.zeros((2, 4, 4), np.uint8))
    np.savez(tmp_path / "other.npz", video=np.zeros((2, 4, 4, 3), np.uint8))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, message in [
        ("float.npy", "uint8"),
        ("gray.npy", r"\(T, H, W, 3\)"),
        ("other.npz", "no 'frames'"),
        ("objects.npy", "not a numpy array file"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            read_video(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path)


def _write_video(path: Path, frames: np.ndarray, codec: str, pix_fmt: str) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_pyav_decoding(files, st_args, tmp_path, run_cli, one_error_line):
    pytest.importorskip("av")
    frames = np.random.default_rng(1).integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
    _write_video(tmp_path / "lossless.avi", frames, "png", "rgb24")
    np.testing.assert_array_equal(read_video(tmp_path / "lossless.avi"), frames)  # RGB order, every frame

    flat = np.broadcast_to(np.array([200, 30, 90], np.uint8), (10, 48, 64, 3))
    _write_video(tmp_path / "clip.mp4", flat, "mpeg4", "yuv420p")
    decoded = read_video(tmp_path / "clip.mp4")
    assert decoded.shape == (10, 48, 64, 3) and np.abs(decoded.astype(int) - flat).max() <= 4
    code, out, _ = run_cli("predict", tmp_path / "clip.mp4", *st_args, "--top-k", "1")
    assert code == 0 and out.startswith(f"{tmp_path / 'clip.mp4'} (vivit_ti_st")

    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    code, out, err = run_cli("predict", tmp_path / "broken.mp4", *st_args)
    assert code == 1 and out == ""
    one_error_line(err, "cannot decode", "broken.mp4")


# ---------------------------------------------------------------- the installed entry points
def test_python_dash_m_entry_point():
    env = {**os.environ, "PYTHONPATH": str(Path(vivit.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "vivit", "list", "--pretrained"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == vivit.list_models(pretrained=True)


def test_console_script_if_installed(one_error_line):
    script = shutil.which("vivit", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the vivit console script is not installed in this environment")
    done = subprocess.run([script, "info", "vivit_nope"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    one_error_line(done.stderr, "unknown model")


@pytest.mark.parametrize(
    ("typo", "suggested"),
    [
        ("vivit_dmeo", "vivit_demo"),
        ("vivit_b_fe_k4000", "vivit_b_fe_k400"),
        ("vivit_b_fe_k600", "vivit_b_fe_k400, vivit_l_fe_k600"),
    ],
)
def test_unknown_model_suggests_only_the_close_names(files, typo, suggested, run_cli, one_error_line):
    """attack21: `--model vivit_dmeo` suggested "vivit_demo, vivit_s_fe, vivit_l_fe, vivit_h_fe, vivit_b_fe":
    every name shares `vivit_`, so difflib's default cutoff let four unrelated ones in."""
    code, out, err = run_cli("predict", files["a"], "--model", typo)
    assert code == 2 and out == ""
    one_error_line(err, f"unknown model '{typo}'; did you mean {suggested}? (")
