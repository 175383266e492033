"""The weight loader end to end, against a local Hub / file server (no test reaches the internet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from scenic_fixtures import DATA, FORWARD_NAMES, load_forward_fixture, model_args_from_config, write_flax_checkpoint

import vivit
from vivit.models.pos_embed import resample_pos_embed
from vivit.models.registry import _REGISTRY, register_model
from vivit.models.vivit import MODEL_CLASSES
from vivit.weights import inflate_vit
from vivit.weights.hub import WeightsDownloadError

CHECKPOINTS = DATA / "checkpoints"
TOL = 1e-5


@pytest.fixture
def entries():
    """Register test entries (removed afterwards so list_models stays the real one)."""
    added = []

    def add(name, variant, args, sources, **cfg):
        cfg = {"sources": tuple(sources), "num_classes": args.get("num_classes"), **cfg}
        register_model(name, MODEL_CLASSES[variant], args, cfg)
        added.append(name)
        return name

    yield add
    for name in added:
        del _REGISTRY[name]


def _scenic_entry(entries, fixture: str, path: str, name: str | None = None) -> tuple[str, dict]:
    f = load_forward_fixture(fixture)
    variant, args = model_args_from_config(f["meta"]["config"])
    name = entries(name or f"test_{fixture}", variant, args, [{"format": "scenic", "url": f"{{scenic}}/{path}"}])
    return name, f


def _cache_files(root: Path) -> list[Path]:
    """Files in the cache, without the (empty) lock files that keep concurrent processes apart."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_scenic_download_convert_cache_then_no_network(hub_server, entries, monkeypatch, tmp_path):
    data = (CHECKPOINTS / "m2_factorized_encoder_tubelet_token.checkpoint").read_bytes()
    hub_server.add_file("k400/m2/checkpoint", data)
    name, f = _scenic_entry(entries, "m2_factorized_encoder_tubelet_token", "k400/m2/checkpoint")

    model = vivit.create_model(name, pretrained=True)
    assert hub_server.request_count == 1
    with torch.no_grad():
        assert (model(f["video"]) - f["logits"]).abs().max() <= TOL
    cached = _cache_files(Path(tmp_path / "vivit_cache"))
    assert [p.name for p in cached] == [f"{name}.safetensors"]  # the raw download is gone
    with safe_open(str(cached[0]), "pt") as st:
        meta = st.metadata()
    assert meta["source_url"].endswith("/files/k400/m2/checkpoint")
    assert meta["source_sha256"] == __import__("hashlib").sha256(data).hexdigest()
    assert meta["converter"].startswith("vivit.weights.from_scenic")
    assert json.loads(meta["config"])["model_args"]["temporal_depth"] == 1  # read from the tensors

    again = vivit.create_model(name, pretrained=True)  # second call: cache only
    assert hub_server.request_count == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline with a warm cache works
    offline = vivit.create_model(name, pretrained=True)
    for m in (again, offline):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m.state_dict().values()))

    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path / "cold"))  # offline with a cold cache fails clearly
    with pytest.raises(WeightsDownloadError, match="(?i)offline"):
        vivit.create_model(name, pretrained=True)
    assert hub_server.request_count == 1


def test_scenic_bf16_checkpoint(hub_server, entries):
    hub_server.add_file("m1.bf16", (CHECKPOINTS / "m1_spacetime_tubelet_token.bf16.checkpoint").read_bytes())
    name, f = _scenic_entry(entries, "m1_spacetime_tubelet_token", "m1.bf16")
    model = vivit.create_model(name, pretrained=True)
    with torch.no_grad():
        err = (model(f["video"]) - f["logits"]).abs().max().item()
    assert err < 0.1  # bf16 weights: ~3 significant digits, so the logits move a little
    assert model.pretrained_cfg["sources"][0]["format"] == "scenic"


@pytest.mark.parametrize("fault", ["truncate", "html", "404", "foreign"])
def test_bad_downloads_fail_clearly_and_leave_no_cache(hub_server, entries, tmp_path, fault):
    if fault == "foreign":  # a valid Flax checkpoint of another model (Model 2 for a Model 1 entry)
        hub_server.add_file("m1", (CHECKPOINTS / "m2_factorized_encoder_tubelet_token.checkpoint").read_bytes())
    else:
        hub_server.add_file("m1", (CHECKPOINTS / "m1_spacetime_tubelet_token.checkpoint").read_bytes(), fault=fault)
    name, _ = _scenic_entry(entries, "m1_spacetime_tubelet_token", "m1")
    expected = {
        "truncate": (WeightsDownloadError, "(?i)interrupted|incomplete|truncat"),
        "html": (WeightsDownloadError, "HTML"),
        "404": (WeightsDownloadError, "404"),
        "foreign": (
            ValueError,
            "holds a factorised-encoder \\(Model 2\\) ViViT checkpoint, but test_m1_spacetime_tubelet_token is a SpatioTemporalViViT",
        ),
    }[fault]
    with pytest.raises(expected[0], match=expected[1]):
        vivit.create_model(name, pretrained=True)
    assert _cache_files(tmp_path / "vivit_cache") == []


