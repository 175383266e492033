"""The README's `vivit train` example, run as written: generate the folder, train offline, predict with best/."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> tuple[str, list[str], str]:
    """The python block, the bash commands and the shown output of the README's training section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Fine-tuning the paper's way: `vivit train`") :]
    python = re.search(r"```python\n(.*?)```", section, re.S)[1]
    bash = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    shown = re.search(r"```\n(last: .*?)```", section, re.S)[1]
    return python, [line for line in bash.splitlines() if line.strip()], shown


@pytest.mark.slow
def test_readme_training_example_runs_offline_as_written(tmp_path):
    python, commands, shown = _blocks()
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # "run from the repository root"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VIVIT_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "discs" / "train").rglob("*.npy"))) == 96
    assert len(commands) == 2 and commands[0].startswith("OMP_NUM_THREADS=1 vivit train ")
    outputs = []
    for command in commands:
        words = shlex.split(command)
        extra = {}
        while "=" in words[0]:  # VAR=value prefixes
            key, _, value = words.pop(0).partition("=")
            extra[key] = value
        assert words[0] == "vivit"
        done = subprocess.run(
            [sys.executable, "-m", "vivit", *words[1:]],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout)
    # the README shows what this machine printed; another CPU's float rounding may move a clip or two
    print(outputs[0])
    assert [line.split(":")[0] for line in outputs[0].strip().splitlines()] == ["last", "best", "temporal check, top-1"]
    best = float(re.search(r"^best: top-1 ([\d.]+)%", outputs[0], re.M)[1])
    check = dict(re.findall(r"(normal|shuffled|reversed|middle frame) ([\d.]+)%", outputs[0]))
    assert best >= 85 and float(check["normal"]) >= 85  # the README: 93.75
    assert abs(float(check["reversed"]) - float(check["normal"])) <= 10  # speed does not depend on direction
    assert float(check["middle frame"]) <= 65  # no motion, no speed: about chance (50)
    assert shown.splitlines()[0].startswith("last: top-1 ")
    assert re.search(r"^\s+[\d.]+%\s+fast$", outputs[1], re.M)  # best/ predicts with its own label names
