"""Model 1 equals HF transformers' ViViT with the same (random) weights, both ways: `from_transformers`
and `create_model(pretrained=<HF folder / file / hf-hub repo>)` in, `to_transformers` out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vivit
from vivit import SpatioTemporalViViT
from vivit.weights import from_transformers, to_transformers

transformers = pytest.importorskip("transformers")

TOL = 1e-5


def _hf_model(num_labels: int = 7) -> torch.nn.Module:
    config = transformers.VivitConfig(
        image_size=32,
        num_frames=8,
        tubelet_size=[2, 8, 8],
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    model = transformers.VivitForVideoClassification(config).eval()
    with torch.no_grad():  # HF's init leaves biases/LN at 0/1: randomise everything so all paths count
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _ours(num_classes: int = 7) -> SpatioTemporalViViT:
    return SpatioTemporalViViT(
        img_size=32,
        num_frames=8,
        patch_size=8,
        tubelet_size=2,
        embed_dim=48,
        depth=2,
        num_heads=4,
        mlp_dim=96,
        num_classes=num_classes,
        global_pool="token",
    ).eval()


def _v4_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 in-memory names -> the transformers 4 names used on disk and on the Hub."""
    renames = {
        ".attention.q_proj.": ".attention.attention.query.",
        ".attention.k_proj.": ".attention.attention.key.",
        ".attention.v_proj.": ".attention.attention.value.",
        ".attention.o_proj.": ".attention.output.dense.",
        ".mlp.fc1.": ".intermediate.dense.",
        ".mlp.fc2.": ".output.dense.",
    }
    out = {}
    for k, v in sd.items():
        k = k.replace("vivit.layers.", "vivit.encoder.layer.")
        for old, new in renames.items():
            k = k.replace(old, new)
        out[k] = v
    return out


@pytest.mark.parametrize("layout", ["in_memory", "hub"])
def test_logits_match_transformers(layout):
    hf = _hf_model()
    sd = hf.state_dict() if layout == "in_memory" else _v4_keys(hf.state_dict())
    ours = _ours()
    ours.load_state_dict(from_transformers(sd, ours))
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=video.permute(0, 2, 1, 3, 4)).logits  # HF takes (B, T, C, H, W)
        got = ours(video)
    assert (got - expected).abs().max().item() <= TOL


def test_from_transformers_rejects_other_models_and_shapes():
    sd = _hf_model().state_dict()
    with pytest.raises(ValueError, match="SpatioTemporalViViT with global_pool='token'"):
        from_transformers(sd, SpatioTemporalViViT(img_size=32, num_frames=8, patch_size=8, global_pool="avg"))
    with pytest.raises(ValueError, match=r"mis-shaped head.weight: checkpoint \(7, 48\), model \(3, 48\)"):
        from_transformers(sd, _ours(num_classes=3))
    del sd["vivit.layernorm.weight"]
    with pytest.raises(ValueError, match="missing: norm.weight"):
        from_transformers(sd, _ours())


# ------------------------------------------------------------------ checkpoints in and out, end to end
# (name, hidden, heads, image, frames, depth, labels): Ti/B widths, 112/224 px, 8/16/32 frames, class
# counts with and without names, and a VivitModel backbone (labels None). Tiny depths keep it quick.
CONFIGS = [
    ("ti_112px_16f_10named", 192, 3, 112, 16, 2, 10),
    ("b_224px_32f_400", 768, 12, 224, 32, 1, 400),
    ("ti_224px_8f_backbone", 192, 3, 224, 8, 1, None),
    ("ti_112px_8f_2", 192, 3, 112, 8, 1, 2),
]
LABELS = tuple(f"action {i}" for i in range(10))


def _hf_vivit(hidden: int, heads: int, image: int, frames: int, depth: int, labels: int | None) -> torch.nn.Module:
    config = transformers.VivitConfig(
        image_size=image,
        num_frames=frames,
        tubelet_size=[2, 16, 16],
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        num_labels=labels or 2,
    )
    if labels == len(LABELS):
        config.id2label = dict(enumerate(LABELS))
        config.label2id = {n: i for i, n in enumerate(LABELS)}
    torch.manual_seed(0)
    cls = transformers.VivitModel if labels is None else transformers.VivitForVideoClassification
    model = cls(config).eval()
    with torch.no_grad():  # every parameter random, at scales that keep a B-width model's logits O(1)
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1 or "cls" in name or "position" in name:
                p.normal_(0, 0.2)
            else:
                p.normal_(0, 0.05)
    return model