def _tiny_hf_vivit():
    transformers = pytest.importorskip("transformers")
    config = transformers.VivitConfig(
        image_size=32,
        num_frames=8,
        tubelet_size=[2, 8, 8],
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=6,
    )
    torch.manual_seed(0)
    hf = transformers.VivitForVideoClassification(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    return hf


def test_transformers_source_with_pr_revision(hub_server, entries, tmp_path):
    hf = _tiny_hf_vivit()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(path))
    hub_server.add_repo_file(
        "google/vivit-tiny", "model.safetensors", path.read_bytes(), revision="refs/pr/3", lfs=True
    )
    args = dict(
        img_size=32,
        num_frames=8,
        patch_size=8,
        tubelet_size=2,
        embed_dim=32,
        depth=12,
        num_heads=4,
        mlp_dim=64,
        num_classes=6,
        global_pool="token",
    )
    source = {
        "format": "transformers",
        "hf_hub": "google/vivit-tiny",
        "revision": "refs/pr/3",
        "filename": "model.safetensors",
    }
    name = entries("test_hf_vivit", "st", args, [source])
    model = vivit.create_model(name, pretrained=True)  # depth 3 read from the tensors, not the entry's 12
    assert len(model.blocks) == 3
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=video.permute(0, 2, 1, 3, 4)).logits
        assert (model(video) - expected).abs().max() <= TOL


def test_sources_are_tried_in_order(hub_server, entries):
    hub_server.add_file("m1", (CHECKPOINTS / "m1_spacetime_tubelet_token.checkpoint").read_bytes())
    f = load_forward_fixture("m1_spacetime_tubelet_token")
    variant, args = model_args_from_config(f["meta"]["config"])
    missing_repo = {"format": "vivit", "hf_hub": "vivit/not-published-yet"}
    name = entries("test_order", variant, args, [missing_repo, {"format": "scenic", "url": "{scenic}/m1"}])
    model = vivit.create_model(name, pretrained=True)
    with torch.no_grad():
        assert (model(f["video"]) - f["logits"]).abs().max() <= TOL
    hub_server.add_file("gone", b"", fault="404")
    name = entries("test_all_fail", variant, args, [missing_repo, {"format": "scenic", "url": "{scenic}/gone"}])
    with pytest.raises(WeightsDownloadError, match=r"(?s)from any source.*not-published-yet.*404"):
        vivit.create_model(name, pretrained=True)


def test_save_pretrained_round_trip_local_and_hub(hub_server, tmp_path):
    torch.manual_seed(0)
    model = vivit.create_model("vivit_ti_fe", img_size=32, num_frames=8, patch_size=8, num_classes=7, temporal_depth=2)
    model.pretrained_cfg = {"dataset": "mine", "num_classes": 7, "label_names": [str(i) for i in range(7)]}
    model.save_pretrained(tmp_path / "mine")
    config = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert config["model_class"] == "FactorizedEncoderViViT" and config["model_args"]["temporal_depth"] == 2

    video = torch.randn(1, 3, 8, 32, 32)
    hub_server.add_repo_file("me/my-vivit", "model.safetensors", (tmp_path / "mine" / "model.safetensors").read_bytes())
    hub_server.add_repo_file("me/my-vivit", "config.json", (tmp_path / "mine" / "config.json").read_bytes())
    for spec in (tmp_path / "mine", str(tmp_path / "mine" / "model.safetensors"), "hf-hub:me/my-vivit"):
        loaded = vivit.create_model("vivit_ti_fe", pretrained=spec)
        with torch.no_grad():
            assert torch.equal(loaded(video), model.eval()(video))
        assert loaded.pretrained_cfg["label_names"] == [str(i) for i in range(7)]
    with pytest.raises(ValueError, match="holds a FactorizedEncoderViViT, but 'vivit_ti_st' is a SpatioTemporalViViT"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "mine")


def test_push_to_hub_then_load_by_repo_name_alone(hub_server, monkeypatch):
    """timm's Hub layout: config.json names the architecture, so 'hf-hub:org/repo' needs no model name;
    the model card says what the model is and how to load it."""
    import huggingface_hub

    uploaded: dict[str, bytes] = {}

    def fake_upload_folder(self, *, repo_id, folder_path, commit_message):
        uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
        for name, data in uploaded.items():
            hub_server.add_repo_file(repo_id, name, data, lfs=name.endswith(".safetensors"))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload_folder)
    torch.manual_seed(0)
    model = vivit.create_model("vivit_ti_fsa", img_size=32, num_frames=4, patch_size=8, depth=2, num_classes=3)
    model.pretrained_cfg.update(label_names=("cat", "dog", "bird"), license="Apache-2.0", dataset="pets")
    assert model.pretrained_cfg["architecture"] == "vivit_ti_fsa"  # remembered from create_model
    vivit.push_to_hub(model, "me/tiny")
    assert set(uploaded) == {"model.safetensors", "config.json", "README.md"}

    config = json.loads(uploaded["config.json"])
    assert config["architecture"] == "vivit_ti_fsa" and config["num_classes"] == 3 and config["num_features"] == 192
    assert config["label_names"] == ["cat", "dog", "bird"] and config["model_args"]["depth"] == 2
    assert config["pretrained_cfg"]["dataset"] == "pets"
    card = uploaded["README.md"].decode()
    params = f"({sum(p.numel() for p in model.parameters()):,})"
    for text in (
        "license: apache-2.0",
        "FactorizedSelfAttentionViViT",
        "`vivit_ti_fsa`",
        params,
        "(B, 3, 4, 32, 32)",
        "tubelet 2x8x8",
        "3 logits: cat, dog, bird",
        "pets",
        'vivit.create_model("hf-hub:me/tiny", pretrained=True)',
    ):
        assert text in card, text

    loaded = vivit.create_model("hf-hub:me/tiny", pretrained=True)
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(video), model.eval()(video))
    assert type(loaded) is type(model) and loaded.pretrained_cfg["label_names"] == ["cat", "dog", "bird"]
    fresh = vivit.create_model("hf-hub:me/tiny")  # timm: without pretrained=True, the architecture only
    assert fresh.model_args == model.model_args and fresh.pretrained_cfg["architecture"] == "vivit_ti_fsa"
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_local_dir_and_the_version_1_config(tmp_path):
    torch.manual_seed(0)
    model = vivit.create_model("vivit_s_fe", img_size=32, num_frames=4, patch_size=8, depth=1, temporal_depth=1)
    model.save_pretrained(tmp_path / "new")
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = model.eval()(video)
        for spec in (tmp_path / "new", tmp_path / "new" / "model.safetensors"):
            loaded = vivit.create_model(f"local-dir:{spec}", pretrained=True)
            assert torch.equal(loaded(video), expected) and loaded.pretrained_cfg["architecture"] == "vivit_s_fe"
        # vivit 0.1's config.json: class name and arguments, no architecture
        old = tmp_path / "old"
        old.mkdir()
        (old / "model.safetensors").write_bytes((tmp_path / "new" / "model.safetensors").read_bytes())
        config = json.loads((tmp_path / "new" / "config.json").read_text())
        v1 = {k: config[k] for k in ("model_class", "model_args", "pretrained_cfg")} | {
            "format": "vivit",
            "format_version": "1",
        }
        (old / "config.json").write_text(json.dumps(v1))
        save_file(model.state_dict(), str(old / "model.safetensors"), metadata={"config": json.dumps(v1)})
        for loaded in (
            vivit.create_model(f"local-dir:{old}", pretrained=True),
            vivit.create_model("vivit_s_fe", pretrained=old),
        ):
            assert torch.equal(loaded(video), expected)
    (tmp_path / "bare").mkdir()
    save_file(model.state_dict(), str(tmp_path / "bare" / "model.safetensors"))
    with pytest.raises(ValueError, match="does not say which model it holds"):
        vivit.create_model(f"local-dir:{tmp_path / 'bare'}", pretrained=True)


