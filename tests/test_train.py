"""vivit.train, vivit.recipes, vivit.optim's training pieces: Scenic's values, the loop, bad input.

The runs use a tiny Model 1 on the moving-disc clips of `examples/finetune.py` (8 frames, 32x32,
four directions of motion) stored as uint8 `.npy` arrays, so a whole run takes a second or two.
Helpers here (`write_clips`, `TINY`, `tiny_run`) are shared by the other `test_train_*.py` files.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from video_datasets import DIRECTIONS, disc_clips

import vivit
from vivit.data.temporal import perturb_time, temporal_order
from vivit.optim import ModelEmaV3, create_optimizer, set_learning_rate, warmup_cosine_lr
from vivit.recipes import RECIPES, Recipe, get_recipe, list_recipes
from vivit.train import StepSampler, train, train_transform

ROOT = Path(__file__).resolve().parents[1]
#: A tiny ViViT (Model 1, 2 blocks of width 64) for 8 frames of 32x32: about 0.1M parameters.
TINY = {"img_size": 32, "num_frames": 8, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_dim": 128}
#: Recipe overrides that fit the tiny clips: no colour augmentation (it arrives with the trainlib
#: branch), frames one apart, a global batch of 8, one view, evaluation every epoch.
TINY_SETTINGS = {
    "color_prob": 0.0,
    "color_drop_prob": 0.0,
    "randaugment": None,
    "frame_stride": 1,
    "global_batch": 8,
    "test_views": (1, 1),
    "eval_every": 1,
}


def write_clips(root: Path, n: int, seed: int, *, tint: bool = False) -> list[tuple[Path, str]]:
    """`root/<direction>/c<i>.npy`: `n` moving-disc clips (uint8 (8, 32, 32, 3)) and their labels.

    With `tint`, each class also has its own colour cast (red, green, blue, darker): learnable from
    any single frame in a few steps, so short runs show the loop learning.
    """
    clips, labels = disc_clips(n, frames=8, seed=seed)
    out = []
    for i, (clip, label) in enumerate(zip(clips, labels, strict=True)):
        if tint:
            shifted = clip.astype(np.int16)
            if label < 3:
                shifted[..., label] += 70
            else:
                shifted -= 50
            clip = np.clip(shifted, 0, 255).astype(np.uint8)
        path = root / DIRECTIONS[label] / f"c{i:03d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, clip)
        out.append((path, DIRECTIONS[label]))
    return out


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train/` (32 clips) and `val/` (8 clips) class folders."""
    root = tmp_path_factory.mktemp("discs")
    write_clips(root / "train", 32, seed=0)
    write_clips(root / "val", 8, seed=1)
    return root


