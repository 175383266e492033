"""Our models reproduce Scenic's ViViT outputs for every shared fixture (fp32, max abs err <= 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scenic_fixtures import FORWARD_NAMES, load_forward_fixture

from vivit.weights import from_scenic

TOL = 1e-5


def test_all_fixtures_present():
    # 4 Model-1, 4 Model-2, 4 Model-3, 2 Model-4 fixtures ship with the shared reference data
    assert len(FORWARD_NAMES) == 14


@pytest.fixture(params=FORWARD_NAMES)
def fixture(request):
    f = load_forward_fixture(request.param)
    f["model"].load_state_dict(from_scenic(f["params"], f["model"]))
    return f


def test_logits_match_scenic(fixture):
    with torch.no_grad():
        logits = fixture["model"](fixture["video"])
    err = (logits - fixture["logits"]).abs().max().item()
    assert err <= TOL, f"{fixture['meta']['name']}: max abs error {err:.2e}"


def test_intermediates_match_scenic(fixture):
    """Localise a mismatch: patch embedding and pooled features against Scenic's activations."""
    model, acts = fixture["model"], fixture["acts"]
    with torch.no_grad():
        tokens = model.patch_embed(fixture["video"])  # (B, D, t, h, w)
        pooled = model.forward_head(model.forward_features(fixture["video"]), pre_logits=True)
    scenic_tokens = torch.from_numpy(acts["embedding"])
    if scenic_tokens.ndim == 4:  # frame sampling: frames stacked along H, (B, t*h, w, D)
        t = tokens.shape[2]
        scenic_tokens = scenic_tokens.reshape(scenic_tokens.shape[0], t, -1, *scenic_tokens.shape[2:])
    assert torch.allclose(tokens.permute(0, 2, 3, 4, 1), scenic_tokens, atol=TOL)
    assert np.abs(pooled.numpy() - acts["pre_logits"]).max() <= TOL
    if fixture["variant"] == "fe":
        with torch.no_grad():
            frames = model.forward_frame_features(fixture["video"])
        assert np.abs(frames.numpy() - acts["SpatialTransformer_pooled"]).max() <= TOL


def test_from_scenic_accepts_nested_tree():
    f = load_forward_fixture("m1_spacetime_tubelet_token")
    nested: dict = {}
    for name, value in f["params"].items():
        *path, leaf = name.split("/")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    flat_sd, nested_sd = from_scenic(f["params"], f["model"]), from_scenic(nested, f["model"])
    assert flat_sd.keys() == nested_sd.keys()
    assert all(torch.equal(flat_sd[k], nested_sd[k]) for k in flat_sd)


def test_from_scenic_names_missing_unexpected_and_misshaped():
    f = load_forward_fixture("m2_factorized_encoder_tubelet_token")
    params = dict(f["params"])
    del params["TemporalTransformer/encoder_norm/scale"]
    params["TemporalTransformer/encoderblock_7/LayerNorm_0/scale"] = np.ones(32, np.float32)
    with pytest.raises(ValueError) as e:
        from_scenic(params, f["model"])
    msg = str(e.value)
    assert "missing in the checkpoint: TemporalTransformer/encoder_norm/scale" in msg
    assert "not used by FactorizedEncoderViViT: TemporalTransformer/encoderblock_7/LayerNorm_0/scale" in msg

    params = dict(f["params"])
    params["output_projection/kernel"] = np.zeros((32, 7), np.float32)
    params["output_projection/bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match=r"output_projection gives head.weight shape \(7, 32\), model has \(5, 32\)"):
        from_scenic(params, f["model"])