def test_overrides_fresh_head_and_resampled_positions(tmp_path):
    torch.manual_seed(0)
    model = vivit.create_model("vivit_ti_st", img_size=32, num_frames=8, patch_size=8, num_classes=7)
    model.save_pretrained(tmp_path)
    new = vivit.create_model("vivit_ti_st", pretrained=tmp_path, num_classes=3, num_frames=12, img_size=(40, 32))
    assert new.head.out_features == 3 and new.head.weight.abs().sum() == 0
    assert new.pretrained_cfg.get("label_names") is None
    expected = resample_pos_embed(model.pos_embed.detach(), (4, 4, 4), (6, 5, 4), num_prefix_tokens=1)
    assert torch.equal(new.pos_embed.detach(), expected)
    assert torch.equal(new.blocks[3].attn.qkv.weight, model.blocks[3].attn.qkv.weight)
    with torch.no_grad():
        assert new(torch.randn(1, 3, 12, 40, 32)).shape == (1, 3)


def test_refuses_pickle_and_corrupt_files(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"\x80\x04not really")
    with pytest.raises(
        ValueError,
        match=r"pickled checkpoints .* are refused.*save_for_hf\(model, dir, "
        r"safe_serialization=True\).*save_pretrained\(dir, safe_serialization=True\)",
    ):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "model.pth")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(
        FileNotFoundError, match=r"has no model.safetensors.*pytorch_model.bin, pickled weights.*safe_serialization"
    ):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "hf")
    model = vivit.create_model("vivit_ti_st", img_size=32, num_frames=4, patch_size=8)
    model.save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file.*truncated or corrupted"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing-here does not exist; pretrained= takes True"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "empty")


def test_pretrained_registry_entries():
    released = {"vivit_b_st_k400", "vivit_b_fe_k400", "vivit_l_fe_k400", "vivit_l_fe_k600", "vivit_l_fe_ek100"}
    in21k = {f"vivit_{s}_{v}_in21k" for s in ("ti", "s", "b", "l", "h") for v in ("st", "fe", "fsa", "fdp")}
    in21k.discard("vivit_ti_fdp_in21k")
    assert set(vivit.list_models(pretrained=True)) == released | in21k | {"vivit_demo"}
    assert set(vivit.list_models(pretrained=True)) < set(vivit.list_models())
    for name in sorted(released | in21k):
        with torch.device("meta"):
            model = vivit.create_model(name)  # the entry's architecture, no download
        cfg = model.pretrained_cfg
        assert cfg["sources"] and all(s["format"] in {"scenic", "transformers", "vit", "vivit"} for s in cfg["sources"])
        assert cfg["input_size"] == (3, 32, 224, 224) and cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
        assert cfg["crop_size"] == 224 and cfg["resize_size"] == 256 and cfg["license"]
        if name in released:
            assert len(cfg["label_names"]) == cfg["num_classes"] == model.num_classes
            assert cfg["metrics"]
    k400 = vivit.create_model("vivit_b_fe_k400", pretrained=False).pretrained_cfg["label_names"]
    assert k400[0] == "abseiling" and k400[-1] == "zumba" and len(set(k400)) == 400
    ek = vivit.create_model("vivit_l_fe_ek100", pretrained=False, depth=1).pretrained_cfg
    assert ek["class_splits"] == (300, 97) and ek["frame_stride"] == 1 and ek["test_views"] == (4, 1)