@pytest.fixture(scope="module")
def tinted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, with a colour cast per class (see `write_clips`)."""
    root = tmp_path_factory.mktemp("tinted")
    write_clips(root / "train", 32, seed=0, tint=True)
    write_clips(root / "val", 8, seed=1, tint=True)
    return root


def tiny_run(data: Path, out: Path, **kwargs: Any) -> vivit.train.TrainResult:
    """`train` on the disc folders with the tiny model (`kwargs` override everything)."""
    args: dict[str, Any] = {
        "recipe": "ek100",
        "model_args": TINY,
        "batch_size": 4,
        "workers": 0,
        "epochs": 2,
        "lr": 0.05,
        "log_every": 1,
        "checkpoint_every": 1000,
        "tensorboard": False,
        **TINY_SETTINGS,
    }
    args.update(kwargs)
    val = args.pop("val", data / "val")
    return train(data / "train", val, args.pop("model", "vivit_ti_st"), out, **args)


def log_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- recipes: Scenic's values
def test_recipes_carry_scenic_config_values_with_their_sources():
    """Each value against google-research/scenic `scenic/projects/vivit/configs/*` as read for this change."""
    k400, ek, ssv2 = RECIPES["k400"], RECIPES["ek100"], RECIPES["ssv2"]
    for recipe in (k400, ek, ssv2):  # shared by all three configs
        assert (recipe.optimizer, recipe.momentum, recipe.weight_decay, recipe.grad_clip) == ("sgd", 0.9, 0.0, 1.0)
        assert (recipe.global_batch, recipe.warmup_epochs, recipe.scale) == (64, 2.5, (0.9, 1.33))
        assert recipe.cutmix_alpha == 0 and recipe.ema_decay == 0 and recipe.layer_decay is None
        assert recipe.test_views == (4, 3) and recipe.eval_every == 5
        assert "configs/" in recipe.reference and recipe.source("lr").startswith(recipe.reference)
    assert (k400.lr, k400.epochs, k400.frame_stride, k400.resize_size, k400.crop_size) == (0.1, 30, 2, 256, 224)
    assert (k400.color_prob, k400.color_drop_prob, k400.randaugment, k400.hflip) == (0.8, 0.1, None, 0.5)
    assert (k400.drop_path_rate, k400.label_smoothing, k400.mixup_alpha) == (0.0, 0.0, 0.0)
    assert k400.lr_by_model == (("FactorizedEncoderViViT", 768, 0.05),)  # vivit_base_factorised_encoder.py
    assert (ek.lr, ek.epochs, ek.frame_stride, ek.randaugment, ek.color_prob, ek.hflip) == (
        0.5,
        50,
        1,
        (2, 15),
        0.0,
        0.5,
    )
    assert (ek.drop_path_rate, ek.label_smoothing, ek.mixup_alpha) == (0.2, 0.2, 0.1)
    assert (ssv2.lr, ssv2.epochs, ssv2.resize_size, ssv2.crop_size, ssv2.hflip) == (0.4, 35, 288, 256, 0.0)
    assert (ssv2.randaugment, ssv2.drop_path_rate, ssv2.label_smoothing, ssv2.mixup_alpha) == ((2, 20), 0.3, 0.3, 0.3)
    assert "0.5" in ssv2.source("lr") and "code is followed" in ssv2.source("lr")  # paper vs code, said
    assert "random_flip" in ssv2.source("hflip")
    assert list_recipes() == ["ek100", "k400", "ssv2"]


def test_recipe_lr_per_model_and_overrides():
    k400 = get_recipe("k400")
    assert k400.lr_for(vivit.create_model("vivit_b_fe", num_classes=2)) == 0.05  # ViViT-B Model 2
    assert k400.lr_for(vivit.create_model("vivit_b_st", num_classes=2)) == 0.1
    changed = k400.replace(lr=0.3, label_smoothing=0.1)
    assert changed.lr_for(vivit.create_model("vivit_b_fe", num_classes=2)) == 0.3  # an explicit rate wins
    assert changed.source("lr") == "overridden" and changed.source("epochs") == k400.source("epochs")
    with pytest.raises(ValueError, match=r"unknown recipe settings \['learning_rate'\]; the settings are: lr,"):
        k400.replace(learning_rate=0.1)
    with pytest.raises(ValueError, match=r"randaugment and colour augmentation \(color_prob, color_drop_prob\) cannot"):
        k400.replace(randaugment=(2, 15))
    with pytest.raises(ValueError, match="unknown recipe 'kinetics'; recipes: ek100, k400, ssv2"):
        get_recipe("kinetics")
    with pytest.raises(ValueError, match="hflip must be a probability"):
        k400.replace(hflip=2.0)


def test_recipe_preprocessing_keeps_scenic_ratios_at_other_sizes():
    assert RECIPES["k400"].data_config((224, 224), 32) == {
        "input_size": (3, 32, 224, 224),
        "frame_stride": 2,
        "resize_size": 256,
        "crop_size": (224, 224),
        "test_views": (4, 3),
    }
    assert RECIPES["ssv2"].data_config((256, 256), 32)["resize_size"] == 288
    assert RECIPES["ssv2"].data_config((112, 112), 16)["resize_size"] == 126  # 112 * 288 / 256


# ---------------------------------------------------------------- schedule, optimiser, EMA
def _scenic_compound_lr(step: np.ndarray, base: float, warmup: int, total: int) -> np.ndarray:
    """A numpy transcription of Scenic's `compound_lr_scheduler` for 'constant * cosine_decay * linear_warmup'
    (scenic/train_lib/lr_schedules.py: linear_warmup_scheduler, the cosine_decay branch, cosine_decay_scheduler)."""
    ratio = np.full(step.shape, base, dtype=np.float64)
    ratio *= np.minimum(1.0, 0.0 + step * (1.0 - 0.0) / warmup)
    adjusted_step = np.maximum(0.0, step - (warmup + 0.0))
    steps_per_cycle = total - int(warmup / (total / total))
    progress = adjusted_step / float(steps_per_cycle)
    progress -= np.floor(progress)
    ratio *= np.maximum(0.0, 0.5 * 1.0 * (1.0 + np.cos(np.pi * (progress % 1.0))))
    return ratio.astype(np.float32)


def test_schedule_is_scenics_compound_warmup_cosine():
    steps_per_epoch = 214834 // 64  # the Kinetics-400 config's arithmetic
    warmup, total = int(2.5 * steps_per_epoch), 30 * steps_per_epoch
    steps = np.arange(total)
    ours = np.array([warmup_cosine_lr(int(s), 0.1, warmup, total) for s in steps])
    np.testing.assert_allclose(ours, _scenic_compound_lr(steps, 0.1, warmup, total), rtol=2e-6, atol=1e-9)
    assert warmup_cosine_lr(0, 0.1, warmup, total) == 0.0  # Scenic's first update has rate 0
    assert warmup_cosine_lr(warmup, 0.1, warmup, total) == pytest.approx(0.1)
    assert warmup_cosine_lr(warmup + (total - warmup) // 2, 0.1, warmup, total) == pytest.approx(0.05, rel=1e-4)
    assert warmup_cosine_lr(5, 0.1, 10, 8) == pytest.approx(0.05)  # warm-up longer than the run: no cosine


def test_sgd_is_flax_momentum_and_adamw_has_layer_decay_groups():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in layer.parameters()]
    opt = create_optimizer(layer, "sgd", lr=0.1)
    momentum = [torch.zeros_like(p) for p in start]
    weights = [p.clone() for p in start]
    for step in range(3):  # flax.optim.Momentum(beta=0.9): m = 0.9 m + g; w = w - lr m
        opt.zero_grad()
        layer(torch.randn(4, 3, generator=torch.Generator().manual_seed(step))).square().sum().backward()
        for i, p in enumerate(layer.parameters()):
            momentum[i] = 0.9 * momentum[i] + p.grad
            weights[i] = weights[i] - 0.1 * momentum[i]
        opt.step()
    for p, w in zip(layer.parameters(), weights, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-6)  # float rounding only
    model = vivit.create_model("vivit_ti_st", **TINY, num_classes=3)
    adamw = create_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    assert isinstance(adamw, torch.optim.AdamW)
    scales = sorted({g["lr_scale"] for g in adamw.param_groups})
    assert scales == [0.5**k for k in range(3, -1, -1)]  # stem, 2 blocks, head
    set_learning_rate(adamw, 2e-3)
    assert sorted({g["lr"] for g in adamw.param_groups}) == [2e-3 * s for s in scales]
    assert {g["weight_decay"] for g in adamw.param_groups if any(p.ndim == 1 for p in g["params"])} == {0.0}
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        create_optimizer(model, "lamb", lr=0.1)


def test_ema_follows_timms_rule():
    model = torch.nn.Linear(2, 2)
    ema = ModelEmaV3(model, decay=0.9)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=5)
    torch.testing.assert_close(ema.module.weight, before + 0.1 * (model.weight.detach() - before))
    ema.update(model, step=1)  # timm: the first update after update_after_step copies
    torch.testing.assert_close(ema.module.weight, model.weight.detach())
    warm = ModelEmaV3(model, decay=0.9999, use_warmup=True, warmup_power=0.75)
    assert warm.get_decay(101) == pytest.approx(1 - (1 + 100) ** -0.75)


# ---------------------------------------------------------------- the sample order
def test_sample_order_splits_the_same_batches_over_ranks_as_over_accumulation():
    one = StepSampler(40, seed=3, batch_size=2, accum_steps=4, world_size=1, rank=0)
    two = [StepSampler(40, seed=3, batch_size=2, accum_steps=2, world_size=2, rank=r) for r in range(2)]
    one.set_position(epoch=1)
    for s in two:
        s.set_position(epoch=1)
    single = list(one)
    assert len(single) == 40 and sorted(single) == list(range(40))  # 5 steps of 8 = the whole epoch
    per_rank = [list(s) for s in two]
    for step in range(5):  # step s: rank 0 takes micro-batches 0-1, rank 1 micro-batches 2-3 of the same 8
        block = single[step * 8 : (step + 1) * 8]
        assert per_rank[0][step * 4 : (step + 1) * 4] == block[:4]
        assert per_rank[1][step * 4 : (step + 1) * 4] == block[4:]
    assert single != list(StepSampler(40, 3, 2, 4, 1, 0))  # epoch 0 is another permutation
    one.set_position(epoch=1, start_step=3)  # resuming mid-epoch skips the consumed steps without reading them
    assert list(one) == single[24:] and len(one) == 16


def test_temporal_perturbations():
    clip = torch.arange(2 * 3 * 5).float().reshape(2, 3, 5, 1, 1).expand(2, 3, 5, 2, 2)  # (V, C, T, H, W)
    frames = lambda x: x[0, 0, :, 0, 0].tolist()  # noqa: E731
    assert frames(perturb_time(clip, "reverse")) == frames(clip)[::-1]
    assert frames(perturb_time(clip, "middle")) == [frames(clip)[2]] * 5
    order = temporal_order(5, "shuffle", torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(5)) and order.tolist() != list(range(5))
    shuffled = perturb_time(clip, "shuffle", torch.Generator().manual_seed(0))
    assert frames(shuffled) == [frames(clip)[i] for i in order] and perturb_time(clip, "none") is clip
    assert perturb_time(torch.zeros(5, 4, 4, 3), "reverse", time_dim=0).shape == (5, 4, 4, 3)
    with pytest.raises(ValueError, match="unknown temporal perturbation 'backwards'"):
        temporal_order(5, "backwards")


def test_recipe_values_that_cannot_work_are_refused_and_colour_drop_alone_is_applied():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.5"):
        RECIPES["k400"].replace(momentum=1.5)
    with pytest.raises(ValueError, match="resize_size 10 is smaller than crop_size 224"):
        RECIPES["k400"].replace(resize_size=10)
    with pytest.raises(ValueError, match=r"cannot both be on: .*turn one off"):
        RECIPES["ek100"].replace(color_drop_prob=0.1)  # RandAugment on: before, the colour drop was dropped silently
    cfg = vivit.resolve_data_config({"input_size": (3, 8, 32, 32), "resize_size": 37})
    drop_only = train_transform(cfg, RECIPES["k400"].replace(color_prob=0.0, color_drop_prob=1.0))
    clip = np.zeros((8, 40, 40, 3), np.uint8)
    clip[..., 0] = 200  # red
    out = drop_only(clip, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # grey: the drop was applied


def test_train_transform_asks_only_for_what_the_recipe_turns_on():
    cfg = vivit.resolve_data_config({"input_size": (3, 8, 32, 32), "resize_size": 37})
    plain = train_transform(cfg, RECIPES["k400"].replace(color_prob=0.0, color_drop_prob=0.0, hflip=0.0))
    assert plain.scale == (0.9, 1.33) and plain.hflip == 0.0
    try:
        vivit.create_transform(cfg, train=True, color_prob=0.8, color_drop_prob=0.1)
    except TypeError:  # before the trainlib merge: one clear error instead of a TypeError deep inside
        with pytest.raises(ValueError, match=r"recipe 'k400' asks for color_prob=0.8, color_drop_prob=0.1"):
            train_transform(cfg, RECIPES["k400"])
    else:
        coloured = train_transform(cfg, RECIPES["k400"])
        assert coloured(np.zeros((8, 40, 40, 3), np.uint8)).shape == (3, 8, 32, 32)


# ---------------------------------------------------------------- whole runs
@pytest.mark.slow
def test_a_run_learns_and_writes_loadable_models(tinted, tmp_path, one_thread):
    out = tmp_path / "run"
    events: list[dict[str, Any]] = []
    result = tiny_run(tinted, out, epochs=8, lr=0.1, progress=events.append, recipe="k400", ema_decay=0.5)
    assert (result.steps, result.epochs, result.resumed_from, result.num_failed) == (32, 8, None, 0)
    lines = log_lines(out)
    train_lines = [line for line in lines if line["event"] == "train"]
    assert [line["step"] for line in train_lines] == list(range(1, 33))
    assert train_lines[0]["lr"] == 0.0 and max(line["lr"] for line in train_lines) == pytest.approx(0.1)
    assert abs(train_lines[0]["loss"] - math.log(4)) < 1e-5  # a new zero head over four classes
    assert np.mean([x["loss"] for x in train_lines[-8:]]) < 0.5 * math.log(4)  # measured: 1.39 -> 0.1
    evals = [line for line in lines if line["event"] == "eval"]
    assert [e["epoch"] for e in evals] == list(range(1, 9)) and all(e["num_videos"] == 8 for e in evals)
    assert result.metrics == {k: evals[-1][k] for k in result.metrics}
    best = max(evals, key=lambda e: e["top1"])
    assert result.best["value"] == best["top1"] and result.best["epoch"] == best["epoch"]
    assert result.metrics["top1"] == 100.0
    # the colour cast decides these labels: destroying time changes nothing, and the check says so
    assert result.temporal_check == {"normal": 100.0, "shuffled": 100.0, "reversed": 100.0, "middle_frame": 100.0}
    assert [e["event"] for e in events if e["event"] not in ("step", "log")] == [
        "start",
        *["eval"] * 8,
        "temporal_check",
        "end",
    ]
    # best/ and last/ are complete vivit models with labels and the evaluation preprocessing
    model = vivit.create_model(f"local-dir:{out / 'best'}", pretrained=True)
    cfg = model.pretrained_cfg
    assert list(cfg["label_names"]) == sorted(DIRECTIONS) and model.num_classes == 4
    assert (
        tuple(cfg["input_size"]) == (3, 8, 32, 32) and cfg["frame_stride"] == 1 and tuple(cfg["test_views"]) == (1, 1)
    )
    metrics = vivit.evaluate.evaluate(tinted / "val", model, workers=0).metrics
    assert metrics["top1"] == result.best["value"]  # vivit evaluate scores best/ as the job did
    last = load_file(out / "last" / "model.safetensors")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(last[k], state["ema"][k]) for k in last)  # with EMA, the EMA weights are saved
    assert json.loads((out / "result.json").read_text())["steps"] == 32
    again = tiny_run(tinted, out, epochs=8, lr=0.1, recipe="k400", ema_decay=0.5)  # same command: done already
    assert again.already_complete and again.best == result.best and again.steps == 32


@pytest.mark.slow
def test_split_labels_train_a_two_head_model(tmp_path, one_thread):
    """A list with `path,noun,verb` columns: one softmax per column, Scenic's mean of the two losses,
    noun / verb / action metrics."""
    paths = write_clips(tmp_path / "clips", 24, seed=2)
    rows = ["path,noun,verb"] + [f"{p},{'disc' if i % 3 else 'square'},{label}" for i, (p, label) in enumerate(paths)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("\n".join(rows[:9]) + "\n")
    result = train(
        tmp_path / "train.csv",
        tmp_path / "val.csv",
        "vivit_ti_st",
        tmp_path / "run",
        recipe="ek100",
        model_args=TINY,
        batch_size=4,
        workers=0,
        epochs=1,
        log_every=1,
        tensorboard=False,
        **TINY_SETTINGS,
    )
    assert {"noun_top1", "verb_top1", "action_top1", "action_top5"} <= set(result.metrics)
    assert result.best["metric"] == "action_top1"
    model = vivit.create_model(f"local-dir:{tmp_path / 'run' / 'last'}", pretrained=True)
    cfg = model.pretrained_cfg
    assert tuple(cfg["class_splits"]) == (2, 4) and tuple(cfg["split_names"]) == ("noun", "verb")
    assert list(cfg["label_names"]) == ["disc", "square", *sorted(DIRECTIONS)] and model.num_classes == 6
    first = log_lines(tmp_path / "run")[0]
    assert abs(first["loss"] - (math.log(2) + math.log(4)) / 2) < 1e-5  # mean of the two heads' losses at a zero head


@pytest.mark.slow
def test_gradient_checkpointing_and_bf16_run(discs, tmp_path, one_thread):
    plain = tiny_run(discs, tmp_path / "a", epochs=1, temporal_check=False)
    checkpointed = tiny_run(discs, tmp_path / "b", epochs=1, temporal_check=False, grad_checkpointing=True)
    a, b = (load_file(tmp_path / x / "last" / "model.safetensors") for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same drop-path masks, same gradients, same weights
    assert plain.metrics == checkpointed.metrics
    bf16 = tiny_run(discs, tmp_path / "c", epochs=1, temporal_check=False, precision="bf16")
    assert bf16.steps == 4 and all(math.isfinite(x["loss"]) for x in log_lines(tmp_path / "c") if "loss" in x)


# ---------------------------------------------------------------- bad input: one clear error, nothing lost
def test_bad_settings_are_refused_before_any_work(discs, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown recipe 'kinetics'"):
        tiny_run(discs, out, recipe="kinetics")
    with pytest.raises(ValueError, match=r"unknown recipe settings \['mixup'\]"):
        tiny_run(discs, out, mixup=0.2)
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        tiny_run(discs, out, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        tiny_run(discs, out, precision="int8")
    with pytest.raises(ValueError, match="give accum_steps or global_batch, not both"):
        tiny_run(discs, out, accum_steps=2)
    with pytest.raises(ValueError, match="cannot write .*settings.json: the folder /proc does not take new files"):
        tiny_run(discs, Path("/proc/vivit_run"))
    assert not out.exists()


def test_out_that_holds_something_else_is_refused(discs, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not empty and holds no vivit run .*notes.txt.*give a new or empty folder"):
        tiny_run(discs, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        tiny_run(discs, tmp_path / "file")


def test_a_second_run_in_a_folder_in_use_is_refused(discs, tmp_path, one_thread):
    """Two runs in one folder interleaved their log lines and raced on the checkpoint (both ended 'fine')."""
    import filelock

    out = tmp_path / "run"
    out.mkdir()
    with filelock.FileLock(str(out / ".lock")):  # what a running `vivit train` holds
        with pytest.raises(ValueError, match=r"another vivit train is running in .*run \(it holds .*\.lock\)"):
            tiny_run(discs, out, val=None)
    assert [p.name for p in out.iterdir()] == [".lock"]  # nothing written
    assert tiny_run(discs, out, val=None, epochs=1, temporal_check=False).steps == 4  # free again


def test_a_settings_record_that_is_not_an_object_is_refused(discs, tmp_path, one_thread):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "settings.json").write_text("[]")
    with pytest.raises(ValueError, match=r"settings.json holds JSON list, not the settings record of a vivit run"):
        tiny_run(discs, tmp_path / "run", val=None)
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name != ".lock"] == ["settings.json"]


def test_labels_that_do_not_fit_are_refused(discs, tmp_path, one_thread):
    with pytest.raises(
        ValueError, match=r"num_classes=5 does not match the 4 classes of the training set \(down, left"
    ):
        tiny_run(discs, tmp_path / "a", model_args={**TINY, "num_classes": 5})
    (tmp_path / "val" / "sideways").mkdir(parents=True)
    np.save(tmp_path / "val" / "sideways" / "x.npy", np.zeros((8, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="1 label not among the 4 known classes: 'sideways'"):
        tiny_run(discs, tmp_path / "b", val=tmp_path / "val")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_empty_small_and_unreadable_training_sets(discs, tmp_path, one_thread):
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no videos in its class folders"):
        tiny_run(tmp_path / "empty", tmp_path / "run", val=None)
    write_clips(tmp_path / "small" / "train", 6, seed=0)
    with pytest.raises(ValueError, match="the training set has 6 videos, fewer than one global batch of 8"):
        tiny_run(tmp_path / "small", tmp_path / "run", val=None)
    for i in range(12):
        path = tmp_path / "broken" / "train" / ("a" if i % 2 else "b") / f"v{i}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="the training set looks unreadable: 10 videos in a row could not be read"):
        tiny_run(tmp_path / "broken", tmp_path / "run", val=None)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_mixup_with_one_clip_per_forward_pass_says_that_nothing_is_mixed(discs, tmp_path, one_thread):
    """Mixup pairs the clips of one forward pass; with batch_size 1 the recipe's mixup silently did nothing."""
    with pytest.warns(UserWarning, match=r"with batch_size 1 no clip has a partner: nothing is mixed"):
        tiny_run(discs, tmp_path / "run", val=None, batch_size=1, epochs=1, temporal_check=False)


