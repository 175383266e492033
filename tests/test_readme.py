"""The README's first two commands are what CI runs and what a new user runs: keep them true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _first_commands() -> tuple[str, str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[1]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    return commands[0], commands[1]


def test_ci_runs_the_readme_test_command():
    _, test_command = _first_commands()
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0")


def test_main_job_runs_offline_and_prints_a_real_prediction(tmp_path):
    main_command, _ = _first_commands()
    assert main_command.endswith("&& vivit predict")
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "VIVIT_CACHE": str(tmp_path), "HF_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "vivit", "predict"], capture_output=True, text=True, env=env, timeout=300, check=True
    ).stdout
    true_label = re.search(r"true label: (\w+)", out)[1]
    top = re.search(r"^\s+([\d.]+)%\s+(\w+)$", out, re.M)
    assert top[2] == true_label and float(top[1]) > 50, out


def test_python_snippet_at_the_top_runs_offline_as_written(tmp_path):
    """The README's first Python block, verbatim, on the bundled model and clip, with no network."""
    snippet = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[1]
    assert "vivit.VideoReader" in snippet and "sample_frame_indices" in snippet and "create_transform" in snippet
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VIVIT_CACHE": str(tmp_path), "HF_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "left"  # the sample clip's label, as the comment in the snippet says