def test_no_weights_for_a_bare_architecture():
    with pytest.raises(
        ValueError,
        match=r"'vivit_b_fe' has no pretrained weights; entries with weights for it: "
        r"vivit_b_fe_in21k, vivit_b_fe_k400",
    ):
        vivit.create_model("vivit_b_fe", pretrained=True)


def test_in21k_entry_inflates_timm_weights(hub_server, tmp_path):
    """vivit_*_in21k: a timm-layout ViT from the Hub, inflated (central frame by default)."""
    pytest.importorskip("vivit.weights.inflate")
    d, depth, n = 192, 12, 14 * 14
    g = torch.Generator().manual_seed(0)
    vit = {
        "patch_embed.proj.weight": torch.randn(d, 3, 16, 16, generator=g),
        "patch_embed.proj.bias": torch.randn(d, generator=g),
        "cls_token": torch.randn(1, 1, d, generator=g),
        "pos_embed": torch.randn(1, 1 + n, d, generator=g),
        "norm.weight": torch.randn(d, generator=g),
        "norm.bias": torch.randn(d, generator=g),
    }
    for i in range(depth):
        for name, shape in {
            "norm1": (d,),
            "norm2": (d,),
            "attn.qkv": (3 * d, d),
            "attn.proj": (d, d),
            "mlp.fc1": (4 * d, d),
            "mlp.fc2": (d, 4 * d),
        }.items():
            vit[f"blocks.{i}.{name}.weight"] = torch.randn(shape, generator=g)
            vit[f"blocks.{i}.{name}.bias"] = torch.randn(shape[0], generator=g)
    save_file(vit, str(tmp_path / "vit.safetensors"))
    hub_server.add_repo_file(
        "timm/vit_tiny_patch16_224.augreg_in21k",
        "model.safetensors",
        (tmp_path / "vit.safetensors").read_bytes(),
        lfs=True,
    )
    model = vivit.create_model("vivit_ti_st_in21k", pretrained=True, num_frames=4, num_classes=10)
    kernel = model.patch_embed.proj.weight.detach()
    assert torch.equal(kernel[:, :, 1], vit["patch_embed.proj.weight"]) and kernel[:, :, 0].abs().sum() == 0
    assert model.head.out_features == 10 and model.head.weight.abs().sum() == 0
    average = vivit.create_model("vivit_ti_st_in21k", pretrained=True, num_frames=4, inflation="average")
    assert torch.allclose(average.patch_embed.proj.weight[:, :, 0], vit["patch_embed.proj.weight"] / 2)
    with pytest.raises(ValueError, match="inflation kernel must be one of 'central', 'average', got 'mean'"):
        vivit.create_model("vivit_ti_st_in21k", pretrained=True, inflation="mean")
    with pytest.raises(ValueError, match="unknown inflation setting 'temporal'; known: kernel, posemb, temporal_init"):
        vivit.create_model("vivit_ti_st_in21k", pretrained=True, inflation={"temporal": "copy"})


@pytest.mark.parametrize("fixture", FORWARD_NAMES)
def test_every_fixture_through_a_scenic_checkpoint_file(entries, tmp_path, fixture):
    """Each Scenic fixture, written as a Flax train state and loaded with pretrained=<file>."""
    f = load_forward_fixture(fixture)
    variant, args = model_args_from_config(f["meta"]["config"])
    name = entries(f"test_file_{fixture}", variant, args, [])
    write_flax_checkpoint(f["params"], tmp_path / "checkpoint")
    model = vivit.create_model(name, pretrained=tmp_path / "checkpoint")
    with torch.no_grad():
        assert (model(f["video"]) - f["logits"]).abs().max() <= TOL


def test_bundled_demo_loads_offline_and_classifies_its_sample(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path))
    model = vivit.create_model("vivit_demo", pretrained=True)
    sample = np.load(Path(vivit.__file__).parent / "assets" / "sample_clip.npz")
    logits = vivit.predict_views(model, sample["frames"])
    assert model.pretrained_cfg["label_names"][logits.argmax()] == str(sample["label"])
    assert _cache_files(tmp_path) == []  # nothing downloaded or converted


INIT = DATA / "init"


@pytest.mark.parametrize("layout", ["vision_transformer", "big_vision"])
@pytest.mark.parametrize("fixture", sorted(p.stem for p in INIT.glob("*.json")))
def test_google_npz_vit_everywhere_a_vit_is(entries, tmp_path, fixture, layout):
    """A Google .npz ViT through create_model(pretrained=...) equals inflate_vit(dict(np.load(...)))."""
    meta = json.loads((INIT / f"{fixture}.json").read_text())
    arrays = np.load(INIT / f"{fixture}.npz")
    vit = {k.removeprefix("src/"): arrays[k] for k in arrays.files if k.startswith("src/")}
    if layout == "big_vision":  # params/ and optimizer state in one archive
        vit = {f"params/{k}": v for k, v in vit.items()} | {"opt/mu/embedding/kernel": np.zeros(3, np.float32)}
    else:  # the paper's release: a classifier head, which inflation drops
        vit = vit | {"head/kernel": np.zeros((32, 7), np.float32), "head/bias": np.zeros(7, np.float32)}
    np.savez(tmp_path / "vit.npz", **vit)
    variant, args = model_args_from_config(meta["target_config"])
    name = entries(f"test_npz_{fixture}", variant, args, [])
    settings = {
        "kernel": "average" if "average" in fixture else "central",
        "temporal_init": "copy",
        "posemb": meta["target_config"]["init_from"]["positional_embed_size_change"],
    }
    torch.manual_seed(0)
    loaded = vivit.create_model(name, pretrained=tmp_path / "vit.npz", inflation=settings)
    torch.manual_seed(0)  # the same fresh init for what the ViT does not provide (Model 2's temporal encoder)
    fresh = vivit.create_model(name)
    expected = inflate_vit(
        {k.removeprefix("params/"): v for k, v in np.load(tmp_path / "vit.npz").items() if not k.startswith("opt/")},
        fresh,
        **settings,
    )
    got = loaded.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_npz_that_is_not_a_vit_or_pickled(tmp_path):
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds pickled Python objects, which are never loaded"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "objects.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"broken.npz is not (an|a readable) .npz archive"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "broken.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="unrecognized image ViT key layout"):
        vivit.create_model("vivit_ti_st", pretrained=tmp_path / "other.npz")


