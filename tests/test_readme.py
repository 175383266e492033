"""The README's first two commands are what CI runs and what a new user runs: keep them true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---------------------------------------------------------------- the README's model facts are `vivit info`'s
def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Markdown tables as (header cells, rows of cells)."""
    lines, tables, i = text.splitlines(), [], 0

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            header, rows, i = cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def _expand(pattern: str) -> list[str]:
    """Shell brace expansion: `vivit_{ti,s}_st` -> vivit_ti_st, vivit_s_st."""
    parts = re.split(r"\{([^}]*)\}", pattern)  # literal, choices, literal, ...
    names = [""]
    for i, part in enumerate(parts):
        names = [n + choice for n in names for choice in (part.split(",") if i % 2 else [part])]
    return names


def _names(row: list[str]) -> list[str]:
    """The registered names a table row talks about (`vivit_...` in backticks, braces expanded, `except` ones removed)."""
    text = " | ".join(row)
    kept, _, dropped = text.partition(" except ")
    excluded = {n for p in re.findall(r"`(vivit_[\w{},]+)`", dropped) for n in _expand(p)}
    return [n for p in re.findall(r"`(vivit_[\w{},]+)`", kept) for n in _expand(p) if n not in excluded]


_INFO: dict[tuple[str, bool], dict[str, str]] = {}


def _info(name: str, macs: bool = False) -> dict[str, str]:
    """`vivit info NAME` as {field: text}: the lines it prints (`vivit.info.describe_model`). Multiply-adds
    are the slow part (a second for ViViT-H, even on the meta device): counted only when `macs`."""
    import torch

    import vivit
    from vivit.info import describe_model
    from vivit.models.registry import get_entry

    if (name, macs) not in _INFO:
        entry = get_entry(name)
        with torch.device("meta"):
            model = vivit.create_model(entry.name)
        lines = describe_model(model, entry.pretrained_cfg, name=entry.name, macs=macs)
        _INFO[name, macs] = {field: text for field, text in lines if field}
    return _INFO[name, macs]


def _squash(text: str) -> str:
    """Lower-case letters and digits, without parentheses: "Kinetics-400" -> "kinetics400"."""
    return re.sub(r"[^a-z0-9]", "", re.sub(r"\(.*\)", "", text.lower()))


def _model_number(info: dict[str, str]) -> str:
    return re.search(r"\(Model (\d):", info["class"])[1]


def test_readme_model_facts_match_vivit_info():
    """Every model named in a README table: its class (or "Model N"), parameter count, GMACs, data and
    top-1 as the README states them are what `vivit info` prints, so the two cannot drift apart."""
    import vivit

    tables = [(h, rows) for h, rows in _tables((ROOT / "README.md").read_text()) if any(_names(r) for r in rows)]
    assert len(tables) >= 3, "the Models, paper numbers and Weights tables"
    checked = set()
    for header, rows in tables:
        for row in rows:
            names = _names(row)
            full = len(names) == 1  # a row about one model states its figures
            for name in names:
                assert name in vivit.list_models(), f"README names {name}, which is not registered"
                info = _info(name, macs=full and any(c.startswith("GMACs") for c in header))
                for column, cell in zip(header, row, strict=True):
                    if column == "class":
                        assert info["class"].startswith(cell.strip("`") + " "), (name, cell, info["class"])
                    for number in re.findall(r"\bModel (\d)\b", cell):
                        assert number == _model_number(info), (name, cell, info["class"])
                    if not full:
                        continue
                    count = int(re.search(r"\(([\d,]+)\)", info["parameters"])[1].replace(",", ""))
                    for value in re.findall(r"(?<![(\d.])(\d+\.(\d+))M\b", cell):  # ours, not the paper's "(88.9M)"
                        assert f"{count / 1e6:.{len(value[1])}f}" == value[0], (name, cell, info["parameters"])
                    if column.startswith("GMACs"):
                        assert info["GMACs"].startswith(cell.split()[0] + " per view"), (name, cell, info["GMACs"])
                    if column == "data":
                        # "Kinetics-400" ~ "kinetics400", "ImageNet-21k images" ~ "imagenet21k (image weights ...)"
                        dataset = info["dataset"].split(";")[0]
                        assert _squash(cell).startswith(_squash(dataset)), (name, cell, info["dataset"])
                    top1 = re.fullmatch(r"([\d.]+)\D*\((\d+x\d+)\)", cell) if column.startswith("top-1") else None
                    if top1:
                        assert f" {top1[1]}% ({top1[2]} views)" in info["accuracy"], (name, cell, info["accuracy"])
                checked.add(name)
    assert {"vivit_b_st", "vivit_b_fe_k400", "vivit_demo", "vivit_h_fdp_in21k"} <= checked


def test_readme_says_one_thing_about_the_demo():
    """Wherever the README describes vivit_demo, it is the Model `vivit info` shows, trained by make_demo.py."""
    number = _model_number(_info("vivit_demo"))
    units, prose, code = [], [], False  # sentences of prose; table rows and code lines whole
    for line in (ROOT / "README.md").read_text().splitlines() + [""]:
        code ^= line.startswith("```")
        if code or line.startswith("|") or not line.strip():
            units += re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", " ".join(prose)) + [line]
            prose = []
        else:
            prose.append(line.strip())
    about_demo = [u for u in units if "vivit_demo" in u]
    claims = [(u, n) for u in about_demo for n in re.findall(r"\bModel (\d)\b", u)]
    assert len(claims) >= 3, "the README should say which model the demo is (table, snippet, fine-tuning section)"
    assert all(n == number for _, n in claims), [u for u, n in claims if n != number]
    trainers = [t for u in about_demo for t in re.findall(r"trained (?:this way )?by `(examples/\w+\.py)`", u)]
    assert len(trainers) >= 2 and set(trainers) == {"examples/make_demo.py"}, trainers
