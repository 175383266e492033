"""Attention weights, relevance maps and the `vivit explain` pictures (vivit/explain.py, vivit/render.py).

* The weights `attention_maps` returns are the ones the model uses: multiplied back onto v (taken
  from the model's own qkv projection) and through its output projection they reproduce what the
  SDPA forward path computed, for all four models, both pooling heads and both Model-3 orders.
* `relevance` equals attention rollout computed the slow way, from the returned weights as dense
  token-mixing matrices multiplied together; on the bundled demo model it peaks on the moving disc
  that decides the label.
* Pictures are rendered to files whose size, frame count and pixels are checked.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image  # a matplotlib dependency (matplotlib is in the test extra)

import vivit
import vivit._install
from vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    render,
)
from vivit.explain import BlockAttention, attention_maps, attention_maps_nbytes, relevance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import finetune
from conftest import TINY_GRID, build_tiny_model

GRID = TINY_GRID  # (nt, nh, nw)
S = GRID[1] * GRID[2]
MODELS = {
    "st_token": lambda: build_tiny_model("st", seed=None, global_pool="token"),
    "st_avg": lambda: build_tiny_model("st", seed=None, global_pool="avg"),
    "fe_token": lambda: build_tiny_model("fe", seed=None, global_pool="token"),
    "fe_avg": lambda: build_tiny_model("fe", seed=None, global_pool="avg"),
    "fsa_time_space": lambda: build_tiny_model("fsa", seed=None, attention_order="time_space"),
    "fsa_space_time": lambda: build_tiny_model("fsa", seed=None, attention_order="space_time"),
    "fdp": lambda: build_tiny_model("fdp", seed=None),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # fresh init gives near-uniform attention; sharpen it so errors would show
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features == 3 * module.in_features:
                module.weight.mul_(8.0)
        for name_, param in model.named_parameters():
            if "pos_embed" in name_ or "cls_token" in name_:
                param.normal_()
    return model.eval()


def _video(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 8, 32, 48, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- the weights are the ones used
def _attention_modules(model: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Module]]]:
    """{block name: [(kind, attention module)]}, written out per model from the model definitions."""
    out: dict[str, list[tuple[str, torch.nn.Module]]] = {}
    for i, block in enumerate(model.blocks):
        if isinstance(model, FactorizedSelfAttentionViViT):
            out[f"blocks.{i}"] = [("m3_time", block.temporal_attn), ("m3_space", block.attn)]
        elif isinstance(model, FactorizedEncoderViViT):
            out[f"blocks.{i}"] = [("frames", block.attn)]
        elif isinstance(model, FactorizedDotProductViViT):
            out[f"blocks.{i}"] = [("split", block.attn)]
        else:
            out[f"blocks.{i}"] = [("joint", block.attn)]
    for j, block in enumerate(getattr(model, "temporal_blocks", ())):
        out[f"temporal_blocks.{j}"] = [("sequence", block.attn)]
    return out


def _apply(kind: str, maps: BlockAttention, qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multiply the returned weights onto v as the model groups tokens; `(..., tokens, heads*d)`."""
    t = GRID[0]
    if kind in ("joint", "sequence"):
        v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=heads)[2]
        weights = maps.joint if kind == "joint" else maps.time
        return rearrange(weights @ v, "b h n d -> b n (h d)")
    if kind == "frames":
        v = rearrange(qkv, "(b t) n (three h d) -> three b t h n d", three=3, t=t, h=heads)[2]
        return rearrange(maps.space @ v, "b t h n d -> (b t) n (h d)")
    if kind == "m3_time":
        v = rearrange(qkv, "b (t s) (three h d) -> three b s h t d", three=3, t=t, h=heads)[2]
        return rearrange(maps.time @ v, "b s h t d -> b (t s) (h d)")
    if kind == "m3_space":
        v = rearrange(qkv, "(b t) s (three h d) -> three b t h s d", three=3, t=t, h=heads)[2]
        return rearrange(maps.space @ v, "b t h s d -> (b t) s (h d)")
    v = rearrange(qkv, "b (t s) (three h d) -> three b t s h d", three=3, t=t, h=heads)[2]
    half = heads // 2
    time = rearrange(maps.time @ rearrange(v[..., :half, :], "b t s h d -> b s h t d"), "b s h t d -> b t s h d")
    space = rearrange(maps.space @ rearrange(v[..., half:, :], "b t s h d -> b t h s d"), "b t h s d -> b t s h d")
    return rearrange(torch.cat([time, space], dim=3), "b t s h d -> b (t s) (h d)")