def test_model_card_keeps_its_table_and_front_matter_whatever_the_labels():
    """Label names, dataset and licence strings come from checkpoints: a '|' or a newline in them must not
    break the card's table, and a licence must not add keys to its YAML front matter."""
    from vivit.weights.saving import model_card

    model = vivit.create_model("vivit_ti_st", img_size=32, num_frames=4, patch_size=8, depth=1, num_classes=3)
    model.pretrained_cfg = {
        "label_names": ["a|b", "c\nd", "\x1b[31mred"],
        "dataset": "x | y",
        "license": "MIT\nlibrary_name: evil",
    }
    card = model_card(model, "me/repo")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "evil" not in front and "license: other" in front
    rows = [line for line in body.splitlines() if line.startswith("|")]
    assert len(rows) == 10 and all(line.count("|") - line.count("\\|") == 3 for line in rows), rows
    outputs = next(line for line in rows if line.startswith("| outputs"))
    assert "a\\|b" in outputs and "c\\nd" in outputs and "\x1b" not in card


# ---------------------------------------------------------------- issue 21.6: every answer right
def test_a_file_of_another_kind_is_named_not_called_a_corrupt_flax_file(tmp_path):
    """A CSV, a JPEG or a text file as pretrained= was 'a corrupt Flax file: delete it and download again'."""
    (tmp_path / "labels.csv").write_text("path,label\nclip.mp4,3\n")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200))
    (tmp_path / "notes.txt").write_text("my weights are elsewhere\n")
    (tmp_path / "blob.ckpt2").write_bytes(bytes([0x07, 0x99, 0x12, 0x00]) * 50)
    expected = {
        "labels.csv": "is a CSV/TSV text file (path,label), not a checkpoint",
        "photo.jpg": "is a JPEG image, not a checkpoint",
        "notes.txt": "is a text file (my weights are elsewhere), not a checkpoint",
        "blob.ckpt2": "is no checkpoint format vivit knows (it starts with bytes 07 99 12 00",
    }
    for name, text in expected.items():
        with pytest.raises(ValueError) as info:
            vivit.create_model("vivit_ti_st", pretrained=tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name)) and text in message, message
        assert "Flax" in message and ".safetensors" in message and ".npz" in message  # the formats accepted
        assert "download" not in message, message


def test_a_flax_image_vit_is_inflated_like_its_npz_and_safetensors_twins(entries, tmp_path):
    """A Scenic/big_vision 2D ViT as a Flax msgpack file was refused as a video checkpoint without inflation=,
    while the same ViT as .npz or timm .safetensors loaded: all three now give the same model."""
    fixture = "m1_tubelet_token_from_vit_token_central_tile"
    meta = json.loads((INIT / f"{fixture}.json").read_text())
    arrays = np.load(INIT / f"{fixture}.npz")
    vit = {k.removeprefix("src/"): arrays[k] for k in arrays.files if k.startswith("src/")}
    variant, args = model_args_from_config(meta["target_config"])
    name = entries("test_flax_vit", variant, args, [])
    write_flax_checkpoint(vit, tmp_path / "vit.checkpoint")
    np.savez(tmp_path / "vit.npz", **vit)
    from_flax = vivit.create_model(name, pretrained=tmp_path / "vit.checkpoint")
    from_npz = vivit.create_model(name, pretrained=tmp_path / "vit.npz")
    got, want = from_flax.state_dict(), from_npz.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert from_flax.head.weight.abs().sum() == 0  # a fresh (Scenic: zero) head for the video task


def test_loading_weights_initialises_nothing_randomly(tmp_path, monkeypatch):
    """The model for a checkpoint is built on the meta device: no random init that the weights overwrite
    (before: two, one of them on the real model). A model without weights is still initialised."""
    model = vivit.create_model("vivit_s_fe", img_size=32, num_frames=4, patch_size=8, depth=2, temporal_depth=1)
    model.save_pretrained(tmp_path)
    calls = []
    real = torch.nn.init.trunc_normal_

    def counting(tensor, *args, **kwargs):
        if tensor.device.type != "meta":
            calls.append(tuple(tensor.shape))
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "trunc_normal_", counting)
    loaded = vivit.create_model("vivit_s_fe", pretrained=tmp_path)
    assert calls == []
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert all(p.data_ptr() % 64 == 0 for p in loaded.parameters())  # aligned: same kernels, same logits
    vivit.create_model("vivit_s_fe", img_size=32, num_frames=4, patch_size=8, depth=2, temporal_depth=1)
    assert calls  # without weights: the usual random init


