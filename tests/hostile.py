"""Hostile checkpoint files, and a runner that loads them in a subprocess under limits.

`build_cases(root)` writes one file per case (hand-made: each is one way a stranger's file can be
wrong) and returns the case list. `run_cases(cases)` runs them in a child process (`python
tests/hostile.py CASES.json`) whose address space is capped at its start-up footprint plus
`MEMORY_MB`, with `TIMEOUT_S` per case (an alarm in the child, and a kill from the parent as a
backstop); the child reports one JSON line per case. Cases are batched in one child; if the child
dies, a new one continues with the next case.

Kinds (see tests/test_hostile.py):

* ``bomb``: memory and time bombs (stray block indices, huge embedded sizes, FIFOs, deep nesting,
  thousands of fake blocks, absurd test views);
* ``raw``: inputs that used to escape as IndexError/KeyError/StopIteration/SyntaxError/OutOfData/...;
* ``silent``: values that used to be accepted (NaN, inf, float64 beyond float32, complex, bool, int64);
* ``metadata``: an embedded pretrained_cfg that lies (views, mean/std, labels, class splits), and
  what the CLI prints from it (control characters, NaN in --json).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHECKPOINTS = HERE / "data" / "scenic" / "checkpoints"
MEMORY_MB = 1024
TIMEOUT_S = 30.0
MAX_MESSAGE = 1000
TINY = dict(img_size=16, num_frames=4, patch_size=8, embed_dim=12, depth=2, num_heads=2, num_classes=3)
CFG = {
    "input_size": [3, 4, 16, 16],
    "frame_stride": 1,
    "resize_size": 16,
    "crop_size": 16,
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
    "test_views": [1, 1],
    "num_classes": 3,
    "label_names": ["a", "b", "c"],
}


# ---------------------------------------------------------------- building the files
def _ours(
    root: Path,
    name: str,
    *,
    add: dict | None = None,
    drop: tuple = (),
    config: dict | None = None,
    cfg: dict | None = None,
    raw_config: str | None = None,
    change: dict | None = None,
) -> Path:
    """A save_pretrained-style file of a tiny Model 1, edited."""
    import torch
    from safetensors.torch import save_file

    import vivit

    torch.manual_seed(0)
    model = vivit.create_model("vivit_ti_st", **TINY)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k not in drop}
    tensors.update(change or {})
    tensors.update(add or {})
    full = {
        "format": "vivit",
        "format_version": "1",
        "model_class": "SpatioTemporalViViT",
        "model_args": {**model.model_args, "img_size": [16, 16], "patch_size": [8, 8]},
        "pretrained_cfg": {**CFG, **(cfg or {})},
    }
    full.update(config or {})
    path = root / f"{name}.safetensors"
    save_file(tensors, str(path), metadata={"config": raw_config if raw_config is not None else json.dumps(full)})
    return path


def _flax(root: Path, name: str, params: dict[str, Any], fixture: str = "m1_spacetime_tubelet_token") -> Path:
    """A Scenic train state with the fixture's parameters, edited (values may be raw msgpack ExtTypes)."""
    import msgpack
    import numpy as np

    tree: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        if not isinstance(value, msgpack.ExtType):
            array = np.ascontiguousarray(value)
            value = msgpack.ExtType(1, msgpack.packb([list(array.shape), array.dtype.name, array.tobytes()]))
        node[leaf] = value
    path = root / f"{name}.checkpoint"
    path.write_bytes(msgpack.packb({"optimizer": {"target": tree, "state": {"step": 0}}}))
    return path


def _fixture_params(fixture: str = "m1_spacetime_tubelet_token") -> dict[str, Any]:
    import numpy as np

    with np.load(HERE / "data" / "scenic" / "forward" / f"{fixture}.npz") as npz:
        return {k: npz[k] for k in npz.files if k not in ("input", "logits")}


# A tiny file is refused before anything is allocated: a generous bound on the peak memory of a refusal.
REFUSE_MB = 200


def _refuse(match: str = "") -> dict[str, Any]:
    return {"type": "refuse", "match": match}