def test_a_training_set_of_one_class_is_refused(discs, tmp_path, one_thread):
    """A new head over one class has loss 0 and gradient 0 whatever the clips: the run would learn nothing."""
    (tmp_path / "one" / "train").mkdir(parents=True)
    shutil.copytree(discs / "train" / "left", tmp_path / "one" / "train" / "left")
    with pytest.raises(ValueError, match=r"the training set has one class \('left'\): a classifier needs at least 2"):
        tiny_run(tmp_path / "one", tmp_path / "run", val=None, global_batch=4)
    assert not (tmp_path / "run").exists()


_FILE_SIZE_LIMIT = """
import resource, sys, runpy
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG
sys.argv[0] = "vivit"
runpy.run_module("vivit", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_that_fails_is_one_clear_line_and_the_run_resumes(discs, tmp_path, one_error_line):
    """A real failed write (the file size limit, as a full disk fails it): torch.save and safetensors report it as
    RuntimeError / SafetensorError; the user gets one line, the previous checkpoint and no temporary leftovers."""
    argv = [str(discs / "train"), "--model", "vivit_ti_st", "--recipe", "ek100", "--batch-size", "4", "--workers", "0"]
    argv += ["--epochs", "2", "--lr", "0.05", "--no-tensorboard", "--color-prob", "0", "--randaugment", "none"]
    argv += ["--frame-stride", "1", "--global-batch", "8"]
    for key, value in TINY.items():
        argv += ["--override", f"{key}={json.dumps(value)}"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

    def vivit_train(out: Path, limit: int, every: int = 2) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", _FILE_SIZE_LIMIT, str(limit), "train", *argv, "--out", str(out)]
        command += ["--checkpoint-every", str(every)]  # a free setting: another value still resumes
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)

    reference = tmp_path / "reference"
    assert vivit_train(reference, 2**40).returncode == 0
    model_bytes = (reference / "last" / "model.safetensors").stat().st_size
    checkpoint_bytes = (reference / "checkpoint.pt").stat().st_size
    assert model_bytes < checkpoint_bytes
    # the checkpoint fails (at step 2, the first write); the model folder last/ (the first write at the end of
    # epoch 1 when checkpoints are only written there)
    for name, limit, every, fragment in (
        ("checkpoint", (model_bytes + checkpoint_bytes) // 2, 2, "checkpoint.pt would be larger than this process"),
        ("model", model_bytes // 2, 1000, "last would be larger than this process may write"),
    ):
        out = tmp_path / name
        done = vivit_train(out, limit, every)
        assert done.returncode == 1, done.stderr[-2000:]
        line = one_error_line(done.stderr.split("\n", 1)[1], fragment, "(the file size limit, ulimit -f)")
        assert "re-run the same command to resume" in line
        leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"]
        assert not leftovers  # no temporary file or folder left
        done = vivit_train(out, 2**40)
        assert done.returncode == 0, done.stderr[-2000:]
        want, got = (load_file(p / "last" / "model.safetensors") for p in (reference, out))
        assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(discs, tmp_path, one_thread):
    out = tmp_path / "run"
    tiny_run(discs, out, epochs=1, temporal_check=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(
        ValueError,
        match=r"holds a run with other settings; this call has .*settings.lr 0.1 \(the run in the folder: 0.05\)",
    ):
        tiny_run(discs, out, epochs=1, lr=0.1)
    with pytest.raises(ValueError, match=r"seed 1 \(the run in the folder: 0\)"):
        tiny_run(discs, out, epochs=1, seed=1)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    # the checkpoint of another run dropped into the folder is refused as well
    other = tmp_path / "other"
    tiny_run(discs, other, epochs=1, temporal_check=False, label_smoothing=0.0)
    shutil.copy(other / "checkpoint.pt", out / "checkpoint.pt")
    with pytest.raises(ValueError, match="was written by a run with other settings"):
        tiny_run(discs, out, epochs=1, temporal_check=False)
    (out / "checkpoint.pt").write_bytes(b"\x80garbage")
    with pytest.raises(ValueError, match="cannot be read as a vivit training checkpoint"):
        tiny_run(discs, out, epochs=1, temporal_check=False)


def test_a_loss_that_becomes_nan_stops_the_run_and_says_what_to_do(
    discs, tmp_path, run_cli, one_error_line, one_thread
):
    out = tmp_path / "run"
    argv = [discs / "train", "--model", "vivit_ti_st", "--recipe", "ek100", "--batch-size", "4", "--workers", "0"]
    argv += ["--epochs", "2", "--lr", "1e30", "--grad-clip", "none", "--no-tensorboard", "--randaugment", "none"]
    argv += ["--frame-stride", "1", "--global-batch", "8", "--out", out, "--quiet", "--log-every", "100"]
    for key, value in TINY.items():
        argv += ["--override", f"{key}={json.dumps(value)}"]
    code, _, err = run_cli("train", *argv)
    assert code == 1
    one_error_line(err, "became nan by step 4", "Lower the learning rate", "in a new folder")  # the 1st epoch end
    assert not (out / "last").exists() and not (out / "checkpoint.pt").exists()  # before: last/ held NaN weights


@pytest.mark.slow
def test_a_damaged_checkpoint_with_our_marker_is_one_clear_error(discs, tmp_path, one_thread):
    """The format marker and the settings digest are easy to keep while the rest is damaged or edited."""
    out = tmp_path / "run"
    tiny_run(discs, out, epochs=1, val=None, checkpoint_every=2)
    good = torch.load(out / "checkpoint.pt", weights_only=True)
    (out / "result.json").unlink()
    for damage in (
        lambda c: c.pop("model"),
        lambda c: c.update(step=-5),
        lambda c: c.update(step=10**9),  # was taken as a finished run
        lambda c: c["model"].update({"head.weight": torch.zeros(7, 7)}),
        lambda c: c.update(best="x"),
    ):
        state = dict(good)
        state["model"] = dict(good["model"])
        damage(state)
        torch.save(state, out / "checkpoint.pt")
        with pytest.raises(ValueError, match=r"checkpoint.pt cannot be resumed from \(.*\); move it away"):
            tiny_run(discs, out, epochs=1, val=None, checkpoint_every=2)
    torch.save(good, out / "checkpoint.pt")
    assert tiny_run(discs, out, epochs=1, val=None, checkpoint_every=2).resumed_from == 4


@pytest.mark.slow
def test_no_space_while_checkpointing_keeps_the_previous_checkpoint(discs, tmp_path, monkeypatch, one_thread):
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(obj["step"])
        if len(calls) == 3:  # half the file reaches the disk, then the disk is full
            with open(f, "wb") as fh:
                fh.write(b"\x00" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        OSError, match=r"no space left on the device while writing .*checkpoint.pt; the previous checkpoint"
    ):
        tiny_run(discs, out, epochs=2, checkpoint_every=2, temporal_check=False)
    monkeypatch.setattr(torch, "save", real_save)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert calls == [2, 4, 6] and state["step"] == 4  # the checkpoint of step 4 is intact
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]  # no half-written file left
    result = tiny_run(discs, out, epochs=2, checkpoint_every=2, temporal_check=False)  # resumes from step 4
    assert result.resumed_from == 4 and result.steps == 8


def test_cli_train_show_lists_values_with_sources():
    done = subprocess.run(
        [sys.executable, "-m", "vivit", "train", "--recipe", "ssv2", "--lr", "0.2", "--show"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("source: scenic/projects/vivit/configs/something_something_v2/")
    table = {line.split()[0]: line for line in lines[2:]}
    assert set(table) == set(Recipe.fields())
    assert "0.2" in table["lr"] and table["lr"].endswith("overridden")
    assert "(2, 20)" in table["randaugment"] and "rand_augment_magnitude = 20" in table["randaugment"]
    assert "288" in table["resize_size"] and "min_resize = 288" in table["resize_size"]
    for argv, message in (
        (["--recipe", "kinetics"], "argument --recipe: invalid choice: 'kinetics'"),
        (["--label-smoothing", "lots", "--show"], "--label-smoothing: expected float, got 'lots'"),
        (["--mixin", "0.2", "--show"], "unrecognized argument: --mixin"),
        (["x", "--model", "vivit_ti_st"], "--out is required (or --show)"),
        (["x", "--model", "vivit_tiny", "--out", "o"], "unknown model 'vivit_tiny'"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "vivit", "train", *argv], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2 and done.stderr.count("vivit: error:") == 1 and message in done.stderr, done.stderr


def test_cli_option_combinations_that_cannot_work_are_usage_errors(discs, tmp_path, run_cli, one_error_line):
    """Refused before any work, exit 2; before this, --global-batch beside --accum-steps was silently ignored."""
    base = [discs / "train", "--model", "vivit_demo", "--out", tmp_path / "run", "--workers", "0"]
    for extra, fragment in (
        (["--accum-steps", "2", "--global-batch", "16"], "give --accum-steps or --global-batch, not both"),
        (["--batch-size", "3"], "the global batch 64 is not a multiple of --batch-size 3 x 1 rank(s)"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
    ):
        code, _, err = run_cli("train", *base, *extra)
        assert code == 2, err
        one_error_line(err, fragment)
    assert not (tmp_path / "run").exists()


def test_every_recipe_setting_has_a_command_line_option():
    from vivit.cli import train

    assert set(train.RECIPE_OPTIONS) == set(Recipe.fields())


@pytest.mark.slow
def test_evaluate_temporal_check_sees_that_the_demo_uses_motion(tmp_path, run_cli, one_thread):
    """vivit_demo learned which way a disc moves: reversed clips flip its answers (right <-> left, down <->
    up), shuffled and frozen clips leave it guessing. `vivit evaluate --temporal-check` shows it."""
    write_clips(tmp_path, 64, seed=5)
    model = vivit.create_model("vivit_demo", pretrained=True)
    metrics = vivit.evaluate.evaluate(tmp_path, model, workers=0, temporal_check=True).metrics
    check = metrics["temporal_check"]  # measured: 98.4, shuffled 40.6, reversed 1.6, middle frame 31.2
    assert check["normal"] == metrics["top1"] >= 90
    assert check["reversed"] <= 10 and check["shuffled"] <= 60 and check["middle_frame"] <= 50
    code, out, _ = run_cli("evaluate", tmp_path, "--model", "vivit_demo", "--workers", "0", "--temporal-check")
    assert code == 0 and "temporal check, top-1: normal 98.44%, shuffled" in out
