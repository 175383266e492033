"""Tests for the Flax msgpack checkpoint reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

msgpack = pytest.importorskip("msgpack")

from vivit.weights.flax_msgpack import flatten_params, read_flax_checkpoint  # noqa: E402

DATA = Path(__file__).parent / "data" / "scenic"
MODELS = ["m1_spacetime_tubelet_token", "m2_factorized_encoder_tubelet_token"]
NOT_PARAMS = {"input", "logits"}


def _expected_params(name: str) -> dict[str, np.ndarray]:
    """Load the reference parameters recorded next to the Scenic forward fixture."""
    with np.load(DATA / "forward" / f"{name}.npz") as npz:
        return {k: npz[k] for k in npz.files if k not in NOT_PARAMS}


def _round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round to nearest, ties to even), returned as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    # Adding 0x7FFF plus the lowest kept bit rounds half to even when truncating 16 bits.
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return rounded.astype(np.uint32).view(np.float32)


# --- A minimal writer of Flax's format, to build edge cases the fixtures do not cover. ---


def _ext_array(array: np.ndarray, dtype_name: str | None = None, code: int = 1) -> Any:
    """Encode an array the way flax.serialization does (ext type 1, or 3 for a scalar)."""
    payload = msgpack.packb(
        [list(array.shape), dtype_name or array.dtype.name, np.ascontiguousarray(array).tobytes()],
        use_bin_type=True,
    )
    return msgpack.ExtType(code, payload)


def _encode_tree(tree: Any) -> Any:
    """Replace numpy arrays in a nested dict by Flax ext objects."""
    if isinstance(tree, dict):
        return {k: _encode_tree(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return _ext_array(tree)
    if isinstance(tree, np.generic):
        return _ext_array(np.asarray(tree), code=3)
    return tree


def _pack(tree: Any) -> bytes:
    """Serialize a nested dict of numpy arrays like ``flax.serialization.msgpack_serialize``."""
    return msgpack.packb(_encode_tree(tree), use_bin_type=True)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Return the raw bfloat16 words of float32 values that are exactly representable."""
    return (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


# --- The Flax-written fixtures. ---


@pytest.mark.parametrize("name", MODELS)
def test_fp32_checkpoint_matches_reference_exactly(name: str) -> None:
    params = read_flax_checkpoint(DATA / "checkpoints" / f"{name}.checkpoint")
    expected = _expected_params(name)
    assert set(params) == set(expected)
    for key, value in expected.items():
        assert params[key].dtype == value.dtype, key
        assert params[key].shape == value.shape, key
        np.testing.assert_array_equal(params[key], value, err_msg=key)


@pytest.mark.parametrize("name", MODELS)
def test_bf16_checkpoint_is_reference_rounded_to_bfloat16(name: str) -> None:
    params = read_flax_checkpoint(str(DATA / "checkpoints" / f"{name}.bf16.checkpoint"))
    expected = _expected_params(name)
    assert set(params) == set(expected)
    for key, value in expected.items():
        assert params[key].dtype == np.float32, key
        np.testing.assert_array_equal(params[key], _round_to_bfloat16(value), err_msg=key)
        np.testing.assert_allclose(params[key], value, rtol=2.0**-8, atol=0, err_msg=key)


def test_bytes_source_and_writable_arrays() -> None:
    raw = (DATA / "checkpoints" / f"{MODELS[0]}.checkpoint").read_bytes()
    params = read_flax_checkpoint(raw)
    assert "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel" in params
    assert "embedding/kernel" in params and "cls" in params
    # Arrays must not alias the msgpack buffer: converters may modify them in place.
    assert all(a.flags.writeable and a.flags.c_contiguous for a in params.values())
    assert read_flax_checkpoint(memoryview(raw)).keys() == params.keys()


# --- Corrupt input. ---


def test_truncated_file_raises(tmp_path: Path) -> None:
    raw = (DATA / "checkpoints" / f"{MODELS[0]}.checkpoint").read_bytes()
    for cut in (len(raw) // 2, len(raw) - 3):
        path = tmp_path / "truncated.checkpoint"
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="not a Flax msgpack checkpoint") as info:
            read_flax_checkpoint(path)
        assert "truncated.checkpoint" in str(info.value)
        assert "truncated" in str(info.value)


def test_random_bytes_raise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for seed_bytes in range(5):
        path = tmp_path / f"random{seed_bytes}.bin"
        path.write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match=rf"not a Flax msgpack checkpoint: '.*random{seed_bytes}\.bin'"):
            read_flax_checkpoint(path)


