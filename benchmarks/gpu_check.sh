#!/usr/bin/env bash
# One-command GPU check of vivit (about 5-8 minutes on one H200):
#   all four ViViT-B/16x2 models at 32x224^2: fp32 / bf16 forward and training step (time, peak memory),
#   optimize_for_inference(bf16), torch.compile, HF transformers' ViViT (same weights) for Model 1,
#   and the GPU logits checked against CPU fp32 logits of the same weights and clip.
#
#   bash benchmarks/gpu_check.sh                  # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --cpu-dry-run    # the same code paths on CPU with tiny models (~1 min)
#
# Environment: PYTHON (default python3), OUT (folder for gpu_check.json; default benchmarks/),
# BATCH (forward batch, default 8), TRAIN_BATCH (default 4), RUNS (timed runs, default 10),
# NO_COMPILE=1 (skip torch.compile), NO_INSTALL=1 (never pip install).
# Prints a markdown table and writes gpu_check.json. Exit status 1 if a correctness check fails.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
if [[ "${1:-}" == "--cpu-dry-run" ]]; then DRY_RUN=1; fi
OUT="${OUT:-benchmarks}"
mkdir -p "$OUT"

have() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }
install() {  # best effort: a machine without network keeps what it has
  if [[ "${NO_INSTALL:-0}" == "1" ]]; then echo "gpu_check: not installing $* (NO_INSTALL=1)" >&2; return 1; fi
  echo "gpu_check: pip install $*" >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" || { echo "gpu_check: could not install $*" >&2; return 1; }
}

if ! have torch; then
  install "torch==2.13.0" || { echo "gpu_check: error: torch is missing and could not be installed" >&2; exit 2; }