def build_cases(root: Path) -> list[dict[str, Any]]:
    """Write every hostile file under `root`; return the cases (JSON-serialisable dicts)."""
    import msgpack
    import numpy as np
    import torch

    root.mkdir(parents=True, exist_ok=True)
    cases: list[dict[str, Any]] = []

    def case(kind: str, name: str, op: str, expect: dict[str, Any], **args: Any) -> None:
        cases.append(
            {
                "id": name,
                "kind": kind,
                "op": op,
                "expect": expect,
                **{k: str(v) if isinstance(v, Path) else v for k, v in args.items()},
            }
        )

    m1 = _fixture_params()
    block0 = "Transformer/encoderblock_0"

    # -- memory and time bombs
    path = _ours(root, "stray_block_index", add={"blocks.999999999.norm1.weight": torch.ones(12)})
    case("bomb", "stray_block_index", "create_model", _refuse(r"999999999"), path=path, entry="vivit_ti_st")
    path = _ours(
        root, "huge_embedded_size", config={"model_args": {**TINY, "img_size": [1024, 1024], "num_frames": 740}}
    )
    case("bomb", "huge_embedded_size", "create_model", _refuse(), path=path, entry="vivit_ti_st")
    for name, entry, fifo in (
        ("fifo_safetensors", "vivit_ti_st", root / "x.safetensors"),
        ("fifo_scenic", "hostile_m1", root / "fifo_checkpoint"),
    ):
        if not fifo.exists():
            os.mkfifo(fifo)
        case("bomb", name, "create_model", _refuse("FIFO"), path=fifo, entry=entry)
    path = _ours(root, "deep_json_config", raw_config="[" * 100_000 + "]" * 100_000)
    case("bomb", "deep_json_config", "create_model", _refuse(), path=path, entry="vivit_ti_st")
    deep = root / "deep_msgpack.checkpoint"
    leaf = msgpack.packb(msgpack.ExtType(1, msgpack.packb([[1], "float32", b"\0" * 4])))
    deep.write_bytes(b"\x81\xa6params" + b"\x81\xa1a" * 5000 + leaf)
    case("bomb", "deep_msgpack", "create_model", _refuse(), path=deep, entry="hostile_m1")
    fake = dict(m1)
    fake.update({f"Transformer/encoderblock_{i}/LayerNorm_0/scale": np.ones(32, np.float32) for i in range(2, 4002)})
    path = _flax(root, "fake_blocks_4000", fake)
    case("bomb", "fake_blocks_4000", "create_model", _refuse(), path=path, entry="hostile_m1")
    rng = np.random.default_rng(0)
    fake = dict(m1)
    fake.update(
        {
            f"Transformer/encoderblock_{i}/LayerNorm_0/scale": np.ones(32, np.float32)
            for i in rng.integers(2, 10**9, 4000)
        }
    )
    path = _flax(root, "fake_blocks_scattered", fake)
    case("bomb", "fake_blocks_scattered", "create_model", _refuse(), path=path, entry="hostile_m1")
    path = _ours(root, "test_views_bomb", cfg={"test_views": [1_000_000, 3]})
    case("bomb", "test_views_bomb", "create_model", _refuse("test_views"), path=path, entry="vivit_ti_st")
    path = root / "huge_header.safetensors"
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}" * 10)
    case("bomb", "huge_header", "create_model", _refuse(), path=path, entry="vivit_ti_st")

    # -- raw exceptions
    params = {k: v for k, v in m1.items() if k != f"{block0}/MultiHeadDotProductAttention_0/query/kernel"}
    case(
        "raw",
        "scenic_no_query_kernel",
        "create_model",
        _refuse(),
        path=_flax(root, "no_query", params),
        entry="hostile_m1",
    )
    params = dict(m1)
    kernel = m1["embedding/kernel"]
    params["embedding/kernel"] = msgpack.ExtType(1, msgpack.packb([list(kernel.shape), "f4,(", kernel.tobytes()]))
    case(
        "raw",
        "scenic_dtype_syntax",
        "create_model",
        _refuse(),
        path=_flax(root, "dtype_syntax", params),
        entry="hostile_m1",
    )
    params = dict(m1)
    params["cls"] = msgpack.ExtType(1, msgpack.packb([[1, 1, 32], "float32"])[:-2])
    case(
        "raw",
        "scenic_truncated_array_header",
        "create_model",
        _refuse(),
        path=_flax(root, "trunc_header", params),
        entry="hostile_m1",
    )
    params = dict(m1)
    params["embedding/kernel"] = kernel.reshape(-1, kernel.shape[-1])
    case(
        "raw",
        "scenic_embedding_2d",
        "create_model",
        _refuse(),
        path=_flax(root, "embedding_2d", params),
        entry="hostile_m1",
    )
    path = _ours(root, "patch_3d", change={"patch_embed.proj.weight": torch.zeros(12, 3, 8)})
    case("raw", "ours_patch_embed_3d", "create_model", _refuse(), path=path, entry="vivit_ti_st")
    path = _ours(root, "model_args_list", config={"model_args": [1, 2]})
    case("raw", "ours_model_args_list", "create_model", _refuse(), path=path, entry="vivit_ti_st")
    path = _ours(root, "config_string", raw_config='"just a string"')
    case("raw", "ours_config_string", "create_model", _refuse(), path=path, entry="vivit_ti_st")

    # -- silently accepted values
    for name, value in (
        ("f64_overflow", np.full((1, 1, 32), 1e300)),
        ("complex", np.ones((1, 1, 32), np.complex64)),
        ("bool", np.ones((1, 1, 32), bool)),
        ("int64", np.ones((1, 1, 32), np.int64)),
        ("nan", np.full((1, 1, 32), np.nan, np.float32)),
    ):
        path = _flax(root, f"scenic_{name}", {**m1, "cls": value})
        case("silent", f"scenic_{name}", "create_model", _refuse(), path=path, entry="hostile_m1")
    qkv = torch.zeros(36, 12)
    qkv[3, 4] = float("nan")
    path = _ours(root, "ours_nan", change={"blocks.0.attn.qkv.weight": qkv})
    case("silent", "ours_nan", "create_model", _refuse(), path=path, entry="vivit_ti_st")
    path = _ours(root, "ours_f64_overflow", change={"cls_token": torch.full((1, 1, 12), 1e300, dtype=torch.float64)})
    case("silent", "ours_f64_overflow", "create_model", _refuse(), path=path, entry="vivit_ti_st")
    path = _ours(
        root, "ours_f16_inf", change={"head.bias": torch.tensor([1.0, float("inf"), 0.0], dtype=torch.float16)}
    )
    case("silent", "ours_f16_inf", "create_model", _refuse(), path=path, entry="vivit_ti_st")

    # -- lying metadata, and what the CLI prints
    for name, cfg in (
        ("mean_nan_strings", {"mean": ["nan", "nan", "nan"]}),
        ("class_splits_mismatch", {"class_splits": [2, 2], "split_names": ["x", "y"]}),
        ("label_count_mismatch", {"label_names": ["a", "b"]}),
        ("negative_std", {"std": [0.5, -0.5, 0.5]}),
    ):
        path = _ours(root, name, cfg=cfg)
        case("metadata", name, "create_model", _refuse(), path=path, entry="vivit_ti_st")
    video = root / "clip.npy"
    np.save(video, np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    path = _ours(root, "escape_labels", cfg={"label_names": ["\x1b[2J\x1b[31mred", "bell\x07", "ok\u202eevil"]})
    for fmt in ("text", "json"):
        argv = ["predict", str(video), "--model", "vivit_ti_st", "--weights", str(path), "-q", "--top-k", "3"]
        case(
            "metadata",
            f"cli_escape_labels_{fmt}",
            "cli",
            {"type": "cli_clean"},
            argv=argv + (["--json"] if fmt == "json" else []),
        )
    path = _ours(
        root,
        "nan_mean_json",
        raw_config=json.dumps(
            {
                "format": "vivit",
                "model_class": "SpatioTemporalViViT",
                "model_args": {**TINY, "img_size": [16, 16]},
                "pretrained_cfg": {**CFG, "mean": [float("nan")] * 3},
            }
        ),
    )
    argv = ["predict", str(video), "--model", "vivit_ti_st", "--weights", str(path), "-q", "--json"]
    case("metadata", "cli_json_with_nan_mean", "cli", {"type": "cli_clean"}, argv=argv)
    return cases


# ---------------------------------------------------------------- the child process
def _register_entries() -> None:
    sys.path.insert(0, str(HERE))
    from scenic_fixtures import load_forward_fixture, model_args_from_config

    from vivit.models.registry import register_model
    from vivit.models.vivit import MODEL_CLASSES

    for short, fixture in (("m1", "m1_spacetime_tubelet_token"), ("m2", "m2_factorized_encoder_tubelet_token")):
        variant, args = model_args_from_config(load_forward_fixture(fixture)["meta"]["config"])
        register_model(f"hostile_{short}", MODEL_CLASSES[variant], args, None)


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(f"{field}:"))


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM (Linux >= 4.0)


