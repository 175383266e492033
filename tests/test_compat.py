"""The models work wherever a PyTorch model must: torch.compile, torch.export, DDP, half precision.

All models are tiny (32x32 frames, 8x8 patches, 8 frames, width 32) so the whole file runs in well
under a minute on two CPU cores.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.export import Dim
from torch.nn.parallel import DistributedDataParallel

from vivit import (
    FactorizedDotProductViViT,
    FactorizedEncoderViViT,
    FactorizedSelfAttentionViViT,
    SpatioTemporalViViT,
)

CLASSES = [SpatioTemporalViViT, FactorizedEncoderViViT, FactorizedSelfAttentionViViT, FactorizedDotProductViViT]
IDS = ["st", "fe", "fsa", "fdp"]
TINY = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=2, num_heads=4, num_classes=5)
SHAPE = (2, 3, 8, 32, 32)
# a clip of another size: token grid (6, 5, 6) instead of (4, 4, 4), so every position table is resampled
OTHER_SHAPE = (2, 3, 12, 40, 48)
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(cls, seed: int = 0, **kwargs):
    """A tiny model of `cls` (Models 1 and 2 with a class token, 3 and 4 with average pooling)."""
    torch.manual_seed(seed)
    args = {**TINY, "global_pool": "token" if cls in (SpatioTemporalViViT, FactorizedEncoderViViT) else "avg"}
    if cls is FactorizedEncoderViViT:
        args["temporal_depth"] = 2
    return cls(**{**args, **kwargs})


def _video(shape=SHAPE, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.compile
def test_compile_fullgraph_no_graph_breaks(cls):
    """fullgraph=True raises on any graph break, whatever the backend; aot_eager also traces through
    AOTAutograd (functionalization, decompositions) without inductor's C++ compile time."""
    model = _tiny(cls, depth=1, **({"temporal_depth": 1} if cls is FactorizedEncoderViViT else {})).eval()
    video = _video()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected, got = model(video), compiled(video)
    assert got.shape == (2, 5)
    assert _max_diff(got, expected) <= TOL

    # dynamic_size: the position tables are resampled inside the compiled graph
    dynamic = _tiny(cls, depth=1, dynamic_size=True, **({"temporal_depth": 1} if cls is FactorizedEncoderViViT else {}))
    dynamic.eval()
    other = _video(OTHER_SHAPE)
    torch._dynamo.reset()
    compiled = torch.compile(dynamic, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected, got = dynamic(other), compiled(other)
    assert got.shape == (2, 5)
    assert _max_diff(got, expected) <= TOL
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside inductor
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor on CPU needs a C++ compiler"
)
@pytest.mark.compile
def test_compile_inductor_model1():
    """One real inductor compile (generated C++ kernels): same logits as eager."""
    model = _tiny(SpatioTemporalViViT, depth=1).eval()
    video = _video()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        expected, got = model(video), compiled(video)
        assert _max_diff(got, expected) <= TOL
        video2 = _video(seed=2)  # a second input of the same shape: no recompile, still correct
        assert _max_diff(compiled(video2), model(video2)) <= TOL
    torch._dynamo.reset()


# ---------------------------------------------------------------- torch.export
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_export_matches_eager(cls):
    model = _tiny(cls).eval()
    video = _video()
    exported = torch.export.export(model, (video,))
    with torch.no_grad():
        assert _max_diff(exported.module()(video), model(video)) <= TOL
        fresh = _video(seed=3)  # not the example input: nothing was baked into the graph
        assert _max_diff(exported.module()(fresh), model(fresh)) <= TOL

    # a symbolic batch dimension: one exported program serves any batch size
    batch = Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (video,), dynamic_shapes={"x": {0: batch}})
    for b in (1, 3):
        clip = _video((b, *SHAPE[1:]), seed=4 + b)
        with torch.no_grad():
            assert _max_diff(exported.module()(clip), model(clip)) <= TOL

    # dynamic_size: export at another clip size, resampling in the exported graph
    dynamic = _tiny(cls, dynamic_size=True).eval()
    other = _video(OTHER_SHAPE)
    exported = torch.export.export(dynamic, (other,))
    with torch.no_grad():
        assert _max_diff(exported.module()(other), dynamic(other)) <= TOL