fi
if [[ "$DRY_RUN" == "0" ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: error: torch $("$PYTHON" -c 'import torch; print(torch.__version__)') sees no CUDA GPU" \
       "(a CPU-only build or no driver); use --cpu-dry-run to check the code paths on CPU" >&2
  exit 2
fi
for mod in einops safetensors huggingface_hub numpy; do
  have "$mod" || install "$mod" || { echo "gpu_check: error: $mod is required" >&2; exit 2; }
done
have transformers || install "transformers>=4.40" || echo "gpu_check: transformers missing: no HF rows" >&2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vivit, installed or not

DRY_RUN="$DRY_RUN" OUT="$OUT" "$PYTHON" - <<'PY'
import contextlib, json, math, os, statistics, sys, time, traceback

import torch

import vivit
import vivit.weights
from vivit import optimize_for_inference

DRY = os.environ["DRY_RUN"] == "1"
dev = torch.device("cpu" if DRY else "cuda")
RUNS = int(os.environ.get("RUNS", 3 if DRY else 10))
BATCH = int(os.environ.get("BATCH", 2 if DRY else 8))
TRAIN_BATCH = int(os.environ.get("TRAIN_BATCH", 2 if DRY else 4))
COMPILE = os.environ.get("NO_COMPILE", "0") != "1"
VARIANTS = ("st", "fe", "fsa", "fdp")
FRAMES, IMG = (8, 32) if DRY else (32, 224)
SIZE = dict(embed_dim=64, depth=2, num_heads=4, mlp_dim=128, patch_size=8) if DRY else {}
FP32_CPU_TOL = 1e-3  # GPU fp32 (TF32 off) vs CPU fp32, B at 32x224^2 (logits ~O(1)); expected ~1e-5
failures: list[str] = []
torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
torch.backends.cudnn.allow_tf32 = False


def sync() -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, runs=RUNS, warmup=2) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def peak() -> dict:
    out = {}
    if dev.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    yield out
    if dev.type == "cuda":
        sync()
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["increase_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    name = f"vivit_{'s' if DRY else 'b'}_{variant}"  # dry run: S entries shrunk by SIZE
    model = vivit.create_model(name, num_frames=FRAMES, img_size=IMG, **SIZE)
    with torch.no_grad():  # released heads are zero-initialised; random logits make the comparisons mean something
        model.head.weight.normal_(std=0.02)
    return model.eval()


def clip(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, FRAMES, IMG, IMG, generator=g) * 2 - 1


rows, results = [], {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (dry run)",
                     "torch": torch.__version__, "batch": BATCH, "train_batch": TRAIN_BATCH, "models": {}}


def row(model: str, what: str, ms: float | None, batch: int, mem: dict | None = None, note: str = "") -> None:
    thr = f"{batch / ms * 1e3:.1f}" if ms else "-"
    mem = mem or {}
    mib = f"{mem['peak_mib']:.0f}" if "peak_mib" in mem else "-"
    rows.append([model, what, f"{ms:.1f}" if ms else "-", thr, mib, note])


for variant in VARIANTS:
    res = results["models"][variant] = {}
    try:
        model = build(variant)
        label = f"vivit_b_{variant}"
        x1 = clip(1, seed=1)
        with torch.inference_mode():
            cpu_logits = model(x1).float()  # the CPU fp32 reference for the correctness check
        model = model.to(dev)
        x, xc = clip(BATCH).to(dev), x1.to(dev)
        with torch.inference_mode():
            gpu_fp32 = model(xc).float().cpu()
            with torch.autocast(dev.type, torch.bfloat16):
                gpu_bf16 = model(xc).float().cpu()
        scale = cpu_logits.abs().max().item()
        res["fp32_vs_cpu"] = (gpu_fp32 - cpu_logits).abs().max().item()
        res["bf16_vs_cpu"] = (gpu_bf16 - cpu_logits).abs().max().item()
        res["bf16_top1_agree"] = bool(gpu_bf16.argmax(-1).eq(cpu_logits.argmax(-1)).all())
        if not res["fp32_vs_cpu"] <= FP32_CPU_TOL:
            failures.append(f"{label}: GPU fp32 vs CPU fp32 logits differ by {res['fp32_vs_cpu']:.2e} (> {FP32_CPU_TOL})")
        correct = f"vs CPU fp32: {res['fp32_vs_cpu']:.1e}"

        with torch.inference_mode():
            with peak() as mem:
                ms = timed(lambda: model(x)) * 1e3
            res["fwd_fp32"] = dict(ms=ms, **mem)
            row(label, "forward fp32", ms, BATCH, mem, correct)
            with peak() as mem, torch.autocast(dev.type, torch.bfloat16):
                ms = timed(lambda: model(x)) * 1e3
            res["fwd_bf16_autocast"] = dict(ms=ms, **mem)
            row(label, "forward bf16 autocast", ms, BATCH, mem,
                f"vs CPU fp32: {res['bf16_vs_cpu']:.1e} (scale {scale:.2f}), top-1 {'=' if res['bf16_top1_agree'] else '!='}")
            fast = optimize_for_inference(model, torch.bfloat16)
            fast_logits = fast(xc).float().cpu()
            with peak() as mem:
                ms = timed(lambda: fast(x)) * 1e3
            res["fwd_optimized_bf16"] = dict(ms=ms, vs_cpu=(fast_logits - cpu_logits).abs().max().item(), **mem)
            row(label, "optimize_for_inference bf16", ms, BATCH, mem, f"vs CPU fp32: {res['fwd_optimized_bf16']['vs_cpu']:.1e}")
            del fast

        for dtype_name, ctx in (("fp32", contextlib.nullcontext), ("bf16", lambda: torch.autocast(dev.type, torch.bfloat16))):
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
            xt, yt = clip(TRAIN_BATCH, seed=2).to(dev), torch.arange(TRAIN_BATCH, device=dev) % 400

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                with ctx():
                    loss = torch.nn.functional.cross_entropy(model(xt).float(), yt)
                loss.backward()
                opt.step()

            with peak() as mem:
                ms = timed(step, runs=max(3, RUNS // 2), warmup=1) * 1e3
            res[f"train_{dtype_name}"] = dict(ms=ms, **mem)
            row(label, f"train step {dtype_name} (AdamW)", ms, TRAIN_BATCH, mem)
            del opt
            model.eval()
        model = model.cpu()  # free the GPU for the next model (the training steps changed the weights: fine)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - report and go on with the other models
        traceback.print_exc()
        failures.append(f"vivit_b_{variant}: {type(err).__name__}: {err}")

# torch.compile and HF transformers: Model 1
try:
    model = build("st").to(dev)
    x = clip(BATCH).to(dev)
    if COMPILE:
        torch._dynamo.reset()
        compiled = torch.compile(model)
        with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16):
            t0 = time.perf_counter()
            y = compiled(x)
            sync()
            compile_s = time.perf_counter() - t0
            diff = (y.float() - model(x).float()).abs().max().item()
            ms = timed(lambda: compiled(x)) * 1e3
        results["compile_bf16_st"] = dict(ms=ms, compile_s=compile_s, vs_eager_bf16=diff)
        row("vivit_b_st", "torch.compile bf16 autocast", ms, BATCH, None, f"compile {compile_s:.0f} s, vs eager {diff:.1e}")
        del compiled
        torch._dynamo.reset()
    try:
        from transformers import VivitConfig, VivitForVideoClassification
    except ImportError:
        row("hf vivit", "skipped: transformers not installed", None, BATCH)
    else:
        size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128) if DRY else {}
        cfg = VivitConfig(image_size=IMG, num_frames=FRAMES, tubelet_size=[2, 8 if DRY else 16, 8 if DRY else 16],
                          num_labels=400, attn_implementation="sdpa", **size)
        hf = VivitForVideoClassification(cfg).to(dev).eval()
        ours = vivit.create_model("vivit_s_st" if DRY else "vivit_b_st", num_frames=FRAMES, img_size=IMG, **SIZE)
        ours.load_state_dict(vivit.weights.from_transformers(hf.state_dict(), ours))
        ours = ours.to(dev).eval()
        x_hf = x.transpose(1, 2).contiguous()
        with torch.inference_mode():
            diff = (hf(pixel_values=x_hf).logits - ours(x)).abs().max().item()
            for name, ctx in (("fp32", contextlib.nullcontext), ("bf16 autocast", lambda: torch.autocast(dev.type, torch.bfloat16))):
                with ctx(), peak() as mem_hf:
                    ms_hf = timed(lambda: hf(pixel_values=x_hf)) * 1e3
                with ctx(), peak() as mem_ours:
                    ms_ours = timed(lambda: ours(x)) * 1e3
                results[f"hf_{name}"] = dict(hf_ms=ms_hf, vivit_ms=ms_ours, hf_mem=mem_hf, vivit_mem=mem_ours, logit_diff=diff)
                row("hf VivitForVideoClassification", f"forward {name}", ms_hf, BATCH, mem_hf,
                    f"vivit {ms_ours:.1f} ms: HF/vivit {ms_hf / ms_ours:.2f}x; logits equal to {diff:.1e}")
        if not diff <= 1e-3:
            failures.append(f"HF vs vivit logits differ by {diff:.2e}")
except Exception as err:  # noqa: BLE001
    traceback.print_exc()
    failures.append(f"compile/HF: {type(err).__name__}: {err}")

header = ["model", "what", "median ms", "clips/s", "peak MiB", "check"]
print(f"\n### vivit GPU check: {results['device']}, torch {torch.__version__}, {FRAMES}x{IMG}^2 clips, batch {BATCH} "
      f"(train {TRAIN_BATCH}), TF32 off\n")
print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
for r in rows:
    print("| " + " | ".join(str(v) for v in r) + " |")
results["failures"] = failures
path = os.path.join(os.environ["OUT"], "gpu_check_dry_run.json" if DRY else "gpu_check.json")
with open(path, "w") as f:
    json.dump(results, f, indent=1)
print(f"\nwrote {path}")
for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
sys.exit(1 if failures else 0)
PY
