#!/usr/bin/env python
"""Benchmark vivit against HF transformers' ViViT and across the four ViViT variants.

    python benchmarks/bench.py                  # full run (about 10-20 min on 2 CPU cores)
    python benchmarks/bench.py --quick          # smoke run with small configs (about a minute)
    python benchmarks/bench.py --device cuda    # the same comparisons on a GPU
    python benchmarks/bench.py --sections fwd,models --runs 7 --json /tmp/r.json

Method: batch 1, `torch.inference_mode()` for inference, contenders timed in ONE process and
alternated run by run (the starting contender rotates each round), `--warmup` untimed calls each,
then the median of `--runs` timed calls. Peak memory is measured for each contender in its own
subprocess (`bench.py --_child SPEC`): on CPU the process's peak RSS in total and the increase of the
workload's peak over the RSS after imports + model build + input creation (VmHWM, reset before the
workload); on CUDA `torch.cuda.max_memory_allocated` and its increase over what the built model holds.
MACs are counted once per architecture with `FlopCounterMode` on the meta device (MACs = FLOPs/2);
"util" is achieved FLOP/s (2 * MACs / latency) divided by the FLOP/s of the best GEMM library of the
same dtype on this machine (section matmul), re-timed in the same alternation.

Sections (`--sections`, comma separated; default all but `profile`):
  matmul   GEMM libraries (MKL, MKL packed, oneDNN; fp32, bf16, int8): the best of each dtype is `util`'s reference
  fast     Model 1 inference paths in ONE alternating run: eager, HF, optimize_for_inference fp32/bf16/int8,
           ONNX Runtime fp32/int8, and the GEMM libraries on the model's MLP shape; kernels chosen
  accuracy demo held-out top-1 and Scenic-fixture logit drift of every inference path
  fwd      Model 1: vivit vs HF `VivitForVideoClassification` (same weights, logits checked to 1e-4)
  train    forward + backward of vivit_b_st, with and without gradient checkpointing
  models   the four B/16x2 variants: latency, MACs next to the paper's Table 2
  bf16     bf16 autocast vs fp32 for Models 1 and 2: latency, logit difference, top-1 agreement
  compile  torch.compile vs eager for Model 1
  profile  op-level self time of vivit_b_st / Model 3 / Model 4 (torch.profiler; not in the default)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

# vivit before torch: it chooses OpenMP's passive wait policy before torch loads OpenMP, as it does for any
# user who imports it first (vivit/threads.py); VIVIT_OMP_WAIT_POLICY=keep measures OpenMP's default instead
import vivit  # noqa: E402, I001
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import vivit.weights  # noqa: E402

SECTIONS = ("matmul", "paths", "accuracy", "load", "fwd", "train", "models", "bf16", "compile")
ALL_SECTIONS = (*SECTIONS, "profile")

# ViViT paper (arXiv 2103.15691) Table 2, ViViT-B/16x2, 32x224^2: GFLOPs (multiply-adds), params (M)
PAPER = {
    "vivit_b_st": dict(gmacs=455.2, params_m=88.9),
    "vivit_b_fe": dict(gmacs=284.4, params_m=115.1),
    "vivit_b_fsa": dict(gmacs=372.3, params_m=117.3),
    "vivit_b_fdp": dict(gmacs=277.1, params_m=88.9),
}
VARIANT_LABEL = {"st": "Model 1 (ST)", "fe": "Model 2 (FE)", "fsa": "Model 3 (FSA)", "fdp": "Model 4 (FDP)"}
HF_SIZES = {  # VivitConfig fields for our size names
    "ti": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


# ------------------------------------------------------------------------------------ configs
def cfg(size: str, variant: str, frames: int, img: int, depth: int | None = None) -> dict[str, Any]:
    c = dict(name=f"vivit_{size}_{variant}", size=size, variant=variant, frames=frames, img=img)
    if depth is not None:  # fewer blocks (quick runs)
        c["depth"] = depth
    return c


def cfg_label(c: dict[str, Any]) -> str:
    depth = f" depth {c['depth']}" if "depth" in c else ""
    return f"{c['size'].upper()}/16x2{depth} {c['frames']}x{c['img']}^2"


def plan(
    quick: bool, variants: tuple[str, ...] = ("st", "fe", "fsa", "fdp"), frames: tuple[str, ...] = ("8", "32")
) -> dict[str, Any]:
    """Which configs each section runs. `--quick` shrinks everything to seconds. `variants` and `frames`
    choose section paths' configs (Models 1-4 = st, fe, fsa, fdp; quick: 8 and 16 frames)."""
    if quick:
        return dict(
            matmul_n=1024,
            fwd=[cfg("ti", "st", 8, 112, depth=2), cfg("s", "st", 4, 64, depth=2)],
            train=cfg("ti", "st", 8, 112, depth=2),
            models=[cfg("s", v, 8, 112, depth=2) for v in ("st", "fe", "fsa", "fdp")],
            bf16=[cfg("ti", "st", 8, 112, depth=2), cfg("ti", "fe", 8, 112, depth=2)],
            compile=cfg("ti", "st", 8, 112, depth=1),
            profile=[cfg("ti", "st", 8, 112, depth=2)],
            paths=[cfg("s", v, {"8": 8, "32": 16}[f], 112, depth=2) for v in variants for f in frames],
            load=cfg("s", "st", 8, 112, depth=2),
        )
    return dict(
        matmul_n=4096,
        fwd=[cfg("b", "st", 32, 224), cfg("b", "st", 8, 224), cfg("ti", "st", 16, 112)],
        train=cfg("b", "st", 8, 224),
        models=[cfg("b", v, 32, 224) for v in ("st", "fe", "fsa", "fdp")],
        bf16=[cfg("b", "st", 8, 224), cfg("b", "fe", 8, 224), cfg("b", "st", 32, 224), cfg("b", "fe", 32, 224)],
        compile=cfg("b", "st", 8, 224),
        profile=[cfg("b", "st", 8, 224), cfg("b", "st", 32, 224), cfg("b", "fsa", 32, 224), cfg("b", "fdp", 32, 224)],
        paths=[cfg("b", v, int(f), 224) for v in variants for f in frames],
        load=cfg("b", "st", 8, 224),
    )


