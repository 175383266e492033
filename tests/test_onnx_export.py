"""ONNX export (`vivit.export_onnx`, `vivit export onnx`): all four models run in ONNX Runtime as in PyTorch.

Tiny models (width 32, 8x32x32 clips) keep each export to about two seconds. onnx and onnxruntime are
imported inside the tests, not at collection: importing onnx imports ml_dtypes, which teaches numpy
the float8 dtypes for the rest of the process (tests/test_flax_msgpack.py expects them unknown).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vivit
import vivit.export as export_module
from vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
    cli,
    export_onnx,
    optimize_for_inference,
)
from vivit.backends import parse_deployment_metadata
from vivit.export import ExportValidationError, read_onnx_metadata

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.onnx]

CLASSES = [SpatioTemporalViViT, FactorizedEncoderViViT, FactorizedSelfAttentionViViT, FactorizedDotProductViViT]
IDS = ["st", "fe", "fsa", "fdp"]
TINY = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=1, num_heads=4, num_classes=5)


def _tiny(cls, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {**TINY, "global_pool": "token" if cls in (SpatioTemporalViViT, FactorizedEncoderViViT) else "avg"}
    if cls is FactorizedEncoderViViT:
        args["temporal_depth"] = 1
    return cls(**{**args, **kwargs}).eval()


def _run(path: Path, video: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["video"]
    return session.run(["logits"], {"video": video.numpy()})[0]


def _video(shape, seed: int = 5) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_export_matches_pytorch_at_any_batch(cls, tmp_path):
    model = _tiny(cls)
    result = export_onnx(model, tmp_path / "model.onnx")
    assert result.path == tmp_path / "model.onnx" and result.path.is_file()
    assert result.max_abs_diff <= 1e-4 and result.validated == 2 and result.top1_agree == 2
    assert result.input_shape == ("batch", 3, 8, 32, 32) and result.output_shape == ("batch", 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary files left behind
    for batch in (1, 3):
        video = _video((batch, 3, 8, 32, 32), seed=batch)
        with torch.no_grad():
            expected = model(video).numpy()
        assert np.abs(_run(result.path, video) - expected).max() <= 1e-4


def test_int8_export_quantizes_only_weight_matmuls(tmp_path):
    model = _tiny(SpatioTemporalViViT)
    result = export_onnx(model, tmp_path / "int8.onnx", int8=True)
    import onnx

    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") >= 4  # qkv, proj, fc1, fc2
    assert "MatMul" in ops and "Conv" in ops  # attention's q k^T / p v and the tubelet conv stay fp32
    assert result.int8 and 0 < result.max_abs_diff < 0.1  # measured 3e-3
    video = _video((2, 3, 8, 32, 32))
    with torch.no_grad():
        assert np.abs(_run(result.path, video) - model(video).numpy()).max() < 0.1


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_labels_and_preprocessing_travel_in_the_file(tmp_path, int8):
    """Issue 21 point 6: a user of the .onnx file alone finds the label names, mean/std, resize/crop, frames,
    stride and vivit version in its metadata_props (read here by ONNX Runtime itself)."""
    import onnxruntime as ort

    model = vivit.create_model("vivit_demo", pretrained=True).eval()
    result = export_onnx(model, tmp_path / "demo.onnx", int8=int8)
    meta = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).get_modelmeta()
    stored = meta.custom_metadata_map
    assert stored == read_onnx_metadata(result.path)
    assert {key: stored[key] for key in result.metadata} == result.metadata  # int8 adds ORT's own onnx.infer key
    cfg = parse_deployment_metadata(stored)
    assert cfg["label_names"] == ("right", "left", "down", "up") == model.pretrained_cfg["label_names"]
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["num_frames"] == 8 and cfg["frame_stride"] == 1 and cfg["crop_size"] == (32, 32)
    assert cfg["resize_size"] == 32 and cfg["input_size"] == (3, 8, 32, 32) and cfg["input_layout"] == "NCTHW"
    assert cfg["vivit_version"] == vivit.__version__ and cfg["architecture"] == "vivit_demo"
    video = _video((1, 3, 8, 32, 32))
    with torch.no_grad():
        assert np.abs(_run(result.path, video) - model(video).numpy()).max() <= (0.1 if int8 else 1e-4)


def test_dynamic_size_refused_unless_a_size_is_given(tmp_path):
    model = _tiny(SpatioTemporalViViT, dynamic_size=True)
    with pytest.raises(ValueError, match=r"dynamic_size=True.*input_size=\(T, H, W\)"):
        export_onnx(model, tmp_path / "dyn.onnx")
    assert not (tmp_path / "dyn.onnx").exists()
    result = export_onnx(model, tmp_path / "dyn.onnx", input_size=(12, 40, 48))  # tables resampled for this size
    assert result.input_shape == ("batch", 3, 12, 40, 48) and result.max_abs_diff <= 1e-4
    assert result.metadata["num_frames"] == "12" and result.metadata["input_size"] == "[3, 12, 40, 48]"
    with pytest.raises(Exception, match="(?i)invalid dimensions|shape"):  # ONNX Runtime checks the fixed size
        _run(result.path, _video((1, 3, 8, 32, 32)))
    with pytest.raises(ValueError, match="differs from the model's clip size"):
        export_onnx(_tiny(SpatioTemporalViViT), tmp_path / "x.onnx", input_size=(12, 40, 48))


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_weights_over_2gb_go_to_a_data_file_beside_it(tmp_path, monkeypatch, int8):
    monkeypatch.setattr(export_module, "_EXTERNAL_DATA_BYTES", 0)  # as if the model were over 2 GB
    model = _tiny(SpatioTemporalViViT)
    result = export_onnx(model, tmp_path / "big.onnx", int8=int8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert read_onnx_metadata(tmp_path / "big.onnx")["num_classes"] == "5"  # set without loading the .data
    assert result.max_abs_diff <= (0.1 if int8 else 1e-4)
    video = _video((1, 3, 8, 32, 32))
    with torch.no_grad():
        assert np.abs(_run(result.path, video) - model(video).numpy()).max() <= (0.1 if int8 else 1e-4)


def test_failed_validation_writes_nothing(tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"previous")
    monkeypatch.setattr(export_module, "_compare", lambda path, video, expected: (0.5, 0))
    with pytest.raises(ExportValidationError, match=r"differ from PyTorch's by 0.5 \(> 0.0001\); nothing was written"):
        export_onnx(_tiny(FactorizedDotProductViViT), tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert (tmp_path / "model.onnx").read_bytes() == b"previous"  # the old file is intact


def test_a_destination_that_cannot_be_a_file_is_refused_before_exporting(tmp_path, monkeypatch, capsys):
    """A folder (or a name under a file) failed only at the final rename, after the whole export and
    validation, with the temporary folder's name in the message."""
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported although the path is unusable"))
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"folder\.onnx is a folder: give a file name, e.g\. .*folder\.onnx/output\.onnx"
    ):
        export_onnx(_tiny(SpatioTemporalViViT), tmp_path / "folder.onnx")
    with pytest.raises(ValueError, match=r"cannot write .*file/sub/m\.onnx: .*file is a file, not a folder"):
        export_onnx(_tiny(SpatioTemporalViViT), tmp_path / "file" / "sub" / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.onnx"]  # no temporary folder left
    code = cli.main(["export", "onnx", "vivit_demo", "--out", str(tmp_path / "folder.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vivit: error: --out: ") and "is a folder: give a file name" in err


def test_refuses_optimized_modules_and_reports_missing_packages(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="export the original model"):
        export_onnx(optimize_for_inference(_tiny(SpatioTemporalViViT)), tmp_path / "o.onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs onnxscript .*pip install onnxscript"):
        export_onnx(_tiny(SpatioTemporalViViT), tmp_path / "o.onnx")


def test_cli_export_onnx(tmp_path, capsys, monkeypatch):
    model = _tiny(FactorizedEncoderViViT)
    model.save_pretrained(tmp_path / "weights")
    out = tmp_path / "fe.onnx"
    code = cli.main(["export", "onnx", "vivit_ti_fe", "--weights", str(tmp_path / "weights"), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert f"wrote {out}" in stdout and "(batch, 3, 8, 32, 32)" in stdout and "(batch, 5)" in stdout
    assert "max abs logit difference" in stdout and "limit 1e-4" in stdout and "top-1 agrees on 2/2" in stdout
    video = _video((1, 3, 8, 32, 32))
    with torch.no_grad():
        assert np.abs(_run(out, video) - model(video).numpy()).max() <= 1e-4

    code = cli.main(
        ["export", "onnx", "vivit_ti_fe", "--weights", str(tmp_path / "weights"), "--out", str(tmp_path / "x.pt")]
    )
    assert code == 2 and "expected a file name ending in .onnx" in capsys.readouterr().err
    code = cli.main(
        [
            "export",
            "onnx",
            "vivit_ti_fe",
            "--weights",
            str(tmp_path / "weights"),
            "--out",
            str(out),
            "--override",
            "dynamic_size=true",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("vivit: error: ") and "--input-size TxHxW" in err and "Traceback" not in err
    code = cli.main(["export", "onnx", "vivit_ti_fe", "--out", str(out), "--input-size", "8x32"])
    assert code == 2 and "FRAMESxHEIGHTxWIDTH" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code = cli.main(["export", "onnx", "vivit_ti_fe", "--weights", str(tmp_path / "weights"), "--out", str(out)])
    assert code == 1 and "pip install onnxruntime" in capsys.readouterr().err