def test_html_page_raises(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    path.write_bytes(b"\n<!DOCTYPE html>\n<html><head><title>404</title></head></html>\n")
    with pytest.raises(ValueError, match=r"not a Flax msgpack checkpoint: .*HTML"):
        read_flax_checkpoint(path)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty"),
        (msgpack.packb([1, 2, 3]), "expected a map"),
        (msgpack.packb({"global_step": 3, "optimizer": {"target": {}}}), "no parameter arrays"),
        (msgpack.packb({"name": "not a checkpoint"}), "not a Flax msgpack checkpoint"),
    ],
)
def test_not_a_param_tree_raises(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "odd.checkpoint"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        read_flax_checkpoint(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_flax_checkpoint(tmp_path / "missing.checkpoint")


# --- Where the parameters live. ---


def _params_tree() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    return {
        "Transformer": {"encoder_norm": {"scale": rng.standard_normal(4, dtype=np.float32)}},
        "cls": rng.standard_normal((1, 1, 4), dtype=np.float32),
        "empty_module": {},
    }


@pytest.mark.parametrize(
    "wrap",
    [
        lambda p: {"optimizer": {"target": p, "state": {"step": np.int32(3)}}, "global_step": 3},
        lambda p: {"optimizer": {"target": {"params": p}}},
        lambda p: {"params": p, "opt_state": {"mu": p}, "global_step": 5},
        lambda p: p,
        lambda p: {"params": p, "batch_stats": {"mean": np.zeros(2)}},
    ],
    ids=["optimizer-target", "optimizer-target-params", "params", "bare", "variables"],
)
def test_param_tree_location(wrap: Any) -> None:
    tree = _params_tree()
    params = read_flax_checkpoint(_pack(wrap(tree)))
    assert set(params) == {"Transformer/encoder_norm/scale", "cls"}
    np.testing.assert_array_equal(params["cls"], tree["cls"])


# --- Flax encodings: chunked arrays, bfloat16, scalars, complex, other dtypes. ---


def test_chunked_array_is_reassembled() -> None:
    full = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    flat = full.reshape(-1)
    chunked = {
        "__msgpack_chunked_array__": True,
        "shape": {"0": 2, "1": 3, "2": 5},
        "chunks": {"0": _ext_array(flat[:13]), "1": _ext_array(flat[13:26]), "2": _ext_array(flat[26:])},
    }
    bf16 = {
        "__msgpack_chunked_array__": True,
        "shape": {"0": 4},
        "chunks": {
            "0": _ext_array(_bf16_bits(np.array([1, 2], np.float32)), "bfloat16"),
            "1": _ext_array(_bf16_bits(np.array([-0.5, 3], np.float32)), "bfloat16"),
        },
    }
    raw = msgpack.packb({"optimizer": {"target": {"big": chunked, "Dense_0": {"kernel": bf16}}}}, use_bin_type=True)
    params = read_flax_checkpoint(raw)
    np.testing.assert_array_equal(params["big"], full)
    np.testing.assert_array_equal(params["Dense_0/kernel"], np.array([1, 2, -0.5, 3], np.float32))
    assert params["Dense_0/kernel"].dtype == np.float32


def test_bfloat16_widening_is_exact() -> None:
    # 0, -0, 1, -2.5, pi in bf16, smallest subnormal, largest finite, smallest normal (twice), -1.
    words = np.array([0x0000, 0x8000, 0x3F80, 0xC020, 0x4049, 0x0001, 0x7F7F, 0x0080, 0xBF80, 0x0080], np.uint16)
    raw = msgpack.packb({"w": _ext_array(words.reshape(2, 5), "bfloat16")}, use_bin_type=True)
    out = read_flax_checkpoint(raw)["w"]
    assert out.shape == (2, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out.reshape(-1).view(np.uint32), words.astype(np.uint32) << 16)
    assert out[0, 2] == 1.0 and out[0, 3] == -2.5 and out[0, 4] == 3.140625
    assert out[1, 3] == -1.0 and np.isfinite(out).all()


@pytest.mark.parametrize("word", [0x7F80, 0xFF80, 0x7FC0], ids=["inf", "-inf", "nan"])
def test_non_finite_bfloat16_is_refused(word: int) -> None:
    words = np.array([0x3F80, word, 0x3F80], np.uint16)
    raw = msgpack.packb({"params": {"blk": {"w": _ext_array(words, "bfloat16")}}}, use_bin_type=True)
    with pytest.raises(ValueError, match=r"1 parameters hold NaN or infinite values: blk/w"):
        read_flax_checkpoint(raw)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_dtypes_round_trip(dtype: str) -> None:
    array = (np.arange(6) % 3).astype(dtype).reshape(2, 3)
    out = read_flax_checkpoint(_pack({"layer": {"w": array}}))["layer/w"]
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "bool", "complex64"])
def test_non_float_parameters_are_refused(dtype: str) -> None:
    """Weights are floats: an integer, boolean or complex parameter is refused, never cast."""
    array = (np.arange(6) % 3).astype(dtype).reshape(2, 3)
    with pytest.raises(
        ValueError, match=rf"must be float16, bfloat16, float32 or float64 arrays; 1 are not: layer/w \({dtype}\)"
    ):
        read_flax_checkpoint(_pack({"layer": {"w": array}, "ok": np.zeros(2, np.float32)}))