# ------------------------------------------------------------------------------------ builders
def build_ours(c: dict[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    extra = {"depth": c["depth"]} if "depth" in c else {}
    return vivit.create_model(c["name"], num_frames=c["frames"], img_size=c["img"], **extra).to(device).eval()


def hf_config(c: dict[str, Any], attn: str):
    from transformers import VivitConfig

    size = dict(HF_SIZES[c["size"]])
    if "depth" in c:
        size["num_hidden_layers"] = c["depth"]
    return VivitConfig(
        image_size=c["img"],
        num_frames=c["frames"],
        tubelet_size=[2, 16, 16],
        num_labels=400,
        attn_implementation=attn,
        **size,
    )


def build_hf(c: dict[str, Any], attn: str = "sdpa", device: str | torch.device = "cpu") -> torch.nn.Module:
    from transformers import VivitForVideoClassification

    model = VivitForVideoClassification(hf_config(c, attn))
    with torch.no_grad():  # HF zero-inits cls / pos-emb; give them values so the check means something
        model.vivit.embeddings.cls_token.normal_(std=0.02)
        model.vivit.embeddings.position_embeddings.normal_(std=0.02)
    return model.to(device).eval()


def make_input(c: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, c["frames"], c["img"], c["img"], generator=g) * 2 - 1  # [-1, 1] like Scenic
    return x.to(device)


def hf_logits(model: torch.nn.Module, x_btchw: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x_btchw).logits


# ------------------------------------------------------------------------------------ GEMM libraries
def gemm_contenders(m: int, k: int, n: int, device: torch.device, min_s: float = 0.1) -> dict[str, dict[str, Any]]:
    """The GEMM libraries PyTorch can reach here on `x (m, k) @ w.T (n, k)`: name -> dict(fn, dtype,
    library, flops, reps). Each `fn` repeats the GEMM `reps` times (so one call takes >= `min_s`)."""
    from vivit.optimize import _int8_engines, _private_ops_available, _quantize_weight

    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g).to(device)
    w = (torch.randn(n, k, generator=g) * k**-0.5).to(device)
    b = torch.zeros(n, device=device)
    blas = (
        "MKL"
        if device.type == "cpu" and torch.backends.mkl.is_available()
        else ("cuBLAS" if device.type == "cuda" else "BLAS")
    )
    ops: dict[str, tuple[str, str, Callable[[], Any]]] = {
        "fp32 F.linear": ("float32", f"F.linear ({blas} sgemm)", lambda: F.linear(x, w, b)),
    }
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
    ops["bf16 F.linear"] = (
        "bfloat16",
        f"F.linear bf16 ({'oneDNN' if device.type == 'cpu' else blas})",
        lambda: F.linear(xb, wb, bb),
    )
    if device.type == "cpu":
        private = _private_ops_available()
        if private["mkl"]:
            wm = torch.ops.mkl._mkl_reorder_linear_weight(w, m)
            ops["fp32 mkl packed"] = (
                "float32",
                "MKL packed weights",
                lambda: torch.ops.mkl._mkl_linear(x, wm, w, b, m),
            )
        if private["onednn"]:
            wd, wdb = torch.ops.mkldnn._reorder_linear_weight(w, m), torch.ops.mkldnn._reorder_linear_weight(wb, m)
            ops["fp32 onednn packed"] = (
                "float32",
                "oneDNN packed weights",
                lambda: torch.ops.mkldnn._linear_pointwise(x, wd, b, "none", [], ""),
            )
            ops["bf16 onednn packed"] = (
                "bfloat16",
                "oneDNN bf16 packed weights",
                lambda: torch.ops.mkldnn._linear_pointwise(xb, wdb, bb, "none", [], ""),
            )
        qw = _quantize_weight(w.float())
        for engine in _int8_engines():
            before = torch.backends.quantized.engine
            torch.backends.quantized.engine = engine
            packed = torch.ops.quantized.linear_prepack(qw, b)
            torch.backends.quantized.engine = before
            ops[f"int8 {engine}"] = (
                "int8",
                f"int8 dynamic ({engine})",
                lambda p=packed, e=engine: torch.ops.quantized.linear_dynamic(x, p, e != "onednn"),
            )
    out = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for name, (dtype, library, fn) in ops.items():
        fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        reps = max(1, math.ceil(min_s / max(time.perf_counter() - t0, 1e-6)))

        def repeated(fn: Callable[[], Any] = fn, reps: int = reps) -> None:
            for _ in range(reps):
                fn()

        out[name] = dict(fn=repeated, dtype=dtype, library=library, flops=2.0 * m * k * n * reps, reps=reps)
    return out


# ------------------------------------------------------------------------------------ timing
class Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one call."""
        self.sync()
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0, time.process_time() - c0


def alternate(timer: Timer, fns: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, dict[str, Any]]:
    """Time each contender `runs` times, interleaved; the first contender rotates each round."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            timer(fns[n])
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for i in range(len(names)):
            n = names[(r + i) % len(names)]
            wall, cpu_s = timer(fns[n])
            times[n].append(wall)
            cpu[n].append(cpu_s)
    # cpu_median_s (CPU seconds of all threads) is less sensitive than wall time to other load
    return {
        n: dict(median_s=statistics.median(t), min_s=min(t), times_s=t, cpu_median_s=statistics.median(cpu[n]))
        for n, t in times.items()
    }


def cpu_ms(t: dict[str, Any]) -> str:
    """Median process CPU time (all threads) of a timing entry, for the tables."""
    return f"{t['cpu_median_s'] * 1e3:.0f}"


def count_macs(c: dict[str, Any]) -> float:
    """Forward multiply-adds of our model for config `c`, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_ours(c, "meta")
        x = torch.empty(1, 3, c["frames"], c["img"], c["img"])
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() / 2


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ memory (child)
# Peak RSS: /proc/self/status VmHWM, not getrusage's ru_maxrss, which Linux carries over execve from
# the parent (so every child would start at the parent's peak). Writing "5" to /proc/self/clear_refs
# resets VmHWM to the current RSS (Linux >= 4.0), which isolates the workload's own peak.
def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_child(spec: dict[str, Any], device: str) -> dict[str, Any]:
    """Runs in a fresh process: build, record the baseline, run the workload twice, report peaks."""
    dev = torch.device(device)
    c = spec["cfg"]
    impl = spec["impl"]
    if impl == "vivit":
        model = build_ours(c, dev)
    else:
        model = build_hf(c, attn=impl.split(":")[1], device=dev)
    x = make_input(c, dev)
    if impl != "vivit":
        x = x.transpose(1, 2).contiguous()
    kind = spec["kind"]
    if kind == "train":
        model.train()
        if spec.get("grad_ckpt"):
            model.set_grad_checkpointing(True)

        def step() -> None:
            model.zero_grad(set_to_none=False)
            model(x).float().logsumexp(-1).sum().backward()

        # gradients persist between steps: allocate them before the baseline, so the increase is the
        # step's own (activations, recomputation, temporaries). No step runs before the baseline, so
        # freed-but-kept heap memory from an earlier step cannot hide in it.
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
    else:
        ctx = torch.autocast(dev.type, torch.bfloat16) if spec.get("bf16") else contextlib.nullcontext()

        def step() -> None:
            with torch.inference_mode(), ctx:
                logits = model(x) if impl == "vivit" else hf_logits(model, x)
                logits.float().sum().item()

    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated() / 2**20
    build_peak, base_now = _status_mib("VmHWM"), _status_mib("VmRSS")
    reset = _reset_peak_rss()
    for _ in range(spec.get("reps", 2)):
        step()
    run_peak = _status_mib("VmHWM")
    out = dict(
        rss_peak_mib=max(build_peak, run_peak),  # whole process: imports, build, workload
        rss_run_peak_mib=run_peak,
        rss_baseline_mib=base_now if reset else build_peak,  # RSS after imports + build (+ first step)
        rss_increase_mib=run_peak - (base_now if reset else build_peak),
        rss_build_peak_mib=build_peak,
        peak_reset=reset,
    )
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        out.update(cuda_peak_mib=peak, cuda_baseline_mib=cuda_base, cuda_increase_mib=peak - cuda_base)
    return out


def measure_memory(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.no_memory:
        return {"skipped": True}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_child",
        json.dumps(spec),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "child timed out"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or f"exit {proc.returncode}"}
    return json.loads(lines[-1])


def mem_cells(m: dict[str, Any], device: str) -> tuple[str, str]:
    """(peak, increase) in MiB for the table."""
    if "error" in m:
        return "err", "err"
    if m.get("skipped"):
        return "-", "-"
    if device == "cuda":
        return f"{m['cuda_peak_mib']:.0f}", f"{m['cuda_increase_mib']:.0f}"
    return f"{m['rss_peak_mib']:.0f}", f"{m['rss_increase_mib']:.0f}"


# ------------------------------------------------------------------------------------ sections
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dev = torch.device(args.device)
        self.timer = Timer(self.dev)
        self.plan = plan(args.quick, tuple(args.models.split(",")), tuple(args.frames.split(",")))
        self.results: dict[str, Any] = {}
        self.md: list[str] = []
        self.mm_fns: dict[str, Callable[[], Any]] = {}  # best GEMM of each dtype (the util reference)
        self.mm_flops: dict[str, float] = {}  # FLOPs of one call of mm_fns[dtype]
        self.mm_n = 0
        self._macs: dict[tuple, float] = {}
        self.checkpoint: Callable[[], None] = lambda: None  # main() sets it: write the JSON so far

    # helpers
    def runs_for(self, c: dict[str, Any]) -> tuple[int, int]:
        return self.args.runs, self.args.warmup

    def macs(self, c: dict[str, Any]) -> float:
        key = (c["name"], c["frames"], c["img"])
        if key not in self._macs:
            self._macs[key] = count_macs(c)
        return self._macs[key]

    def timed(
        self, fns: dict[str, Callable[[], Any]], runs: int, warm: int, refs: tuple[str, ...] = ("float32",)
    ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
        """`alternate` with the reference matmul(s) as extra contenders, so that the FLOP/s figure
        behind `util` sees the same machine conditions (other load) as the models it is compared to."""
        extra = {f"_ref_{d}": self.mm_fns[d] for d in refs if d in self.mm_fns}
        t = alternate(self.timer, {**fns, **extra}, runs, warm)
        ref = {d: self.mm_flops[d] / t.pop(f"_ref_{d}")["median_s"] for d in refs if f"_ref_{d}" in t}
        return t, ref

    @staticmethod
    def util(macs: float, seconds: float, ref_flops: float | None) -> str:
        return f"{2 * macs / seconds / ref_flops:.0%}" if ref_flops else "-"

    def table(self, title: str, header: list[str], rows: list[list[Any]], note: str = "") -> None:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
        if note:
            lines += ["", note]
        text = "\n".join(lines) + "\n"
        self.md.append(text)
        print(text, flush=True)

    def autocast(self, enabled: bool):
        return torch.autocast(self.dev.type, torch.bfloat16) if enabled else contextlib.nullcontext()

    # matmul ------------------------------------------------------------------------------------
    def matmul(self) -> None:
        n = self.mm_n = self.plan["matmul_n"]
        gemms = gemm_contenders(n, n, n, self.dev)
        t = alternate(self.timer, {name: g["fn"] for name, g in gemms.items()}, max(self.args.runs, 5), 1)
        rows, res = [], {}
        best: dict[str, str] = {}
        for name, r in t.items():
            g = gemms[name]
            flops = g["flops"] / r["median_s"]
            res[name] = dict(n=n, dtype=g["dtype"], library=g["library"], flops_per_s=flops, **r)
            if g["dtype"] not in best or flops > res[best[g["dtype"]]]["flops_per_s"]:
                best[g["dtype"]] = name
        for name, r in res.items():
            star = " (best)" if best.get(r["dtype"]) == name else ""
            rows.append(
                [
                    f"{n}x{n} @ {n}x{n}",
                    r["dtype"],
                    r["library"] + star,
                    f"{r['median_s'] / gemms[name]['reps'] * 1e3:.1f}",
                    f"{r['flops_per_s'] / 1e9:.1f}",
                ]
            )
        for d, name in best.items():  # the reference for `util` below: the best library of each dtype
            self.mm_fns[d], self.mm_flops[d] = gemms[name]["fn"], gemms[name]["flops"]
        self.results["matmul"] = dict(libraries=res, best=best)
        self.table(
            "GEMM libraries (the reference for util)",
            ["shape", "dtype", "library", "median ms", "GFLOP/s (int8: GOP/s)"],
            rows,
            "`util` below = achieved FLOP/s (2 x MACs / median latency) over the best library's FLOP/s for the same dtype "
            "in this table (fp32 rows: the best fp32 GEMM, not only PyTorch's matmul), re-timed alternately with the "
            "models of each table so both see the same load. MKL packed / oneDNN rows use the private ops that "
            "vivit.optimize_for_inference may choose (torch.ops.mkl._mkl_linear, torch.ops.mkldnn._linear_pointwise); "
            "int8 = PyTorch's dynamic quantized linear (activations quantized at run time, included in the time).",
        )

    # fwd: vivit vs HF ----------------------------------------------------------------------------
    def fwd(self) -> None:
        rows, out = [], []
        for c in self.plan["fwd"]:
            torch.manual_seed(0)
            hf = build_hf(c, "sdpa", self.dev)
            ours = build_ours(c, self.dev)
            ours.load_state_dict(vivit.weights.from_transformers(hf.state_dict(), ours))
            contenders = {"vivit": ours, "hf:sdpa": hf}
            if not self.args.no_hf_eager:
                eager = build_hf(c, "eager", self.dev)
                eager.load_state_dict(hf.state_dict())
                contenders["hf:eager"] = eager
            x = make_input(c, self.dev)
            x_hf = x.transpose(1, 2).contiguous()  # HF takes (B, T, C, H, W)
            with torch.inference_mode():
                ref = ours(x)
                diffs = {
                    n: (hf_logits(m, x_hf) - ref).abs().max().item() for n, m in contenders.items() if n != "vivit"
                }
            for n, d in diffs.items():
                assert d < 1e-4, f"{cfg_label(c)}: vivit and {n} logits differ by {d:.3g} (> 1e-4)"

            def fn(n: str, m: torch.nn.Module) -> Callable[[], Any]:
                return (lambda: m(x)) if n == "vivit" else (lambda: hf_logits(m, x_hf))

            runs, warm = self.runs_for(c)
            with torch.inference_mode():
                t, ref = self.timed({n: fn(n, m) for n, m in contenders.items()}, runs, warm)
            del contenders, ours, hf
            macs = self.macs(c)
            mem = {n: measure_memory(dict(kind="fwd", impl=n, cfg=c), self.args) for n in t}
            entry = dict(cfg=c, macs=macs, max_abs_logit_diff=diffs, timings=t, memory=mem, matmul_ref_flops=ref)
            out.append(entry)
            base = t["vivit"]["median_s"]
            for n in t:
                ms = t[n]["median_s"]
                peak, inc = mem_cells(mem[n], self.args.device)
                rows.append(
                    [
                        cfg_label(c),
                        n,
                        f"{ms * 1e3:.0f}",
                        cpu_ms(t[n]),
                        f"{ms / base:.2f}" if n != "vivit" else "1.00",
                        self.util(macs, ms, ref.get("float32")),
                        peak,
                        inc,
                        f"{diffs[n]:.1e}" if n in diffs else "-",
                    ]
                )
        self.results["fwd"] = out
        self.table(
            f"Model 1 forward: vivit vs HF transformers (fp32, batch 1, {self.args.device})",
            [
                "config",
                "impl",
                "median ms",
                "CPU ms",
                "HF/vivit time",
                "util",
                "peak MiB",
                "+MiB over build",
                "max abs dlogit",
            ],
            rows,
            "HF/vivit time > 1 means vivit is faster (ratio of median wall times). CPU ms: process CPU time of all "
            "threads (less sensitive to other load than wall time). Memory: each contender in its own process; "
            "'+MiB' is the workload's peak RSS over the RSS after imports + build.",
        )

    # train -----------------------------------------------------------------------------------
    def train(self) -> None:
        c = self.plan["train"]
        torch.manual_seed(0)
        model = build_ours(c, self.dev).train()
        x = make_input(c, self.dev)

        def step(ckpt: bool) -> Callable[[], None]:
            def run() -> None:
                model.set_grad_checkpointing(ckpt)
                model.zero_grad(set_to_none=True)
                model(x).float().logsumexp(-1).sum().backward()

            return run

        runs, warm = self.runs_for(c)
        t, ref = self.timed({"plain": step(False), "grad_ckpt": step(True)}, runs, warm)
        del model
        macs = self.macs(c)
        rows, out = [], dict(cfg=c, macs=macs, timings=t, memory={}, matmul_ref_flops=ref)
        for n in t:
            m = measure_memory(dict(kind="train", impl="vivit", cfg=c, grad_ckpt=n == "grad_ckpt"), self.args)
            out["memory"][n] = m
            ms = t[n]["median_s"]
            peak, inc = mem_cells(m, self.args.device)
            rows.append(
                [
                    cfg_label(c),
                    n,
                    f"{ms * 1e3:.0f}",
                    cpu_ms(t[n]),
                    f"{ms / t['plain']['median_s']:.2f}",
                    self.util(3 * macs, ms, ref.get("float32")),
                    peak,
                    inc,
                ]
            )  # backward ~ 2x fwd
        self.results["train"] = out
        self.table(
            f"Training step (forward + backward, no optimizer), {c['name']}, fp32",
            [
                "config",
                "mode",
                "median ms",
                "CPU ms",
                "time vs plain",
                "util (3x fwd MACs)",
                "peak MiB",
                "+MiB over build",
            ],
            rows,
            "The baseline for '+MiB' is the RSS after build with the gradients allocated (zeros).",
        )

    # models ------------------------------------------------------------------------------------
    def models(self) -> None:
        cs = self.plan["models"]
        models, params = {}, {}
        for c in cs:
            torch.manual_seed(0)
            models[c["name"]] = build_ours(c, self.dev)
            params[c["name"]] = n_params(models[c["name"]])
        x = make_input(cs[0], self.dev)
        runs, warm = self.runs_for(cs[0])
        with torch.inference_mode():
            t, ref = self.timed({n: (lambda m=m: m(x)) for n, m in models.items()}, runs, warm)
        del models
        rows, out = [], []
        first = cs[0]["name"]
        for c in cs:
            n = c["name"]
            macs = self.macs(c)
            ms = t[n]["median_s"]
            paper = PAPER.get(n) if (c["frames"], c["img"]) == (32, 224) else None
            out.append(dict(cfg=c, macs=macs, params=params[n], paper=paper, timing=t[n], matmul_ref_flops=ref))
            rows.append(
                [
                    VARIANT_LABEL[c["variant"]],
                    n,
                    f"{params[n] / 1e6:.1f}",
                    f"{paper['params_m']}" if paper else "-",
                    f"{macs / 1e9:.1f}",
                    f"{paper['gmacs']}" if paper else "-",
                    f"{ms * 1e3:.0f}",
                    cpu_ms(t[n]),
                    f"{ms / t[first]['median_s']:.2f}",
                    self.util(macs, ms, ref.get("float32")),
                ]
            )
        self.results["models"] = out
        self.table(
            f"The four variants at {cs[0]['frames']}x{cs[0]['img']}^2 (fp32, batch 1, {self.args.device})",
            [
                "model",
                "name",
                "params M",
                "paper params M",
                "GMACs",
                "paper GMACs",
                "median ms",
                "CPU ms",
                "time vs Model 1",
                "util",
            ],
            rows,
            "Paper = Arnab et al. 2021, Table 2 (its 'GFLOPs' are multiply-adds).",
        )

    # bf16 --------------------------------------------------------------------------------------
    def bf16(self) -> None:
        rows, out = [], []
        n_inputs = 3
        for c in self.plan["bf16"]:
            if self.args.no_bf16_32 and c["frames"] == 32:
                continue
            torch.manual_seed(0)
            model = build_ours(c, self.dev)
            x = make_input(c, self.dev)

            def fwd(bf16: bool) -> Callable[[], Any]:
                def run() -> Any:
                    with self.autocast(bf16):
                        return model(x)

                return run

            runs, warm = self.runs_for(c)
            with torch.inference_mode():
                t, ref = self.timed({"fp32": fwd(False), "bf16": fwd(True)}, runs, warm, ("float32", "bfloat16"))
                diffs, agree, scale = [], 0, []
                for seed in range(n_inputs):
                    xi = make_input(c, self.dev, seed=100 + seed)
                    a = model(xi).float()
                    with self.autocast(True):
                        b = model(xi).float()
                    diffs.append((a - b).abs().max().item())
                    scale.append(a.abs().max().item())
                    agree += int(a.argmax() == b.argmax())
            del model
            macs = self.macs(c)
            entry = dict(
                cfg=c,
                macs=macs,
                timings=t,
                max_abs_logit_diff=max(diffs),
                max_abs_logit=max(scale),
                top1_agree=agree,
                n_inputs=n_inputs,
                matmul_ref_flops=ref,
            )
            out.append(entry)
            sp = t["fp32"]["median_s"] / t["bf16"]["median_s"]
            for n in ("fp32", "bf16"):
                ms = t[n]["median_s"]
                rows.append(
                    [
                        f"{VARIANT_LABEL[c['variant']]} {cfg_label(c)}",
                        n,
                        f"{ms * 1e3:.0f}",
                        cpu_ms(t[n]),
                        f"{sp:.2f}" if n == "bf16" else "1.00",
                        self.util(macs, ms, ref.get("bfloat16" if n == "bf16" else "float32")),
                        f"{max(diffs):.3f} (max abs logit {max(scale):.2f})" if n == "bf16" else "-",
                        f"{agree}/{n_inputs}" if n == "bf16" else "-",
                    ]
                )
        self.results["bf16"] = out
        self.table(
            f"bf16 autocast vs fp32 ({self.args.device})",
            [
                "model / config",
                "dtype",
                "median ms",
                "CPU ms",
                "speed-up",
                "util (vs same-dtype matmul)",
                "max abs dlogit",
                "top-1 agree",
            ],
            rows,
            "Random-init weights and random inputs: the logit difference is the meaningful number; "
            "top-1 agreement on near-tied random logits is a weak signal.",
        )

    # compile -----------------------------------------------------------------------------------
    def compile(self) -> None:
        c = self.plan["compile"]
        torch.manual_seed(0)
        model = build_ours(c, self.dev)
        x = make_input(c, self.dev)
        entry: dict[str, Any] = dict(cfg=c)
        try:
            torch._dynamo.reset()
            compiled = torch.compile(model)
            with torch.inference_mode():
                t0 = time.perf_counter()
                y = compiled(x)
                self.timer.sync()
                entry["compile_s"] = time.perf_counter() - t0
                entry["max_abs_logit_diff"] = (y - model(x)).abs().max().item()
                runs, warm = self.runs_for(c)
                entry["timings"] = alternate(
                    self.timer, {"eager": lambda: model(x), "compiled": lambda: compiled(x)}, runs, warm
                )
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        self.results["compile"] = entry
        if "error" in entry:
            self.table(f"torch.compile, {c['name']} {cfg_label(c)}", ["status"], [[f"failed: {entry['error']}"]])
            return
        t = entry["timings"]
        rows = [
            [
                cfg_label(c),
                n,
                f"{t[n]['median_s'] * 1e3:.0f}",
                f"{t['eager']['median_s'] / t[n]['median_s']:.2f}",
                f"{entry['compile_s']:.1f}" if n == "compiled" else "-",
                f"{entry['max_abs_logit_diff']:.1e}" if n == "compiled" else "-",
            ]
            for n in t
        ]
        self.table(
            f"torch.compile vs eager, {c['name']} (fp32, {self.args.device})",
            ["config", "mode", "median ms", "speed-up", "compile s (first call)", "max abs dlogit"],
            rows,
        )

    # paths: every inference path of every engine -------------------------------------------------
    def wait_quiet(self) -> None:
        """With --wait-idle S: wait up to S seconds for the 1-minute load average to fall below --idle-load."""
        deadline = time.monotonic() + self.args.wait_idle
        while os.getloadavg()[0] >= self.args.idle_load and time.monotonic() < deadline:
            time.sleep(10)

    def paths(self) -> None:
        """Every inference path (benchmarks/engines.py) for each clip size of the plan in ONE alternating
        run, with the best GEMM of each dtype (section matmul) re-timed in the same alternation (util)."""
        import gc
        import tempfile

        import engines

        from vivit.optimize import kernel_choices

        wanted = list(engines.PATHS)
        if self.args.paths:
            wanted = [p for p in engines.PATHS if p in self.args.paths.split(",")]
        configs = []
        for c in self.plan["paths"]:
            self.wait_quiet()
            load_before = os.getloadavg()[0]
            torch.manual_seed(0)
            model = build_ours(c, self.dev)
            x = make_input(c, self.dev)
            g = torch.Generator().manual_seed(1)
            calibration = torch.rand(3, 3, c["frames"], c["img"], c["img"], generator=g) * 2 - 1  # issue 23: 3 clips
            label = f"{VARIANT_LABEL[c['variant']]} {cfg_label(c)}"
            with tempfile.TemporaryDirectory() as tmp:
                s = engines.Settings(
                    threads=self.args.threads, tmp=Path(tmp), cache=self.args.openvino_cache, calibration=calibration
                )
                built = {}
                for name in wanted:
                    built[name] = b = engines.build(name, model, x, s)
                    print(f"  {label}: {name}: {b.error or f'ready in {b.setup_s:.1f} s'}", file=sys.stderr, flush=True)
            fns = {n: (lambda r=b.run: r(x)) for n, b in built.items() if b.run is not None}
            with torch.inference_mode():
                ref = model(x).float()
                diffs = {n: (engines.logits_of(fn()) - ref).abs().max().item() for n, fn in fns.items()}
                runs, warm = self.runs_for(c)
                t, gemm = self.timed(fns, runs, warm, ("float32", "bfloat16", "int8"))
            entry = dict(
                cfg=c,
                label=label,
                macs=self.macs(c),
                timings=t,
                max_abs_logit_diff_vs_eager=diffs,
                setup_s={n: b.setup_s for n, b in built.items()},
                errors={n: b.error for n, b in built.items() if b.error},
                gemm_flops_per_s=gemm,
                loadavg_1min=[load_before, os.getloadavg()[0]],
            )
            del model, built, fns
            gc.collect()
            configs.append(entry)
            self.paths_table(entry)
            self.results["paths"] = dict(configs=configs, kernel_choices=kernel_choices())
            self.checkpoint()

    def paths_table(self, e: dict[str, Any]) -> None:
        import engines

        t, eager = e["timings"], e["timings"].get("eager fp32", {}).get("median_s")
        dtype = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}
        rows = []
        for name in engines.PATHS:
            if name in e["errors"]:
                rows.append([name, "failed: " + e["errors"][name], "", "", "", "", ""])
            if name not in t:
                continue
            ms = t[name]["median_s"]
            rows.append(
                [
                    name,
                    f"{ms * 1e3:.0f}",
                    cpu_ms(t[name]),
                    f"{eager / ms:.2f}" if eager else "-",
                    self.util(e["macs"], ms, e["gemm_flops_per_s"].get(dtype[engines.precision_of(name)])),
                    f"{e['max_abs_logit_diff_vs_eager'][name]:.1e}",
                    f"{e['setup_s'][name]:.1f}",
                ]
            )
        peaks = ", ".join(f"{d} {v / 1e9:.0f} G/s" for d, v in e["gemm_flops_per_s"].items())
        self.table(
            f"Inference paths, {e['label']} (batch 1, {self.args.threads} threads): one alternating run",
            ["path", "median ms", "CPU ms", "speed-up vs eager", "util", "max abs dlogit vs eager", "setup s"],
            rows,
            f"util = 2 x {e['macs'] / 1e9:.1f} GMACs / median time over the best GEMM of the path's dtype, re-timed in "
            f"this alternation ({peaks}; int8 in GOP/s). Load average (1 min) before / after: "
            f"{e['loadavg_1min'][0]:.2f} / {e['loadavg_1min'][1]:.2f}.",
        )

    def summary(self) -> None:
        """Issue 23's table: every path x clip size, the accuracy columns, and the targets."""
        import engines

        configs = self.results.get("paths", {}).get("configs", [])
        if not configs:
            return
        acc = self.results.get("accuracy", {}).get("paths", {})
        header = ["path", *[c["label"] for c in configs]]
        if acc:
            header += ["demo top-1 agrees with fp32 %", "max abs dlogit, Scenic fixtures"]
        rows = []
        for name in engines.PATHS:
            if not any(name in c["timings"] for c in configs):
                continue
            cells = []
            for c in configs:
                t = c["timings"]
                if name not in t:
                    cells.append("-")
                    continue
                ms, eager = t[name]["median_s"], t.get("eager fp32", {}).get("median_s")
                best = min(
                    (n for n in t if engines.precision_of(n) == engines.precision_of(name)),
                    key=lambda n: t[n]["median_s"],
                )
                text = f"{ms * 1e3:.0f} ({eager / ms:.2f}x)" if eager else f"{ms * 1e3:.0f}"
                cells.append(f"**{text}**" if name == best else text)
            if acc:
                a = acc.get(name)
                cells += (
                    [f"{a['top1_agree_with_eager']:.2f}", f"{a['fixtures_max_abs_logit_diff']:.1e}"]
                    if a
                    else ["-", "-"]
                )
            rows.append([name, *cells])
        targets = {}
        for c in configs:
            t = c["timings"]
            for precision, reference in engines.REFERENCE.items():
                ours = [
                    n
                    for n in engines.VIVIT_PATHS + tuple(p for p in engines.PATHS if p.startswith("vivit openvino"))
                    if n in t and engines.precision_of(n) == precision
                ]
                torch_only = [n for n in ours if not n.startswith("vivit openvino")]
                if reference not in t or not ours:
                    continue
                fastest = min(ours, key=lambda n: t[n]["median_s"])
                ref_s = t[reference]["median_s"]
                entry = dict(fastest=fastest, ratio=ref_s / t[fastest]["median_s"])
                if torch_only:
                    fastest_torch = min(torch_only, key=lambda n: t[n]["median_s"])
                    entry.update(fastest_pytorch=fastest_torch, pytorch_ratio=ref_s / t[fastest_torch]["median_s"])
                targets[f"{c['label']} {precision}"] = entry
            if c["cfg"]["variant"] == "st" and c["cfg"]["frames"] == 32 and "bfloat16" in c["gemm_flops_per_s"]:
                bf16 = [n for n in t if n.endswith("bf16") and not n.startswith("openvino")]
                if bf16:
                    best = min(bf16, key=lambda n: t[n]["median_s"])
                    util = 2 * c["macs"] / t[best]["median_s"] / c["gemm_flops_per_s"]["bfloat16"]
                    targets[f"{c['label']} bf16 util"] = dict(fastest=best, util=util)
        self.results["summary"] = dict(targets=targets)
        lines = [
            f"{k}: "
            + (
                f"{v['fastest']} at {v['util']:.2f} of the bf16 GEMM peak (target >= 0.6)"
                if "util" in v
                else f"fastest vivit path {v['fastest']} / OpenVINO = {v['ratio']:.2f} (target >= 1.0)"
                + (f"; PyTorch only: {v['fastest_pytorch']} {v['pytorch_ratio']:.2f}" if "fastest_pytorch" in v else "")
            )
            for k, v in targets.items()
        ]
        self.table(
            f"Summary: median ms (speed-up vs eager fp32), batch 1, {self.args.threads} threads; bold = fastest of its precision",
            header,
            rows,
            "Ratios are OpenVINO's time / vivit's (>= 1.0: vivit at least as fast).\n\n"
            + "\n".join(f"- {ln}" for ln in lines),
        )

    # accuracy: the demo's held-out clips and the Scenic fixtures ---------------------------------
    def accuracy(self) -> None:
        """Top-1 on the bundled demo's held-out clips (examples/make_demo.py's generator and seed) and
        the max logit drift on Scenic's reference fixtures, for every inference path."""
        import tempfile

        import engines

        sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "tests")]
        from finetune import MovingDiscs
        from scenic_fixtures import FORWARD_NAMES, load_forward_fixture

        wanted = list(engines.PATHS)
        if self.args.paths:
            wanted = [p for p in engines.PATHS if p in self.args.paths.split(",")]
        batch = 250
        n_clips = 500 if self.args.quick else 2000
        video, labels, _ = MovingDiscs().sample(2000, torch.Generator().manual_seed(300))  # make_demo: seed 0 + 300
        video, labels = video[:n_clips], labels[:n_clips]
        # int8 calibration: clips of the demo's training stream (make_demo trains on seed 0 + 200), not held out
        demo_calibration, _, _ = MovingDiscs().sample(300, torch.Generator().manual_seed(200))
        fixtures = FORWARD_NAMES[::4] if self.args.quick else FORWARD_NAMES
        demo = vivit.create_model("vivit_demo", pretrained=True).eval()
        drift: dict[str, float] = {}
        errors: dict[str, str] = {}

        def build_all(model: torch.nn.Module, x: torch.Tensor, calibration: torch.Tensor, tmp: Path) -> dict[str, Any]:
            s = engines.Settings(threads=self.args.threads, tmp=tmp, calibration=calibration, dynamic_batch=True)
            out = {}
            for name in wanted:
                b = engines.build(name, model, x, s)
                if b.error:
                    errors[name] = b.error
                else:
                    out[name] = b.run
            return out

        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            paths = build_all(demo, video[:batch], demo_calibration, Path(tmp))
            preds = {
                n: torch.cat([engines.logits_of(fn(video[i : i + batch])).argmax(-1) for i in range(0, n_clips, batch)])
                for n, fn in paths.items()
            }
            for name in fixtures:
                f = load_forward_fixture(name)
                f["model"].load_state_dict(vivit.weights.from_scenic(f["params"], f["model"]))
                g = torch.Generator().manual_seed(7)
                calibration = (
                    torch.rand(8, *f["video"].shape[1:], generator=g) * 2 - 1
                )  # the fixtures' input is U(-1, 1)
                for n, fn in build_all(f["model"], f["video"], calibration, Path(tmp)).items():
                    err = (engines.logits_of(fn(f["video"])) - f["logits"]).abs().max().item()
                    drift[n] = max(drift.get(n, 0.0), err)
        base = preds["eager fp32"]
        res, rows = {}, []
        for n, p in preds.items():
            top1 = (p == labels).float().mean().item() * 100
            agree = (p == base).float().mean().item() * 100
            res[n] = dict(top1=top1, top1_agree_with_eager=agree, fixtures_max_abs_logit_diff=drift.get(n, math.nan))
            rows.append([n, f"{top1:.2f}", f"{agree:.2f}", f"{drift.get(n, math.nan):.1e}"])
        rows += [[n, f"failed: {e}", "", ""] for n, e in errors.items() if n not in res]
        self.results["accuracy"] = dict(demo_clips=n_clips, fixtures=fixtures, paths=res, errors=errors)
        self.table(
            "Accuracy of the inference paths",
            [
                "path",
                f"demo top-1 % ({n_clips} held-out clips)",
                "top-1 agrees with eager fp32 %",
                f"max abs logit diff, {len(fixtures)} Scenic fixtures",
            ],
            rows,
            "Demo: vivit_demo on the held-out clips examples/make_demo.py evaluates (MovingDiscs, seed 300); int8 "
            "calibration on 300 clips of its training stream (seed 200). Fixtures: Scenic's own logits (random "
            "weights, width 32, |logits| <= 2.4; int8 calibrated on 8 random clips U(-1, 1) like their input); fp32 "
            "paths must stay <= 1e-5 (OpenVINO/ONNX Runtime fp32: 1e-4).",
        )

    # load: slowdown beside competing CPU-bound processes -----------------------------------------
    def load(self) -> None:
        """Each path's slowdown beside N competing CPU-bound processes (`--load-levels`), under OpenMP's
        default wait policy (threads spin while they wait) and under vivit's (`OMP_WAIT_POLICY=PASSIVE`,
        vivit/threads.py). OpenMP reads the policy when torch is imported, so every (policy, load) cell is
        its own child process (`--_load_child`), timing its paths alternately; the parent starts the
        competitors. ONNX files and vivit's OpenVINO graphs are made once and shared by the children."""
        import tempfile

        c = self.plan["load"]
        levels = [int(v) for v in self.args.load_levels.split(",")]
        policies = self.args.load_policies.split(",")
        paths = [p for p in LOAD_PATHS if not (self.args.no_onnx and p.startswith("onnxruntime"))]
        out: dict[str, Any] = dict(cfg=c, levels=levels, policies=policies, paths=paths, cells=[])
        with tempfile.TemporaryDirectory() as tmp:
            spec = dict(cfg=c, paths=paths, tmp=tmp, cache=str(self.args.openvino_cache or Path(tmp) / "openvino"))
            self._load_child({**spec, "prepare": True}, "passive")  # exports and conversions, untimed
            for level in levels:
                self.wait_quiet()
                background = os.getloadavg()[0]
                burners = [
                    subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)
                    for _ in range(level)
                ]
                try:
                    time.sleep(1.0 if level else 0.0)
                    order = policies if level % 4 == 0 else policies[::-1]  # alternate which policy runs first
                    for policy in order:
                        res = self._load_child(spec, policy)
                        out["cells"].append(dict(level=level, policy=policy, background_loadavg=background, **res))
                        print(f"  load {level} {policy}: {res.get('error') or 'done'}", file=sys.stderr, flush=True)
                finally:
                    for p in burners:
                        p.kill()
                        p.wait()
        self.results["load"] = out
        self.load_table(out)

    def _load_child(self, spec: dict[str, Any], policy: str) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
        threads = self.args.threads
        if policy == "default":
            env["VIVIT_OMP_WAIT_POLICY"] = "keep"  # OpenMP's own default: spinning
        elif policy.startswith("passive"):
            env["OMP_WAIT_POLICY"] = "PASSIVE"
            if policy == "passive-1thread":
                threads = 1
        else:
            raise ValueError(f"unknown load policy {policy!r}")
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_load_child",
            json.dumps(spec),
            "--threads",
            str(threads),
        ]
        if self.args.quick:
            cmd.append("--quick")
        cmd += ["--runs", str(self.args.runs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
        return json.loads(lines[-1])

    def load_table(self, out: dict[str, Any]) -> None:
        cells = [c for c in out["cells"] if "timings" in c]
        quiet = {c["policy"]: c for c in cells if c["level"] == 0}
        rows = []
        for c in cells:
            base = quiet.get(c["policy"])
            for name in out["paths"]:
                if name not in c["timings"]:
                    continue
                t = c["timings"][name]
                slow = (
                    t["median_s"] / base["timings"][name]["median_s"] if base and name in base["timings"] else math.nan
                )
                cpu = (
                    t["cpu_median_s"] / base["timings"][name]["cpu_median_s"]
                    if base and name in base["timings"]
                    else math.nan
                )
                rows.append(
                    [
                        c["level"],
                        c["policy"],
                        name,
                        f"{t['median_s'] * 1e3:.0f}",
                        f"{t['cpu_median_s'] * 1e3:.0f}",
                        f"{slow:.2f}",
                        f"{cpu:.2f}",
                        f"{c['background_loadavg']:.2f}",
                    ]
                )
        self.table(
            f"Under load: {cfg_label(out['cfg'])} {VARIANT_LABEL[out['cfg']['variant']]}, {self.args.threads} threads, "
            "beside N competing CPU-bound processes",
            [
                "N",
                "OpenMP wait policy",
                "path",
                "median ms",
                "CPU ms",
                "slowdown vs N=0",
                "CPU time vs N=0",
                "background load",
            ],
            rows,
            "default = OpenMP's own (GNU libgomp spins before sleeping); passive = OMP_WAIT_POLICY=PASSIVE, what "
            "vivit sets when it is imported before torch (vivit/threads.py); passive-1thread = the same on one thread. "
            "ONNX Runtime (no spinning) and OpenVINO (TBB) have their own thread pools: the policy does not touch them. "
            "Each (N, policy) cell is one process timing its paths alternately; background = the 1-minute load "
            "average before the competitors started.",
        )

    # profile -----------------------------------------------------------------------------------
    def profile(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.dev.type == "cuda" else [])
        sort = "self_device_time_total" if self.dev.type == "cuda" else "self_cpu_time_total"
        out = []
        for c in self.plan["profile"]:
            model = build_ours(c, self.dev)
            x = make_input(c, self.dev)
            with torch.inference_mode():
                model(x)
                with profile(activities=acts) as prof:
                    model(x)
                    self.timer.sync()
            ka = prof.key_averages()
            total = sum(getattr(e, sort) for e in ka)
            top = sorted(ka, key=lambda e: getattr(e, sort), reverse=True)[:12]
            rows = [[e.key, e.count, f"{getattr(e, sort) / 1e3:.1f}", f"{getattr(e, sort) / total:.1%}"] for e in top]
            out.append(dict(cfg=c, sort=sort, self_ms={e.key: getattr(e, sort) / 1e3 for e in ka}))
            what = "device" if self.dev.type == "cuda" else "CPU"
            self.table(
                f"Profile {c['name']} {cfg_label(c)} (self {what} time; total {total / 1e3:.0f} ms)",
                ["op", "calls", "self ms", "share"],
                rows,
            )
        self.results["profile"] = out


LOAD_PATHS = (
    "eager fp32",
    "optimized fp32",
    "optimized bf16",
    "optimized int8",
    "onnxruntime fp32",
    "onnxruntime int8",
    "vivit openvino fp32",
    "vivit openvino bf16",
    "vivit openvino int8",
)


def run_load_child(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One (policy, load) cell of section `load`: build the paths (ONNX files and OpenVINO graphs from the
    shared folder), time them alternately, report wall and CPU medians."""
    import engines

    c = spec["cfg"]
    torch.manual_seed(0)
    model = build_ours(c)
    x = make_input(c)
    g = torch.Generator().manual_seed(1)
    calibration = torch.rand(3, 3, c["frames"], c["img"], c["img"], generator=g) * 2 - 1
    s = engines.Settings(
        threads=args.threads, tmp=Path(spec["tmp"]), cache=Path(spec["cache"]), calibration=calibration, keep_files=True
    )
    fns = {}
    for name in spec["paths"]:
        b = engines.build(name, model, x, s)
        if b.run is not None:
            fns[name] = lambda r=b.run: r(x)
    if spec.get("prepare"):
        return {}
    from vivit.threads import thread_info

    with torch.inference_mode():
        t = alternate(Timer(torch.device("cpu")), fns, args.runs, args.warmup)
    info = thread_info()
    return dict(timings=t, threads=info.threads, openmp=info.openmp, wait_policy=info.wait_policy)


# ------------------------------------------------------------------------------------ machine info
def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = dict(
        cpu=cpu,
        logical_cores=os.cpu_count(),
        usable_cores=len(os.sched_getaffinity(0)),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=platform.python_version(),
        vivit=vivit.__version__,
        device=args.device,
        loadavg_start=os.getloadavg(),
        openmp=dataclasses.asdict(__import__("vivit.threads", fromlist=["thread_info"]).thread_info()),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    for line in torch.__config__.show().splitlines():  # which BLAS / oneDNN build does the work
        if "Math Kernel Library Version" in line or "MKL-DNN v" in line:
            info.setdefault("libs", []).append(line.strip(" -"))
    for package in ("transformers", "onnxruntime", "openvino", "nncf"):
        with contextlib.suppress(ImportError):
            info[package] = __import__(package).__version__
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small configs, few runs: a smoke test")
    p.add_argument("--runs", type=int, default=None, help="timed runs per contender (median; default 5, quick 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls per contender")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(ALL_SECTIONS)}")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results.json"), help="where to write results")
    p.add_argument("--no-memory", action="store_true", help="skip the per-contender memory subprocesses")
    p.add_argument("--no-hf-eager", action="store_true", help="skip HF attn_implementation='eager'")
    p.add_argument("--no-bf16-32", action="store_true", help="bf16 section: skip the 32-frame configs")
    p.add_argument("--no-onnx", action="store_true", help="paths/accuracy/load sections: skip ONNX Runtime")
    p.add_argument(
        "--paths", default="", help="paths/accuracy sections: comma-separated subset of benchmarks/engines.py PATHS"
    )
    p.add_argument("--models", default="st,fe,fsa,fdp", help="paths section: variants (st, fe, fsa, fdp = Models 1-4)")
    p.add_argument("--frames", default="8,32", help="paths section: clip lengths (8 and/or 32; quick: 8 and 16)")
    p.add_argument(
        "--openvino-cache",
        type=Path,
        default=None,
        help="vivit's OpenVINO cache for the runs (default: a temporary one)",
    )
    p.add_argument("--load-levels", default="0,2,4", help="load section: numbers of competing CPU-bound processes")
    p.add_argument(
        "--load-policies", default="default,passive", help="load section: default, passive and/or passive-1thread"
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before the run and before each paths/load table, wait up to S seconds for the load to fall below --idle-load",
    )
    p.add_argument("--idle-load", type=float, default=1.2, help="1-minute load average counted as idle (default 1.2)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_load_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.runs < 1:
        p.error("--runs must be >= 1")
    args.sections = args.sections.replace("fast", "paths")  # the section's name before issue 23
    bad = set(args.sections.split(",")) - set(ALL_SECTIONS)
    if bad:
        p.error(f"unknown sections {sorted(bad)}; choose from {ALL_SECTIONS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._child is not None:
        print(json.dumps(run_child(json.loads(args._child), args.device)))
        return 0
    if args._load_child is not None:
        print(json.dumps(run_load_child(json.loads(args._load_child), args)))
        return 0
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for every contender
        torch.backends.cudnn.allow_tf32 = False
    deadline = time.monotonic() + args.wait_idle
    while os.getloadavg()[0] >= args.idle_load and time.monotonic() < deadline:
        time.sleep(5)
    bench = Bench(args)
    info = machine_info(args)
    if info["loadavg_start"][0] > 0.5 * info["usable_cores"]:
        print(
            f"warning: load average {info['loadavg_start'][0]:.1f} on {info['usable_cores']} cores: other work "
            "will skew the timings",
            file=sys.stderr,
        )
    print(f"# vivit benchmark\n\n{json.dumps(info)}\n", flush=True)
    t_start = time.perf_counter()
    sections = [s for s in ALL_SECTIONS if s in args.sections.split(",")]
    if "matmul" not in sections and any(s in sections for s in ("fwd", "train", "models", "bf16", "paths")):
        sections.insert(0, "matmul")  # the util columns need it
    errors: dict[str, str] = {}

    def write(final: bool) -> None:
        """The JSON after every section (a run cut short keeps what it measured) and at the end."""
        info.update(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t_start)
        doc = dict(
            machine=info,
            args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if not k.startswith("_")},
            results=bench.results,
            errors=errors,
            complete=final,
            markdown="\n".join(bench.md),
        )
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(doc, indent=1))

    bench.checkpoint = lambda: write(final=False)
    for s in sections:
        t0 = time.perf_counter()
        try:
            getattr(bench, s)()
        except AssertionError:
            raise
        except Exception as e:
            errors[s] = traceback.format_exc()
            print(f"section {s} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        bench.results.setdefault("section_seconds", {})[s] = time.perf_counter() - t0
        # other work on the machine skews timings: keep the 1-minute load average with each section
        bench.results.setdefault("section_loadavg_1min", {})[s] = os.getloadavg()[0]
        write(final=False)
    if "paths" in sections:
        bench.summary()
    write(final=True)
    if args.json:
        print(f"wrote {args.json} ({info['wall_s']:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
