"""Inference-only fast paths: `optimize_for_inference(model, dtype)` for fp32, bf16 and int8.

The returned module is a copy of the model (same class, same `forward`, `forward_features`,
`forward_head`, `forward_intermediates`) whose linear layers and attention kernels are replaced
by inference-only versions. The original model, its training and its autograd are untouched.

Which kernel is fastest depends on the machine, not on a vendor string: on one AMD EPYC oneDNN's
fp32 GEMM ran 2.4x MKL's, on an Intel Xeon they tie and oneDNN's bf16 GEMM (AMX) runs 4x both.
So every kernel choice is made by timing the candidates on the real shapes, at the first call
with a new shape, and remembered for the process (`kernel_choices()` lists them):

| op | candidates |
|---|---|
| linear fp32 | `aten` (`F.linear`, MKL sgemm), `mkl_packed` (MKL packed weights), `onednn_packed` (oneDNN, weights in its blocked layout) |
| linear bf16 | `aten` (`F.linear` in bf16), `onednn_packed` |
| fc1 + GELU | any linear above followed by the faster GELU, or `onednn_packed_gelu` (GELU fused in the GEMM) |
| GELU (tanh) | `aten` (`F.gelu(approximate="tanh")`), `sigmoid` (`x * sigmoid(2z)`, the same function in 4 passes) |
| attention | `sdpa` (`F.scaled_dot_product_attention` in the input dtype), `matmul` (fp32 q k^T, softmax, @ v in query chunks); bf16 models add `sdpa_fp32`, int8 models `sdpa_bf16` (CPUs with native bf16) |
| linear int8 | `quantized::linear_dynamic` prepacked for each available engine (`onednn`, `x86`, `fbgemm`) |

A non-public kernel must beat `aten` by `_MARGIN` to be chosen. The private ops (`torch.ops.mkl`,
`torch.ops.mkldnn`) are used only on the torch versions they were tested with (`_TESTED_TORCH`)
and after a numerical self-check; elsewhere the public kernels are used.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .models.layers import (
    Attention,
    Block,
    FactorizedDotProductAttention,
    FactorizedSelfAttentionBlock,
    Mlp,
    TubeletEmbed,
)

__all__ = ["kernel_choices", "optimize_for_inference"]

# torch (major, minor) versions on which the private GEMM ops below were tested (tests/test_optimize.py)
_TESTED_TORCH = ((2, 13),)
# a non-public kernel must be at least this much faster than the public one to be chosen
_MARGIN = 0.03
# GEMMs smaller than this (multiply-adds) always use `aten`: timing them costs more than it saves
_MIN_TUNED_MACS = 1 << 22
# matmul attention: queries per chunk are chosen so that one chunk of scores stays this small (elements)
_SCORE_CHUNK_ELEMENTS = 1 << 21
_PROBE_ROUNDS = 3  # timed calls per candidate at least ...
_PROBE_MAX_ROUNDS = 20  # ... and at most, while the probe of one shape has taken less than:
_PROBE_BUDGET_S = 0.25

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.int8)
_Key = tuple[Any, ...]
_CHOICES: dict[_Key, str] = {}  # (op, shapes, dtype, threads) -> kernel name, for this process
# op ("linear", "gelu", "attention") -> kernel name to use whenever it is a candidate, skipping the
# timing and the size threshold: for tests and for comparing kernels (benchmarks/bench.py)
_FORCED: dict[str, str] = {}
_TIMINGS: dict[_Key, dict[str, float]] = {}  # best seconds of each candidate when the choice was made


# ---------------------------------------------------------------- availability of private ops
_PRIVATE_OK: dict[str, bool] = {}


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _private_ops_available() -> dict[str, bool]:
    """Which private GEMM families are usable here: `{"mkl": bool, "onednn": bool}`.

    False on untested torch versions, when the op is missing or when its result disagrees with
    `F.linear` on a small problem (checked once per process).
    """
    if _PRIVATE_OK:
        return _PRIVATE_OK
    tested = _torch_version() in _TESTED_TORCH
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(5, 24, generator=g), torch.randn(16, 24, generator=g), torch.randn(16, generator=g)
    ref = F.linear(x, w, b)

    def check(run: Callable[[], torch.Tensor]) -> bool:
        try:
            return bool(torch.allclose(run(), ref, atol=1e-4, rtol=1e-4))
        except Exception:
            return False

    _PRIVATE_OK["mkl"] = (
        tested
        and bool(getattr(torch._C, "has_mkl", False))
        and hasattr(torch.ops.mkl, "_mkl_linear")
        and check(lambda: torch.ops.mkl._mkl_linear(x, torch.ops.mkl._mkl_reorder_linear_weight(w, 5), w, b, 5))
    )
    _PRIVATE_OK["onednn"] = (
        tested
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and check(
            lambda: torch.ops.mkldnn._linear_pointwise(
                x, torch.ops.mkldnn._reorder_linear_weight(w, 5), b, "none", [], ""
            )
        )
    )
    return _PRIVATE_OK


# ---------------------------------------------------------------- timing
def _fastest(candidates: dict[str, Callable[[], Any]], prefer: str | None = None) -> tuple[str, dict[str, float]]:
    """Name of the fastest candidate (best of >= `_PROBE_ROUNDS` alternating calls after one warm-up)
    and every candidate's best time in seconds. The best rather than the median time: on a shared
    machine the other load only ever adds time. `prefer` wins unless another is `_MARGIN` faster."""
    names = list(candidates)
    for fn in candidates.values():  # warm-up: oneDNN creates its primitives on the first call
        fn()
    best = dict.fromkeys(names, math.inf)
    start, r = time.perf_counter(), 0
    # short kernels get more rounds (up to _PROBE_MAX_ROUNDS within _PROBE_BUDGET_S): on a busy machine
    # a single call can lose a whole scheduler time slice, which is as long as the kernel itself
    while r < _PROBE_ROUNDS or (r < _PROBE_MAX_ROUNDS and time.perf_counter() - start < _PROBE_BUDGET_S):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            t0 = time.perf_counter()
            candidates[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
        r += 1
    winner = min(names, key=best.__getitem__)
    if prefer is not None and best[winner] > (1 - _MARGIN) * best[prefer]:
        winner = prefer
    return winner, best


def _choose(key: _Key, make_candidates: Callable[[], dict[str, Callable[[], Any]]], prefer: str | None) -> str:
    forced = _FORCED.get(key[0])
    if forced is not None:
        names = make_candidates()
        if forced in names:
            return forced
        if key[0] == "linear" and forced.removesuffix("_gelu") in names:  # a layer without the GELU
            return forced.removesuffix("_gelu")
    if key not in _CHOICES:
        candidates = make_candidates()
        if len(candidates) == 1:
            _CHOICES[key] = next(iter(candidates))
        else:
            _CHOICES[key], _TIMINGS[key] = _fastest(candidates, prefer)
    return _CHOICES[key]


def kernel_choices() -> dict[str, dict[str, Any]]:
    """The kernels chosen so far in this process, for reports and benchmarks.

    Returns:
        `{description: {"kernel": name, "ms": {candidate: best milliseconds}}}`, e.g.
        `"linear 785x768->3072 bfloat16 +gelu_tanh (2 threads)": {"kernel": "onednn_packed", ...}`.
    """
    out = {}
    for key, kernel in _CHOICES.items():
        op, shape, dtype, extra, threads = key
        dims = "x".join(str(s) for s in shape)
        if op == "linear":
            dims = f"{shape[0]}x{shape[1]}->{shape[2]}"
        detail = f" of {extra.replace('/', ', ')}" if op == "attention" else (f" +{extra}" if extra else "")
        text = f"{op} {dims} {str(dtype).removeprefix('torch.')}{detail} ({threads} threads)"
        ms = {n: round(s * 1e3, 3) for n, s in _TIMINGS.get(key, {}).items()}
        out[text] = {"kernel": kernel, "ms": ms}
    return out


def _tunable(x: torch.Tensor, tune: bool) -> bool:
    return tune and x.device.type == "cpu" and x.numel() > 0


# ---------------------------------------------------------------- GELU (tanh approximation)
# Scenic's GELU is 0.5 x (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x^3); 0.5 (1 + tanh(z)) = sigmoid(2z),
# so gelu(x) = x * sigmoid(2 sqrt(2/pi) x (1 + 0.044715 x^2)): 4 vectorised passes (measured: ATen's
# tanh-GELU kernel takes longer than 4 passes of these ops on some builds). Max abs error vs float64
# 5e-7 at |x| <= 10 (ATen's: 4e-7).
_GELU_C1 = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_C3 = _GELU_C1 * 0.044715


def _gelu_sigmoid_(x: torch.Tensor) -> torch.Tensor:
    """tanh-GELU of `x`, computed in place (x is a fresh GEMM output nobody else holds)."""
    z = torch.addcmul(x.new_tensor(_GELU_C1), x, x, value=_GELU_C3)  # c1 + c3 x^2
    z.mul_(x).sigmoid_()
    return x.mul_(z)


def _gelu_aten_(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


_GELU: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"aten": _gelu_aten_, "sigmoid": _gelu_sigmoid_}


def _gelu_fn(x: torch.Tensor, tune: bool) -> _Gelu:
    """The faster tanh-GELU for tensors shaped like `x` (timed on a copy of `x`)."""
    if not _tunable(x, tune):
        return _gelu_aten_
    key: _Key = ("gelu", tuple(x.shape), x.dtype, "", torch.get_num_threads())

    def on_copy(f: _Gelu) -> Callable[[], Any]:
        return lambda: f(x.clone())

    return _GELU[_choose(key, lambda: {n: on_copy(f) for n, f in _GELU.items()}, "aten")]


# ---------------------------------------------------------------- linear layers
_Gelu = Callable[[torch.Tensor], torch.Tensor]
_LinearKernel = tuple[Callable[[int], Any], Callable[[Any, torch.Tensor], torch.Tensor]]


class _TunedLinear(nn.Module):
    """`nn.Linear` for inference in fp32 or bf16, optionally followed by tanh-GELU, on the kernel
    measured fastest for each input shape. Input of any float dtype `(..., in_features)`; output in
    the compute dtype `(..., out_features)`."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, activation: str | None, tune: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype, self.activation, self.tune = dtype, activation, tune
        self.register_buffer("weight", linear.weight.detach().to(dtype).clone().contiguous())
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", bias.to(dtype).clone())
        self._packed: dict[str, Any] = {}  # kernel name -> prepared weights (not in the state_dict)

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.compute_dtype}{act}"

    def __getstate__(self) -> dict[str, Any]:
        # deepcopy / pickle / torch.save: the packed weights are opaque tensors without storage ("Cannot
        # access storage of OpaqueTensorImpl") and only a cache; a copy packs again at its first call
        return {**self.__dict__, "_packed": {}}

    def _apply(self, fn: Callable, recurse: bool = True) -> nn.Module:  # .to()/.cuda(): repack lazily
        self._packed.clear()
        # The compute dtype is this layer's, fixed at construction: a model-wide `.float()`, `.double()` or
        # `.to(device, dtype)` moves the weights but keeps their dtype (bf16 weights cast to fp32 would meet
        # the bf16 input in the GEMM: "mat1 and mat2 must have the same dtype").
        return super()._apply(lambda t: fn(t).to(self.compute_dtype), recurse)

    # kernels: name -> (prepare(m) -> state, run(state, x) -> y); x is 2-D in the compute dtype
    def _kernels(self) -> dict[str, _LinearKernel]:
        w, b = self.weight, self.bias
        kernels: dict[str, _LinearKernel] = {"aten": (lambda m: None, lambda s, x: F.linear(x, w, b))}
        private = _private_ops_available()
        if private["mkl"] and self.compute_dtype == torch.float32:
            kernels["mkl_packed"] = (
                lambda m: (torch.ops.mkl._mkl_reorder_linear_weight(w, m), m),
                lambda s, x: torch.ops.mkl._mkl_linear(x, s[0], w, b, s[1]),
            )
        if private["onednn"]:
            kernels["onednn_packed"] = (
                lambda m: torch.ops.mkldnn._reorder_linear_weight(w, m),
                lambda s, x: torch.ops.mkldnn._linear_pointwise(x, s, b, "none", [], ""),
            )
            if self.activation == "gelu_tanh":
                kernels["onednn_packed_gelu"] = (
                    lambda m: torch.ops.mkldnn._reorder_linear_weight(w, m),
                    lambda s, x: torch.ops.mkldnn._linear_pointwise(x, s, b, "gelu", [], "tanh"),
                )
        return kernels

    def _prepared(self, name: str, m: int) -> Any:
        base = name.removesuffix("_gelu")
        if base not in self._packed:
            self._packed[base] = self._kernels()[name][0](m)
        return self._packed[base]

    def _run(self, name: str, x: torch.Tensor, gelu: _Gelu) -> torch.Tensor:
        y = self._kernels()[name][1](self._prepared(name, x.shape[0]), x)
        if self.activation == "gelu_tanh" and not name.endswith("_gelu"):
            y = gelu(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "a module from vivit.optimize_for_inference is inference-only (no autograd); train the original model"
            )
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features).to(self.compute_dtype)
        name, gelu = "aten", cast(_Gelu, _gelu_aten_)
        if self.activation and _tunable(x, self.tune):
            gelu_key: _Key = ("gelu", (x.shape[0], self.out_features), self.compute_dtype, "", torch.get_num_threads())
            if gelu_key in _CHOICES and "gelu" not in _FORCED:
                gelu = _GELU[_CHOICES[gelu_key]]
            else:  # time it on this layer's real output
                gelu = _gelu_fn(F.linear(x, self.weight, self.bias), self.tune)
        macs = x.shape[0] * self.in_features * self.out_features
        if _tunable(x, self.tune) and (macs >= _MIN_TUNED_MACS or "linear" in _FORCED):
            key: _Key = (
                "linear",
                (x.shape[0], self.in_features, self.out_features),
                self.compute_dtype,
                self.activation or "",
                torch.get_num_threads(),
            )

            def run(n: str, x: torch.Tensor = x, gelu: _Gelu = gelu) -> Callable[[], Any]:
                return lambda: self._run(n, x, gelu)

            def candidates() -> dict[str, Callable[[], Any]]:
                return {n: run(n) for n in self._kernels()}

            name = _choose(key, candidates, "aten")
            for unused in set(self._packed) - {name.removesuffix("_gelu")}:  # keep only what this layer runs
                del self._packed[unused]
        return self._run(name, x, gelu).view(*lead, self.out_features)


