"""kill -9 at any moment, re-run the same command: the final weights equal an uninterrupted run's bit for bit.

Each run is a child process (one thread, DataLoader workers) training the tiny model of test_train.py with
every source of randomness the recipes use switched on: scale jitter, crops, flips, drop path, label
smoothing, mixup, weight EMA. The interrupted run is killed with SIGKILL at a random step (the step is in
the assertion message), or in the middle of writing a checkpoint, and then started again with the same
arguments; it must end with the same weights, EMA, best model and log as the run that was never killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_train import TINY, TINY_SETTINGS, write_clips

pytestmark = pytest.mark.slow

CHILD = r"""
import json, os, signal, sys
import torch
args = json.loads(sys.argv[1])
kill_at_save = int(os.environ.get("KILL_AT_SAVE", "0"))
if kill_at_save:  # simulate a kill -9 halfway through writing the kill_at_save-th checkpoint
    import io
    real_save, calls = torch.save, [0]
    def save(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == kill_at_save:
            buffer = io.BytesIO()
            real_save(obj, buffer, *a, **k)
            data = buffer.getvalue()
            with open(f, "wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                os.fsync(out.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **k)
    torch.save = save
interrupt_at_mixup = int(os.environ.get("INTERRUPT_AT_MIXUP", "0"))
if interrupt_at_mixup:  # Ctrl-C in the middle of a step: during the mixup of its n-th micro-batch
    import vivit.train
    real_call, mixups = vivit.train.Mixup.__call__, [0]
    def call(self, *a, **k):
        mixups[0] += 1
        if mixups[0] == interrupt_at_mixup:
            raise KeyboardInterrupt
        return real_call(self, *a, **k)
    vivit.train.Mixup.__call__ = call
from vivit.train import train
def progress(event):
    if event["event"] == "interrupted":
        print("INTERRUPTED", event["step"], event["checkpoint"], flush=True)
    if event["event"] == "step":
        print("STEP", event["step"], flush=True)
train(args.pop("train"), args.pop("val"), "vivit_ti_st", args.pop("out"), progress=progress, **args)
print("DONE", flush=True)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    write_clips(root / "train", 24, seed=0)
    write_clips(root / "val", 6, seed=1)
    return root


def _args(data: Path, out: Path) -> dict[str, Any]:
    return {
        "train": str(data / "train"),
        "val": str(data / "val"),
        "out": str(out),
        "recipe": "ek100",  # drop path 0.2, label smoothing 0.2, mixup 0.1 (+ jitter, crop, flip)
        "model_args": TINY,
        "batch_size": 2,
        "workers": 2,
        "epochs": 4,
        "lr": 0.05,
        "ema_decay": 0.9,
        "log_every": 1,
        "checkpoint_every": 4,  # a kill between checkpoints redoes up to 3 steps
        "tensorboard": False,
        **TINY_SETTINGS,
        "test_views": [1, 1],
    }


def _start(args: dict[str, Any], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **env},
    )


def _finish(args: dict[str, Any], **env: str) -> subprocess.CompletedProcess[str]:
    process = _start(args, **env)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (4 epochs of 3 steps of 8 clips)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = _finish(_args(data, out))
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-3000:]
    return out


def _same_run(out: Path, reference: Path, what: str) -> None:
    for folder in ("last", "best"):
        got, want = (load_file(p / folder / "model.safetensors") for p in (out, reference))
        assert got.keys() == want.keys()
        different = [k for k in want if not torch.equal(got[k], want[k])]
        assert not different, f"{what}: {folder}/ differs in {different[:5]}"
    state, want_state = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (out, reference))
    for key in ("model", "ema"):
        assert all(torch.equal(state[key][k], want_state[key][k]) for k in want_state[key]), f"{what}: {key}"
    assert state["step"] == want_state["step"] == 12

    def lines(p: Path) -> list[dict[str, Any]]:  # everything but the wall clock
        rows = [json.loads(line) for line in (p / "log.jsonl").read_text().splitlines()]
        clock = ("time", "clips_per_s", "seconds_per_step", "data_seconds_per_step")
        return [{k: v for k, v in row.items() if k not in clock} for row in rows]

    assert lines(out) == lines(reference), what


