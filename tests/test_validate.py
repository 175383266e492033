"""The checks every reader applies: file kinds, safetensors headers, JSON limits, architecture caps,
the block-count rule, finite values, embedded pretrained_cfg ranges, and the CLI's printing."""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vivit import cli
from vivit.weights.formats import (
    cast_finite,
    check_regular_file,
    load_safetensors,
    parse_json,
    read_json_file,
    read_safetensors_header,
)
from vivit.weights.validate import (
    ARCH_LIMITS,
    all_finite,
    check_model_args,
    count_blocks,
    short_list,
    validate_pretrained_cfg,
)


# ---------------------------------------------------------------- files
def _raw_safetensors(path: Path, header: dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_non_regular_files_are_refused_before_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    for path, kind in (
        (fifo, "a FIFO (named pipe)"),
        (tmp_path, "a directory"),
        (Path("/dev/zero"), "a character device"),
    ):
        with pytest.raises(
            ValueError,
            match=rf"^{re.escape(str(path))} is {re.escape(kind)}, not a regular file; expected a checkpoint file$",
        ):
            read_safetensors_header(path)
        with pytest.raises(ValueError, match="not a regular file"):
            check_regular_file(path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'} does not exist"):
        read_safetensors_header(tmp_path / "missing")


def test_safetensors_header_read_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    save_file({"a": torch.ones(2, 3), "b": torch.zeros(4, dtype=torch.bfloat16)}, str(path), metadata={"k": "v"})
    header = read_safetensors_header(path)
    assert header.shapes == {"a": (2, 3), "b": (4,)} and dict(header.metadata) == {"k": "v"}
    assert header.tensors["b"].dtype == torch.bfloat16 and header.tensors["a"].numel() == 6
    tensors = load_safetensors(path, header)
    assert torch.equal(tensors["a"], torch.ones(2, 3))


# The header's own rules are safetensors' (`safe_open`), in its words; vivit adds floats only and
# names the file.
@pytest.mark.parametrize(
    "header, data, message",
    [
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 12,
            r"not a readable safetensors file \(incomplete metadata, file not fully covered\)",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
            b"\0" * 12,
            r"not a readable safetensors file \(invalid offset for tensor `a`\)",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4]}},
            b"\0" * 4,
            r"invalid shape, data type, or offset",
        ),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, r"invalid JSON in header"),
        ({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, r"invalid JSON in header"),
        (
            {"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}},
            b"\0" * 8,
            r"1 tensors are not floating point \(float16, bfloat16, float32 or float64\): a \(I64 = int64\)",
        ),
        ({"a": {"dtype": "BOOL", "shape": [1], "data_offsets": [0, 1]}}, b"\0", r"a \(BOOL = bool\)"),
        ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, r"a \(C64 = complex64\)"),
        (
            {"a": {"dtype": "F32", "shape": [1] * 9, "data_offsets": [0, 4]}},
            b"\0" * 4,
            r"1 tensors have more than 8 dimensions: a",
        ),
        ({"__metadata__": {"config": 5}}, b"", r"not a readable safetensors file \(invalid JSON in header"),
        ([1, 2], b"", r"not a readable safetensors file \(invalid JSON in header"),
    ],
)
def test_safetensors_header_faults(tmp_path: Path, header: object, data: bytes, message: str) -> None:
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, data)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message) as info:
        read_safetensors_header(path)
    assert str(info.value).startswith(str(path))