# ---------------------------------------------------------------- DistributedDataParallel
DDP_WORLD = 2
DDP_TIMEOUT_S = 180
DDP_VARIANTS = {"st": SpatioTemporalViViT, "fe": FactorizedEncoderViViT}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return _video((4, *SHAPE[1:]), seed=7), torch.tensor([0, 3, 1, 4])


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _ddp_worker(rank: int, world: int, port: int, workdir: str) -> None:
    """One rank: DDP forward/backward on its slice of the batch; saves the synchronized gradients."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        video, labels = _ddp_batch()
        per = video.shape[0] // world
        part = slice(rank * per, (rank + 1) * per)
        for name, cls in DDP_VARIANTS.items():
            model = _tiny(cls)  # drop rates are 0: the forward is deterministic
            ddp = DistributedDataParallel(model)
            loss = F.cross_entropy(ddp(video[part]), labels[part])  # mean over this rank's samples
            loss.backward()  # DDP all-reduces: gradients become the mean over ranks
            torch.save(_grads(model), Path(workdir) / f"{name}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_ddp_gradients_equal_single_process(tmp_path):
    """2 gloo ranks x 2 samples give the gradients of one process on all 4 (loss = batch mean)."""
    ctx = mp.start_processes(
        _ddp_worker, args=(DDP_WORLD, _free_port(), str(tmp_path)), nprocs=DDP_WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DDP_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):  # raises if a rank raised
            if time.monotonic() > deadline:
                pytest.fail(f"DDP ranks did not finish within {DDP_TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join(10)

    video, labels = _ddp_batch()
    for name, cls in DDP_VARIANTS.items():
        model = _tiny(cls)
        F.cross_entropy(model(video), labels).backward()
        expected = _grads(model)
        model.zero_grad()
        F.cross_entropy(model(video[:2]), labels[:2]).backward()
        local = _grads(model)  # what rank 0 would hold without the all-reduce

        rank0 = torch.load(tmp_path / f"{name}_rank0.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"{name}_rank1.pt", weights_only=True)
        assert rank0.keys() == expected.keys()
        for k in expected:
            assert torch.equal(rank0[k], rank1[k]), f"{name}: ranks disagree on {k}"
            torch.testing.assert_close(
                rank0[k], expected[k], rtol=TOL, atol=1e-6, msg=lambda m, name=name, k=k: f"{name} {k}: {m}"
            )
        assert any(not torch.allclose(local[k], expected[k], rtol=TOL, atol=1e-6) for k in expected), (
            "half-batch gradients equal full-batch ones: the comparison cannot detect a missing all-reduce"
        )


# ---------------------------------------------------------------- reduced precision
# Measured (seeds 0-4, logits of magnitude ~0.5-5): max |low - fp32| / max |fp32| was 1.6e-3 for
# float16 and 8.7e-3 for bfloat16; the bounds leave a 5x margin.
REL_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_half_precision_forward_close_to_fp32(cls, dtype):
    model = _tiny(cls).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)  # logits of order 1, not the 0.02-std init's ~0.01
        video = _video()
        expected = model(video)
        low = copy.deepcopy(model).half() if dtype is torch.float16 else copy.deepcopy(model).to(dtype)
        got = low(video.to(dtype))
    assert got.dtype == dtype and got.shape == expected.shape
    assert torch.isfinite(got).all()
    scale = expected.abs().max().item()
    assert scale > 0.3
    assert _max_diff(got, expected) <= REL_TOL[dtype] * scale


@pytest.mark.parametrize("x_dtype, model_dtype", [(torch.float16, torch.float32), (torch.float32, torch.bfloat16)])
def test_input_dtype_must_match_parameters(x_dtype, model_dtype):
    model = _tiny(SpatioTemporalViViT).eval().to(model_dtype)
    with pytest.raises(ValueError, match=rf"input dtype {x_dtype}.*model.*{model_dtype}"):
        model(_video(dtype=x_dtype))


def test_autocast_accepts_mixed_dtypes():
    """Under CPU autocast an fp32 model takes fp32 or bf16 video and computes in bf16."""
    model = _tiny(SpatioTemporalViViT).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for dtype in (torch.float32, torch.bfloat16):
            out = model(_video(dtype=dtype))
            assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_deterministic_eval_and_seeded_dropout(cls):
    model = _tiny(cls, drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.3)
    video = _video()
    model.eval()
    with torch.no_grad():
        first, second = model(video), model(video)
    assert torch.equal(first, second)  # bit-identical, dropout off

    model.train()
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(model(video))
    assert torch.equal(outs[0], outs[1])  # same seed, same dropout masks
    assert not torch.equal(outs[0], outs[2])  # another seed: dropout really is active
    assert not torch.equal(outs[0], first)
