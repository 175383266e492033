"""2D ViT checkpoints on the inflation path (`create_model(NAME, pretrained=<image ViT>)`, `vivit convert`)
that are broken or hostile: each must end in one short `ValueError` that names the file, as for ViViT
checkpoints (issue 12), and Google `.npz` layouts that timm reads must be read too (issue 11).

Each file here is a tiny ViT (width 12) with one thing wrong; the checks are in-process (no case
allocates more than a few MB except the decompression bomb, which must be refused before it is read).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vivit
from vivit.weights import inflate_vit, read_npz

D, L, M, P, S, HEADS = 12, 2, 24, 8, 16, 2
TINY = dict(img_size=S, num_frames=4, patch_size=P, embed_dim=D, depth=L, num_heads=HEADS, mlp_dim=M, num_classes=3)
MAX_MESSAGE = 600


def _timm(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny timm-layout ViT (cls token, 2x2 patch grid)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    sd = {
        "patch_embed.proj.weight": r(D, 3, P, P),
        "patch_embed.proj.bias": r(D),
        "cls_token": r(1, 1, D),
        "pos_embed": r(1, 1 + (S // P) ** 2, D),
        "norm.weight": 1 + r(D),
        "norm.bias": r(D),
    }
    for i in range(L):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(D),
                b + "norm1.bias": r(D),
                b + "attn.qkv.weight": r(3 * D, D),
                b + "attn.qkv.bias": r(3 * D),
                b + "attn.proj.weight": r(D, D),
                b + "attn.proj.bias": r(D),
                b + "norm2.weight": 1 + r(D),
                b + "norm2.bias": r(D),
                b + "mlp.fc1.weight": r(M, D),
                b + "mlp.fc1.bias": r(M),
                b + "mlp.fc2.weight": r(D, M),
                b + "mlp.fc2.bias": r(D),
            }
        )
    return sd


def _flax(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The same ViT under google-research/vision_transformer's Flax names and shapes."""
    n = {k: v.numpy() for k, v in sd.items()}
    out = {
        "embedding/kernel": n["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": n["patch_embed.proj.bias"],
        "cls": n["cls_token"],
        "Transformer/posembed_input/pos_embedding": n["pos_embed"],
        "Transformer/encoder_norm/scale": n["norm.weight"],
        "Transformer/encoder_norm/bias": n["norm.bias"],
    }
    for i in range(L):
        b, f = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        attn = f + "MultiHeadDotProductAttention_1/"
        for j, w in enumerate(("query", "key", "value")):
            out[attn + w + "/kernel"] = n[b + "attn.qkv.weight"][j * D : (j + 1) * D].T.reshape(D, HEADS, D // HEADS)
            out[attn + w + "/bias"] = n[b + "attn.qkv.bias"][j * D : (j + 1) * D].reshape(HEADS, D // HEADS)
        out[attn + "out/kernel"] = n[b + "attn.proj.weight"].T.reshape(HEADS, D // HEADS, D)
        out[attn + "out/bias"] = n[b + "attn.proj.bias"]
        for flax_norm, ours in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f + flax_norm + "/scale"], out[f + flax_norm + "/bias"] = n[b + ours + ".weight"], n[b + ours + ".bias"]
        for dense, ours in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[f + f"MlpBlock_3/{dense}/kernel"] = n[b + f"mlp.{ours}.weight"].T
            out[f + f"MlpBlock_3/{dense}/bias"] = n[b + f"mlp.{ours}.bias"]
    return out


def _hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same ViT under transformers 5 `ViTModel` names."""
    out = {
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    for i in range(L):
        b, h = f"blocks.{i}.", f"layers.{i}."
        for j, w in enumerate(("q_proj", "k_proj", "v_proj")):
            out[h + f"attention.{w}.weight"] = sd[b + "attn.qkv.weight"][j * D : (j + 1) * D]
            out[h + f"attention.{w}.bias"] = sd[b + "attn.qkv.bias"][j * D : (j + 1) * D]
        out[h + "attention.o_proj.weight"], out[h + "attention.o_proj.bias"] = (
            sd[b + "attn.proj.weight"],
            sd[b + "attn.proj.bias"],
        )
        for ours, theirs in (
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
        ):
            out[h + theirs + ".weight"], out[h + theirs + ".bias"] = sd[b + ours + ".weight"], sd[b + ours + ".bias"]
    return {k: v.contiguous() for k, v in out.items()}


def _write(tmp_path: Path, name: str, layout: str, edit: Any = None) -> Path:
    """A ViT file in `layout` ('timm', 'hf' safetensors or 'npz'), its arrays changed by `edit(dict)`."""
    sd = _timm()
    arrays: dict[str, Any] = {"timm": lambda: sd, "hf": lambda: _hf(sd), "npz": lambda: _flax(sd)}[layout]()
    if edit is not None:
        edit(arrays)
    if layout == "npz":
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
    else:
        path = tmp_path / f"{name}.safetensors"
        save_file({k: torch.as_tensor(v).contiguous() for k, v in arrays.items()}, str(path))
    return path


def _set(key: str, value: Any) -> Any:
    return lambda arrays: arrays.__setitem__(key, value)


def _fake_blocks(prefix: str, leaf: str, make: Any) -> Any:
    return lambda arrays: arrays.update({f"{prefix}{i}{leaf}": make() for i in range(L, 4000)})


_Q = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"
BROKEN = {
    "npz_kernel_1d": ("npz", _set("embedding/kernel", np.zeros(P * P * 3 * D, np.float32))),
    "npz_query_kernel_1d": ("npz", _set(_Q, np.zeros(D, np.float32))),
    "npz_pos_embedding_1d": ("npz", _set("Transformer/posembed_input/pos_embedding", np.zeros(5, np.float32))),
    "npz_layer_norm_2d": ("npz", _set("Transformer/encoderblock_0/LayerNorm_0/scale", np.zeros((D, 2), np.float32))),
    "npz_4000_fake_blocks": (
        "npz",
        _fake_blocks("Transformer/encoderblock_", "/LayerNorm_0/scale", lambda: np.ones(D, np.float32)),
    ),
    "npz_stray_block": ("npz", _set("Transformer/encoderblock_999999999/LayerNorm_0/scale", np.ones(D, np.float32))),
    "npz_extra_modules": (
        "npz",
        lambda a: a.update({f"Transformer/encoderblock_0/Weird_{i}/x": np.ones(1, np.float32) for i in range(500)}),
    ),
    "timm_qkv_1d": ("timm", _set("blocks.0.attn.qkv.weight", torch.zeros(3 * D))),
    "timm_cls_1d": ("timm", _set("cls_token", torch.zeros(D))),
    "timm_pos_embed_2d": ("timm", _set("pos_embed", torch.zeros(5, D))),
    "timm_4000_fake_blocks": ("timm", _fake_blocks("blocks.", ".norm1.weight", lambda: torch.ones(D))),
    "hf_query_1d": ("hf", _set("layers.0.attention.q_proj.weight", torch.zeros(D))),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_vit_is_a_short_value_error_naming_the_file(tmp_path: Path, case: str) -> None:
    """Before: raw IndexError / RuntimeError / numpy's "axes don't match array", messages without the
    file, and 100 KB messages for 4,000 fake blocks."""
    layout, edit = BROKEN[case]
    path = _write(tmp_path, case, layout, edit)
    with pytest.raises(ValueError) as info:
        vivit.create_model("vivit_ti_st", pretrained=str(path), **TINY)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert len(message) < MAX_MESSAGE and "\n" not in message, message


@pytest.mark.parametrize("layout", ["npz", "timm"])
def test_float64_beyond_float32_is_refused_not_turned_into_inf(tmp_path: Path, layout: str) -> None:
    """Before: a float64 1e300 in a ViT became inf in float32 and the model returned NaN logits."""
    key = "embedding/kernel" if layout == "npz" else "patch_embed.proj.weight"

    def overflow(arrays: dict[str, Any]) -> None:
        arrays[key] = (arrays[key].astype(np.float64) if layout == "npz" else arrays[key].double()) * 1e300

    path = _write(tmp_path, "overflow", layout, overflow)
    with pytest.raises(ValueError, match=r"NaN or infinite") as info:
        vivit.create_model("vivit_ti_st", pretrained=str(path), **TINY)
    assert str(info.value).startswith(str(path))
    image = read_npz(path) if layout == "npz" else _timm() | {key: torch.full((D, 3, P, P), 1e300, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"NaN or infinite"):  # inflate_vit on its own too
        inflate_vit(image, vivit.create_model("vivit_ti_st", **TINY))


def test_npz_decompression_bomb_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A 100 KB savez_compressed file whose one member expands to 96 MiB of zeros: refused from the zip
    directory, before numpy allocates (before: read in full, then numpy's "axes don't match array")."""
    path = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (24 << 20,)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("embedding/kernel.npy", "w") as member:
            member.write(header.getvalue())
            for _ in range(24):
                member.write(bytes(4 << 20))
    assert path.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"expand") as info:
        read_npz(path)
    assert str(info.value).startswith(str(path))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_features(torch.linspace(-1, 1, 3 * 4 * S * S).reshape(1, 3, 4, S, S))


def test_npz_prefixes_timm_reads(tmp_path: Path) -> None:
    """`opt/target/...` (vision_transformer train states) and big_vision's `params/...` next to `opt/...`
    give the same model as the bare names, through create_model and through inflate_vit(dict(np.load))."""
    arrays = _flax(_timm())
    plain = tmp_path / "plain.npz"
    np.savez(plain, **arrays)
    expected = _logits(vivit.create_model("vivit_ti_st", pretrained=str(plain), **TINY))
    for prefix, extra in (
        ("opt/target/", {}),
        ("params/", {"opt/mu/embedding/kernel": np.zeros((P, P, 3, D), np.float32)}),
    ):
        path = tmp_path / f"{prefix.replace('/', '_')}.npz"
        np.savez(path, **{prefix + k: v for k, v in arrays.items()}, **extra)
        model = vivit.create_model("vivit_ti_st", pretrained=str(path), **TINY)
        torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)
        fresh = vivit.create_model("vivit_ti_st", **TINY)
        with np.load(path) as archive:
            fresh.load_state_dict(inflate_vit(dict(archive), fresh))
        torch.testing.assert_close(_logits(fresh), expected, rtol=0, atol=0)