def reconstruction_errors(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """Max |proj(weights @ v) - attention output of the SDPA forward| per attention module."""
    modules = _attention_modules(model)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def keep(attn: torch.nn.Module, part: str):
        def hook(_module, _inputs, output):
            seen.setdefault(id(attn), {})[part] = output.detach()

        return hook

    hooks = [
        getattr(attn, part).register_forward_hook(keep(attn, part))
        for attns in modules.values()
        for _, attn in attns
        for part in ("qkv", "proj")
    ]
    with torch.no_grad():
        model(x)
    for handle in hooks:
        handle.remove()
    maps = attention_maps(model, x)
    assert list(maps) == list(modules)
    errors = []
    for key, attns in modules.items():
        for kind, attn in attns:
            captured = seen[id(attn)]
            with torch.no_grad():
                rebuilt = attn.proj(_apply(kind, maps[key], captured["qkv"], attn.num_heads))
            errors.append((rebuilt - captured["proj"]).abs().max().item())
    return errors


@pytest.mark.parametrize("name", MODELS)
def test_weights_reproduce_the_sdpa_outputs(name, one_thread):
    model = _model(name)
    errors = reconstruction_errors(model, _video())
    assert max(errors) <= 1e-5, errors


@pytest.mark.parametrize("name", MODELS)
def test_weight_shapes_follow_the_factorisation(name, one_thread):
    model = _model(name)
    maps = attention_maps(model, _video())
    nt, h = GRID[0], 4
    p = model.num_prefix_tokens
    for key, item in maps.items():
        shapes = {a: tuple(getattr(item, a).shape) for a in ("joint", "time", "space") if getattr(item, a) is not None}
        if name.startswith("st"):
            assert shapes == {"joint": (2, h, p + nt * S, p + nt * S)}
        elif name.startswith("fe"):
            expected = (
                {"space": (2, nt, h, p + S, p + S)} if key.startswith("blocks") else {"time": (2, h, p + nt, p + nt)}
            )
            assert shapes == expected
        elif name.startswith("fsa"):
            assert shapes == {"time": (2, S, h, nt, nt), "space": (2, nt, h, S, S)}
        else:
            assert shapes == {"time": (2, S, h // 2, nt, nt), "space": (2, nt, h // 2, S, S)}
        assert item.num_prefix_tokens == p and item.query_indices is None
        for weights in shapes:
            rows = getattr(item, weights).sum(-1)
            assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert list(maps)[-1] == ("temporal_blocks.1" if name.startswith("fe") else "blocks.1")


def test_subsets_of_blocks_and_queries(one_thread):
    x = _video()
    model = _model("fe_token")
    full = attention_maps(model, x)
    last = attention_maps(model, x, blocks=[-1], queries="cls")  # the temporal class token's row
    assert list(last) == ["temporal_blocks.1"]
    assert last["temporal_blocks.1"].query_indices == (0,)
    torch.testing.assert_close(
        last["temporal_blocks.1"].time, full["temporal_blocks.1"].time[..., :1, :], atol=1e-6, rtol=0
    )
    first = attention_maps(model, x, blocks=[0], queries="cls")  # stops after block 0: same weights
    torch.testing.assert_close(first["blocks.0"].space, full["blocks.0"].space[..., :1, :], atol=1e-6, rtol=0)
    assert list(attention_maps(model, x, blocks=2)) == ["temporal_blocks.0", "temporal_blocks.1"]  # the last 2

    model = _model("fsa_time_space")
    full = attention_maps(model, x)
    some = attention_maps(model, x, blocks=[1], queries=[0, -1])  # along each attention's own axis
    torch.testing.assert_close(
        some["blocks.1"].time, full["blocks.1"].time[..., [0, GRID[0] - 1], :], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(some["blocks.1"].space, full["blocks.1"].space[..., [0, S - 1], :], atol=1e-6, rtol=0)

    model.train()
    attention_maps(model, x, blocks=[0])
    assert model.training  # the mode is restored


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(queries="cls"), "no class token"),
        (dict(queries=[4]), "query index 4 out of range for the time attention of blocks.0 \\(4 tokens\\)"),
        (dict(queries="mean"), "queries must be None, 'cls' or a list"),
        (dict(blocks=[2]), "block index 2 out of range for a model with 2 blocks"),
        (dict(blocks=0), "the model has 2 blocks"),
        (dict(blocks=[]), "blocks is empty"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        attention_maps(_model("fdp"), _video(), **kwargs)
    # a string is a sequence: blocks="1" was read as the index '1' and called out of range
    with pytest.raises(TypeError, match="blocks must be None, an int or a list of block indices, got '1'"):
        attention_maps(_model("fdp"), _video(), blocks="1")
    assert list(attention_maps(_model("fdp"), _video(), blocks=np.int64(1))) == ["blocks.1"]  # an int from numpy


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"expected a float video tensor \(B, C, T, H, W\), got torch.uint8"):
        attention_maps(_model("st_token"), torch.zeros(1, 3, 8, 32, 48, dtype=torch.uint8))
    with pytest.raises(TypeError, match="expected one of the four ViViT models, got Linear"):
        attention_maps(torch.nn.Linear(2, 2), _video())
    model = _model("st_token")  # wrapped models: say how to reach the model inside
    with pytest.raises(TypeError, match=r"got OptimizedModule \(torch.compile's wrapper\): pass model._orig_mod"):
        attention_maps(torch.compile(model), _video())
    with pytest.raises(TypeError, match=r"got DataParallel \(a wrapper\): pass model.module"):
        relevance(torch.nn.DataParallel(model), _video())


def test_memory_budget():
    model, x = _model("st_token"), _video()
    n = 1 + GRID[0] * S
    assert attention_maps_nbytes(model, x) == 4 * 2 * 2 * 4 * n * n  # bytes * B * blocks * heads * N^2
    assert attention_maps_nbytes(model, x, queries="cls") == 4 * 2 * 2 * 4 * n
    limit = 4 * 2 * 4 * n * n  # one block's worth
    with pytest.raises(
        ValueError,
        match=r"would return 588\.1 KiB of weights for 2 block\(s\) of 2 clip\(s\), over "
        r"max_bytes=294\.0 KiB: ask for fewer blocks \(blocks=\[-1\]\), fewer query tokens",
    ):
        attention_maps(model, x, max_bytes=limit)
    assert list(attention_maps(model, x, blocks=[-1], max_bytes=limit)) == ["blocks.1"]
    assert len(attention_maps(model, x, queries="cls", max_bytes=limit)) == 2
    # Model 3: time attention per spatial position + space attention per frame, both blocks
    fsa = _model("fsa_time_space")
    assert attention_maps_nbytes(fsa, x) == 4 * 2 * 2 * 4 * (S * GRID[0] ** 2 + GRID[0] * S**2)
    fdp = _model("fdp")
    assert attention_maps_nbytes(fdp, x) == 4 * 2 * 2 * 2 * (S * GRID[0] ** 2 + GRID[0] * S**2)


# ---------------------------------------------------------------- relevance = attention rollout
def _dense(
    maps: BlockAttention, model: torch.nn.Module, head: int | None, sizes: tuple[int, int]
) -> list[torch.Tensor]:
    """A block's attention(s) as dense `(B, N, N)` mixing matrices over the time-major grid tokens."""
    t, s = sizes

    def mean(w: torch.Tensor, heads_dim: int, offset: int = 0) -> torch.Tensor | None:
        if head is None:
            return w.mean(heads_dim)
        local = head - offset
        return w.select(heads_dim, local) if 0 <= local < w.shape[heads_dim] else None

    def along_time(a: torch.Tensor) -> torch.Tensor:  # a: (B, s, t, t)
        return torch.einsum("bsxy,su->bxsyu", a, torch.eye(s)).reshape(-1, t * s, t * s)

    def along_space(a: torch.Tensor) -> torch.Tensor:  # a: (B, t, s, s)
        return torch.einsum("bxsu,xy->bxsyu", a, torch.eye(t)).reshape(-1, t * s, t * s)

    if isinstance(model, FactorizedSelfAttentionViViT):
        time, space = along_time(mean(maps.time, 2)), along_space(mean(maps.space, 2))
        return [time, space] if model.attention_order == "time_space" else [space, time]
    if isinstance(model, FactorizedDotProductViViT):
        half = maps.time.shape[2]
        parts = [along_time(a) for a in [mean(maps.time, 2)] if a is not None]
        parts += [along_space(a) for a in [mean(maps.space, 2, half)] if a is not None]
        return [sum(parts) / len(parts)]
    return [mean(maps.joint, 1)]


def _rollout_dense(mats: list[torch.Tensor], query: torch.Tensor, residual: bool) -> torch.Tensor:
    """query @ A_L @ ... @ A_1 with the paper's A_hat = rows-renormalised (A + I)."""
    product = torch.eye(mats[0].shape[-1]).expand_as(mats[0])
    for a in mats:
        if residual:
            a = a + torch.eye(a.shape[-1])
            a = a / a.sum(-1, keepdim=True)
        product = a @ product
    return torch.einsum("bn,bnm->bm", query, product)


def reference_relevance(
    model: torch.nn.Module, x: torch.Tensor, block: int | None = None, head: int | None = None
) -> torch.Tensor:
    maps = attention_maps(model, x, blocks=None if block is None else [block])
    b, (t, h, w), p = x.shape[0], GRID, model.num_prefix_tokens
    residual = block is None

    def query(n: int) -> torch.Tensor:
        q = torch.zeros(b, n)
        if p:
            q[:, 0] = 1
        else:
            q[:] = 1 / n
        return q

    if isinstance(model, FactorizedEncoderViViT):
        spatial = [m.space for k, m in maps.items() if k.startswith("blocks")]
        temporal = [m.time for k, m in maps.items() if k.startswith("temporal")]
        pick = (lambda a, dim: a.mean(dim)) if head is None else (lambda a, dim: a.select(dim, head))
        if spatial:
            per_frame = [
                _rollout_dense([pick(a[:, f], 1) for a in spatial], query(p + h * w), residual) for f in range(t)
            ]
            frames = torch.stack(per_frame, 1)[..., p:]
        else:
            frames = torch.full((b, t, h * w), 1 / (h * w))
        weights = (
            _rollout_dense([pick(a, 1) for a in temporal], query(p + t), residual)[:, p:]
            if temporal
            else torch.full((b, t), 1 / t)
        )
        return (weights[..., None] * frames).reshape(b, t, h, w)
    mats = [m for item in maps.values() for m in _dense(item, model, head, (t, h * w))]
    return _rollout_dense(mats, query(mats[0].shape[-1]), residual)[:, p:].reshape(b, t, h, w)


@pytest.mark.parametrize("name", MODELS)
def test_relevance_is_attention_rollout(name, one_thread):
    model, x = _model(name), _video()
    rel = relevance(model, x)
    assert rel.shape == (2, *GRID) and rel.dtype == torch.float32 and (rel >= 0).all()
    torch.testing.assert_close(rel, reference_relevance(model, x), atol=1e-6, rtol=1e-5)
    if model.num_prefix_tokens == 0:  # nothing is lost on a class token
        torch.testing.assert_close(rel.sum((1, 2, 3)), torch.ones(2))
    last = 3 if name.startswith("fe") else 1
    for block, head in ((0, None), (last, 1), (last, 3)):
        torch.testing.assert_close(
            relevance(model, x, block=block, head=head),
            reference_relevance(model, x, block, head),
            atol=1e-6,
            rtol=1e-5,
        )


def test_relevance_arguments():
    model = _model("fdp")
    with pytest.raises(ValueError, match="select the block too"):
        relevance(model, _video(), head=0)
    with pytest.raises(ValueError, match="head 4 out of range: block blocks.1 has 4 heads"):
        relevance(model, _video(), block=-1, head=4)
    with pytest.raises(ValueError, match="block 2 out of range: the model has 2 blocks"):
        relevance(model, _video(), block=2)


@pytest.fixture(scope="module")
def demo_model() -> torch.nn.Module:
    return vivit.create_model("vivit_demo", pretrained=True).eval()


def disc_mask(centres: torch.Tensor, grid: tuple[int, int, int], tubelet: int, patch: int) -> torch.Tensor:
    """Tokens holding the disc's centre in either frame of their tubelet: bool `(B, nt, nh, nw)`."""
    mask = torch.zeros(centres.shape[0], *grid, dtype=torch.bool)
    cell = (centres / patch).long().clamp(0, grid[1] - 1)  # (B, T, 2) row, column
    for b in range(centres.shape[0]):
        for f in range(centres.shape[1]):
            mask[b, f // tubelet, cell[b, f, 0], cell[b, f, 1]] = True
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rollout_of_the_demo_peaks_on_the_moving_disc(seed, demo_model, one_thread):
    """The demo's label is the disc's direction; its distractors move too. The map must single out the disc.

    Measured (seeds 0-5, 16 clips each): the mean relevance on the disc's tokens is 3.9-4.8x the
    mean elsewhere (per clip 1.2x to 9x), and the most relevant token of a tubelet holds the disc
    55-70% of the time (chance: 1/16 plus the neighbours the disc covers).
    """
    data = finetune.MovingDiscs()
    video, labels, centres = data.sample(16, torch.Generator().manual_seed(1000 + seed))
    rel = relevance(demo_model, video)
    with torch.no_grad():
        assert (demo_model(video).argmax(-1) == labels).float().mean() >= 0.9  # it solves these clips
    mask = disc_mask(centres, tuple(rel.shape[1:]), tubelet=2, patch=8)
    on = torch.stack([r[m].mean() for r, m in zip(rel, mask, strict=True)])
    off = torch.stack([r[~m].mean() for r, m in zip(rel, mask, strict=True)])
    ratio = on / off
    assert ratio.mean() > 2.5, ratio
    assert (ratio > 1).float().mean() >= 0.8, ratio
    top = rel.flatten(2).argmax(-1)  # per tubelet, the most relevant token
    hits = mask.flatten(2).gather(2, top[..., None]).float().mean()
    assert hits > 0.35, hits


# ---------------------------------------------------------------- pictures


def test_token_heat_to_pixels_places_each_token_on_its_tubelet():
    heat = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    pixels = render.token_heat_to_pixels(heat, 5, (2, 4, 4), (9, 13))
    assert pixels.shape == (5, 9, 13)
    assert pixels[1, 7, 11] == heat[0, 1, 2] and pixels[2, 0, 4] == heat[1, 0, 1]
    assert (pixels[4] == 0).all() and (pixels[:, 8] == 0).all() and (pixels[:, :, 12] == 0).all()  # dropped leftovers


def test_blend_leaves_cold_pixels_and_colours_hot_ones():
    import matplotlib

    frames = np.full((1, 2, 2, 3), 100, np.uint8)
    heat = np.array([[[0.0, 0.25], [1.0, 2.0]]], np.float32)
    out = render.blend_heat(frames, heat, vmin=0.0, vmax=1.0, cmap="turbo", alpha=0.8)
    assert (out[0, 0, 0] == 100).all()  # at vmin: the frame itself
    top = np.array(matplotlib.colormaps["turbo"](1.0)[:3]) * 255
    assert np.array_equal(out[0, 1, 0], np.round(100 * 0.2 + top * 0.8).astype(np.uint8))
    assert np.array_equal(out[0, 1, 1], out[0, 1, 0])  # clipped at vmax
    quarter = np.array(matplotlib.colormaps["turbo"](0.25)[:3]) * 255
    assert np.array_equal(out[0, 0, 1], np.round(100 * 0.6 + quarter * 0.4).astype(np.uint8))  # opacity 0.8 * sqrt(.25)


def _hot_corner(t: int, corner: str) -> np.ndarray:
    heat = np.zeros((t, 32, 32), np.float32)
    if corner == "top-left":
        heat[:, :8, :8] = 1.0
    else:
        heat[:, 24:, 24:] = 1.0
    return heat


def _diff_centre(a: np.ndarray, b: np.ndarray, threshold: int) -> tuple[np.ndarray, int]:
    """Centroid (row, col) and count of the pixels where two pictures differ by more than `threshold`."""
    diff = np.abs(a.astype(int) - b.astype(int)).max(-1) > threshold
    rows, cols = np.nonzero(diff)
    return np.array([rows.mean(), cols.mean()]), int(diff.sum())


def _read_gif(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
    return frames


def _read_mp4(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


@pytest.mark.parametrize("suffix", [".png", ".gif", ".mp4"])
def test_overlay_pictures(suffix, tmp_path):
    """Each format: the right size and frame count, and the overlay changes the picture where the map is hot."""
    if suffix == ".mp4":
        pytest.importorskip("av")
    frames = np.full((6, 32, 32, 3), 90, np.uint8)
    frames[:, 12:20, 12:20] = 200  # an object in the middle
    read = {".png": lambda p: [np.asarray(Image.open(p).convert("RGB"))], ".gif": _read_gif, ".mp4": _read_mp4}[suffix]
    pictures = {}
    for case in ("cold", "top-left", "bottom-right"):
        heat = np.zeros((6, 32, 32), np.float32) if case == "cold" else _hot_corner(6, case)
        out = tmp_path / f"{case}{suffix}"
        drawn = render.write_heat_overlay(out, frames, heat, title="t", caption="c", vmin=0.0, vmax=1.0)
        assert drawn == 6 and out.stat().st_size > 1000
        pictures[case] = read(out)
        assert not list(tmp_path.glob(".*.part"))  # written atomically, nothing left behind
    cold = pictures["cold"]
    if suffix == ".png":
        assert cold[0].shape == (460, 800, 3)  # 4 x 2 frames of 1.7 inches, colour bar, title, caption at 100 dpi
    else:
        height = 446 if suffix == ".mp4" else 445  # yuv420p needs even sizes: padded by one row
        assert len(cold) == 6 and cold[0].shape == (height, 520, 3)
    threshold = 60 if suffix == ".mp4" else 20
    (tl, n_tl), (br, _) = (_diff_centre(pictures[c][0], cold[0], threshold) for c in ("top-left", "bottom-right"))
    assert 0 < n_tl < cold[0].shape[0] * cold[0].shape[1] / 20  # a small patch changed ...
    assert (tl + 20 < br).all(), (tl, br)  # ... where the map is hot: top-left above and left of bottom-right
    if suffix != ".png":
        assert _diff_centre(pictures["top-left"][-1], cold[-1], threshold)[1] > 0  # every frame has its overlay


def test_explain_video_on_the_sample_clip(demo_model, tmp_path, one_thread):
    clip = resources.files("vivit") / "assets" / "sample_clip.npz"
    result = vivit.explain.explain_video(demo_model, clip, tmp_path / "sheet.png", top_k=2)
    assert result["frames"] == 8 and [p["label"] for p in result["predictions"]][:1] == ["left"]
    assert len(result["predictions"]) == 2
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
    with pytest.raises(ValueError, match=r"must end in \.png, \.gif, \.mp4"):
        vivit.explain.explain_video(demo_model, clip, tmp_path / "sheet.jpg")


KINETICS_NAMES = (
    "passing American football (not in game)",
    "exercising with an exercise ball",
    "pushing wheelchair",
    "making a sandwich",
)


def _text_rows(picture: np.ndarray, stop: int) -> int:
    """Runs of rows above `stop` that hold dark (text) pixels: the lines of the title."""
    dark = (picture[:stop] < 128).all(axis=2).any(axis=1)
    return int(np.count_nonzero(dark[1:] & ~dark[:-1]) + dark[0])


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_titles_with_kinetics_length_names_fit_the_picture(demo_model, tmp_path, suffix, one_thread):
    """The title (model, top-3 with Kinetics-length class names, true label) was one line cut off on both
    sides; it is now wrapped to the picture's width: nothing touches the left or right edge."""
    clip = resources.files("vivit") / "assets" / "sample_clip.npz"
    cfg = {**demo_model.pretrained_cfg, "label_names": KINETICS_NAMES}
    out = tmp_path / f"long{suffix}"
    vivit.explain.explain_video(
        demo_model, clip, out, pretrained_cfg=cfg, name="vivit_b_fe_k400", true_label=KINETICS_NAMES[0]
    )
    picture = np.asarray(Image.open(out).convert("RGB")) if suffix == ".png" else _read_gif(out)[0]
    edges = np.concatenate([picture[:, :3], picture[:, -3:]], axis=1)
    assert (edges > 240).all(), "something is drawn at the left or right edge (a cut title)"
    busy = (picture < 200).all(axis=2).sum(axis=1) > picture.shape[1] // 4
    panel_top = next(r for r in range(len(busy)) if busy[r : r + 30].all())  # the frames: 30 busy rows in a row
    assert _text_rows(picture, panel_top) >= 2  # the title took more than one line


def test_explain_video_refuses_a_clip_that_is_not_preprocessed(demo_model, tmp_path):
    """A uint8 tensor was cast to float and run on 0..255 pixels (a wrong map, drawn without complaint)."""
    frames = torch.randint(0, 255, (3, 8, 32, 32), dtype=torch.uint8)
    for clip, got in [
        (frames, "torch.uint8 tensor of shape (3, 8, 32, 32)"),
        (torch.rand(1, 3, 8, 32, 32), "torch.float32 tensor of shape (1, 3, 8, 32, 32)"),
        (frames.numpy(), "ndarray"),
    ]:
        with pytest.raises(
            ValueError,
            match=r"expected a video path or a preprocessed float clip \(C, T, h, w\) "
            rf"\(vivit.explain.load_clip\), got {re.escape(got)}",
        ):
            vivit.explain.explain_video(demo_model, clip, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "source-checkout"])
def test_missing_matplotlib_says_how_to_install(monkeypatch, installed):
    """`pip install matplotlib` always works; the extra only where pip knows this vivit (it is not on PyPI)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(vivit._install, "_installed_as_distribution", lambda: installed)
    extra = ' (or pip install "vivit[plot]")' if installed else ""
    with pytest.raises(ImportError) as info:
        render.require_matplotlib()
    assert str(info.value) == f"drawing pictures needs matplotlib: pip install matplotlib{extra}"


# ---------------------------------------------------------------- the command


def _write_mp4(path: Path, frames: np.ndarray) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_cli_explain_sample_clip(tmp_path, one_thread, run_cli):
    code, out, err = run_cli("explain", "--out", tmp_path / "demo.png")
    assert code == 0, err
    assert out == f"wrote {tmp_path / 'demo.png'} (8 frames): left 99.4%\n"
    with Image.open(tmp_path / "demo.png") as im:
        assert im.size == (800, 460)


def test_cli_explain_real_video(tmp_path, one_thread, run_cli):
    """A real encoded video (MPEG-4, twice the demo's size): decoded, resized to 32x32, explained."""
    video, _, _ = finetune.MovingDiscs().sample(1, torch.Generator().manual_seed(7))
    frames = ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    frames = frames.repeat(2, axis=1).repeat(2, axis=2)  # (8, 64, 64, 3)
    _write_mp4(tmp_path / "clip.mp4", frames)
    code, _, err = run_cli("explain", tmp_path / "clip.mp4", "--out", tmp_path / "clip.gif", "--top-k", "1")
    assert code == 0, err
    assert len(_read_gif(tmp_path / "clip.gif")) == 8
    code, _, err = run_cli(
        "explain", tmp_path / "clip.mp4", "-o", tmp_path / "block.mp4", "--block", "-1", "--head", "2"
    )
    assert code == 0, err
    assert len(_read_mp4(tmp_path / "block.mp4")) == 8


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--out", "x.jpg"], 2, "--out: cannot write 'x.jpg': the file name must end in .png, .gif, .mp4"),
        (["--out", "x.png", "--head", "1"], 2, "--head selects one head of one block: give --block too"),
        (["--out", "x.png", "--block", "4"], 2, "--block/--head: block 4 out of range: the model has 4 blocks"),
        (["--out", "x.png", "--block", "0", "--head", "-1"], 2, "head -1 out of range: block blocks.0 has 4 heads"),
        (["--out", "x.gif", "--fps", "0"], 2, "argument --fps: expected a positive number, got '0'"),
        (["nope.mp4", "--out", "x.png"], 1, "video nope.mp4 does not exist"),
        # a GIF stores each picture's delay in whole centiseconds, 16 bits: 0.001 fps overflowed after all the
        # work (OverflowError), 1000 fps became a delay of 0 that viewers show at 10 fps
        (["--out", "x.gif", "--fps", "0.001"], 2, "--fps: a .gif shows each picture for 0.02 to 655.35 seconds"),
        (["--out", "x.gif", "--fps", "1000"], 2, "(fps 0.00153 to 50), got fps 1000; .mp4 takes any fps"),
    ],
)
def test_cli_explain_errors(tmp_path, monkeypatch, argv, code, message, run_cli):
    monkeypatch.chdir(tmp_path)
    got, out, err = run_cli("explain", *argv)
    assert got == code and out == ""
    assert err.count("\n") == 1 and err.startswith("vivit: error: ") and message in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_explain_refuses_an_output_that_cannot_be_a_file(tmp_path, monkeypatch, run_cli):
    """A folder named like a picture failed only after the model ran, naming a temporary file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "maps.png").mkdir()
    (tmp_path / "file").write_bytes(b"")
    for out, message in [
        ("maps.png", "--out: maps.png is a folder: give a file name, e.g. maps.png/output.png"),
        ("file/x.gif", "--out: cannot write file/x.gif: file is a file, not a folder"),
    ]:
        code, _, err = run_cli("explain", "--out", out)
        assert code == 2 and err == f"vivit: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "maps.png"] and not list(
        (tmp_path / "maps.png").iterdir()
    )
    with pytest.raises(ValueError, match="fps 0.00153 to 50"):
        render.write_animation([np.zeros((4, 4, 3), np.uint8)], tmp_path / "x.gif", fps=0.001)


def test_cli_explain_without_matplotlib(tmp_path, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run_cli("explain", "--out", tmp_path / "x.png")
    assert code == 1
    assert (
        err.startswith("vivit: error: drawing pictures needs matplotlib: pip install matplotlib")
        and err.count("\n") == 1
    )


def test_cli_explain_mp4_without_pyav(tmp_path, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "av", None)
    code, _, err = run_cli("explain", "--out", tmp_path / "x.mp4")
    assert code == 1 and not list(tmp_path.iterdir())
    assert err.startswith("vivit: error: writing .mp4 needs PyAV: pip install av") and err.count("\n") == 1
    assert err.endswith("; .gif and .png do not\n")


def test_readme_shows_a_small_committed_picture():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert "![vivit explain on the bundled sample clip](docs/explain_demo.png)" in readme
    assert "vivit explain --out docs/explain_demo.png" in readme  # how it was made
    picture = root / "docs" / "explain_demo.png"
    assert picture.stat().st_size < 200_000
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.size == (800, 470)
