"""`hubconf.py`: `torch.hub.load(<checkout>, name, source="local", **overrides)` for every registered name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

import vivit

ROOT = Path(__file__).resolve().parents[1]


def test_an_entry_point_for_every_registered_name():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    assert spec is not None and spec.loader is not None
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    public = sorted(n for n, v in vars(hubconf).items() if callable(v) and not n.startswith("_"))
    assert public == vivit.list_models()
    assert set(hubconf.dependencies) == {"torch", "safetensors", "huggingface_hub", "einops", "numpy"}
    assert "vivit_b_fe_k400" in (hubconf.vivit_b_fe_k400.__doc__ or "")


def test_torch_hub_load_local_builds_every_name():
    for name in vivit.list_models():
        with torch.device("meta"):  # allocates nothing: even ViViT-H is instant
            model = torch.hub.load(str(ROOT), name, source="local", trust_repo=True, verbose=False)
        assert isinstance(model, vivit.ViViT) and model.pretrained_cfg["architecture"] == name


def test_torch_hub_load_local_with_overrides_and_weights(tmp_path):
    overrides = dict(img_size=32, num_frames=8, patch_size=8, depth=1, num_classes=3)
    torch.manual_seed(0)
    model = torch.hub.load(str(ROOT), "vivit_ti_st", source="local", trust_repo=True, verbose=False, **overrides)
    torch.manual_seed(0)
    expected = vivit.create_model("vivit_ti_st", **overrides)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values(), strict=True)
    )
    model.save_pretrained(tmp_path)
    loaded = torch.hub.load(
        str(ROOT), "vivit_ti_st", source="local", trust_repo=True, verbose=False, pretrained=tmp_path
    )
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(clip), model.eval()(clip))
