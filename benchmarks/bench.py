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

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import vivit  # noqa: E402
import vivit.weights  # noqa: E402

SECTIONS = ("matmul", "fast", "accuracy", "fwd", "train", "models", "bf16", "compile")
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


def plan(quick: bool) -> dict[str, Any]:
    """Which configs each section runs. `--quick` shrinks everything to seconds."""
    if quick:
        return dict(
            matmul_n=1024,
            fwd=[cfg("ti", "st", 8, 112, depth=2), cfg("s", "st", 4, 64, depth=2)],
            train=cfg("ti", "st", 8, 112, depth=2),
            models=[cfg("s", v, 8, 112, depth=2) for v in ("st", "fe", "fsa", "fdp")],
            bf16=[cfg("ti", "st", 8, 112, depth=2), cfg("ti", "fe", 8, 112, depth=2)],
            compile=cfg("ti", "st", 8, 112, depth=1),
            profile=[cfg("ti", "st", 8, 112, depth=2)],
            fast=[cfg("s", "st", 8, 112, depth=2), cfg("s", "st", 16, 112, depth=2)],
        )
    return dict(
        matmul_n=4096,
        fwd=[cfg("b", "st", 32, 224), cfg("b", "st", 8, 224), cfg("ti", "st", 16, 112)],
        train=cfg("b", "st", 8, 224),
        models=[cfg("b", v, 32, 224) for v in ("st", "fe", "fsa", "fdp")],
        bf16=[cfg("b", "st", 8, 224), cfg("b", "fe", 8, 224), cfg("b", "st", 32, 224), cfg("b", "fe", 32, 224)],
        compile=cfg("b", "st", 8, 224),
        profile=[cfg("b", "st", 8, 224), cfg("b", "st", 32, 224), cfg("b", "fsa", 32, 224), cfg("b", "fdp", 32, 224)],
        fast=[cfg("b", "st", 8, 224), cfg("b", "st", 32, 224)],
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
        self.plan = plan(args.quick)
        self.results: dict[str, Any] = {}
        self.md: list[str] = []
        self.mm_fns: dict[str, Callable[[], Any]] = {}  # best GEMM of each dtype (the util reference)
        self.mm_flops: dict[str, float] = {}  # FLOPs of one call of mm_fns[dtype]
        self.mm_n = 0
        self._macs: dict[tuple, float] = {}

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

    # fast: the inference paths ----------------------------------------------------------------
    def fast(self) -> None:
        """Every inference path for Model 1 in ONE alternating run: eager (the default), HF, the
        optimize_for_inference modules, ONNX Runtime fp32/int8, and the GEMM libraries on the model's
        MLP shape (the util reference of this table)."""
        from vivit.optimize import kernel_choices, optimize_for_inference

        rows, out = [], []
        for c in self.plan["fast"]:
            torch.manual_seed(0)
            hf = build_hf(c, "sdpa", self.dev)
            ours = build_ours(c, self.dev)
            ours.load_state_dict(vivit.weights.from_transformers(hf.state_dict(), ours))
            x = make_input(c, self.dev)
            x_hf = x.transpose(1, 2).contiguous()
            fns: dict[str, Callable[[], Any]] = {
                "vivit eager": lambda m=ours, v=x: m(v),
                "hf sdpa": lambda m=hf, v=x_hf: hf_logits(m, v),
            }
            setup_s: dict[str, float] = {}
            for dtype in (torch.float32, torch.bfloat16, torch.int8):
                if dtype == torch.int8 and self.dev.type != "cpu":
                    continue
                t0 = time.perf_counter()  # copy + kernel timing on this input's shapes
                fast = optimize_for_inference(ours, dtype, example_input=x)
                name = f"optimized {str(dtype).removeprefix('torch.')}"
                setup_s[name] = time.perf_counter() - t0
                fns[name] = lambda m=fast, v=x: m(v)
            if self.dev.type == "cpu" and not self.args.no_onnx:
                sessions = self.ort_sessions(ours, c, setup_s)
                x_np = x.numpy()
                for name, sess in sessions.items():
                    fns[name] = lambda s=sess, v=x_np: s.run(None, {"video": v})
            tokens = (c["frames"] // 2) * (c["img"] // 16) ** 2 + 1
            width = HF_SIZES[c["size"]]["hidden_size"]
            gemms = gemm_contenders(tokens, width, 4 * width, self.dev, min_s=0.05)
            for name, g in gemms.items():
                fns[f"GEMM {name}"] = g["fn"]
            with torch.inference_mode():
                ref = ours(x).float()
                diffs = {}
                for name, fn in fns.items():
                    if not name.startswith("GEMM"):
                        y = fn()
                        y = torch.from_numpy(y[0]) if isinstance(y, list) else y
                        diffs[name] = (y.float().cpu() - ref.cpu()).abs().max().item()
                runs, warm = self.runs_for(c)
                t = alternate(self.timer, fns, runs, warm)
            del hf, ours, fns
            macs = self.macs(c)
            gemm_rate = {n: gemms[n]["flops"] / t[f"GEMM {n}"]["median_s"] for n in gemms}
            best_gemm: dict[str, tuple[str, float]] = {}
            for n, rate in gemm_rate.items():
                d = gemms[n]["dtype"]
                if d not in best_gemm or rate > best_gemm[d][1]:
                    best_gemm[d] = (n, rate)
            dtype_of = {
                "vivit eager": "float32",
                "hf sdpa": "float32",
                "optimized float32": "float32",
                "onnxruntime fp32": "float32",
                "optimized bfloat16": "bfloat16",
                "optimized int8": "int8",
                "onnxruntime int8": "int8",
            }
            eager = t["vivit eager"]["median_s"]
            for name, r in t.items():
                ms = r["median_s"]
                if name.startswith("GEMM"):
                    g = gemms[name.removeprefix("GEMM ")]
                    rate = g["flops"] / ms
                    star = " (best)" if best_gemm[g["dtype"]][0] == name.removeprefix("GEMM ") else ""
                    rows.append(
                        [
                            cfg_label(c),
                            f"GEMM {g['library']}{star}",
                            f"{ms / g['reps'] * 1e3:.2f}",
                            cpu_ms(r),
                            f"{rate / 1e9:.0f} G/s",
                            "-",
                            "-",
                        ]
                    )
                    continue
                ref_rate = best_gemm.get(dtype_of.get(name, "float32"), (None, None))[1]
                rows.append(
                    [
                        cfg_label(c),
                        name,
                        f"{ms * 1e3:.0f}",
                        cpu_ms(r),
                        f"{eager / ms:.2f}",
                        self.util(macs, ms, ref_rate),
                        f"{diffs[name]:.1e}",
                    ]
                )
            model_t = {n: r["median_s"] for n, r in t.items() if not n.startswith("GEMM")}
            fp32_paths = [n for n in ("vivit eager", "optimized float32") if n in model_t]
            fastest_fp32 = min(fp32_paths, key=model_t.__getitem__)
            targets = {
                "fastest fp32 vs onnxruntime fp32": model_t.get("onnxruntime fp32", math.nan) / model_t[fastest_fp32],
                "default (eager) vs hf sdpa": model_t["hf sdpa"] / model_t["vivit eager"],
                "bf16 vs eager": model_t["vivit eager"] / model_t["optimized bfloat16"],
                "int8 vs eager": model_t["vivit eager"] / model_t.get("optimized int8", math.nan),
                "onnxruntime int8 vs eager": model_t["vivit eager"] / model_t.get("onnxruntime int8", math.nan),
            }
            out.append(
                dict(
                    cfg=c,
                    macs=macs,
                    timings=t,
                    max_abs_logit_diff_vs_eager=diffs,
                    setup_s=setup_s,
                    gemm_flops_per_s=gemm_rate,
                    best_gemm=best_gemm,
                    fastest_fp32=fastest_fp32,
                    speedups=targets,
                )
            )
            print(f"{cfg_label(c)}: " + ", ".join(f"{k} {v:.2f}x" for k, v in targets.items()), flush=True)
        choices = kernel_choices()
        self.results["fast"] = dict(configs=out, kernel_choices=choices)
        self.table(
            f"Inference paths, Model 1 (batch 1, {self.args.threads} threads, {self.args.device}): one alternating run",
            [
                "config",
                "path",
                "median ms",
                "CPU ms",
                "speed-up vs eager",
                "util (vs best GEMM of its dtype)",
                "max abs dlogit vs eager",
            ],
            rows,
            "optimized = vivit.optimize_for_inference(model, dtype), kernels timed on this machine (choices below); "
            "onnxruntime = vivit.export_onnx (int8: ONNX Runtime's dynamic quantizer), intra-op threads = torch's, "
            "spinning off so idle ORT threads do not slow the next contender. GEMM rows: the model's fc1 shape "
            "(tokens x D -> 4D), ms per GEMM; util of each path is relative to the best GEMM of its dtype here. "
            "Speed-ups: "
            + "; ".join(
                f"{cfg_label(o['cfg'])}: " + ", ".join(f"{k} {v:.2f}x" for k, v in o["speedups"].items()) for o in out
            ),
        )
        self.table(
            "Kernels chosen by optimize_for_inference on this machine",
            ["op", "kernel", "candidates (best ms)"],
            [
                [k, v["kernel"], ", ".join(f"{n} {ms:.2f}" for n, ms in v["ms"].items()) or "-"]
                for k, v in choices.items()
                if not k.startswith(("gelu", "linear")) or v["ms"]
            ],
        )

    def ort_sessions(self, model: torch.nn.Module, c: dict[str, Any], setup_s: dict[str, float]) -> dict[str, Any]:
        """ONNX Runtime sessions for the fp32 and int8 exports of `model` (files deleted once loaded)."""
        import tempfile

        import onnxruntime as ort

        from vivit.export import export_onnx

        sessions = {}
        with tempfile.TemporaryDirectory() as tmp:
            for int8 in (False, True):
                name = f"onnxruntime {'int8' if int8 else 'fp32'}"
                t0 = time.perf_counter()
                path = export_onnx(model, Path(tmp) / f"{name.split()[1]}.onnx", int8=int8, dynamic_batch=False).path
                setup_s[name] = time.perf_counter() - t0
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.args.threads
                options.inter_op_num_threads = 1
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return sessions

    # accuracy: the demo's held-out clips and the Scenic fixtures ---------------------------------
    def accuracy(self) -> None:
        """Top-1 on the bundled demo's held-out clips (examples/make_demo.py's generator and seed) and
        the max logit drift on Scenic's reference fixtures, for every inference path."""
        import tempfile

        import onnxruntime as ort

        from vivit.export import export_onnx
        from vivit.optimize import optimize_for_inference

        sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "tests")]
        from finetune import MovingDiscs
        from scenic_fixtures import FORWARD_NAMES, load_forward_fixture

        def paths(model: torch.nn.Module, tmp: Path) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
            out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"eager fp32": model}
            for dtype in (torch.float32, torch.bfloat16, torch.int8):
                out[f"optimized {str(dtype).removeprefix('torch.')}"] = optimize_for_inference(model, dtype)
            if not self.args.no_onnx:
                for int8 in (False, True):
                    f = export_onnx(model, tmp / f"m{len(list(tmp.iterdir()))}.onnx", int8=int8).path
                    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
                    out[f"onnxruntime {'int8' if int8 else 'fp32'}"] = lambda v, s=sess: torch.from_numpy(
                        s.run(None, {"video": v.numpy()})[0]
                    )
            return out

        n_clips = 500 if self.args.quick else 2000
        video, labels, _ = MovingDiscs().sample(2000, torch.Generator().manual_seed(300))  # make_demo: seed 0 + 300
        video, labels = video[:n_clips], labels[:n_clips]
        fixtures = FORWARD_NAMES[::4] if self.args.quick else FORWARD_NAMES
        demo = vivit.create_model("vivit_demo", pretrained=True).eval()
        drift: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            preds = {
                n: torch.cat([fn(video[i : i + 250]).argmax(-1) for i in range(0, n_clips, 250)])
                for n, fn in paths(demo, Path(tmp)).items()
            }
            for name in fixtures:
                f = load_forward_fixture(name)
                f["model"].load_state_dict(vivit.weights.from_scenic(f["params"], f["model"]))
                for n, fn in paths(f["model"], Path(tmp)).items():
                    err = (fn(f["video"]).float() - f["logits"]).abs().max().item()
                    drift[n] = max(drift.get(n, 0.0), err)
        base = preds["eager fp32"]
        res, rows = {}, []
        for n, p in preds.items():
            acc = (p == labels).float().mean().item() * 100
            agree = (p == base).float().mean().item() * 100
            res[n] = dict(top1=acc, top1_agree_with_eager=agree, fixtures_max_abs_logit_diff=drift[n])
            rows.append([n, f"{acc:.2f}", f"{agree:.2f}", f"{drift[n]:.1e}"])
        self.results["accuracy"] = dict(demo_clips=n_clips, fixtures=fixtures, paths=res)
        self.table(
            "Accuracy of the inference paths",
            [
                "path",
                f"demo top-1 % ({n_clips} held-out clips)",
                "top-1 agrees with eager %",
                f"max abs logit diff, {len(fixtures)} Scenic fixtures",
            ],
            rows,
            "Demo: vivit_demo on the held-out clips examples/make_demo.py evaluates (MovingDiscs, seed 300). Fixtures: "
            "Scenic's own logits (random weights, width 32, |logits| <= 2.4); fp32 paths must stay <= 1e-5.",
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
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    for line in torch.__config__.show().splitlines():  # which BLAS / oneDNN build does the work
        if "Math Kernel Library Version" in line or "MKL-DNN v" in line:
            info.setdefault("libs", []).append(line.strip(" -"))
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
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
    p.add_argument("--no-onnx", action="store_true", help="fast/accuracy sections: skip ONNX Runtime")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="first wait up to S seconds for the 1-min load average to fall below 1",
    )
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.runs < 1:
        p.error("--runs must be >= 1")
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
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for every contender
        torch.backends.cudnn.allow_tf32 = False
    deadline = time.monotonic() + args.wait_idle
    while os.getloadavg()[0] >= 1 and time.monotonic() < deadline:
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
    if "matmul" not in sections and any(s in sections for s in ("fwd", "train", "models", "bf16", "fast")):
        sections.insert(0, "matmul")  # the util columns need it
    errors = {}
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
    info.update(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t_start)
    doc = dict(
        machine=info,
        args={k: v for k, v in vars(args).items() if k != "_child"},
        results=bench.results,
        errors=errors,
        markdown="\n".join(bench.md),
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json} ({info['wall_s']:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
