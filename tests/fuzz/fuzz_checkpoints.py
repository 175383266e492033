"""Fuzz the checkpoint readers with mutated copies of real checkpoints.

Targets (each input goes to one, chosen from its seed):

* ``flax``: `read_flax_checkpoint(bytes)` on mutated Scenic (Flax msgpack) train states;
* ``flax_file``: `create_model(<registered Scenic-like entry>, pretrained=<file>)`: the file sniffer,
  the msgpack reader and the Scenic converter;
* ``safetensors``: `create_model("vivit_ti_st", pretrained=<file.safetensors>)` on mutated files
  written by `save_pretrained` (header, embedded config and tensor data).

Seeds: the Flax checkpoints in ``tests/data/scenic/checkpoints`` and a tiny safetensors file made at
start. Mutations: bit flips, interesting bytes and integers at random offsets, cuts, deletions,
duplicated slices, and structure-aware edits (safetensors header JSON fields and embedded config;
msgpack tags, lengths, shapes and dtype names).

The contract checked for every input: it loads, or raises ``ValueError``/``FileNotFoundError``
whose message names the input (``fuzz.*`` or ``bytes in memory``) and is at most 2,000
characters, within ``--timeout`` seconds of CPU time and ``--memory-mb`` MB above the start-up footprint.
Anything else is a *crash*, grouped by signature: exception type + innermost frame in vivit.
The first input of each signature is saved under ``--crashes``.

Run it (from the repository root):

    python tests/fuzz/fuzz_checkpoints.py --seconds 300              # hypothesis-driven mutations
    python tests/fuzz/fuzz_checkpoints.py --engine random --seconds 300
    python tests/fuzz/fuzz_checkpoints.py --engine atheris --seconds 300   # pip install atheris

The summary (inputs, outcomes, signatures) is printed as one JSON line at the end; the exit status
is 1 if any crash was found. CI runs a short deterministic pass (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "tests" / "data" / "scenic" / "checkpoints"
MAX_MESSAGE = 2000
INTERESTING_BYTES = [
    0x00,
    0x01,
    0x7F,
    0x80,
    0xFF,
    0xC0,
    0xC1,
    0xC4,
    0xC6,
    0xC7,
    0xC9,
    0xCB,
    0xD4,
    0xD9,
    0xDB,
    0xDC,
    0xDD,
    0xDE,
    0xDF,
    0x90,
    0x9F,
    0x8F,
    0x22,
    0x5B,
    0x7B,
    0x2C,
    0x30,
    0x39,
]
INTERESTING_INTS = [
    0,
    1,
    2,
    3,
    7,
    8,
    255,
    256,
    4096,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**40,
    2**63 - 1,
    2**64 - 1,
]
INTERESTING_JSON = [
    0,
    -1,
    1,
    3,
    1000000,
    999999999,
    2**40,
    2**64,
    1e300,
    -1e300,
    "nan",
    "F64",
    "I64",
    "BOOL",
    "C64",
    "F8_E4M3",
    None,
    [],
    {},
    [[[[[]]]]],
    [1000000, 3],
    "\x1b[2J",
    "x" * 5000,
    1.5,
    True,
]


class _Timeout(BaseException):
    """Raised by the alarm handler (a BaseException, so that no `except Exception` swallows it)."""


# ---------------------------------------------------------------- seeds and mutations
def _tiny_safetensors(folder: Path) -> bytes:
    import torch

    import vivit

    torch.manual_seed(0)
    model = vivit.create_model(
        "vivit_ti_st", img_size=16, num_frames=4, patch_size=8, embed_dim=12, depth=2, num_heads=2, num_classes=3
    )
    model.pretrained_cfg = {
        "input_size": (3, 4, 16, 16),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "test_views": (1, 1),
        "num_classes": 3,
        "label_names": ["a", "b", "c"],
    }
    model.save_pretrained(folder / "seed")
    return (folder / "seed" / "model.safetensors").read_bytes()


def load_seeds(folder: Path) -> list[tuple[str, bytes]]:
    """(target, bytes) seeds: Flax checkpoints for the two Flax targets, a save_pretrained file."""
    seeds = []
    for name in ("m1_spacetime_tubelet_token", "m2_factorized_encoder_tubelet_token"):
        for suffix in (".checkpoint", ".bf16.checkpoint"):
            data = (CHECKPOINTS / f"{name}{suffix}").read_bytes()
            seeds += [("flax", data), (f"flax_file:{name}", data)]
    seeds.append(("safetensors", _tiny_safetensors(folder)))
    return seeds


def _mutate_json_header(data: bytes, rng: random.Random) -> bytes:
    """Edit one field of a safetensors header (or its embedded config) and re-frame it correctly."""
    if len(data) < 8:
        return data
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, UnicodeDecodeError):
        return data
    if not isinstance(header, dict) or not header:
        return data
    key = rng.choice(sorted(header))
    choice = rng.random()
    if key == "__metadata__" and isinstance(header[key], dict) and "config" in header[key]:
        try:
            config = json.loads(header[key]["config"])
        except ValueError:
            config = {}
        node, path = config, []
        while isinstance(node, dict) and node and rng.random() < 0.7:
            k = rng.choice(sorted(node))
            path.append(k)
            if not isinstance(node[k], dict):
                break
            node = node[k]
        if path:
            target = config
            for k in path[:-1]:
                target = target[k]
            target[path[-1]] = rng.choice(INTERESTING_JSON)
        header[key]["config"] = json.dumps(config) if rng.random() < 0.9 else "[" * rng.choice([10, 1000, 100000])
    elif choice < 0.3:  # rename: a stray block index, or an unknown name
        new = key.replace("blocks.0.", f"blocks.{rng.choice([1, 7, 999999999])}.") if "blocks." in key else key + "x"
        header[new] = header.pop(key)
    elif isinstance(header[key], dict):
        field = rng.choice(["dtype", "shape", "data_offsets"])
        value = rng.choice(INTERESTING_JSON)
        if field == "shape" and rng.random() < 0.5:
            value = [rng.choice(INTERESTING_INTS) for _ in range(rng.randint(0, 9))]
        header[key][field] = value
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length :]


DTYPE_NAMES = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int8",
    "uint32",
    "bool",
    "complex64",
    "V8",
    "O",
    "(",
    "f4,(",
    "<f4",
    "float8_e4m3fn",
    "",
    "\x00",
    "float32" * 100,
]


def _mutate_msgpack(data: bytes, rng: random.Random) -> bytes:
    """Edit the decoded Flax tree (shapes, dtype names, names, leaves, nesting) and re-encode it."""
    import msgpack

    try:
        tree = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return _mutate_bytes(data, rng)
    maps = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            maps.append(node)
            stack.extend(node.values())
    if not maps:
        return _mutate_bytes(data, rng)
    node = rng.choice(maps)
    if not node:
        node["x"] = rng.choice(INTERESTING_JSON)
        return msgpack.packb(tree, use_bin_type=True)
    key = rng.choice(sorted(node, key=str))
    value = node[key]
    op = rng.randrange(6)
    if op == 0 and isinstance(value, msgpack.ExtType):  # edit the array header
        try:
            shape, dtype, raw = msgpack.unpackb(value.data, raw=False)
        except Exception:
            return _mutate_bytes(data, rng)
        which = rng.randrange(4)
        if which == 0:
            shape = [rng.choice(INTERESTING_INTS + [-1, "a", 1.5, None]) for _ in range(rng.randint(0, 9))]
        elif which == 1:
            dtype = rng.choice(DTYPE_NAMES)
        elif which == 2:
            raw = raw[: rng.randrange(len(raw) + 1)]
        else:
            raw = (struct.pack("<d", rng.choice([1e300, float("nan"), float("inf")])) * (len(raw) // 8 + 1))[: len(raw)]
            dtype = "float64" if rng.random() < 0.5 else dtype
        payload = msgpack.packb([shape, dtype, raw], use_bin_type=True)
        node[key] = msgpack.ExtType(rng.choice([1, 1, 1, 2, 3, 9]), payload)
    elif op == 1:  # rename (a stray block index, a missing parameter)
        new = str(key).replace("encoderblock_0", f"encoderblock_{rng.choice([1, 5, 999999999])}")
        node[new if new != key else f"{key}_x"] = node.pop(key)
    elif op == 2:
        del node[key]
    elif op == 3:  # replace by another kind of value
        node[key] = rng.choice(INTERESTING_JSON + [msgpack.ExtType(2, b"\x92\x01\x02"), b"bytes"])
    elif op == 4:  # nest deeply
        deep: Any = value
        for _ in range(rng.choice([10, 100, 1000, 3000])):
            deep = {"a": deep} if rng.random() < 0.5 else [deep]
        node[key] = deep
    else:  # many copies of a subtree (thousands of fake blocks), keeping the file under ~16 MB
        copies = rng.choice([2, 50, 4000])
        copies = min(copies, max(2, (16 << 20) // max(1, len(msgpack.packb(value, use_bin_type=True)))))
        for i in range(copies):
            node[f"{key}_{i}" if "encoderblock_" not in str(key) else f"encoderblock_{i + 100}"] = value
    try:
        return msgpack.packb(tree, use_bin_type=True)
    except Exception:
        return _mutate_bytes(data, rng)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One generic byte-level mutation."""
    out = bytearray(data)
    if not out:
        return bytes([rng.choice(INTERESTING_BYTES)])
    op = rng.randrange(7)
    pos = rng.randrange(len(out))
    if op == 0:
        out[pos] ^= 1 << rng.randrange(8)
    elif op == 1:
        out[pos] = rng.choice(INTERESTING_BYTES)
    elif op == 2:
        width = rng.choice([1, 2, 4, 8])
        value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
        out[pos : pos + width] = value.to_bytes(width, rng.choice(["big", "little"]))
    elif op == 3:
        del out[rng.randrange(len(out)) :]
    elif op == 4:
        end = min(len(out), pos + rng.randint(1, 64))
        del out[pos:end]
    elif op == 5:
        start = rng.randrange(len(out))
        piece = out[start : start + rng.randint(1, 256)]
        out[pos:pos] = piece
    else:
        for _ in range(rng.randint(2, 16)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def mutate(target: str, data: bytes, rng: random.Random) -> bytes:
    """Apply 1-3 mutations, structure-aware (safetensors header, Flax tree) half of the time."""
    try:
        return _mutate(target, data, rng)
    except MemoryError:  # the mutator's own copies, under the harness's memory limit
        return data


def _mutate(target: str, data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 3)):
        structured = {"safetensors": _mutate_json_header, "flax": _mutate_msgpack}.get(
            target.split(":")[0].removesuffix("_file")
        )
        try:
            data = structured(data, rng) if structured and rng.random() < 0.5 else _mutate_bytes(data, rng)
        except (Exception, RecursionError):
            data = _mutate_bytes(data, rng)
    return data


