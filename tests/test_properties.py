"""Property-based tests (hypothesis): shapes and input validation over many small configurations,
constructor argument checks, and loading corrupted or foreign checkpoint files.

Every test is derandomized (the same examples on every run) and keeps no example database, so CI
is deterministic. Models are tiny (depth 1, width <= 32, <= 27 tokens): each example takes
milliseconds. `pytest --hypothesis-show-statistics` prints how many examples each test ran.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import vivit
from vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
)

VARIANTS = {
    "st": SpatioTemporalViViT,
    "fe": FactorizedEncoderViViT,
    "fsa": FactorizedSelfAttentionViViT,
    "fdp": FactorizedDotProductViViT,
}
TOKEN_POOL = ("st", "fe")  # Models 3 and 4 have no class token

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- strategies
@st.composite
def model_configs(draw, dynamic_size: bool | None = None) -> tuple[str, dict]:
    """A valid tiny configuration of any of the four models.

    Patch (h, w) 1..5, tubelet t 1..3, a token grid of 1..3 per axis, and a clip a little larger
    than the grid needs (leftover frames/pixels that the tubelet embedding drops).
    """
    variant = draw(st.sampled_from(sorted(VARIANTS)))
    pool = draw(st.sampled_from(["token", "avg"])) if variant in TOKEN_POOL else "avg"
    heads = draw(st.sampled_from([2, 4] if variant == "fdp" else [1, 2, 3, 4]))
    embed_dim = heads * draw(st.sampled_from([2, 4, 8]))
    ph, pw, t = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    nt, nh, nw = (draw(st.integers(1, 3)) for _ in range(3))
    args = dict(
        img_size=(nh * ph + draw(st.integers(0, ph - 1)), nw * pw + draw(st.integers(0, pw - 1))),
        num_frames=nt * t + draw(st.integers(0, t - 1)),
        patch_size=(ph, pw),
        tubelet_size=t,
        in_chans=draw(st.sampled_from([1, 3])),
        embed_dim=embed_dim,
        depth=1,
        num_heads=heads,
        mlp_dim=draw(st.sampled_from([8, 16])),
        num_classes=draw(st.integers(1, 4)),
        global_pool=pool,
        dynamic_size=draw(st.booleans()) if dynamic_size is None else dynamic_size,
    )
    if variant == "fe":
        args.update(
            temporal_depth=1, temporal_num_heads=draw(st.sampled_from([h for h in (1, 2, 4) if embed_dim % h == 0]))
        )
    if variant == "fsa":
        args["attention_order"] = draw(st.sampled_from(["time_space", "space_time"]))
    return variant, args


def _common(args: dict) -> dict:
    """`args` without the variant-specific keywords (to build another variant from it)."""
    return {k: v for k, v in args.items() if k not in ("temporal_depth", "temporal_num_heads", "attention_order")}


def _build(variant: str, args: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return VARIANTS[variant](**args).eval()


def _clip(shape, dtype=torch.float32) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return x if dtype is torch.float32 else x.to(dtype)


def _grid_of(args: dict) -> tuple[int, int, int]:
    (h, w), (ph, pw) = args["img_size"], args["patch_size"]
    return args["num_frames"] // args["tubelet_size"], h // ph, w // pw


# ---------------------------------------------------------------- valid inputs
@settings(max_examples=150, **SETTINGS)
@given(config=model_configs(), data=st.data())
def test_valid_inputs_give_finite_logits(config, data):
    """Any clip whose token grid matches the model's (any grid with dynamic_size=True) gives finite
    logits (B, num_classes); leftover frames/pixels are ignored; batch elements do not interact."""
    variant, args = config
    model = _build(variant, args)
    t, (ph, pw) = args["tubelet_size"], args["patch_size"]
    if args["dynamic_size"]:
        grid = tuple(data.draw(st.integers(1, 3), label=f"input grid {axis}") for axis in "thw")
    else:
        grid = _grid_of(args)
    used = (grid[0] * t, grid[1] * ph, grid[2] * pw)
    extra = tuple(data.draw(st.integers(0, k - 1), label="leftover") for k in (t, ph, pw))
    b = data.draw(st.integers(1, 2), label="batch")
    video = _clip((b, args["in_chans"], *(u + e for u, e in zip(used, extra))))
    with torch.no_grad():
        logits = model(video)
        assert logits.shape == (b, args["num_classes"]) and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
        cropped = model(video[:, :, : used[0], : used[1], : used[2]])
        torch.testing.assert_close(cropped, logits)  # what does not fill a tubelet is dropped
        for i in range(b):  # no mixing across the batch (e.g. a wrong (b s) <-> (s b) regrouping)
            torch.testing.assert_close(model(video[i : i + 1]), logits[i : i + 1])


# ---------------------------------------------------------------- invalid inputs
INPUT_FAULTS = ["ndim", "channels", "layout", "dtype", "few_frames", "small_space", "grid"]
BAD_DTYPES = [torch.uint8, torch.int8, torch.int32, torch.int64, torch.bool, torch.complex64]


@settings(max_examples=200, **SETTINGS)
@given(config=model_configs(), fault=st.sampled_from(INPUT_FAULTS), data=st.data())
def test_invalid_inputs_raise_clear_value_errors(config, fault, data):
    variant, args = config
    model = _build(variant, args)
    c = args["in_chans"]
    t, (ph, pw) = args["tubelet_size"], args["patch_size"]
    nt, nh, nw = _grid_of(args)
    shape = [data.draw(st.integers(1, 2), label="batch"), c, nt * t, nh * ph, nw * pw]  # valid
    dtype = torch.float32

    if fault == "ndim":
        ndim = data.draw(st.sampled_from([3, 4, 6]), label="ndim")
        shape = shape[1:] if ndim == 4 else shape[2:] if ndim == 3 else [*shape, 1]
        match = r"expected a 5-D video tensor \(B, C=\d, T, H, W\), got shape"
        if ndim == 4:
            match += r".*x\.unsqueeze\(0\)"  # a missing batch dimension gets a hint
    elif fault == "channels":
        shape[1] = data.draw(st.sampled_from([k for k in range(1, 6) if k != c]), label="channels")
        if shape[2] == c:  # (B, C', T=c, ...) is indistinguishable from a (B, T, C, H, W) clip
            match = r"expected channels first .*looks like \(B, T, C, H, W\)"
        else:
            match = rf"expected {c} channels at dim 1 of \(B, C, T, H, W\)"
    elif fault == "layout":
        assume(shape[2] != c)  # T == C: a (B, T, C, H, W) clip is a valid (B, C, T, H, W) one
        shape[1], shape[2] = shape[2], shape[1]
        match = r"looks like \(B, T, C, H, W\); use x\.permute\(0, 2, 1, 3, 4\)"
    elif fault == "dtype":
        dtype = data.draw(st.sampled_from(BAD_DTYPES), label="dtype")
        match = rf"expected a floating-point video .*got dtype {dtype}"
    elif fault == "few_frames":
        shape[2] = data.draw(st.integers(0, t - 1), label="frames")
        match = rf"smaller than one tubelet \(t={t}, h={ph}, w={pw}\).*at least {t} frames"
    elif fault == "small_space":
        assume(ph > 1 or pw > 1)
        axis = data.draw(st.sampled_from([a for a, p in ((3, ph), (4, pw)) if p > 1]), label="axis")
        shape[axis] = data.draw(st.integers(0, (ph, pw)[axis - 3] - 1), label="size")
        match = rf"smaller than one tubelet \(t={t}, h={ph}, w={pw}\)"
    else:  # "grid": another token grid, refused unless dynamic_size
        assume(not args["dynamic_size"])
        other = tuple(data.draw(st.integers(1, 3), label=f"grid {axis}") for axis in "thw")
        assume(other != (nt, nh, nw))
        shape[2:] = [other[0] * t, other[1] * ph, other[2] * pw]
        h, w = args["img_size"]
        match = rf"model expects {args['num_frames']} frames of {h}x{w} .*got T={shape[2]}.*dynamic_size=True"

    video = torch.zeros(shape, dtype=dtype)
    with pytest.raises(ValueError, match=match):
        model(video)


# ---------------------------------------------------------------- constructor arguments
CTOR_FAULTS = [
    "odd_heads",
    "token_pool",
    "indivisible",
    "indivisible_temporal",
    "no_tokens",
    "pool_name",
    "tubelet",
    "order",
]


@settings(max_examples=100, **SETTINGS)
@given(config=model_configs(), fault=st.sampled_from(CTOR_FAULTS), data=st.data())
def test_invalid_constructor_args_raise_value_errors(config, fault, data):
    variant, args = config
    args = dict(args)
    if fault == "odd_heads":  # Model 4 gives half the heads to time, half to space
        variant, args = "fdp", _common(args)
        heads = data.draw(st.sampled_from([1, 3, 5]), label="heads")
        args.update(num_heads=heads, embed_dim=heads * 4, global_pool="avg")
        match = rf"num_heads must be even \(got {heads}\)"
    elif fault == "token_pool":
        variant, args = data.draw(st.sampled_from(["fsa", "fdp"]), label="variant"), _common(args)
        args.update(global_pool="token", num_heads=2, embed_dim=8)
        match = rf"{VARIANTS[variant].__name__} has no class token .*use global_pool='avg'"
    elif fault == "indivisible":
        heads = args["num_heads"]
        assume(heads > 1)
        args["embed_dim"] = heads * data.draw(st.integers(1, 4), label="k") + data.draw(
            st.integers(1, heads - 1), label="r"
        )
        args.pop("temporal_num_heads", None)  # Model 2's temporal heads default to num_heads
        match = rf"embed_dim \({args['embed_dim']}\) must be divisible by num_heads \({heads}\)"
    elif fault == "indivisible_temporal":
        variant, args = "fe", _common(args)
        heads = data.draw(st.sampled_from([5, 7, 8]), label="heads")
        args.update(embed_dim=12, num_heads=2, temporal_depth=1, temporal_num_heads=heads)
        match = rf"embed_dim \(12\) must be divisible by num_heads \({args['temporal_num_heads']}\)"
    elif fault == "no_tokens":  # the clip holds no whole tubelet along some axis
        axis = data.draw(st.sampled_from(["frames", "height", "width"]), label="axis")
        (h, w), (ph, pw), t = args["img_size"], args["patch_size"], args["tubelet_size"]
        if axis == "frames":
            args["num_frames"] = data.draw(st.integers(0, t - 1), label="frames")
        else:
            k = ph if axis == "height" else pw
            small = data.draw(st.integers(0, k - 1), label="size")
            args["img_size"] = (small, w) if axis == "height" else (h, small)
        match = r"give no tokens with tubelet .*at least one tubelet"
    elif fault == "pool_name":
        args["global_pool"] = data.draw(st.sampled_from(["max", "cls", "mean", "", "TOKEN"]), label="pool")
        match = r"global_pool must be 'token' or 'avg'"
    elif fault == "tubelet":
        args["tubelet_size"] = data.draw(st.integers(-2, 0), label="tubelet")
        match = r"tubelet_size must be >= 1"
    else:  # "order": Model 3's attention order
        variant, args = "fsa", _common(args)
        args.update(global_pool="avg", attention_order=data.draw(st.sampled_from(["spacetime", "time", "TIME_SPACE"])))
        match = r"attention_order must be 'time_space' or 'space_time'"
    with pytest.raises(ValueError, match=match):
        VARIANTS[variant](**args)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op:UserWarning")
@pytest.mark.parametrize(
    "arg, value",
    [
        ("num_heads", 0),
        ("num_heads", -2),
        ("patch_size", 0),
        ("embed_dim", 0),
        ("in_chans", 0),
        ("temporal_num_heads", -2),
    ],
)
def test_non_positive_sizes_raise_value_errors(arg, value):
    cls = FactorizedEncoderViViT if arg.startswith("temporal") else SpatioTemporalViViT
    args = dict(img_size=16, num_frames=4, patch_size=8, embed_dim=8, depth=1, num_heads=2, num_classes=3)
    # Model 2's temporal heads are checked by its attention layer, which calls them num_heads
    with pytest.raises(ValueError, match=rf"{arg.removeprefix('temporal_')} must be >= 1, got {value}"):
        cls(**{**args, arg: value})(torch.zeros(1, 3, 4, 16, 16))


@pytest.mark.parametrize(
    "variant",
    [
        "st",
        "fe",
        "fsa",
        "fdp",
    ],
)
def test_empty_batch(variant):
    """A batch of 0 clips (e.g. the last shard of a dataset) gives (0, num_classes), like torch layers."""
    args = dict(
        img_size=16, num_frames=4, patch_size=8, embed_dim=8, depth=1, num_heads=2, num_classes=3, global_pool="avg"
    )
    model = _build(variant, args)
    with torch.no_grad():
        assert model(torch.zeros(0, 3, 4, 16, 16)).shape == (0, 3)


# ---------------------------------------------------------------- checkpoint files
CKPT_ENTRIES = {"st": "vivit_ti_st", "fe": "vivit_ti_fe", "fsa": "vivit_ti_fsa", "fdp": "vivit_s_fdp"}
CKPT_ARGS = dict(img_size=16, num_frames=4, patch_size=8, embed_dim=12, depth=1, num_heads=2, num_classes=3)
CKPT_VIDEO_SHAPE = (1, 3, 4, 16, 16)


class Checkpoint:
    """A valid `save_pretrained` file of a tiny model, and what loading it must reproduce."""

    def __init__(self, variant: str, root: Path) -> None:
        extra = {"temporal_depth": 1} if variant == "fe" else {}
        self.variant, self.entry = variant, CKPT_ENTRIES[variant]
        self.model = vivit.create_model(self.entry, **CKPT_ARGS, **extra).eval()
        self.directory = root / variant
        self.model.save_pretrained(self.directory)
        self.data = (self.directory / "model.safetensors").read_bytes()
        self.header_end = 8 + struct.unpack("<Q", self.data[:8])[0]  # tensor data starts here
        self.header = json.loads(self.data[8 : self.header_end])
        with torch.no_grad():
            self.logits = self.model(_clip(CKPT_VIDEO_SHAPE))

    def tensor_at(self, pos: int) -> tuple[str, int]:
        """(tensor name, byte offset in it) for a file offset inside the data section."""
        rel = pos - self.header_end
        for name, info in self.header.items():
            start, end = info.get("data_offsets", (0, 0)) if isinstance(info, dict) else (0, 0)
            if name != "__metadata__" and start <= rel < end:
                return name, rel - start
        raise AssertionError(f"offset {pos} is in no tensor")

    def with_bytes(self, data: bytes, path: Path) -> Path:
        path.write_bytes(data)
        return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Checkpoint]:
    root = tmp_path_factory.mktemp("ckpt")
    return {v: Checkpoint(v, root) for v in VARIANTS}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corrupt")


def _tensor_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.detach().contiguous().numpy().tobytes() for k, v in model.state_dict().items()}


@settings(max_examples=60, **SETTINGS)
@given(variant=st.sampled_from(sorted(VARIANTS)), data=st.data())
def test_truncated_checkpoint_raises_value_error(checkpoints, scratch, variant, data):
    ckpt = checkpoints[variant]
    # cut anywhere: inside the 8-byte length, the JSON header, or the tensor data
    region = data.draw(st.sampled_from(["length", "header", "data"]), label="region")
    lo, hi = {"length": (0, 7), "header": (8, ckpt.header_end - 1), "data": (ckpt.header_end, len(ckpt.data) - 1)}[
        region
    ]
    cut = data.draw(st.integers(lo, hi), label="cut")
    path = ckpt.with_bytes(ckpt.data[:cut], scratch / f"trunc_{variant}.safetensors")
    with pytest.raises(ValueError, match=r"not a readable safetensors file .*truncated or corrupted"):
        vivit.create_model(ckpt.entry, pretrained=path)


@settings(max_examples=60, **SETTINGS)
@given(variant=st.sampled_from(sorted(VARIANTS)), data=st.data())
def test_flipped_tensor_byte_loads_with_exactly_that_byte_changed(checkpoints, scratch, variant, data):
    """The format has no checksum: a byte changed inside tensor data loads, and changes that byte only."""
    ckpt = checkpoints[variant]
    pos = data.draw(st.integers(ckpt.header_end, len(ckpt.data) - 1), label="pos")
    corrupted = bytearray(ckpt.data)
    corrupted[pos] ^= data.draw(st.integers(1, 255), label="xor")
    path = ckpt.with_bytes(bytes(corrupted), scratch / f"flip_{variant}.safetensors")
    loaded = vivit.create_model(ckpt.entry, pretrained=path)
    assert type(loaded) is type(ckpt.model) and loaded.num_classes == ckpt.model.num_classes
    before, after = _tensor_bytes(ckpt.model), _tensor_bytes(loaded)
    assert before.keys() == after.keys()
    changed = {(k, i) for k in before for i, (a, b) in enumerate(zip(before[k], after[k])) if a != b}
    assert changed == {ckpt.tensor_at(pos)}


@settings(max_examples=150, phases=[Phase.explicit, Phase.generate], **SETTINGS)
@given(variant=st.sampled_from(sorted(VARIANTS)), data=st.data())
def test_flipped_header_byte_raises_value_error_or_loads_the_same_model(checkpoints, scratch, variant, data):
    """A changed byte in the length or JSON header (tensor names, dtypes, shapes, offsets, the
    embedded config) is either refused with the loader's own ValueError, or is harmless: the loaded
    model has exactly the saved weights and computes the same logits."""
    ckpt = checkpoints[variant]
    pos = data.draw(st.integers(0, ckpt.header_end - 1), label="pos")
    corrupted = bytearray(ckpt.data)
    corrupted[pos] ^= data.draw(st.integers(1, 255), label="xor")
    path = ckpt.with_bytes(bytes(corrupted), scratch / f"hflip_{variant}.safetensors")
    try:
        loaded = vivit.create_model(ckpt.entry, pretrained=path)
    except ValueError as err:
        assert not isinstance(err, json.JSONDecodeError), f"raw JSON error escaped: {err}"
        return
    assert type(loaded) is type(ckpt.model)
    before, after = ckpt.model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert after[k].dtype == before[k].dtype and torch.equal(after[k], before[k]), k
    with torch.no_grad():
        assert torch.equal(loaded(_clip(CKPT_VIDEO_SHAPE)), ckpt.logits)


# -- deterministic cases: each names one way a file can be wrong, and the error it must give
def _edit_header(ckpt: Checkpoint, old: bytes, new: bytes) -> bytes:
    """Replace `old` (which must occur exactly once in the header) by `new`, of the same length."""
    assert len(old) == len(new)
    header = ckpt.data[8 : ckpt.header_end]
    assert header.count(old) == 1, old
    return ckpt.data[:8] + header.replace(old, new) + ckpt.data[ckpt.header_end :]


_HEADER_FAULTS = {
    # name: (variant saved, (old, new) same-length header edit, expected message)
    "config_not_json": ("st", (b'"config":"{', b'"config":"X'), r"(?i)config.*(json|corrupt)"),
    "tensor_renamed": (
        "st",
        (b'"blocks.0.mlp.fc1.weight"', b'"blocks.0.mlp.fc1.weighu"'),
        r"blocks\.0\.mlp\.fc1\.weigh",
    ),
    "head_renamed": ("st", (b'"head.weight"', b'"head.weighu"'), r"head\.weigh"),
    "config_size_disagrees": ("st", (b'\\"img_size\\": [16, 16]', b'\\"img_size\\": [56, 16]'), r"pos_embed"),
    "integer_dtype": (
        "fe",
        (b'"pos_embed":{"dtype":"F32"', b'"pos_embed":{"dtype":"I32"'),
        r"(?i)pos_embed.*(int32|floating)",
    ),
    # refused with the other limits before the constructor sees it (issue 22.8)
    "zero_heads_in_config": ("fdp", (b'\\"num_heads\\": 2', b'\\"num_heads\\": 0'), r"num_heads=0 is outside 1\.\.256"),
}


@pytest.mark.parametrize(
    "fault",
    [f for f in _HEADER_FAULTS],
)
def test_malformed_header_raises_clear_value_error(checkpoints, tmp_path, fault):
    variant, (old, new), match = _HEADER_FAULTS[fault]
    ckpt = checkpoints[variant]
    path = ckpt.with_bytes(_edit_header(ckpt, old, new), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=match) as info:
        vivit.create_model(ckpt.entry, pretrained=path)
    assert not isinstance(info.value, json.JSONDecodeError)


@pytest.mark.parametrize("saved, loaded_as", list(itertools.permutations(sorted(VARIANTS), 2)))
def test_checkpoint_of_another_architecture_names_both_classes(checkpoints, saved, loaded_as):
    """save_pretrained records the class: loading it as another variant names both classes."""
    ckpt = checkpoints[saved]
    want, got = VARIANTS[saved].__name__, VARIANTS[loaded_as].__name__
    with pytest.raises(ValueError, match=rf"holds a {want}, but '{CKPT_ENTRIES[loaded_as]}' is a {got}"):
        vivit.create_model(CKPT_ENTRIES[loaded_as], pretrained=ckpt.directory)


def test_foreign_tensors_without_config_raise_value_error(checkpoints, tmp_path):
    """Model 1 tensors saved without our metadata (e.g. by a third-party script) loaded as Model 2."""
    ckpt = checkpoints["st"]
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt.model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"FactorizedEncoderViViT"):
        vivit.create_model("vivit_ti_fe", pretrained=path)


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".ckpt", ".pkl"])  # .pth: tests/test_weights.py
def test_pickle_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04\x95junk")  # a pickle protocol-4 prefix: must not be unpickled
    with pytest.raises(ValueError, match=r"(?i)pickle.* refused because unpickling can run code"):
        vivit.create_model("vivit_ti_st", pretrained=path)


@settings(max_examples=30, **SETTINGS)
@given(blob=st.binary(min_size=0, max_size=4096))
def test_random_bytes_safetensors_raise_value_error(scratch, blob):
    path = scratch / "random.safetensors"
    path.write_bytes(blob)
    # (a blob that happens to be a valid, empty safetensors file holds no patch embedding; files are identified by
    # content, so a blob that is recognisably something else, e.g. text, is named as that)
    with pytest.raises(
        ValueError,
        match=r"not a readable safetensors file|no patch-embedding tensor|not a checkpoint; expected|not an \.npz archive",
    ):
        vivit.create_model("vivit_ti_st", pretrained=path)