_INT8_ENGINES = ("onednn", "x86", "fbgemm")
_INT8_OK: list[str] = []  # engines that passed the self-check, filled once per process
_INT8_CHECKED: list[bool] = []


def _quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 per output channel: scale = max |w| / 127 of each row."""
    scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # quantized tensors are deprecated upstream; see optimize_for_inference
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)


def _int8_engines() -> list[str]:
    """The quantized engines whose dynamic int8 linear works here, checked once against fp32."""
    if not _INT8_CHECKED:
        _INT8_CHECKED.append(True)
        g = torch.Generator().manual_seed(0)
        x, w, b = torch.randn(9, 32, generator=g), torch.randn(24, 32, generator=g), torch.randn(24, generator=g)
        ref = F.linear(x, w, b)
        supported = getattr(torch.backends.quantized, "supported_engines", [])
        for engine in _INT8_ENGINES:
            if engine not in supported:
                continue
            before = torch.backends.quantized.engine
            try:
                torch.backends.quantized.engine = engine
                packed = torch.ops.quantized.linear_prepack(_quantize_weight(w), b)
                y = torch.ops.quantized.linear_dynamic(x, packed, engine != "onednn")
                if (y - ref).abs().max() <= 0.05 * ref.abs().max():
                    _INT8_OK.append(engine)
            except Exception:
                pass
            finally:
                torch.backends.quantized.engine = before
    return _INT8_OK


class _Int8Linear(nn.Module):
    """Dynamic int8 linear: weights int8 per output channel (symmetric), activations quantized per
    tensor at run time (`quantized::linear_dynamic`, the op behind `torch.ao`'s dynamic `Linear`);
    fp32 in, fp32 out, optionally followed by tanh-GELU. The engine (oneDNN, x86, FBGEMM) is the one
    measured fastest for each input shape among those this torch build supports (and that pass a
    numerical self-check, `_int8_engines`)."""

    def __init__(self, linear: nn.Linear, activation: str | None, tune: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation, self.tune = activation, tune
        self.register_buffer("qweight", _quantize_weight(linear.weight.detach().float()))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self._packed: dict[str, Any] = {}
        self.engines = _int8_engines()

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype=int8 (dynamic){act}"

    def _apply(self, fn: Callable, recurse: bool = True) -> nn.Module:
        self._packed.clear()  # the packed weights hold the bias: pack again from the buffers
        # int8 weights are not floating point (a dtype cast leaves them); the bias stays fp32 like the GEMM's output
        return super()._apply(lambda t: fn(t).float() if t.is_floating_point() else fn(t), recurse)

    def _prepared(self, engine: str) -> Any:
        if engine not in self._packed:
            before = torch.backends.quantized.engine
            try:  # the packed format is the engine's: prepack under it, then restore the global setting
                torch.backends.quantized.engine = engine
                self._packed[engine] = torch.ops.quantized.linear_prepack(self.qweight, self.bias)
            finally:
                torch.backends.quantized.engine = before
        return self._packed[engine]

    def _run(self, engine: str, x: torch.Tensor) -> torch.Tensor:
        # FBGEMM (and x86, which may route to it) need 7-bit activations to avoid int16 overflow in
        # its VNNI-less kernels (torch.ao's default); oneDNN accumulates in int32 and keeps 8 bits
        return torch.ops.quantized.linear_dynamic(x, self._prepared(engine), engine != "onednn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "a module from vivit.optimize_for_inference is inference-only (no autograd); train the original model"
            )
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features).float()
        engine = self.engines[0]
        if self.tune and len(self.engines) > 1 and x.numel() > 0:
            key = ("linear", (x.shape[0], self.in_features, self.out_features), torch.int8, "", torch.get_num_threads())

            def run(e: str, x: torch.Tensor = x) -> Callable[[], Any]:
                return lambda: self._run(e, x)

            engine = _choose(key, lambda: {e: run(e) for e in self.engines}, None)
            for unused in set(self._packed) - {engine}:
                del self._packed[unused]
        y = self._run(engine, x)
        if self.activation == "gelu_tanh":
            y = _gelu_fn(y, self.tune)(y)
        return y.view(*lead, self.out_features)


# ---------------------------------------------------------------- attention
def _matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in fp32, queries in chunks so the scores stay in cache."""
    q, k, v = q.float(), k.float(), v.float()
    scale = q.shape[-1] ** -0.5
    kt = k.transpose(-2, -1)
    n, nk = q.shape[-2], k.shape[-2]
    rows = max(1, _SCORE_CHUNK_ELEMENTS // max(1, nk * math.prod(q.shape[:-2])))
    if rows >= n:
        return torch.softmax(torch.matmul(q, kt).mul_(scale), dim=-1) @ v
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for i in range(0, n, rows):
        scores = torch.matmul(q[..., i : i + rows, :], kt).mul_(scale)
        torch.matmul(torch.softmax(scores, dim=-1), v, out=out[..., i : i + rows, :])
    return out


def _sdpa_in(dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype)).to(q.dtype)

    return run


# attention kernels by name: (q, k, v) -> output in q's dtype
_ATTENTION: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sdpa": F.scaled_dot_product_attention,
    "sdpa_fp32": _sdpa_in(torch.float32),
    "sdpa_bf16": _sdpa_in(torch.bfloat16),
    "matmul": lambda q, k, v: _matmul_attention(q, k, v).to(q.dtype),
}