# ---------------------------------------------------------------- running one input
def _finite_floats(result: Any) -> bool:
    """Whether what was loaded is usable: floating-point and finite everywhere (no silent NaN/inf/ints)."""
    import numpy as np
    import torch

    if isinstance(result, torch.nn.Module):
        return all(bool(torch.isfinite(p).all()) for p in result.parameters())
    return all(np.asarray(a).dtype.kind == "f" and bool(np.isfinite(a).all()) for a in result.values())


class Harness:
    """Runs inputs against their target and groups contract violations by signature."""

    def __init__(self, folder: Path, crashes: Path | None, timeout_s: float) -> None:
        import torch

        torch.set_num_threads(1)
        self.folder, self.crashes, self.timeout_s = folder, crashes, timeout_s
        self.signatures: dict[str, dict[str, Any]] = {}
        self.counts = {"inputs": 0, "loaded": 0, "refused": 0, "crash": 0}
        self.entries = self._register_entries()
        signal.signal(signal.SIGPROF, self._alarm)

    def _register_entries(self) -> dict[str, str]:
        sys.path.insert(0, str(ROOT / "tests"))
        from scenic_fixtures import load_forward_fixture, model_args_from_config

        from vivit.models.registry import _REGISTRY, register_model
        from vivit.models.vivit import MODEL_CLASSES

        names = {}
        for fixture in ("m1_spacetime_tubelet_token", "m2_factorized_encoder_tubelet_token"):
            variant, args = model_args_from_config(load_forward_fixture(fixture)["meta"]["config"])
            name = f"fuzz_{fixture}"
            if name not in _REGISTRY:
                register_model(name, MODEL_CLASSES[variant], args, None)
            names[fixture] = name
        return names

    @staticmethod
    def _alarm(signum: int, frame: Any) -> None:
        raise _Timeout()

    def run(self, target: str, data: bytes) -> str:
        """Run one input; returns 'loaded', 'refused' or 'crash'."""
        import vivit
        from vivit.weights.flax_msgpack import read_flax_checkpoint

        self.counts["inputs"] += 1
        call: Callable[[], Any]
        if target == "flax":
            name = "bytes in memory"
            call = lambda: read_flax_checkpoint(data)  # noqa: E731
        else:
            suffix = ".safetensors" if target == "safetensors" else ".checkpoint"
            path = self.folder / f"fuzz{suffix}"
            path.write_bytes(data)
            name = path.name
            entry = "vivit_ti_st" if target == "safetensors" else self.entries[target.split(":", 1)[1]]
            call = lambda: vivit.create_model(entry, pretrained=path)  # noqa: E731
        # CPU time, not wall-clock time: a loaded machine slows every input down without making any of
        # them loop, so the verdict must not depend on how busy the machine is
        signal.setitimer(signal.ITIMER_PROF, self.timeout_s)
        try:
            result = call()
            outcome = (
                "loaded" if _finite_floats(result) else self._crash("NonFiniteOrNonFloatAccepted", None, target, data)
            )
        except (ValueError, FileNotFoundError) as err:
            message = str(err)
            if name not in message:
                outcome = self._crash("Unnamed" + type(err).__name__, err, target, data)
            elif len(message) > MAX_MESSAGE:
                outcome = self._crash("LongMessage", err, target, data)
            else:
                outcome = "refused"
        except (Exception, _Timeout) as err:
            outcome = self._crash(type(err).__name__, err, target, data)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        self.counts[outcome] += 1
        return outcome

    def _crash(self, kind: str, err: BaseException | None, target: str, data: bytes) -> str:
        frames = traceback.extract_tb(err.__traceback__) if err is not None else []
        ours = [f for f in frames if "/vivit/" in f.filename.replace(os.sep, "/")]
        where = ours[-1] if ours else (frames[-1] if frames else None)
        location = f"{Path(where.filename).name}:{where.name}" if where else "?"
        signature = f"{kind} at {location} ({target.split(':')[0]})"
        if signature not in self.signatures:
            saved = None
            if self.crashes is not None:
                self.crashes.mkdir(parents=True, exist_ok=True)
                saved = self.crashes / f"crash-{len(self.signatures):03d}-{target.split(':')[0]}"
                saved.write_bytes(data)
            self.signatures[signature] = {
                "count": 0,
                "example": str(saved) if saved else None,
                "message": str(err)[:300],
            }
        self.signatures[signature]["count"] += 1
        return "crash"

    def summary(self, seconds: float) -> dict[str, Any]:
        return {**self.counts, "seconds": round(seconds, 1), "signatures": self.signatures}