def test_safetensors_header_size_limits(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**63).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header of 9,223,372,036,854,775,808 bytes announced, more than the limit"):
        read_safetensors_header(path)
    path.write_bytes((100).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header of 100 bytes announced in a file of 10 bytes"):
        read_safetensors_header(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="2 bytes, shorter than the 8-byte header length"):
        read_safetensors_header(path)


def test_non_finite_tensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.safetensors"
    save_file(
        {f"w{i}": torch.tensor([1.0, math.nan if i % 2 else math.inf]) for i in range(40)} | {"ok": torch.ones(2)},
        str(path),
    )
    with pytest.raises(
        ValueError, match=r"nan\.safetensors: 40 tensors hold NaN or infinite values: w0, w1, w10, w11, w12 and 35 more"
    ):
        load_safetensors(path)


def test_cast_finite_refuses_overflow_instead_of_inf() -> None:
    tensors = {"big": torch.tensor([1e300], dtype=torch.float64), "fine": torch.tensor([1.5], dtype=torch.float64)}
    with pytest.raises(
        ValueError, match=r"f\.safetensors: 1 tensors hold values beyond the range of the model's dtype \(big\)"
    ):
        cast_finite(tensors, {"big": torch.float32, "fine": torch.float32}, "f.safetensors")
    out = cast_finite({"fine": tensors["fine"]}, {"fine": torch.float32}, "f")
    assert out["fine"].dtype == torch.float32 and out["fine"].item() == 1.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]", r"nested too deeply \(limit 16\)"),
        ('{"mean": NaN}', r"not valid JSON \(non-finite number NaN"),
        ('{"mean": [1e999]}', "a number too large for a float"),
        ('{"a": 1, "a": 2}', r"duplicate keys a"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_json_limits(text: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^cfg\.json: its config .*{message}"):
        parse_json(text, "cfg.json", "config")


def test_json_size_limit_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="its config is 101 bytes, more than the limit of 100"):
        parse_json("x" * 101, "f", "config", max_bytes=100)
    (tmp_path / "c.json").write_text("[1]")
    with pytest.raises(ValueError, match=r"c\.json: its JSON file is a JSON list, expected an object"):
        read_json_file(tmp_path / "c.json")
    os.mkfifo(tmp_path / "f.json")
    with pytest.raises(ValueError, match="is a FIFO"):
        read_json_file(tmp_path / "f.json")


# ---------------------------------------------------------------- architecture
def test_block_count_is_distinct_consecutive_indices() -> None:
    names = [f"blocks.{i}.norm1.weight" for i in range(3)] + [f"blocks.{i}.norm2.weight" for i in range(3)]
    assert count_blocks(names, r"blocks\.(\d+)\.", "f") == 3
    assert count_blocks(["head.weight"], r"blocks\.(\d+)\.", "f") == 0
    with pytest.raises(
        ValueError,
        match=r"^f: blocks indices must run 0\.\.2 without gaps \(3 distinct indices\); beyond the end: 999999999; missing: 2;",
    ):
        count_blocks([*names[:2], "blocks.999999999.x"], r"blocks\.(\d+)\.", "f")
    many = [f"blocks.{i}.x" for i in range(300)]
    with pytest.raises(ValueError, match="300 blocks is more than the supported 256"):
        count_blocks(many, r"blocks\.(\d+)\.", "f")
    scattered = [f"blocks.{i * 1000}.x" for i in range(4000)]
    with pytest.raises(ValueError) as info:
        count_blocks(scattered, r"blocks\.(\d+)\.", "f")
    assert str(info.value) == (
        "f: blocks indices must run 0..3999 without gaps (4000 distinct indices); beyond the end: 4000, 5000, 6000, "
        "7000, 8000 and 3991 more; missing: 1, 2, 3, 4, 5 and 3991 more; the file is corrupt or not a ViViT/ViT checkpoint"
    )


def test_architecture_caps() -> None:
    check_model_args(
        {
            "embed_dim": 1280,
            "depth": 32,
            "num_heads": 16,
            "mlp_dim": 5120,
            "img_size": (224, 224),
            "num_frames": 32,
            "patch_size": 14,
            "tubelet_size": 2,
        },
        "f",
    )  # ViViT-H fits
    with pytest.raises(
        ValueError, match=r"f: .*outside the supported limits: 6062080 tubelets per clip is outside 1\.\.65536"
    ):
        check_model_args({"img_size": [1024, 1024], "num_frames": 740, "patch_size": 8, "tubelet_size": 2}, "f")
    with pytest.raises(ValueError, match=r"embed_dim=100000 is outside 1\.\.8192; num_classes=10000000 is outside"):
        check_model_args({"embed_dim": 100000, "num_classes": 10**7}, "f")
    with pytest.raises(ValueError, match=r"num_heads='2' is not an integer"):
        check_model_args({"num_heads": "2"}, "f")
    # too small, the wrong kind (issue 22.8: a config.json's values reached the constructor raw)
    with pytest.raises(ValueError, match=r"num_heads=0 is outside 1\.\.256; tubelet_size=0 is outside 1\.\.256"):
        check_model_args({"num_heads": 0, "tubelet_size": 0, "img_size": 16, "num_frames": 4, "patch_size": 8}, "f")
    with pytest.raises(ValueError, match=r"img_size=\[32\] is not an integer or a pair of integers"):
        check_model_args({"img_size": [32]}, "f")
    with pytest.raises(
        ValueError, match=r"drop_path_rate=-1 is not a number in \[0, 1\); global_pool='max' is not one"
    ):
        check_model_args({"drop_path_rate": -1, "global_pool": "max"}, "f")
    check_model_args({"mlp_dim": None, "temporal_num_heads": None, "img_size": [32, 48]}, "f")  # None: derived
    assert set(ARCH_LIMITS) >= {"embed_dim", "depth", "tokens", "num_classes"}


def test_all_finite_in_chunks() -> None:
    big = np.ones(10_000, np.float32)
    assert all_finite(big) and all_finite(torch.from_numpy(big)) and all_finite(np.arange(3))
    big[9_999] = np.inf
    assert not all_finite(big, chunk=1000) and not all_finite(torch.from_numpy(big), chunk=1000)


def test_short_list() -> None:
    assert short_list(range(3)) == "0, 1, 2"
    assert short_list(range(4000)) == "0, 1, 2, 3, 4 and 3995 more"
    assert short_list(["a; b", "c"], 1, sep="; ") == "a; b and 1 more"


# ---------------------------------------------------------------- embedded pretrained_cfg
GOOD = {
    "input_size": [3, 8, 32, 32],
    "crop_size": 32,
    "resize_size": 36,
    "frame_stride": 2,
    "test_views": [4, 3],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bilinear",
    "antialias": False,
    "num_classes": 3,
    "label_names": ["a", "b", "c"],
    "class_splits": [2, 1],
    "split_names": ["x", "y"],
    "metrics": {"top1": 80.1, "views": "4x3", "top5": None},
    "dataset": "k400",
    "sources": [{"url": "u"}],
}


def test_valid_cfg_passes_unchanged() -> None:
    assert validate_pretrained_cfg(GOOD, "f", num_classes=3) == GOOD


@pytest.mark.parametrize(
    "change, message",
    [
        ({"test_views": [1_000_000, 3]}, r"test_views=\[1000000, 3\] has 1000000, outside 1\.\.64"),
        ({"test_views": [4, 2]}, r"test_views=\[4, 2\] must be \(clips, crops\) with 1 or 3 crops"),
        ({"mean": ["nan", "nan", "nan"]}, r"mean=\['nan', 'nan', 'nan'\] must be a list of finite numbers"),
        ({"mean": [float("nan")] * 3}, r"mean=\[nan, nan, nan\] must be a list of finite numbers"),
        ({"std": [0.5, 0.0, 0.5]}, r"std=\[0\.5, 0\.0, 0\.5\] must be positive"),
        ({"mean": [0.5, 0.5]}, r"mean=\[0\.5, 0\.5\] must have 3 entries"),
        ({"input_size": [3, 8, 100_000, 32]}, r"input_size=.* has 100000, outside 1\.\.8192"),
        ({"crop_size": -1}, r"crop_size=-1 must be an integer in 1\.\.8192"),
        ({"frame_stride": True}, r"frame_stride=True must be an integer"),
        ({"label_names": ["a", "b"]}, r"label_names has 2 names for 3 classes"),
        ({"label_names": ["a", "b", 3]}, r"label_names must be a list of strings"),
        ({"class_splits": [2, 2]}, r"class_splits=\[2, 2\] sums to 4, not the 3 classes"),
        ({"split_names": ["x"]}, r"split_names=\['x'\] must be one short string per class split"),
        ({"num_classes": 7}, r"num_classes=7 disagrees with the 3 outputs of the weights"),
        ({"metrics": {"top1": float("inf")}}, r"metrics=.* must map names to finite numbers"),
        ({"extra": {"x": float("nan")}}, r"extra=\{'x': nan\} is not plain JSON data"),
        ({"dataset": "x" * 5000}, r"dataset=.* is not plain JSON data"),
    ],
)
def test_invalid_cfg_fields(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^m\.safetensors: its embedded pretrained_cfg is invalid: {message}"):
        validate_pretrained_cfg({**GOOD, **change}, "m.safetensors", num_classes=3)


def test_several_problems_are_listed_briefly() -> None:
    bad = {**GOOD, "test_views": [0, 0], "mean": None, "std": "x", "label_names": 5, "crop_size": "big"}
    with pytest.raises(ValueError, match=r"and 2 more; the file is corrupt") as info:
        validate_pretrained_cfg(bad, "m", num_classes=3)
    assert len(str(info.value)) < 600


# ---------------------------------------------------------------- what the CLI prints
def test_cli_json_is_strict_and_labels_are_escaped() -> None:
    line = cli._json_line({"p": float("nan"), "q": [float("inf"), 1.5], "label": "\x1b[2J"})
    assert json.loads(line, parse_constant=lambda c: pytest.fail(c)) == {
        "p": None,
        "q": [None, 1.5],
        "label": "\x1b[2J",
    }
    assert cli._printable("\x1b[2Jred\x07 ok\u202e") == "\\x1b[2Jred\\x07 ok\\u202e"
    assert cli._printable("näive café 猫") == "näive café 猫"