class _TunedSdpa:
    """Mixin: the attention kernel measured fastest for each (shape, dtype). Inference only.

    `attention_kernels` are the kernels this module may use: fp32 models keep fp32 ("sdpa",
    "matmul"); bf16 models add "sdpa_fp32"; int8 models may compute attention in bf16
    ("sdpa_bf16") where the CPU has native bf16 (softmax still accumulates in fp32).
    """

    tune: bool = True
    training: bool
    attention_kernels: tuple[str, ...] = ("sdpa",)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.training or not _tunable(q, self.tune):
            return super()._sdpa(q, k, v)  # type: ignore[misc]
        kernels = [n for n in self.attention_kernels if not (n == "sdpa_fp32" and q.dtype == torch.float32)]
        key: _Key = ("attention", tuple(q.shape), q.dtype, "/".join(kernels), torch.get_num_threads())

        def run(n: str) -> Callable[[], Any]:
            return lambda: _ATTENTION[n](q, k, v)

        name = _choose(key, lambda: {n: run(n) for n in kernels}, "sdpa")
        return _ATTENTION[name](q, k, v)


class _TunedAttention(_TunedSdpa, Attention):
    pass


class _TunedFactorizedDotProductAttention(_TunedSdpa, FactorizedDotProductAttention):
    pass