def test_non_float_arrays_outside_the_parameters_are_skipped() -> None:
    params = {"w": np.ones(3, np.float32)}
    state = {"optimizer": {"target": params, "state": {"step": np.int64(7), "rng": np.zeros(2, np.uint32)}}}
    assert list(read_flax_checkpoint(_pack(state))) == ["w"]


def test_scalar_and_complex_leaves() -> None:
    scalar = _ext_array(np.asarray(np.float32(2.5)), code=3)
    raw = msgpack.packb({"params": {"s": scalar, "z": _ext_array(np.zeros((0, 3)))}}, use_bin_type=True)
    params = read_flax_checkpoint(raw)
    assert params["s"].shape == () and params["s"].dtype == np.float32 and params["s"] == 2.5
    assert params["z"].shape == (0, 3)
    native_complex = msgpack.ExtType(2, msgpack.packb((1.5, -2.0)))
    with pytest.raises(ValueError, match=r"1 are not: c \(complex\)"):
        read_flax_checkpoint(msgpack.packb({"params": {"c": native_complex}}, use_bin_type=True))


def test_legacy_str_encoded_array_bytes() -> None:
    # Writers without use_bin_type stored the raw bytes as a msgpack str.
    array = np.arange(40, dtype=np.float32)
    payload = msgpack.packb([[40], "float32", array.tobytes()], use_bin_type=False)
    out = read_flax_checkpoint(msgpack.packb({"w": msgpack.ExtType(1, payload)}))["w"]
    np.testing.assert_array_equal(out, array)


def test_unsupported_dtype_raises() -> None:
    raw = msgpack.packb({"w": _ext_array(np.zeros(2, np.uint8), "float8_e4m3fn")}, use_bin_type=True)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        read_flax_checkpoint(raw)


def test_inconsistent_array_size_raises() -> None:
    payload = msgpack.packb([[3, 3], "float32", b"\0" * 12], use_bin_type=True)
    with pytest.raises(ValueError, match="not a Flax msgpack checkpoint"):
        read_flax_checkpoint(msgpack.packb({"w": msgpack.ExtType(1, payload)}))


# --- flatten_params. ---


def test_flatten_params_nested_flat_and_mixed() -> None:
    a, b = np.ones(2), np.zeros((1, 2))
    assert list(flatten_params({"x": {"y": {"kernel": a}}, "cls": b})) == ["x/y/kernel", "cls"]
    flat = {"Transformer/encoder_norm/scale": a, "cls": b}
    out = flatten_params(flat)
    assert list(out) == list(flat) and out["cls"] is b
    assert list(flatten_params({"a/b": a, "c": {"d": b}})) == ["a/b", "c/d"]
    assert flatten_params({"s": 1.5})["s"].shape == ()


def test_flatten_params_accepts_array_likes() -> None:
    torch = pytest.importorskip("torch")
    out = flatten_params({"m": {"w": torch.arange(3.0)}})
    assert isinstance(out["m/w"], np.ndarray)
    np.testing.assert_array_equal(out["m/w"], [0.0, 1.0, 2.0])


def test_flatten_params_rejects_non_numeric_leaf() -> None:
    with pytest.raises(TypeError, match="'m/name'"):
        flatten_params({"m": {"name": "text"}})


def test_without_msgpack_one_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgpack is the `scenic` extra, not a core dependency: without it, a Scenic file gets one ImportError
    with the install command (as PyAV's hint is worded: the package itself, and the extra where it resolves)."""
    import sys

    import vivit

    monkeypatch.setitem(sys.modules, "msgpack", None)  # `import msgpack` now raises ImportError
    with pytest.raises(
        ImportError, match=r"reading Scenic \(Flax msgpack\) checkpoints needs msgpack: pip install msgpack"
    ):
        vivit.create_model("vivit_ti_st", pretrained=DATA / "checkpoints" / f"{MODELS[0]}.checkpoint")
    assert vivit.create_model("vivit_ti_st", img_size=16, num_frames=4, patch_size=8, depth=1) is not None