# ---------------------------------------------------------------- issue 22: trust
def _rss_script(code: str) -> str:
    return (
        "import resource, sys\n"
        "import vivit\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    {code}\n"
        "except ValueError as err:\n"
        "    print('ValueError:', err)\n"
        "print('grew_mb', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["local_dir_config", "img_size_override", "plain_kwargs", "hub_config"], ids=lambda c: c
)
def test_every_model_built_is_within_the_limits_before_anything_is_allocated(hub_server, tmp_path, case):
    """Issue 22.2: a config.json asking for embed 8192, depth 256, MLP 65536 reached 5.4 GB and a raw
    allocator error; img_size=100000 asked for 160 GB. Every build is capped first: one ValueError naming
    the source, with the peak memory of the refusing process measured."""
    import os
    import subprocess
    import sys

    bomb = {"embed_dim": 8192, "depth": 256, "num_heads": 16, "mlp_dim": 65536, "num_classes": 400}
    folder = tmp_path / "bomb"
    folder.mkdir()
    save_file({"x": torch.zeros(1)}, str(folder / "model.safetensors"))
    config = {"format": "vivit", "architecture": "vivit_b_st", "model_args": bomb}
    (folder / "config.json").write_text(json.dumps(config))
    hub_server.add_repo_file("me/bomb", "config.json", json.dumps(config).encode())
    code, source = {
        "local_dir_config": (f"vivit.create_model('local-dir:{folder}')", str(folder / "config.json")),
        "img_size_override": ("vivit.create_model('vivit_b_fe', img_size=100000)", "vivit_b_fe with img_size=100000"),
        "plain_kwargs": (f"vivit.create_model('vivit_ti_st', **{bomb!r})", "vivit_ti_st with embed_dim=8192"),
        "hub_config": ("vivit.create_model('hf-hub:me/bomb')", "hf-hub:me/bomb/config.json"),
    }[case]
    out = subprocess.run(
        [sys.executable, "-c", _rss_script(code)], capture_output=True, text=True, timeout=300, env=os.environ
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"ValueError: {source}"), out
    assert "outside the supported limits" in lines[0] or "more than the limit" in lines[0], lines[0]
    assert float(lines[1].split()[1]) < 300, lines  # refused before allocating (the bomb: gigabytes)


_GOOD_ARGS = dict(img_size=16, num_frames=4, patch_size=8, embed_dim=12, depth=1, num_heads=2, num_classes=3)
_HOSTILE_CONFIGS = {
    "model_args_list": {"model_args": [1, 2]},
    "model_args_string": {"model_args": "img_size=16"},
    "model_args_int": {"model_args": 5},
    "architecture_int": {"architecture": 5},
    "architecture_list": {"architecture": ["vivit_ti_st"]},
    "model_class_int": {"model_class": 7},
    "model_class_unknown": {"model_class": "ResNet"},
    "format_other": {"format": "timm"},
    "format_list": {"format": ["vivit"]},
    "img_size_one": {"model_args": {**_GOOD_ARGS, "img_size": [32]}},
    "img_size_three": {"model_args": {**_GOOD_ARGS, "img_size": [32, 32, 32]}},
    "patch_size_string": {"model_args": {**_GOOD_ARGS, "patch_size": "8"}},
    "mlp_dim_negative": {"model_args": {**_GOOD_ARGS, "mlp_dim": -5}},
    "drop_path_negative": {"model_args": {**_GOOD_ARGS, "drop_path_rate": -1}},
    "drop_rate_one": {"model_args": {**_GOOD_ARGS, "drop_rate": 1.0}},
    "attn_drop_string": {"model_args": {**_GOOD_ARGS, "attn_drop_rate": "0.1"}},
    "embed_dim_float": {"model_args": {**_GOOD_ARGS, "embed_dim": 12.0}},
    "depth_zero": {"model_args": {**_GOOD_ARGS, "depth": 0}},
    "heads_bool": {"model_args": {**_GOOD_ARGS, "num_heads": True}},
    "heads_indivisible": {"model_args": {**_GOOD_ARGS, "num_heads": 5}},
    "classes_negative": {"model_args": {**_GOOD_ARGS, "num_classes": -1}},
    "frames_zero": {"model_args": {**_GOOD_ARGS, "num_frames": 0}},
    "tubelet_null": {"model_args": {**_GOOD_ARGS, "tubelet_size": None}},
    "pool_max": {"model_args": {**_GOOD_ARGS, "global_pool": "max"}},
    "dynamic_string": {"model_args": {**_GOOD_ARGS, "dynamic_size": "yes"}},
    "unknown_argument": {"model_args": {**_GOOD_ARGS, "qkv_norm": True}},
    "pretrained_cfg_list": {"pretrained_cfg": [1]},
    "views_zero": {"pretrained_cfg": {"test_views": [0, 0]}},
    "crop_over_resize": {"pretrained_cfg": {"crop_size": 300, "resize_size": 256}},
    "interpolation_nearest": {"pretrained_cfg": {"interpolation": "nearest"}},
    "label_names_int": {"label_names": 5},
    "label_names_numbers": {"label_names": [1, 2, 3]},
    "transformers_hidden_string": {"model_type": "vivit", "hidden_size": "x"},
    "transformers_image_list": {"model_type": "vivit", "image_size": [32]},
    "transformers_tubelet_short": {"model_type": "vivit", "tubelet_size": [2, 8]},
    "transformers_tubelet_string": {"model_type": "vivit", "tubelet_size": "2x8x8"},
    "transformers_layers_negative": {"model_type": "vivit", "num_hidden_layers": -1},
    "transformers_frames_string": {"model_type": "vivit", "num_frames": "8"},
    "transformers_architectures_int": {"model_type": "vivit", "architectures": 5},
}