def _finite_model(model: Any) -> bool:
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _run_one(case: dict[str, Any]) -> dict[str, Any]:
    import vivit
    from vivit import cli

    if case["op"] == "create_model":
        model = vivit.create_model(case["entry"], pretrained=case["path"])
        return {"outcome": "loaded", "finite": _finite_model(model), "cfg": repr(model.pretrained_cfg)[:300]}
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(case["argv"])
    return {"outcome": "cli", "exit": code, "stdout": out.getvalue()[:20000], "stderr": err.getvalue()[:5000]}


def _child(cases_file: str, start: int) -> None:
    import torch

    torch.set_num_threads(1)
    import vivit  # noqa: F401 - imported before the limit, which covers only what the cases add

    _register_entries()
    baseline = _status("VmSize")
    limit = baseline + MEMORY_MB * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"case took more than {TIMEOUT_S:g} s")

    signal.signal(signal.SIGALRM, alarm)
    cases = json.loads(Path(cases_file).read_text())
    for index in range(start, len(cases)):
        case = cases[index]
        print(json.dumps({"start": index}), flush=True)
        _reset_peak()
        rss = _status("VmRSS")
        began = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
        try:
            result = _run_one(case)
        except BaseException as err:
            frames = traceback.extract_tb(err.__traceback__)
            result = {
                "outcome": "raised",
                "type": type(err).__name__,
                "message": str(err)[:5000],
                "length": len(str(err)),
                "where": f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "",
            }
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result.update(
            index=index,
            id=case["id"],
            seconds=round(time.monotonic() - began, 3),
            peak_mb=round(max(_status("VmHWM") - rss, 0) / 2**20, 1),
        )
        print(json.dumps(result), flush=True)