def test_kill_at_a_random_step_then_resume_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"
    args = _args(data, out)
    kill_after = random.Random(time.time_ns()).randint(1, 10)  # 12 steps in all; the message says which
    process = _start(args)
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == f"STEP {kill_after}":
            os.kill(process.pid, signal.SIGKILL)  # anywhere in step kill_after + 1, a checkpoint, an eval, ...
            break
    process.wait(timeout=600)
    assert process.returncode == -signal.SIGKILL, f"the run ended before step {kill_after}"
    done = _finish(args)
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-3000:]
    _same_run(out, reference, f"killed after step {kill_after}")


def test_kill_while_writing_a_checkpoint_then_resume_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"
    args = _args(data, out)
    killed = _finish(args, KILL_AT_SAVE="3")  # checkpoints at steps 3 (epoch end), 4, 6, ...: dies writing step 6's
    assert killed.returncode == -signal.SIGKILL and "STEP 6" in killed.stdout and "STEP 7" not in killed.stdout
    partial = [p for p in out.iterdir() if p.name.startswith(".checkpoint.pt.") and p.name.endswith(".part")]
    assert len(partial) == 1  # the half-written file, never renamed into place
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4  # the previous one is intact
    done = _finish(args)
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-3000:]
    assert "STEP 5" in done.stdout and "STEP 4" not in done.stdout  # resumed from step 4
    assert not partial[0].exists()  # the dead writer's temporary file was removed
    _same_run(out, reference, "killed while writing the checkpoint of step 6")


def test_ctrl_c_mid_step_checkpoints_that_step_and_resume_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"
    args = _args(data, out)  # 4 micro-batches of 2 clips per step, checkpoints at steps 3, 4, 6, 8, 9, 12
    interrupted = _finish(args, INTERRUPT_AT_MIXUP=str(4 * 4 + 3))  # the 3rd micro-batch of step 5 (steps from 1)
    assert interrupted.returncode != 0 and "KeyboardInterrupt" in interrupted.stderr
    assert "STEP 4" in interrupted.stdout and "STEP 5" not in interrupted.stdout
    assert "INTERRUPTED 4 True" in interrupted.stdout
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["position_in_epoch"] == 1  # steps done: 4; none of step 5 in it
    done = _finish(args)
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-3000:]
    assert "STEP 5" in done.stdout and "STEP 4" not in done.stdout
    _same_run(out, reference, "interrupted (Ctrl-C) in step 5")


def test_ctrl_c_on_the_command_line_says_how_to_resume(data, reference, tmp_path):
    """A real SIGINT, wherever it lands: exit 130, no traceback, a note on what is kept; the re-run ends as if
    never stopped."""
    out = tmp_path / "run"
    argv = [
        sys.executable, "-m", "vivit", "train", str(data / "train"), "--val", str(data / "val"), "--out", str(out),
        "--model", "vivit_ti_st", "--recipe", "ek100", "--batch-size", "2", "--workers", "2", "--epochs", "4",
        "--lr", "0.05", "--ema-decay", "0.9", "--log-every", "1", "--checkpoint-every", "4", "--no-tensorboard",
        "--color-prob", "0", "--color-drop-prob", "0", "--randaugment", "none", "--frame-stride", "1",
        "--global-batch", "8", "--views", "1x1", "--eval-every", "1",
    ]  # fmt: skip
    for key, value in TINY.items():
        argv += ["--override", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "vivit: step 5 " in line:
            process.send_signal(signal.SIGINT)
            break
    rest = process.communicate(timeout=600)[1]
    err = "".join(lines) + rest
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "vivit: interrupted" in err
    assert "is kept: re-run the same command to resume" in err
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_run(out, reference, "Ctrl-C on the command line after step 5")
