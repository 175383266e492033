"""vivit train under torchrun (gloo on CPU): N ranks = 1 rank with N times the accumulation; a dead rank ends the job.

2 ranks x batch 2 and 1 rank x batch 2 x 2 accumulation steps take the same global batches (the same videos,
augmentations, mixup and drop-path draws per micro-batch), so the weights after 12 updates may only differ
by float rounding: the ranks' gradients are averaged by DDP's all-reduce (sum of halves) where one rank
accumulates halves in `.grad`. With two micro-batches both add the same two numbers (halving is exact), so
on one machine the result is identical; it is tested to 1e-6 and the measured difference is printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_features_job import free_port
from test_train import TINY, write_clips

pytestmark = [pytest.mark.distributed]

TINY_OVERRIDES = [item for key, value in TINY.items() for item in ("--override", f"{key}={value}")]
COMMON = [
    "--model",
    "vivit_ti_st",
    *TINY_OVERRIDES,
    "--recipe",
    "ek100",  # drop path, label smoothing, mixup
    "--randaugment",
    "none",
    "--frame-stride",
    "1",
    "--views",
    "1x1",
    "--eval-every",
    "1",
    "--lr",
    "0.05",
    "--batch-size",
    "2",
    "--log-every",
    "1",
    "--workers",
    "1",
    "--no-tensorboard",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    write_clips(root / "train", 20, seed=0)
    write_clips(root / "val", 6, seed=1)
    return root


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def test_two_gloo_ranks_equal_one_rank_with_twice_the_accumulation(data, tmp_path):
    args = [str(data / "train"), "--val", str(data / "val"), *COMMON, "--epochs", "2"]  # 2 x 5 = 10 updates
    one = subprocess.run(
        [sys.executable, "-m", "vivit", "train", *args, "--accum-steps", "2", "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "vivit",
            "train",
            *args,
            "--accum-steps",
            "1",
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "10 steps of 4 clips (5 per epoch, 1 micro-batches x 2 rank(s) on cpu)" in two.stderr
    assert two.stdout.count("best: ") == 1  # rank 0 reports, rank 1 stays quiet
    a, b = (load_file(tmp_path / run / "last" / "model.safetensors") for run in ("one", "two"))
    difference = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |weight difference| after 10 updates, 2 ranks vs 1 rank x 2 accumulation: {difference:.3g}")
    assert difference <= 1e-6
    states = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("one", "two")]
    assert states[0]["step"] == states[1]["step"] == 10
    assert states[0]["best"] == states[1]["best"] and states[0]["metrics"] == states[1]["metrics"]


def test_a_rank_that_dies_ends_the_job_with_one_clear_line(data, tmp_path):
    port = str(free_port())
    args = [str(data / "train"), *COMMON, "--epochs", "500", "--accum-steps", "1", "--out", str(tmp_path / "run")]
    ranks = []
    for rank in (0, 1):
        env = {**_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-m", "vivit", "train", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tmp_path,
            )
        )
    try:
        assert ranks[0].stderr is not None
        seen = ""
        for line in ranks[0].stderr:  # rank 0's log lines: training is under way
            seen += line
            if "vivit: step 5 " in line:
                break
        else:
            pytest.fail(f"rank 0 never reached step 5: {seen[-3000:]}")
        ranks[1].send_signal(signal.SIGKILL)
        start = time.monotonic()
        _, rest = ranks[0].communicate(timeout=300)  # generous: only a hang fails this
        waited = time.monotonic() - start
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
    errors = [line for line in rest.splitlines() if line.startswith("vivit: error:")]
    assert ranks[0].returncode == 1 and len(errors) == 1, rest[-3000:]
    assert "rank 0 of 2 lost contact with the other ranks at step" in errors[0]
    assert "re-run the same command to resume" in errors[0] and "Traceback" not in rest
    print(f"rank 0 stopped {waited:.1f} s after rank 1 was killed")