def run_cases(cases: list[dict[str, Any]], workdir: Path) -> dict[str, dict[str, Any]]:
    """Run cases in child processes (restarted after a crash or a hang); returns results by case id.

    The child's own alarm cannot interrupt a system call that native code restarts (opening a FIFO
    from Rust or C), so the parent also watches each case and kills the child after
    `TIMEOUT_S` + 10 s; the case is then reported as ``hung``.
    """
    import selectors

    cases_file = workdir / "cases.json"
    cases_file.write_text(json.dumps(cases))
    results: dict[str, dict[str, Any]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "VIVIT_CACHE": str(workdir / "cache")}
    start = 0
    while start < len(cases):
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), str(cases_file), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        current, began, hung, limit = start, time.monotonic(), False, 120.0  # start-up: importing torch
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                if not selector.select(timeout=max(0.0, began + limit - time.monotonic())):
                    hung = True
                    proc.kill()
                    break
                line = proc.stdout.readline()
                if not line:
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if "start" in record:
                    current, began, limit = record["start"], time.monotonic(), TIMEOUT_S + 10
                else:
                    results[record["id"]] = record
                    current = record["index"] + 1
        proc.wait()
        stderr = proc.stderr.read()
        if current < len(cases) and cases[current]["id"] not in results:  # the child died or hung in this case
            results[cases[current]["id"]] = {
                "outcome": "hung" if hung else "died",
                "returncode": proc.returncode,
                "stderr": stderr[-2000:],
                "seconds": round(time.monotonic() - began, 1),
            }
            current += 1
        start = current
    return results


def judge(case: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """What is wrong with a case's result ([] if it behaved)."""
    import re

    expect, problems = case["expect"], []
    if result.get("seconds", 0) > TIMEOUT_S or result.get("type") == "TimeoutError":
        problems.append(f"took too long ({result.get('seconds')} s)")
    if result["outcome"] == "hung":
        return [f"hung: killed after {result['seconds']} s"]
    if result["outcome"] == "died":
        return [f"the process died (status {result['returncode']}): {result['stderr'][-300:]}"]
    if expect["type"] == "refuse":
        if result.get("peak_mb", 0) > REFUSE_MB:
            problems.append(f"{result['peak_mb']} MB were allocated before it was refused (at most {REFUSE_MB})")
        if result["outcome"] != "raised":
            problems.append(
                f"loaded instead of being refused (finite weights: {result.get('finite')}, cfg {result.get('cfg')})"
            )
        else:
            name = Path(case["path"]).name
            if result["type"] not in ("ValueError", "FileNotFoundError"):
                problems.append(f"raised {result['type']} at {result['where']}: {result['message'][:200]}")
            elif name not in result["message"]:
                problems.append(f"the message does not name {name}: {result['message'][:200]}")
            if result["length"] > MAX_MESSAGE:
                problems.append(f"the message has {result['length']:,} characters")
            if expect["match"] and not re.search(expect["match"], result["message"]):
                problems.append(f"the message does not match {expect['match']!r}: {result['message'][:200]}")
    elif expect["type"] == "cli_clean":
        if result["outcome"] != "cli":
            return [f"raised {result.get('type')}: {result.get('message', '')[:200]}"]
        out, err = result["stdout"], result["stderr"]
        if any(not c.isprintable() and c not in "\n" for c in out + err):
            problems.append(f"control characters printed: {(out + err)[:200]!r}")
        if result["exit"] not in (0, 1):
            problems.append(f"exit status {result['exit']}")
        if result["exit"] == 1 and not (len(err.strip().splitlines()) == 1 and err.startswith("vivit: error: ")):
            problems.append(f"not one error line: {err[:300]!r}")
        if "--json" in case["argv"]:
            for line in out.splitlines():
                try:
                    json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
                except ValueError as err_:
                    problems.append(f"stdout is not strict JSON ({err_}): {line[:200]}")
    return problems


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
