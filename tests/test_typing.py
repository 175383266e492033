"""Typing for users: mypy (default mode) finds no error in the package, and user code sees the real
types: `create_model` returns `vivit.ViViT`, whose methods type-check (a wrong argument is an error)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]

USER_CODE = """\
import torch

import vivit

model = vivit.create_model("vivit_ti_st", pretrained=False, num_classes=10)
features, intermediates = model.forward_intermediates(torch.zeros(1, 3, 32, 224, 224), indices=2)
grids: list[torch.Tensor] = model.forward_intermediates(torch.zeros(1, 3, 32, 224, 224), intermediates_only=True)
reveal_type(model)
reveal_type(features)
reveal_type(intermediates)
reveal_type(model.save_pretrained)
model.save_pretrained("out")
model.save_pretrained(3)  # the one error expected
transform = vivit.create_transform(**vivit.resolve_data_config(model=model))
"""


def test_py_typed_marker_is_shipped():
    assert (ROOT / "vivit" / "py.typed").is_file()
    package_data = next(
        line for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("vivit = [")
    )
    assert '"py.typed"' in package_data  # [tool.setuptools.package-data]: installed beside the modules


def test_mypy_package_clean_and_user_code_typed(tmp_path):
    pytest.importorskip("mypy")
    # a new module name each run: mypy's cache (kept in the checkout) maps module names to files
    user = tmp_path / f"user_code_{uuid.uuid4().hex}.py"
    user.write_text(USER_CODE)
    # one run for both (the torch stubs are analysed once); the config in pyproject.toml applies
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "vivit", "hubconf.py", str(user)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = result.stdout.splitlines()
    package_errors = [line for line in lines if ": error:" in line and not line.startswith(str(user))]
    assert package_errors == [], result.stdout
    # mypy versions differ only in whether builtins are qualified
    user_lines = [
        line.removeprefix(f"{user}:").replace("builtins.", "") for line in lines if line.startswith(str(user))
    ]
    assert user_lines == [
        '8: note: Revealed type is "vivit.models.vivit.ViViT"',
        '9: note: Revealed type is "torch._tensor.Tensor"',
        '10: note: Revealed type is "list[torch._tensor.Tensor]"',
        '11: note: Revealed type is "def (directory: str | os.PathLike[Any])"',
        (
            '13: error: Argument 1 to "save_pretrained" of "ViViT" has incompatible type "int"; '
            'expected "str | PathLike[Any]"  [arg-type]'
        ),
    ], result.stdout