def limit_memory(megabytes: int) -> None:
    """Cap the address space at the current size plus `megabytes` (a MemoryError beyond it)."""
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = vm + megabytes * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# ---------------------------------------------------------------- engines
def run_random(harness: Harness, seeds: list[tuple[str, bytes]], seconds: float, inputs: int, seed: int) -> None:
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    for _ in range(inputs):
        if time.monotonic() > end:
            break
        target, data = rng.choice(seeds)
        harness.run(target, mutate(target, data, rng))


def run_hypothesis(harness: Harness, seeds: list[tuple[str, bytes]], seconds: float, inputs: int, seed: int) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    end = time.monotonic() + seconds
    done = 0
    batch = 0
    while done < inputs and time.monotonic() < end:
        size = min(200, inputs - done)

        @hypothesis_seed(seed + batch)
        @settings(
            max_examples=size,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(index=st.integers(0, len(seeds) - 1), mutation_seed=st.integers(0, 2**32 - 1))
        def one(index: int, mutation_seed: int) -> None:
            nonlocal done
            if time.monotonic() > end:
                return
            target, data = seeds[index]
            harness.run(target, mutate(target, data, random.Random(mutation_seed)))
            done += 1

        before = done
        one()
        batch += 1
        if done == before:
            break


def run_atheris(
    harness: Harness, seeds: list[tuple[str, bytes]], seconds: float, argv: list[str], report: Callable[[], None]
) -> None:
    import atheris

    end = time.monotonic() + seconds

    def one_input(data: bytes) -> None:
        if time.monotonic() > end:  # libFuzzer's own time limit exits without Python's atexit
            report()
            os._exit(1 if harness.signatures else 0)
        if len(data) < 2:
            return
        target, seed_data = seeds[data[0] % len(seeds)]
        # The rest either replaces the seed (libFuzzer mutates it) or drives mutations of the seed.
        if data[1] & 1:
            harness.run(target, bytes(data[2:]))
        else:
            harness.run(target, mutate(target, seed_data, random.Random(data[2:])))

    corpus = harness.folder / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, (_, data) in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(bytes([i, 1]) + data)
    atheris.Setup(
        [sys.argv[0], f"-max_total_time={int(seconds) + 60}", "-rss_limit_mb=0", *argv, str(corpus)], one_input
    )
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["hypothesis", "random", "atheris"], default="hypothesis")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget")
    parser.add_argument("--inputs", type=int, default=10**9, help="at most this many inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="CPU seconds per input")
    parser.add_argument("--memory-mb", type=int, default=1024, help="memory above the start-up footprint")
    parser.add_argument("--targets", default="flax,flax_file,safetensors", help="comma-separated targets to fuzz")
    parser.add_argument("--crashes", type=Path, default=None, help="save the first input of each signature here")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args, rest = parser.parse_known_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
    with tempfile.TemporaryDirectory(prefix="vivit-fuzz-") as tmp:
        folder = Path(tmp)
        os.environ["VIVIT_CACHE"] = str(folder / "cache")
        if args.engine == "atheris":
            import atheris

            with atheris.instrument_imports(include=["vivit"]):
                import vivit  # noqa: F401
        wanted = set(args.targets.split(","))
        seeds = [(t, d) for t, d in load_seeds(folder) if t.split(":")[0] in wanted]
        harness = Harness(folder, args.crashes, args.timeout)
        limit_memory(args.memory_mb)
        start = time.monotonic()

        def report() -> None:
            summary = harness.summary(time.monotonic() - start)
            line = json.dumps(summary)
            print(line, flush=True)
            if args.json is not None:
                args.json.write_text(line + "\n")

        atexit.register(report)  # atheris exits the process when its time is up
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))  # `timeout` and kill: still report
        if args.engine == "random":
            run_random(harness, seeds, args.seconds, args.inputs, args.seed)
        elif args.engine == "hypothesis":
            run_hypothesis(harness, seeds, args.seconds, args.inputs, args.seed)
        else:
            run_atheris(harness, seeds, args.seconds, rest, report)
        atexit.unregister(report)
        report()
        return 1 if harness.signatures else 0


if __name__ == "__main__":
    sys.exit(main())
