"""The OpenVINO backend (`vivit.backends.openvino_model`, `load_openvino`) and `vivit.export.export_openvino`.

Tiny models (width 32, 8x32x32 clips) keep a conversion to about two seconds. Bounds: fp32 within
`FP32_TOLERANCE` (1e-4) of PyTorch; bf16 and int8 within the drift README "Speed" documents
(measured values beside each bound).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino")

import vivit
import vivit.backends as backends
from vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    optimize_for_inference,
)
from vivit.backends import ExportValidationError, load_openvino, openvino_model
from vivit.export import export_openvino

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import finetune

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.openvino, pytest.mark.slow]

CLASSES = [SpatioTemporalViViT, FactorizedEncoderViViT, FactorizedSelfAttentionViViT, FactorizedDotProductViViT]
IDS = ["st", "fe", "fsa", "fdp"]
TINY = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=1, num_heads=4, num_classes=5)
BF16_TOL = 3e-2  # max abs logit difference vs PyTorch fp32 (|logits| <= ~2); measured <= 4e-3
INT8_TOL = 0.1  # same, int8 calibrated on 8 random clips; measured <= 2e-2


def _tiny(cls, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {**TINY, "global_pool": "token" if cls in (SpatioTemporalViViT, FactorizedEncoderViViT) else "avg"}
    if cls is FactorizedEncoderViViT:
        args["temporal_depth"] = 1
    return cls(**{**args, **kwargs}).eval()


def _video(batch: int, seed: int = 5) -> torch.Tensor:
    return torch.rand((batch, 3, 8, 32, 32), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_fp32_and_bf16_match_pytorch_at_any_batch(cls, tmp_path):
    model = _tiny(cls)
    fp32 = openvino_model(model, "fp32", cache=tmp_path)
    bf16 = openvino_model(model, "bf16", cache=tmp_path)  # the same float graph, from the cache
    assert len(list(tmp_path.glob("*.xml"))) == 1
    assert fp32.validation["fp32"]["max_abs_diff"] <= 1e-4 and fp32.validation["clips"] == 2
    for batch in (1, 3):
        video = _video(batch, seed=batch)
        with torch.no_grad():
            expected = model(video)
            features = model.forward_head(model.forward_features(video), pre_logits=True)
        got = fp32(video)
        assert got.shape == (batch, 5) and got.dtype == torch.float32
        assert _diff(got, expected) <= 1e-4
        assert _diff(fp32.forward_pre_logits(video), features) <= 1e-4
        assert _diff(bf16(video), expected) <= BF16_TOL
        # the jobs' feature API: pooled features, and the source model's head on them
        pooled = fp32.forward_head(fp32.forward_features(video), pre_logits=True)
        assert _diff(pooled, features) <= 1e-4 and _diff(fp32.forward_head(pooled), expected) <= 1e-4
    # an empty anchor first, then a copy of the model's head (what the jobs' untrained-head check reads)
    assert not fp32.training and [p.numel() for p in fp32.parameters()] == [0, 32 * 5, 5]
    assert torch.equal(fp32.head.weight, model.head.weight) and fp32.head.weight is not model.head.weight
    with pytest.raises(ValueError, match="per-token outputs"):
        fp32.forward_intermediates(video)
    anchor = next(fp32.parameters())  # what jobs read the input's device and dtype from
    assert anchor.device.type == "cpu" and anchor.dtype == torch.float32
    assert fp32.train().training is False  # inference only


def test_cached_graph_is_reused_and_keyed_by_the_weights(tmp_path, monkeypatch, caplog):
    model, video = _tiny(SpatioTemporalViViT), _video(2)
    first = openvino_model(model, "fp32", cache=tmp_path)
    monkeypatch.setattr(backends, "_convert", lambda *a: pytest.fail("converted again although cached"))
    again = openvino_model(model, "fp32", cache=tmp_path)
    assert again.path == first.path and torch.equal(again(video), first(video))

    changed = _tiny(SpatioTemporalViViT)
    with torch.no_grad():
        changed.head.bias.add_(1.0)  # other weights: another graph, not the cached one
    monkeypatch.undo()
    other = openvino_model(changed, "fp32", cache=tmp_path)
    assert other.path != first.path
    with torch.no_grad():
        assert _diff(other(video), changed(video)) <= 1e-4

    first.path.with_suffix(".bin").write_bytes(b"truncated")  # a broken cache entry is rebuilt, with a log line
    with caplog.at_level(logging.WARNING, logger="vivit.backends"):
        rebuilt = openvino_model(model, "fp32", cache=tmp_path)
    assert "rebuilding the cached OpenVINO graph" in caplog.text
    with torch.no_grad():
        assert _diff(rebuilt(video), model(video)) <= 1e-4


def test_int8_is_static_calibrated_and_needs_clips(tmp_path):
    import openvino as ov

    model, video = _tiny(FactorizedEncoderViViT), _video(2)
    with pytest.raises(ValueError, match=r"int8 \(static\) needs calibration clips"):
        openvino_model(model, "int8", cache=tmp_path)
    with pytest.raises(ValueError, match=r"calibration clips must be \(N, 3, 8, 32, 32\)"):
        openvino_model(model, "int8", cache=tmp_path, calibration=torch.rand(2, 3, 4, 32, 32))
    calibration = torch.rand((8, 3, 8, 32, 32), generator=torch.Generator().manual_seed(9)) * 2 - 1
    int8 = openvino_model(model, "int8", cache=tmp_path, calibration=calibration)
    assert int8.validation["calibration_clips"] == 8 and int8.validation["int8"]["max_abs_diff"] <= INT8_TOL
    graph = ov.Core().read_model(str(int8.path))
    assert any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())  # static quantizers in the graph
    with torch.no_grad():
        assert _diff(int8(video), model(video)) <= INT8_TOL
    with pytest.raises(ValueError, match="an int8 graph; it runs as int8, not bf16"):
        load_openvino(int8.path, "bf16")


def test_int8_on_the_demo_held_out_clips(tmp_path):
    """The bundled demo (examples/make_demo.py): calibrated on 300 clips of its training stream (seed 200),
    top-1 agrees with fp32 on >= 99.5% of the 2000 held-out clips (seed 300; measured: 100%)."""
    video, _, _ = finetune.MovingDiscs().sample(2000, torch.Generator().manual_seed(300))
    calibration, _, _ = finetune.MovingDiscs().sample(300, torch.Generator().manual_seed(200))
    model = vivit.create_model("vivit_demo", pretrained=True).eval()
    int8 = openvino_model(model, "int8", calibration=calibration, cache=tmp_path)
    with torch.inference_mode():
        ref = torch.cat([model(video[i : i + 500]).argmax(-1) for i in range(0, 2000, 500)])
        got = torch.cat([int8(video[i : i + 500]).argmax(-1) for i in range(0, 2000, 500)])
    assert (got == ref).float().mean().item() >= 0.995


def test_export_writes_ir_with_metadata_that_reads_back(tmp_path):
    import openvino as ov

    model = vivit.create_model("vivit_demo", pretrained=True).eval()
    result = export_openvino(model, tmp_path / "demo.xml", precision="bf16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.bin", "demo.xml"]
    assert result.input_shape == ("batch", 3, 8, 32, 32) and result.output_shape == ("batch", 4)
    assert result.precision == "bf16" and result.validated == 2 and result.max_abs_diff <= BF16_TOL
    section = ov.Core().read_model(str(result.path)).get_rt_info()["vivit"]  # OpenVINO itself, no vivit
    assert json.loads(section["label_names"].astype(str)) == ["right", "left", "down", "up"]
    assert json.loads(section["mean"].astype(str)) == [0.5, 0.5, 0.5]
    assert section["vivit_version"].astype(str) == vivit.__version__
    assert json.loads(section["num_frames"].astype(str)) == 8 and json.loads(section["frame_stride"].astype(str)) == 1
    loaded = load_openvino(result.path)
    assert loaded.pretrained_cfg["label_names"] == ("right", "left", "down", "up")
    assert loaded.pretrained_cfg["crop_size"] == (32, 32) and loaded.pretrained_cfg["input_size"] == (3, 8, 32, 32)
    transform = vivit.create_transform(loaded.pretrained_cfg)  # what a job needs to feed it
    frames = (torch.rand(8, 40, 48, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    with torch.no_grad():
        clip = transform(frames).unsqueeze(0)
        expected = model(clip)
        # the demo's logits on noise reach ~3.5, beyond the |logits| <= 2 that BF16_TOL is stated for: scale it
        assert _diff(loaded(clip), expected) <= BF16_TOL * max(1.0, expected.abs().max().item() / 2)


def test_failed_validation_and_bad_paths_write_nothing(tmp_path, monkeypatch):
    model = _tiny(FactorizedDotProductViViT)
    (tmp_path / "model.xml").write_text("previous")
    real = backends._validation

    def off(*args, **kwargs):
        figures = real(*args, **kwargs)
        figures["fp32"]["max_abs_diff"] = 0.5
        return figures

    monkeypatch.setattr(backends, "_validation", off)
    with pytest.raises(ExportValidationError, match=r"differ from PyTorch's by 0.5 \(> 0.0001\)"):
        export_openvino(model, tmp_path / "model.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.xml"]
    assert (tmp_path / "model.xml").read_text() == "previous"
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"ending in \.xml"):
        export_openvino(model, tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8"):
        export_openvino(model, tmp_path / "m.xml", precision="fp16")
    with pytest.raises(ValueError, match="export the original model"):
        openvino_model(optimize_for_inference(model), "fp32", cache=tmp_path)
    with pytest.raises(FileNotFoundError, match="no OpenVINO IR"):
        load_openvino(tmp_path / "missing.xml")


def test_the_backend_refuses_clips_it_was_not_built_for(tmp_path):
    backend = openvino_model(_tiny(SpatioTemporalViViT), "fp32", cache=tmp_path)
    with pytest.raises(
        ValueError, match=r"takes \(B, 3, 8, 32, 32\) \(B, C, T, H, W\) clips, got shape \(1, 3, 4, 32, 32\)"
    ):
        backend(torch.rand(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="floating-point video, got dtype torch.uint8"):
        backend(torch.zeros(1, 3, 8, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="cannot be copied or pickled"):
        import copy

        copy.deepcopy(backend)


def test_missing_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(ImportError, match=r"needs nncf: pip install nncf"):
        openvino_model(_tiny(SpatioTemporalViViT), "int8", cache=tmp_path, calibration=_video(1))
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"needs openvino: pip install openvino"):
        openvino_model(_tiny(SpatioTemporalViViT), "fp32", cache=tmp_path)


def test_inference_backend_is_the_one_entry_point_for_jobs(tmp_path):
    model, video = _tiny(SpatioTemporalViViT), _video(2)
    assert backends.inference_backend(model) is model  # pytorch fp32: the default path, unchanged
    bf16 = backends.inference_backend(model, "pytorch", "bf16")
    assert bf16.optimized_for_inference["dtype"] == "bfloat16"
    int8 = backends.inference_backend(model, "pytorch", "int8")
    assert int8.optimized_for_inference["dtype"] == "int8"
    ov = backends.inference_backend(model, "openvino", "fp32", cache=tmp_path)
    assert isinstance(ov, backends.OpenVINOModel) and ov.precision == "fp32"
    with torch.no_grad():
        expected = model(video)
        assert _diff(ov(video), expected) <= 1e-4
        assert _diff(bf16(video), expected) <= BF16_TOL and _diff(int8(video), expected) <= INT8_TOL
    with pytest.raises(ValueError, match="backend must be one of pytorch, openvino, got 'tensorrt'"):
        backends.inference_backend(model, "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8, got 'fp16'"):
        backends.inference_backend(model, "pytorch", "fp16")


def test_released_backends_leave_signals_working(tmp_path):
    """OpenVINO's CPU plugin gives the thread a new alternate signal stack per Core and puts back the old
    one when the Core goes: Cores released in creation order left the thread on an unmapped stack, and the
    next signal (here SIGUSR1; in the test suite a SIGCHLD) killed the process with SIGSEGV. vivit keeps one
    Core. Run in a child process, whose death the test would otherwise share."""
    import subprocess
    import textwrap

    code = textwrap.dedent(
        f"""
        import gc, os, signal, torch
        from vivit import SpatioTemporalViViT
        from vivit.backends import openvino_model
        model = SpatioTemporalViViT(img_size=32, num_frames=8, patch_size=8, embed_dim=32, depth=1, num_heads=4,
                                    num_classes=5).eval()
        video = torch.rand(1, 3, 8, 32, 32)
        first = openvino_model(model, "fp32", cache={str(tmp_path)!r})
        first(video)
        second = openvino_model(model, "int8", cache={str(tmp_path)!r}, calibration=torch.rand(2, 3, 8, 32, 32))
        second(video)
        del first
        gc.collect()
        del second
        gc.collect()
        signal.signal(signal.SIGUSR1, lambda *args: print("handled"))
        os.kill(os.getpid(), signal.SIGUSR1)
        print("alive")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["handled", "alive"]