def _hf_out(model: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    """Logits, or for a backbone all final tokens; HF takes (B, T, C, H, W)."""
    out = model(pixel_values=video.permute(0, 2, 1, 3, 4))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _our_out(model: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    return model(video) if model.num_classes else model.forward_features(video)


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_transformers_checkpoint_in_and_out(config, tmp_path, one_thread):
    """An HF folder -> create_model reads sizes/classes/labels -> same outputs -> to_transformers ->
    transformers' from_pretrained -> same outputs again."""
    _, hidden, heads, image, frames, depth, labels = config
    hf = _hf_vivit(hidden, heads, image, frames, depth, labels)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)  # transformers 4 names on disk
    name = "vivit_ti_st" if hidden == 192 else "vivit_b_st"
    ours = vivit.create_model(name, pretrained=tmp_path / "hf")
    assert (ours.num_frames, ours.img_size, len(ours.blocks)) == (frames, (image, image), depth)
    assert ours.num_classes == (labels or 0)
    assert ours.pretrained_cfg["label_names"] == (LABELS if labels == len(LABELS) else None)
    video = torch.randn(1, 3, frames, image, image)
    with torch.no_grad():
        expected = _hf_out(hf, video)
        err_in = (_our_out(ours, video) - expected).abs().max().item()
    assert err_in <= TOL, err_in

    to_transformers(ours, tmp_path / "out")
    cls = transformers.VivitModel if labels is None else transformers.VivitForVideoClassification
    back = cls.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        err_out = (_hf_out(back, video) - _our_out(ours, video)).abs().max().item()
    assert err_out <= TOL, err_out
    if labels:
        expected_names = LABELS if labels == len(LABELS) else tuple(f"LABEL_{i}" for i in range(labels))
        assert tuple(back.config.id2label[i] for i in range(labels)) == expected_names


def test_transformers_in_memory_names_and_hub_repo(hub_server, tmp_path, one_thread):
    """A file of transformers 5 in-memory names (no config.json: sizes from the registered name),
    and an hf-hub repo whose config names the architecture (no name needed)."""
    hf = _hf_vivit(192, 3, 112, 8, 1, 10)
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    video = torch.randn(1, 3, 8, 112, 112)
    ours = vivit.create_model("vivit_ti_st", pretrained=tmp_path / "weights.safetensors", img_size=112)
    with torch.no_grad():
        expected = _hf_out(hf, video)
        assert (ours(video) - expected).abs().max().item() <= TOL
    assert ours.num_frames == 8 and ours.num_classes == 10 and ours.pretrained_cfg["label_names"] is None

    hf.save_pretrained(tmp_path / "repo")
    # overrides adapt what the checkpoint says: a fresh head for another class count, resampled positions
    other = vivit.create_model("vivit_ti_st", pretrained=tmp_path / "repo", num_classes=3, num_frames=16)
    assert other.head.out_features == 3 and torch.count_nonzero(other.head.weight) == 0
    assert other.num_frames == 16 and other.pretrained_cfg["label_names"] is None
    assert torch.equal(other.blocks[0].attn.qkv.weight, ours.blocks[0].attn.qkv.weight)
    transformers.VivitImageProcessor().save_pretrained(tmp_path / "repo")  # HF's defaults: pixels in [-3, 1]
    for f in (tmp_path / "repo").iterdir():
        hub_server.add_repo_file("someone/vivit-ti", f.name, f.read_bytes(), lfs=f.suffix == ".safetensors")
    for model in (
        vivit.create_model("hf-hub:someone/vivit-ti", pretrained=True),
        vivit.create_model("vivit_ti_st", pretrained="hf-hub:someone/vivit-ti"),
    ):
        with torch.no_grad():
            assert (model(video) - expected).abs().max().item() <= TOL
        cfg = model.pretrained_cfg
        assert cfg["architecture"] == "vivit_ti_st" and cfg["label_names"] == LABELS
        assert cfg["input_size"] == (3, 8, 112, 112) and cfg["resize_size"] == 256 and cfg["crop_size"] == (224, 224)
        assert cfg["mean"] == pytest.approx((0.75,) * 3) and cfg["std"] == pytest.approx((0.25,) * 3)


def test_preprocessing_written_for_transformers_equals_ours(tmp_path):
    """to_transformers' preprocessor_config.json makes HF's processor compute our clip exactly
    (frames already at the crop size, so no resampling is involved)."""
    model = vivit.create_model("vivit_demo", pretrained=True)  # mean = std = 0.5: pixels in [-1, 1]
    to_transformers(model, tmp_path)
    processor = transformers.VivitImageProcessor.from_pretrained(tmp_path)
    frames = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    theirs = processor(list(frames), return_tensors="pt")["pixel_values"][0].permute(1, 0, 2, 3)  # (C, T, H, W)
    ours = vivit.create_transform(**vivit.resolve_data_config(model=model))(frames)
    assert (theirs - ours).abs().max().item() <= TOL
    assert ours.min() >= -1 and ours.max() <= 1


def test_transformers_checkpoint_errors(tmp_path):
    hf = _hf_vivit(192, 3, 112, 8, 1, 2)
    hf.save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"has width 192 with 3 heads, but vivit_b_st has width 768 with 12 heads; use vivit_ti_st"
    ):
        vivit.create_model("vivit_b_st", pretrained=tmp_path)
    with pytest.raises(
        ValueError,
        match=r"transformers ViViT, which is Model 1 .*vivit_ti_fe is a FactorizedEncoderViViT; use vivit_ti_st",
    ):
        vivit.create_model("vivit_ti_fe", pretrained=tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(ValueError, match=r"hidden_act='gelu'; vivit's blocks compute the tanh-approximated GELU"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_frames": 16}))
    with pytest.raises(ValueError, match=r"holds 196 tubelets, but its config says 16 frames"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path)
    for model in (vivit.create_model("vivit_ti_fe"), vivit.create_model("vivit_ti_st", global_pool="avg")):
        with pytest.raises(ValueError, match=r"transformers has no Models 2-4|global_pool='token'"):
            to_transformers(model, tmp_path / "x")
    assert not (tmp_path / "x" / "model.safetensors").exists()