_TUNED_ATTENTION: dict[type, type] = {
    Attention: _TunedAttention,
    FactorizedDotProductAttention: _TunedFactorizedDotProductAttention,
}


# ---------------------------------------------------------------- tubelet embedding
class _LinearTubeletEmbed(TubeletEmbed):
    """The tubelet Conv3d (kernel = stride, VALID) as a linear layer over flattened tubelets, so it
    runs on the bf16 / int8 GEMMs. `proj` (the fp32 conv) stays for the model's input dtype check."""

    linear: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) float -> (B, D, nt, nh, nw) float32, like the conv."""
        kt, kh, kw = self.kernel_size
        nt, nh, nw = self.grid_size(x.shape[2], (x.shape[3], x.shape[4]))
        x = x[:, :, : nt * kt, : nh * kh, : nw * kw]  # VALID: leftover frames / pixels are dropped
        tubelets = rearrange(x, "b c (nt t) (nh h) (nw w) -> b nt nh nw (c t h w)", t=kt, h=kh, w=kw)
        return rearrange(self.linear(tubelets).float(), "b nt nh nw d -> b d nt nh nw")


class _LayerNormIn(nn.LayerNorm):
    """LayerNorm that casts its input to the dtype of its weights. `pinned`: model-wide casts
    (`.float()`, `.to(dtype)`) leave that dtype alone (the bf16 norms inside the blocks of a bf16
    residual stream; ATen's CPU kernel accumulates bf16 in fp32); else it follows them (the encoders'
    final norms, so that features, pooling and head see the model's dtype, fp32, as in the original)."""

    def __init__(self, norm: nn.LayerNorm, dtype: torch.dtype, pinned: bool) -> None:
        super().__init__(norm.normalized_shape, eps=norm.eps, elementwise_affine=norm.elementwise_affine)
        self.pinned, self.compute_dtype = pinned, dtype
        if norm.elementwise_affine:
            with torch.no_grad():
                self.weight.copy_(norm.weight)
                if norm.bias is not None and self.bias is not None:
                    self.bias.copy_(norm.bias)
        self.to(dtype).requires_grad_(False)

    def _apply(self, fn: Callable, recurse: bool = True) -> nn.Module:
        if getattr(self, "pinned", False):
            return super()._apply(lambda t: fn(t).to(self.compute_dtype), recurse)
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.weight.dtype if self.weight is not None else self.compute_dtype
        return super().forward(x.to(dtype))


class _Bf16StreamBlock(Block):
    """A block whose residual stream is bf16: the input is cast once (a no-op after the first block)."""

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return super().forward(x.to(torch.bfloat16), grid)


class _Bf16StreamFactorizedSelfAttentionBlock(FactorizedSelfAttentionBlock):
    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return super().forward(x.to(torch.bfloat16), grid)


_BF16_STREAM_BLOCKS: dict[type, tuple[type, tuple[str, ...]]] = {  # block -> (its bf16-stream class, its norms)
    Block: (_Bf16StreamBlock, ("norm1", "norm2")),
    FactorizedSelfAttentionBlock: (_Bf16StreamFactorizedSelfAttentionBlock, ("temporal_norm", "norm1", "norm2")),
}


def _conv_as_linear(conv: nn.Conv3d) -> nn.Linear:
    linear = nn.Linear(conv.weight[0].numel(), conv.out_channels, bias=conv.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(conv.out_channels, -1))  # (D, C, t, h, w) -> (D, C*t*h*w)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


# ---------------------------------------------------------------- the public entry point
def _native_bf16(strict: bool = False) -> bool:
    """Whether this CPU has bf16 instructions; when torch cannot tell: `not strict`."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else not strict
    except Exception:
        return not strict


def optimize_for_inference(
    model: nn.Module,
    dtype: torch.dtype = torch.float32,
    *,
    example_input: torch.Tensor | None = None,
    tune: bool = True,
    bf16_stream: bool = True,
) -> nn.Module:
    """A copy of `model` for fast inference in fp32, bf16 or int8; `model` itself is not changed.

    Every linear layer inside the transformer blocks (qkv, proj, fc1, fc2) and every attention is
    replaced by an inference-only version (bf16 / int8: also the tubelet embedding, as a linear
    layer over flattened tubelets); position embeddings, LayerNorms, pooling and head stay as they
    are, in fp32. The copy keeps the class, call signature and feature API
    (`forward`, `forward_features`, `forward_head`, `forward_intermediates`,
    `forward_frame_features`); it takes the same fp32 video `(B, C, T, H, W)` and returns fp32
    logits `(B, num_classes)`. It is a snapshot: later changes to `model`'s weights do not reach it.

    - `torch.float32`: the same numerics (Scenic fixtures within 1e-5) on the fastest GEMM library
      of this machine (MKL, MKL packed or oneDNN with prepacked weights), a faster tanh-GELU and the
      faster attention kernel per shape.
    - `torch.bfloat16`: weights and GEMM/attention activations in bf16; the residual stream,
      LayerNorms and softmax in fp32; attention in bf16 or fp32, whichever is faster per shape.
      Fast on CPUs with native bf16 (AVX512-BF16, AMX); elsewhere bf16 is emulated (a warning says so).
      Logits move by about 1e-2 relative (documented in README "Speed").
    - `torch.int8`: dynamic int8 linear layers (weights per output channel, activations per tensor
      at run time, PyTorch's `quantized::linear_dynamic` on oneDNN/x86/FBGEMM, whichever is faster),
      everything else in fp32, except that attention may run in bf16 on CPUs with native bf16 when
      that is faster (softmax still accumulates in fp32). CPU only. PyTorch has deprecated its
      quantized tensors; where they no longer work, a RuntimeError points to
      `vivit.export_onnx(model, path, int8=True)` (ONNX Runtime's int8).

    Kernels are chosen by timing the candidates at the first call with each new input shape
    (`vivit.optimize.kernel_choices()` lists the choices); pass `example_input` to do that now.

    Args:
        model: a vivit model (any `nn.Module` built from `vivit.models.layers` works).
        dtype: `torch.float32`, `torch.bfloat16` or `torch.int8`.
        example_input: a video `(B, C, T, H, W)` to run once, tuning the kernels for its shape.
        tune: False uses only public PyTorch kernels (`F.linear`, `F.gelu`, SDPA), no timing.

    Returns:
        The optimized copy, in eval mode, with no trainable parameters. Calling it with autograd
        on an input that requires grad raises RuntimeError.

    Raises:
        ValueError: `dtype` is not one of the three, int8 on a non-CPU model, or `model` is itself a
            copy from `optimize_for_inference`.
        RuntimeError: int8 on a torch build without a working quantized engine.
    """
    if dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.int8, got {dtype!r}")
    done = getattr(model, "optimized_for_inference", None)
    if done is not None:  # its layers are no longer the ones converted here: they would stay as they are
        raise ValueError(
            f"this model is already optimized (dtype {done['dtype']}) by vivit.optimize_for_inference; pass the "
            "original model to optimize it for another dtype"
        )
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    if dtype == torch.int8 and device.type != "cpu":
        raise ValueError(f"int8 inference runs on CPU only (the model is on {device}); move it with model.cpu()")
    if dtype == torch.int8 and not _int8_engines():
        raise RuntimeError(
            f"torch {torch.__version__} has no working dynamic int8 engine (tried {', '.join(_INT8_ENGINES)}; "
            f"supported here: {', '.join(torch.backends.quantized.supported_engines) or 'none'}); export the model "
            "with vivit.export_onnx(model, path, int8=True) and run it in ONNX Runtime instead"
        )
    if dtype == torch.bfloat16 and device.type == "cpu" and not _native_bf16():
        warnings.warn(
            "this CPU has no native bf16 instructions (AVX512-BF16/AMX): bf16 is emulated and likely slower than fp32",
            RuntimeWarning,
            stacklevel=2,
        )
    opt = copy.deepcopy(model).float().eval().requires_grad_(False)
    if hasattr(opt, "grad_checkpointing"):
        setattr(opt, "grad_checkpointing", False)  # noqa: B010 - nothing to save for a backward pass
    attention_kernels = {
        torch.float32: ("sdpa", "matmul"),
        torch.bfloat16: ("sdpa", "sdpa_fp32"),
        torch.int8: ("sdpa", "matmul") + (("sdpa_bf16",) if device.type == "cpu" and _native_bf16(strict=True) else ()),
    }[dtype]

    stream = torch.bfloat16 if dtype == torch.bfloat16 and bf16_stream else torch.float32

    def convert(linear: nn.Linear, activation: str | None) -> nn.Module:
        if dtype == torch.int8:
            return _Int8Linear(linear, activation, tune).to(device)
        return _TunedLinear(linear, dtype, activation, tune)

    # setattr: the replacements are other nn.Module types than the attributes' declared ones
    for module in list(opt.modules()):
        if type(module) in _TUNED_ATTENTION:
            module.__class__ = _TUNED_ATTENTION[type(module)]
            setattr(module, "tune", tune)  # noqa: B010
            setattr(module, "attention_kernels", attention_kernels)  # noqa: B010
            for name in ("qkv", "proj"):
                setattr(module, name, convert(getattr(module, name), None))
        elif type(module) is TubeletEmbed and dtype != torch.float32:  # fp32 keeps the conv (same numerics)
            module.__class__ = _LinearTubeletEmbed
            setattr(module, "linear", convert(_conv_as_linear(module.proj), None))  # noqa: B010
        elif type(module) is Mlp and isinstance(module.act, nn.GELU) and module.act.approximate == "tanh":
            setattr(module, "fc1", convert(module.fc1, "gelu_tanh"))  # noqa: B010
            setattr(module, "act", nn.Identity())  # noqa: B010
            setattr(module, "fc2", convert(module.fc2, None))  # noqa: B010
    if stream == torch.bfloat16:
        # the residual stream in bf16 through the blocks (their LayerNorms and residual adds); the
        # encoders' final norms cast back to fp32. Position tables stay fp32 parameters (added in fp32).
        for module in list(opt.modules()):
            if type(module) in _BF16_STREAM_BLOCKS:
                block_class, norms = _BF16_STREAM_BLOCKS[type(module)]
                module.__class__ = block_class
                for name in norms:
                    setattr(module, name, _LayerNormIn(getattr(module, name), torch.bfloat16, pinned=True))
        for name in ("norm", "temporal_norm"):
            if isinstance(getattr(opt, name, None), nn.LayerNorm):
                setattr(opt, name, _LayerNormIn(getattr(opt, name), torch.float32, pinned=False))
    setattr(  # noqa: B010
        opt,
        "optimized_for_inference",
        {"dtype": str(dtype).removeprefix("torch."), "tune": tune, "stream": str(stream).removeprefix("torch.")},
    )
    if example_input is not None:
        with torch.inference_mode():
            opt(example_input)
    return opt