@pytest.mark.parametrize("pretrained", [False, True], ids=["architecture", "weights"])
@pytest.mark.parametrize("case", sorted(_HOSTILE_CONFIGS))
def test_hostile_config_json_is_one_value_error_naming_the_folder(tmp_path, case, pretrained):
    """Issue 22.8: a config.json's every field is checked for type and range; a bad one is one ValueError
    naming the folder, never an AttributeError/TypeError/IndexError or a RuntimeError at the first forward."""
    model = vivit.create_model("vivit_ti_st", **_GOOD_ARGS)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"format": "vivit", "format_version": "2", "architecture": "vivit_ti_st", "model_args": _GOOD_ARGS}
    if _HOSTILE_CONFIGS[case].get("model_type") == "vivit":
        config = {"model_type": "vivit", "image_size": 16, "num_frames": 4, "tubelet_size": [2, 8, 8]}
        config |= {"hidden_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2, "num_labels": 3}
    (folder / "config.json").write_text(json.dumps(config | _HOSTILE_CONFIGS[case]))
    with pytest.raises(ValueError) as info:
        loaded = vivit.create_model(f"local-dir:{folder}", pretrained=pretrained)
        with torch.no_grad():  # if it loaded, it must run (a bad value would fail here, at the first forward)
            loaded(torch.zeros(1, 3, 4, 16, 16))
    message = str(info.value)
    assert str(folder) in message and "\n" not in message and len(message) < 1000, message


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"crop_size": 300, "resize_size": 256}, r"crop_size=300 crops more than resize_size=256"),
        (
            {"input_size": [3, 4, 64, 64], "resize_size": 48},
            r"input_size=\[3, 4, 64, 64\] crops more than resize_size=48",
        ),
        ({"interpolation": "nearest"}, r"interpolation='nearest' must be one of bilinear, bicubic"),
    ],
)
def test_preprocessing_that_cannot_work_is_refused_at_load_naming_the_checkpoint(tmp_path, cfg, message):
    """Issue 22.14: a crop larger than the resize was accepted and later blamed on the video; an unknown
    interpolation was reported without the checkpoint's name."""
    model = vivit.create_model("vivit_ti_st", img_size=16, num_frames=4, patch_size=8, depth=1, num_classes=3)
    model.pretrained_cfg = dict(cfg)
    model.save_pretrained(tmp_path)
    for spec in (tmp_path, f"local-dir:{tmp_path}"):
        with pytest.raises(ValueError, match=rf"^{tmp_path}.*: its embedded pretrained_cfg is invalid: {message}"):
            if str(spec).startswith("local-dir:"):
                vivit.create_model(str(spec), pretrained=True)
            else:
                vivit.create_model("vivit_ti_st", pretrained=spec)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_save_pretrained_files_are_readable_as_the_umask_says(tmp_path, umask):
    """Issue 22.14: model.safetensors was written 0600 (safetensors' own temporary file) beside a 0644
    config.json: a folder prepared for sharing must be readable as the umask says."""
    import os
    import stat

    model = vivit.create_model("vivit_ti_st", img_size=16, num_frames=4, patch_size=8, depth=1)
    before = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / "shared")
        vivit.weights.save_safetensors(model, tmp_path / "one.safetensors")
    finally:
        os.umask(before)
    for path in (
        tmp_path / "shared" / "model.safetensors",
        tmp_path / "shared" / "config.json",
        tmp_path / "one.safetensors",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, (path, oct(path.stat().st_mode))


def test_a_checkpoint_loads_onto_the_default_device(tmp_path):
    """Built on the meta device and given the checkpoint's CPU tensors, the model still lands where a plain
    constructor would: on the default device (`with torch.device(...)`; here meta, as a stand-in for cuda)."""
    vivit.create_model("vivit_ti_st", img_size=16, num_frames=4, patch_size=8, depth=1).save_pretrained(tmp_path)
    with torch.device("meta"):
        model = vivit.create_model("vivit_ti_st", pretrained=tmp_path)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.device.type for p in vivit.create_model("vivit_ti_st", pretrained=tmp_path).parameters()} == {"cpu"}


