import sys
from pathlib import Path

import pytest
import torch

# test helper modules (scenic_fixtures, hubserver) live beside the tests
sys.path.insert(0, str(Path(__file__).parent))

from hubserver import hub_server  # noqa: F401 - a fixture: importing it here makes it visible to every test


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; with several, OpenMP start-up/spinning dominates
    (and is ruinous on a loaded 2-core CI machine). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SLOW_KINDS = ("distributed", "onnx", "fuzz", "compile")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Process groups, exports, fuzzing and compilation are slow by nature: mark them so, once, here."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in _SLOW_KINDS) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


# ---------------------------------------------------------------- tiny models (shared by the test files)
# One small ViViT instead of a `TINY` dict per test file: a 4 x 4 x 6 token grid (8 frames of 32 x 48,
# 8 x 8 patches, tubelets of 2 frames), width 32, 4 heads, 2 blocks, 5 classes: milliseconds on a CPU.
TINY_ARGS = dict(
    img_size=(32, 48), num_frames=8, patch_size=8, tubelet_size=2, embed_dim=32, depth=2, num_heads=4, num_classes=5
)
TINY_GRID = (4, 4, 6)  # (nt, nh, nw) of TINY_ARGS
# Registered names carry their width (vivit_ti_*: 192 wide, 3 heads); the command line takes names,
# so its tiny checkpoints override only the sizes.
TINY_NAMED_ARGS = dict(img_size=32, num_frames=8, patch_size=8, depth=1, num_classes=4)


def build_tiny_model(variant: str = "st", seed: int | None = 0, **overrides):
    """A tiny model of one of the four classes (`st`, `fe`, `fsa`, `fdp`), seeded (None: not), as built (training mode)."""
    from vivit.models.vivit import MODEL_CLASSES

    if seed is not None:
        torch.manual_seed(seed)
    extra = {"temporal_depth": 2} if variant == "fe" else {}
    return MODEL_CLASSES[variant](**{**TINY_ARGS, **extra, **overrides})


@pytest.fixture(scope="session")
def tiny_model():
    """`tiny_model(variant="st", seed=0, **overrides)`: a tiny model (see TINY_ARGS)."""
    return build_tiny_model


@pytest.fixture(scope="session")
def tiny_named_model():
    """`tiny_named_model(name="vivit_ti_st", seed=0, **overrides)`: a registered architecture at tiny sizes
    (TINY_NAMED_ARGS), as `vivit.create_model` builds it, for checkpoints the command line loads by name."""

    def make(name: str = "vivit_ti_st", seed: int | None = 0, **overrides):
        import vivit

        if seed is not None:
            torch.manual_seed(seed)
        extra = {"temporal_depth": 1} if "_fe" in name else {}
        return vivit.create_model(name, **{**TINY_NAMED_ARGS, **extra, **overrides})

    return make


# ---------------------------------------------------------------- the command line (shared runners and checks)
@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """`run_cli(*argv) -> (exit status, stdout, stderr)`: `vivit ARGV` run in-process (`vivit.cli.main`)."""
    from vivit import cli

    def run(*argv: object) -> tuple[int, str, str]:
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `vivit` subprocess: offline, with its own empty caches."""
    import os

    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VIVIT_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `vivit` subprocess (see `offline_env`)."""
    return offline_env(tmp_path)


@pytest.fixture
def run_cli_process(cli_env: dict[str, str]):
    """`run_cli_process(*argv, env=None, timeout=300, prefix=()) -> CompletedProcess`: `python -m vivit ARGV` in a
    real process (text output captured); `prefix` runs it under a wrapper (e.g. `unshare`)."""
    import subprocess

    def run(*argv: object, env: dict[str, str] | None = None, timeout: float = 300, prefix=()):
        command = [*prefix, sys.executable, "-m", "vivit", *map(str, argv)]
        return subprocess.run(command, capture_output=True, text=True, env=env or cli_env, timeout=timeout, check=False)

    return run


def check_one_error_line(err: str, *fragments: str) -> str:
    """stderr holds exactly one line, `vivit: error: ...`, with each fragment and no traceback; returns it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vivit: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def one_error_line():
    """`one_error_line(err, *fragments) -> line`: stderr is exactly one `vivit: error:` line holding the fragments."""
    return check_one_error_line
