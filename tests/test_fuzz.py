"""A short, deterministic pass of the checkpoint fuzzer (tests/fuzz/fuzz_checkpoints.py).

Developers run the fuzzer for minutes (see its docstring); CI runs a few hundred mutated inputs
per target in a subprocess capped at 1 GB above its start-up footprint and 10 s of CPU time per
input, and requires no crash: every input loads finite float weights or is refused with a short
ValueError naming it. Limits are CPU time and input counts, never wall-clock time, so a busy machine
makes the test slower but cannot change its verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("msgpack")
pytest.importorskip("hypothesis")

pytestmark = [pytest.mark.fuzz]

FUZZER = Path(__file__).parent / "fuzz" / "fuzz_checkpoints.py"


def _fuzz(tmp_path: Path, targets: str, inputs: int) -> dict:
    summary = tmp_path / "summary.json"
    args = [
        sys.executable,
        str(FUZZER),
        "--engine",
        "hypothesis",
        "--targets",
        targets,
        "--inputs",
        str(inputs),
        "--seconds",
        "3600",  # a backstop only: the run ends after `inputs` inputs
        "--timeout",
        "10",
        "--seed",
        "12",
        "--crashes",
        str(tmp_path / "crashes"),
        "--json",
        str(summary),
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=3600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert summary.exists(), out.stderr[-3000:]
    return json.loads(summary.read_text())


def _crashes(summary: dict) -> list[str]:
    return [f"{count['count']}x {sig}: {count['message'][:200]}" for sig, count in summary["signatures"].items()]


def test_fuzz_flax_reader(tmp_path: Path) -> None:
    summary = _fuzz(tmp_path, "flax", 300)
    assert summary["inputs"] >= 100  # hypothesis may skip duplicate draws
    assert _crashes(summary) == []


def test_fuzz_loader(tmp_path: Path) -> None:
    summary = _fuzz(tmp_path, "flax_file,safetensors", 200)
    assert summary["inputs"] >= 100
    assert _crashes(summary) == []