def _vivit_imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, name)} for every import in the package, deferred ones included."""
    import ast

    root = Path(vivit.__file__).parent
    graph: dict[str, set[tuple[str, str]]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        edges = graph.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                edges.update((target, alias.name) for alias in node.names if target.startswith("vivit"))
            elif isinstance(node, ast.Import):
                edges.update((alias.name, "") for alias in node.names if alias.name.startswith("vivit"))
    return graph


def test_weights_and_models_imports_point_one_way():
    """Issue 21.1: no import cycle inside vivit.weights (there were cache <-> hub and a six-file circle through
    the registry), nothing in vivit.models imports vivit.weights (not even deferred), and no private name is
    imported from another module."""
    graph = _vivit_imports()
    modules = set(graph)

    def targets(module: str) -> set[str]:
        out = set()
        for target, name in graph[module]:
            out.add(f"{target}.{name}" if f"{target}.{name}" in modules else target)
        return {t for t in out if t in modules and t != module}

    upward = [
        (m, t) for m in modules if m.startswith("vivit.models") for t in targets(m) if t.startswith("vivit.weights")
    ]
    assert upward == []
    private = [
        (m, t, n)
        for m in modules
        if m.startswith(("vivit.weights", "vivit.models", "vivit.factory"))
        for t, n in graph[m]
        if n.startswith("_") and not n.startswith("__") and f"{t}.{n}" not in modules
    ]
    assert private == []
    weights = {m for m in modules if m.startswith("vivit.weights.")}
    # a cycle exists iff some module reaches itself
    for start in weights:
        seen, stack = set(), [t for t in targets(start) if t in weights]
        while stack:
            current = stack.pop()
            assert current != start, f"import cycle through {start}"
            if current not in seen:
                seen.add(current)
                stack.extend(t for t in targets(current) if t in weights)


def test_cli_weights_of_another_kind_is_one_line_naming_it(tmp_path, capsys):
    """Issue 21.6 as a user meets it: `vivit predict --weights labels.csv` said 'corrupt Flax file'."""
    from vivit import cli

    (tmp_path / "labels.csv").write_text("path,label\nclip.mp4,3\n")
    sample = Path(vivit.__file__).parent / "assets" / "sample_clip.npz"
    assert cli.main(["predict", str(sample), "--model", "vivit_demo", "--weights", str(tmp_path / "labels.csv")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"vivit: error: {tmp_path / 'labels.csv'} is a CSV/TSV text file (path,label), not a checkpoint; expected a "
        ".safetensors file or a folder written by save_pretrained (vivit, timm, transformers), a Scenic/big_vision "
        "Flax msgpack checkpoint, or a Google .npz ViT"
    ]


def test_vivits_own_files_are_64_byte_aligned_so_loading_copies_nothing(tmp_path, monkeypatch):
    """save_pretrained pads safetensors' header so that the data starts at 64 bytes: a loaded model's
    parameters are then the file's memory map itself (issue 23.4: no copy), still bit-identical."""
    import struct

    torch.manual_seed(0)
    model = vivit.create_model(
        "vivit_ti_st", img_size=32, num_frames=4, patch_size=8, depth=2, embed_dim=64, num_heads=4
    )
    model.save_pretrained(tmp_path)
    with open(tmp_path / "model.safetensors", "rb") as handle:
        assert (8 + struct.unpack("<Q", handle.read(8))[0]) % 64 == 0
    clones = []
    real = torch.Tensor.clone
    monkeypatch.setattr(torch.Tensor, "clone", lambda self, *a, **k: clones.append(1) or real(self, *a, **k))
    loaded = vivit.create_model("vivit_ti_st", pretrained=tmp_path)
    assert clones == []
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(video), model.eval()(video))


def test_a_file_is_told_apart_by_its_content_whatever_its_name(tmp_path, run_cli, one_error_line):
    """attack21: a PNG as --weights was 'not a Flax msgpack checkpoint ... download it again' (its first byte,
    0x89, is a msgpack map), a web page saved as model.safetensors 'a corrupted safetensors file', a CSV given
    without --model 'does not say which model it holds'; and a safetensors file not named .safetensors whose
    header length starts with a byte 0x80-0x8F was read as msgpack."""
    import struct

    from safetensors.torch import save_file

    from vivit.weights.formats import identify_format

    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    page = tmp_path / "model.safetensors"
    page.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nclip.mp4,3\n")
    sample = Path(vivit.__file__).parent / "assets" / "sample_clip.npz"
    for weights, what, model in (
        (png, "is a PNG image, not a checkpoint", ["--model", "vivit_demo"]),
        (page, "is an HTML/XML page (<!DOCTYPE html>", ["--model", "vivit_demo"]),
        (labels, "is a CSV/TSV text file (path,label), not a checkpoint", []),
        (png, "is a PNG image, not a checkpoint", []),
    ):
        code, out, err = run_cli("predict", sample, *model, "--weights", weights)
        line = one_error_line(err, str(weights), what, "Flax msgpack checkpoint, or a Google .npz ViT")
        assert code == 1 and out == "" and "download" not in line and "local-dir:" not in line, line
    for n in range(60, 200):  # header lengths 0x80-0x8F among them
        save_file({"w" * n: torch.zeros(1)}, tmp_path / "weights.st")
        (length,) = struct.unpack("<Q", (tmp_path / "weights.st").read_bytes()[:8])
        assert identify_format(tmp_path / "weights.st") == "safetensors", hex(length)


def test_a_pickle_without_model_name_is_refused_as_pickle_not_asked_for_a_name(tmp_path, run_cli, one_error_line):
    """attack21: `vivit predict --weights w.pt` said "local-dir:w.pt does not say which model it holds ...; give
    --model NAME", and with --model the same file was then refused as pickle: say that at once."""
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    sample = Path(vivit.__file__).parent / "assets" / "sample_clip.npz"
    code, out, err = run_cli("predict", sample, "--weights", tmp_path / "w.pt")
    line = one_error_line(err, f"{tmp_path / 'w.pt'}: pickled checkpoints (.pt, .pth, .bin, ...) are refused")
    assert code == 1 and out == "" and "--model" not in line and "local-dir:" not in line
    (tmp_path / "cfgless").mkdir()
    vivit.create_model("vivit_demo", pretrained=True).save_pretrained(tmp_path / "cfgless")
    (tmp_path / "cfgless" / "config.json").unlink()
    from safetensors.torch import load_file, save_file

    save_file(load_file(tmp_path / "cfgless" / "model.safetensors"), tmp_path / "bare.safetensors")  # no metadata
    code, out, err = run_cli("predict", sample, "--weights", tmp_path / "bare.safetensors")
    one_error_line(err, f"--weights: {tmp_path / 'bare.safetensors'} does not say which model it holds", "--model NAME")
    assert code == 2 and "local-dir:" not in err
