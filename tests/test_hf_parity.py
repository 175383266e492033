"""Model 1 equals HF transformers' ViViT with the same (random) weights, through `from_transformers`."""

from __future__ import annotations

import pytest
import torch

from vivit import SpatioTemporalViViT
from vivit.weights import from_transformers

transformers = pytest.importorskip("transformers")

TOL = 1e-5


def _hf_model(num_labels: int = 7) -> torch.nn.Module:
    config = transformers.VivitConfig(
        image_size=32, num_frames=8, tubelet_size=[2, 8, 8], hidden_size=48, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=96, num_labels=num_labels,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.VivitForVideoClassification(config).eval()
    with torch.no_grad():  # HF's init leaves biases/LN at 0/1: randomise everything so all paths count
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _ours(num_classes: int = 7) -> SpatioTemporalViViT:
    return SpatioTemporalViViT(
        img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=48, depth=2, num_heads=4,
        mlp_dim=96, num_classes=num_classes, global_pool="token",
    ).eval()  # fmt: skip


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
