"""The command line as a new user meets it (issue 15): honest answers, precise errors, clean logs.

In-process runs (`vivit.cli.main`) check messages and exit statuses; real subprocesses check what only
a process shows: the exit status of the console entry point, and what reaches a log file or a
terminal (no `\\r` fragments in a file, a live progress bar on a terminal).
"""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

import vivit
import vivit._install
from vivit import cli, render
from vivit.data.video import VideoDecoderMissingError, read_video
from vivit.distributed import available_devices
from vivit.predict import has_untrained_head

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = Path(__file__).resolve().parent / "data" / "videos"
DEMO = ROOT / "vivit" / "assets" / "vivit_demo.safetensors"
DEMO_NOTE = "  note: vivit_demo was trained on synthetic clips only; on a real video this answer means nothing"


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VIVIT_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_named_model) -> dict[str, Path]:
    """Tiny checkpoints (a zero head, no head, no preprocessing config) and frame arrays."""
    root = tmp_path_factory.mktemp("first_hour")
    zero = tiny_named_model("vivit_ti_st")
    zero.reset_classifier(4)  # a new task's head: all zero, as num_classes= and ViT inflation give
    zero.save_pretrained(root / "zero_head")
    tiny_named_model("vivit_ti_st", seed=None, num_classes=0).save_pretrained(root / "no_head")
    tiny_named_model("vivit_ti_st", seed=None).save_pretrained(root / "no_cfg")  # trained-looking head, no cfg
    rng = np.random.default_rng(0)
    np.save(root / "clip.npy", rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8))
    np.save(root / "short.npy", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))  # < one clip: looped
    (root / "garbage.npy").write_bytes(b"not an array" * 10)
    return {p.name.split(".")[0]: p for p in root.iterdir()}


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a model is built: the error must come before any download or loading."""
    from vivit.cli import convert, options

    for module in (options, convert):
        monkeypatch.setattr(module, "create_model", lambda *a, **k: pytest.fail("a model was loaded"))


# ---------------------------------------------------------------- 1. honest predictions
def test_has_untrained_head(files):
    assert has_untrained_head(vivit.create_model("vivit_ti_st", pretrained=files["zero_head"]))
    assert not has_untrained_head(vivit.create_model("vivit_ti_st", pretrained=files["no_cfg"]))
    assert not has_untrained_head(vivit.create_model("vivit_ti_st", pretrained=files["no_head"]))  # no head at all
    model = vivit.create_model("vivit_demo", pretrained=True)
    assert not has_untrained_head(model)
    model.reset_classifier(4)
    assert has_untrained_head(model)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--model", "vivit_ti_st_in21k"], "image ViT inflated to video"),
        (["--model", "vivit_b_fe_in21k", "--override", "num_frames=16"], "image ViT inflated to video"),
        (["--override", "num_classes=3"], "--override num_classes=3 replaces the trained 4-class head"),
    ],
    ids=["in21k", "in21k-override", "num_classes"],
)
def test_predict_refuses_an_untrained_head_before_any_download(files, no_loading, argv, why, run_cli, one_error_line):
    code, out, err = run_cli("predict", files["clip"], *argv)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "the classifier head is untrained" in line and why in line, line
    assert "use 'vivit features VIDEO --model " in line, line


def test_predict_refuses_zero_head_weights(files, run_cli, one_error_line):
    code, out, err = run_cli("predict", files["clip"], "--model", "vivit_ti_st", "--weights", files["zero_head"])
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "vivit_ti_st: the classifier head is untrained (its weights are all zero" in line
    assert f"'vivit features VIDEO --model vivit_ti_st --weights {files['zero_head']} --out features/'" in line
    code, out, err = run_cli("predict", files["clip"], "--model", "vivit_ti_st", "--weights", files["no_head"])
    assert code == 2 and out == ""
    assert "has no classifier head (num_classes=0" in one_error_line(err)
    code, out, _ = run_cli("predict", files["clip"], "--model", "vivit_ti_st", "--weights", files["no_cfg"], "-q")
    assert code == 0 and "%" in out  # the same architecture with a trained-looking head answers


def test_demo_says_it_learned_from_synthetic_data_beside_answers_on_user_videos(files, run_cli):
    av = pytest.importorskip("av")  # noqa: F841 - a real encoded video
    video = VIDEOS / "odd175x143.mp4"
    code, out, _ = run_cli("predict", video, files["clip"], "-q", "--top-k", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{video} (vivit_demo, 1x1 views)" and lines[1] == DEMO_NOTE
    assert lines[3] == f"{files['clip']} (vivit_demo, 1x1 views)" and lines[4] == DEMO_NOTE
    assert re.fullmatch(r"\s+[\d.]+%  (right|left|down|up)", lines[2])
    code, out, _ = run_cli("predict", video, "-q", "--json")
    assert json.loads(out)["note"] == DEMO_NOTE.removeprefix("  note: ")
    # its own sample clip comes from its synthetic test set: the answer is a real one, no note
    code, out, _ = run_cli("predict", "-q")
    assert code == 0 and "note" not in out and re.fullmatch(r"\s+[\d.]+%  left", out.splitlines()[1])
    # a model trained on real data gets no note
    code, out, _ = run_cli("predict", files["clip"], "--model", "vivit_ti_st", "--weights", files["no_cfg"], "-q")
    assert code == 0 and "note" not in out


def test_info_says_what_the_demo_is_and_which_heads_are_untrained(run_cli):
    code, out, _ = run_cli("info", "vivit_demo")
    assert code == 0
    assert "SpatioTemporalViViT (Model 1" in out
    assert "dataset        synthetic moving discs (examples/make_demo.py); synthetic data only" in out
    assert vivit.create_model("vivit_demo").pretrained_cfg["synthetic_data"] is True
    code, out, _ = run_cli("info", "vivit_s_fe_in21k")
    assert "head untrained (zero): for fine-tuning or features, not for 'vivit predict'" in out


def test_explain_title_says_synthetic_and_untrained(files, tmp_path, monkeypatch, one_thread, run_cli):
    pytest.importorskip("matplotlib")
    titles: list[str] = []
    real = render.prediction_title
    monkeypatch.setattr(render, "prediction_title", lambda name, *a: titles.append(name) or real(name, *a))
    code, out, err = run_cli("explain", files["clip"], "--out", tmp_path / "demo.png", "-q")
    assert code == 0, err
    assert out.splitlines()[1] == DEMO_NOTE and titles[-1] == "vivit_demo (trained on synthetic data only)"
    code, out, err = run_cli("explain", "--out", tmp_path / "sample.png", "-q")  # the sample: no note
    assert code == 0 and len(out.splitlines()) == 1 and titles[-1] == "vivit_demo"
    code, out, err = run_cli(
        "explain",
        files["clip"],
        "--model",
        "vivit_ti_st",
        "--weights",
        files["zero_head"],
        "--out",
        tmp_path / "zero.png",
        "-q",
    )
    assert code == 0, err  # the map does not depend on the head: drawn, but no prediction claimed
    assert out == f"wrote {tmp_path / 'zero.png'} (8 frames): untrained head, no prediction\n"
    assert titles[-1] == "vivit_ti_st (untrained head: no real prediction)"


# ---------------------------------------------------------------- 3. precise errors
@pytest.mark.parametrize(
    ("out", "to", "fragment"),
    [
        ("conv.pt", "vivit", "--out conv.pt: convert writes a .safetensors file"),
        ("model.bin", "vivit", "or a new directory name without a suffix"),
        ("weights.pth", "vivit", "a name ending in .safetensors, an existing directory"),
        ("existing_file", "vivit", "is an existing file, not a directory"),
        ("model.safetensors", "transformers", "--to transformers writes a directory"),
        ("hf.pt", "transformers", "give an existing directory or a new directory name without a suffix"),
    ],
)
def test_convert_refuses_an_out_it_would_misname(
    tmp_path, no_loading, monkeypatch, out, to, fragment, run_cli, one_error_line
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing_file").write_bytes(b"x")
    before = sorted(tmp_path.iterdir())
    code, stdout, err = run_cli("convert", DEMO, "--out", out, "--to", to)
    assert code == 2 and stdout == ""
    assert fragment in one_error_line(err)
    assert sorted(tmp_path.iterdir()) == before  # nothing created (no directory named conv.pt)


def test_convert_accepts_safetensors_and_directories(tmp_path, run_cli):
    (tmp_path / "v1.0").mkdir()  # an existing directory may have a dot in its name
    for out, written in [
        ("one.safetensors", None),
        ("new_dir", ["config.json", "model.safetensors"]),
        ("v1.0", ["config.json", "model.safetensors"]),
    ]:
        code, stdout, err = run_cli("convert", DEMO, "--out", tmp_path / out, "-q")
        assert code == 0 and err == "", err
        assert stdout.startswith(f"wrote {tmp_path / out}: SpatioTemporalViViT, 0.2M parameters\n")
        if written is None:
            assert (tmp_path / out).is_file()
        else:
            assert sorted(p.name for p in (tmp_path / out).iterdir()) == written


def _unusable_device() -> str:
    """A device name torch accepts but this machine cannot use."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize("command", ["predict", "features", "explain"])
def test_unusable_device_is_a_usage_error_naming_the_available_ones(
    files, tmp_path, no_loading, command, run_cli, one_error_line
):
    device = _unusable_device()
    extra = {"predict": [], "features": ["--out", tmp_path / "features"], "explain": ["--out", tmp_path / "x.png"]}
    code, out, err = run_cli(command, files["clip"], "--model", "vivit_demo", "--device", device, *extra[command])
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert line.startswith(f"vivit: error: --device {device}: ") and line.endswith(
        f"; devices available here: {', '.join(available_devices())}"
    ), line
    if not torch.cuda.is_available():
        assert "was built without CUDA" in line or "sees no CUDA device" in line
    code, _, err = run_cli(command, files["clip"], "--model", "vivit_demo", "--device", "gpu0", *extra[command])
    assert code == 2 and "--device gpu0: not a torch device name" in one_error_line(err)


def test_unusable_device_exit_status_of_the_process(tmp_path, one_error_line):
    done = subprocess.run(
        [sys.executable, "-m", "vivit", "predict", "--device", _unusable_device()],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path),
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert one_error_line(done.stderr).startswith(f"vivit: error: --device {_unusable_device()}: ")
    assert "Traceback" not in done.stderr and "AssertionError" not in done.stderr


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "source-checkout"])
def test_pyav_hint_names_what_pip_can_install(tmp_path, monkeypatch, installed):
    """`pip install av` always; the extra only where pip knows this vivit (the name is not ours on PyPI)."""
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setattr(vivit._install, "_installed_as_distribution", lambda: installed)
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(VideoDecoderMissingError) as info:
        read_video(tmp_path / "clip.mp4")
    extra = ' (or pip install "vivit[video]")' if installed else ""
    assert str(info.value) == (
        f"reading video files needs PyAV: pip install av{extra}; uint8 frame arrays saved as .npy/.npz need no decoder"
    )


class _FakeDistribution:
    def __init__(self, direct_url: dict | None, files_at: Path) -> None:
        self._direct_url, self._files_at = direct_url, files_at

    def read_text(self, name: str) -> str | None:
        return json.dumps(self._direct_url) if self._direct_url is not None and name == "direct_url.json" else None

    def locate_file(self, name: str) -> Path:
        return self._files_at / name


@pytest.mark.parametrize(
    ("dist", "expected"),
    [
        (None, False),  # run from a checkout on PYTHONPATH: pip does not know this vivit
        ({"url": ROOT.as_uri(), "dir_info": {"editable": True}}, True),  # pip install -e .
        ({"url": "file:///somewhere/else", "dir_info": {"editable": True}}, False),  # another checkout's install
        ("site", True),  # a regular install: the distribution's files are the package being run
        ("elsewhere", False),  # a stale install elsewhere while this checkout is imported
    ],
    ids=["no-distribution", "editable-here", "editable-elsewhere", "installed-here", "installed-elsewhere"],
)
def test_installed_as_distribution(monkeypatch, tmp_path, dist, expected):
    def distribution(name: str):
        assert name == "vivit"
        if dist is None:
            raise metadata.PackageNotFoundError(name)
        if dist == "site":
            return _FakeDistribution(None, ROOT)
        if dist == "elsewhere":
            return _FakeDistribution(None, tmp_path)
        return _FakeDistribution(dist, tmp_path)

    monkeypatch.setattr(vivit._install.metadata, "distribution", distribution)
    vivit._install._installed_as_distribution.cache_clear()
    try:
        assert vivit._install._installed_as_distribution() is expected
    finally:
        vivit._install._installed_as_distribution.cache_clear()


# ---------------------------------------------------------------- 4. clean logs
def test_quiet_silences_every_informational_line(files, tmp_path, one_thread, run_cli):
    """A model without a preprocessing config (a note) on a clip shorter than one clip (a warning)."""
    pytest.importorskip("matplotlib")
    model = ["--model", "vivit_ti_st", "--weights", files["no_cfg"]]
    commands = {
        "predict": ["predict", files["short"], *model],
        "explain": ["explain", files["short"], *model, "--out", tmp_path / "x.png"],
        "features": ["features", files["short"], *model, "--out", tmp_path / "features"],
        "convert": ["convert", files["no_cfg"], "--model", "vivit_ti_st", "--out", tmp_path / "c.safetensors"],
    }
    for name, argv in commands.items():
        code, loud_out, loud_err = run_cli(*argv)
        assert code == 0, loud_err
        if name != "convert":  # convert has nothing to say on stderr, with or without -q
            assert "vivit: the weights carry no preprocessing config" in loud_err, (name, loud_err)
        if name == "predict":
            assert "vivit: warning: " in loud_err and "looped" in loud_err
        shutil.rmtree(tmp_path / "features", ignore_errors=True)  # features would skip the done video
        code, out, err = run_cli(*argv, "-q")
        assert code == 0 and err == "", (name, err)
        assert out == loud_out, name  # the results themselves are the same


def test_predict_views_reports_progress_to_a_callback_and_prints_nothing(capsys):
    """The library draws no bar (the command line does): progress goes to a callback, (done, total) per batch."""
    model = vivit.create_model("vivit_demo", pretrained=True)
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    calls: list[tuple[int, int]] = []
    vivit.predict_views(model, frames, 2, 3, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 6), (6, 6)]
    assert capsys.readouterr() == ("", "")
    with pytest.raises(TypeError, match=r"progress must be a callable progress\(done, total\)"):
        vivit.predict_views(model, frames, 2, 3, progress=True)  # vivit 0.1 drew a tqdm bar here


def test_predict_log_file_gets_whole_lines_and_a_summary(files, tmp_path):
    """stderr to a file (not a terminal): no progress bar, no `\\r`; the run ends with what failed."""
    av = pytest.importorskip("av")  # noqa: F841
    video = VIDEOS / "odd175x143.mp4"
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "vivit", "predict", video, files["garbage"], files["clip"], "--top-k", "1"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=subprocess_env(tmp_path),
            timeout=120,
            check=False,
        )
    err = log.read_text()
    assert done.returncode == 1
    assert "\r" not in err and "\r" not in done.stdout
    assert done.stdout.splitlines()[:2] == [f"{video} (vivit_demo, 1x1 views)", DEMO_NOTE]
    assert done.stdout.count("(vivit_demo, 1x1 views)") == 2
    lines = err.splitlines()
    assert lines[0].startswith(f"vivit: error: {files['garbage']}")
    assert lines[1:] == ["vivit: 2 of 3 videos classified, 1 failed:", f"  {files['garbage']}"]


def test_predict_on_a_terminal_shows_progress(files, tmp_path):
    """stderr on a terminal (a pseudo-terminal here): the video and view bars are drawn."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vivit", "predict", files["clip"], files["clip"], "--top-k", "1"],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=subprocess_env(tmp_path),
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "videos:" in terminal and "2/2" in terminal and "\r" in terminal, terminal
    assert "vivit: 2 of 2 videos classified" in terminal
    assert stdout.decode().count("(vivit_demo, 1x1 views)") == 2  # results stay whole on stdout


def test_every_imported_distribution_is_declared():
    """vivit imports tqdm, huggingface_hub, ... at run time: each must be a dependency or in an extra."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~\[; ]", req)[0].lower() for req in project["dependencies"]}
    extras = {
        re.split(r"[<>=!~\[; ]", req)[0].lower() for reqs in project["optional-dependencies"].values() for req in reqs
    }
    distribution = {"huggingface_hub": "huggingface-hub", "PIL": "matplotlib"}  # Pillow comes with matplotlib
    imported: dict[str, set[str]] = {}
    for path in (ROOT / "vivit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "vivit":
                    imported.setdefault(distribution.get(top, top).lower(), set()).add(path.name)
    assert "tqdm" in core  # imported by cli.py and predict.py, not only pulled in by huggingface-hub
    missing = {name: sorted(where) for name, where in imported.items() if name not in core | extras}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_download_bars_follow_the_terminal_rule(monkeypatch):
    """huggingface_hub's bars (Hub and Scenic downloads) are off while a command runs into a pipe, and
    restored afterwards (in-process callers keep their setting)."""
    from huggingface_hub import utils as hf_utils

    from vivit.cli import catalog, console

    seen = []
    monkeypatch.setattr(catalog, "run_list", lambda args: seen.append(hf_utils.are_progress_bars_disabled()) or 0)
    before = hf_utils.are_progress_bars_disabled()
    assert cli.main(["list"]) == 0  # capsys: stderr is not a terminal
    assert seen == [True] and hf_utils.are_progress_bars_disabled() == before
    monkeypatch.setattr(console, "stderr_is_terminal", lambda: True)
    assert cli.main(["list"]) == 0 and cli.main(["list", "-q"]) == 0
    assert seen == [True, before, True]  # a terminal: as the user set it; -q: off


# ---------------------------------------------------------------- 5. every answer right (issue 21, point 6)
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_named_model) -> dict[str, Path]:
    """A tiny Model 2 as a save_pretrained folder and as one self-describing .safetensors file, with labels."""
    root = tmp_path_factory.mktemp("checkpoints")
    model = tiny_named_model("vivit_ti_fe")
    model.pretrained_cfg = {**model.pretrained_cfg, "label_names": ("up", "down", "left", "right")}
    model.save_pretrained(root / "m2")
    from vivit.weights.loading import save_safetensors

    save_safetensors(model, root / "m2.safetensors")
    return {"dir": root / "m2", "file": root / "m2.safetensors"}


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_predict_weights_without_model_runs_and_names_the_checkpoint_architecture(
    files, checkpoints, kind, run_cli, one_thread
):
    """`--weights CKPT` alone ran the checkpoint but called it vivit_demo, and a Model 2 checkpoint was refused."""
    code, out, err = run_cli("predict", files["clip"], "--weights", checkpoints[kind], "--json", "-q")
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["model"] == "vivit_ti_fe" and record["weights"] == str(checkpoints[kind])
    assert {p["label"] for p in record["predictions"]} <= {"up", "down", "left", "right"}
    code, out, err = run_cli("predict", files["clip"], "--weights", checkpoints[kind], "-q")
    assert code == 0 and out.startswith(f"{files['clip']} (vivit_ti_fe, 4x3 views)"), out


def test_local_dir_and_hub_names_are_model_names_everywhere(files, checkpoints, tmp_path, run_cli, one_thread):
    """`vivit convert` prints `local-dir:` as the way to load its output: every --model takes it."""
    name = f"local-dir:{checkpoints['dir']}"
    code, out, err = run_cli("predict", files["clip"], "--model", name, "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["model"] == "vivit_ti_fe"
    code, out, err = run_cli(
        "features", files["clip"], "--model", name, "--out", tmp_path / "f", "--workers", "0", "-q"
    )
    assert code == 0, err
    from vivit.features import read_features

    _, meta = read_features(tmp_path / "f" / "clip.npy.safetensors")
    assert meta["model"] == name and str(checkpoints["dir"]) in meta["weights"]  # the identity of the weights
    code, out, _ = run_cli("info", name)
    assert code == 0 and "FactorizedEncoderViViT" in out
    code, _, err = run_cli("predict", files["clip"], "--model", name, "--weights", checkpoints["file"])
    assert code == 2 and "already, with its own weights" in err


def test_override_values_the_model_does_not_take_are_usage_errors(files, no_loading, run_cli, one_error_line):
    code, out, err = run_cli("predict", files["clip"], "--override", "num_frames=abc")
    assert code == 2 and out == ""  # was exit 1 with a bare "invalid literal for int()"
    one_error_line(err, "--override num_frames=abc", "SpatioTemporalViViT does not take it")
    code, _, err = run_cli("info", "vivit_ti_st", "--override", "img_size=[1, 2, 3]")
    assert code == 2
    one_error_line(err, "--override img_size=")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("num_frames=abc", "num_frames must be an integer, got 'abc'"),
        ("embed_dim=64.5", "embed_dim must be an integer, got 64.5"),
        ("drop_rate=abc", "drop_rate must be a number in [0, 1), got 'abc'"),
        ("drop_path_rate=1.5", "drop_path_rate must be a number in [0, 1), got 1.5"),
        ("dynamic_size=maybe", "dynamic_size must be true or false, got 'maybe'"),
    ],
)
def test_override_values_of_the_wrong_type_say_what_is_expected(
    files, no_loading, run_cli, one_error_line, override, expected
):
    """attack21: `--override drop_rate=abc` said "'<' not supported between instances of 'str' and 'int'",
    `num_frames=abc` "invalid literal for int() with base 10", and `dynamic_size=maybe` was accepted by the
    check and refused later, exit 1 (create_model said it well already: vivit.weights.validate)."""
    code, out, err = run_cli("predict", files["clip"], "--override", override)
    assert code == 2 and out == ""
    one_error_line(err, f"--override {override}", expected)
    with pytest.raises(ValueError, match=re.escape(expected)):  # the constructor itself, as the CLI's check calls it
        vivit.SpatioTemporalViViT(**dict([vivit.cli.options.override_value(override)]))


def test_evaluate_out_that_is_a_file_is_a_usage_error_before_any_work(
    files, tmp_path, no_loading, run_cli, one_error_line
):
    (tmp_path / "eval.csv").write_text("x", encoding="utf-8")
    listing = tmp_path / "val.csv"
    listing.write_text(f"{files['clip']},left\n", encoding="utf-8")
    code, out, err = run_cli("evaluate", listing, "--model", "vivit_demo", "--out", tmp_path / "eval.csv")
    assert code == 2 and out == ""  # was `[Errno 17] File exists` after classifying every video
    one_error_line(err, "--out", "eval.csv is an existing file, not a folder")


def test_convert_accepts_a_registered_name_as_its_source(tmp_path, run_cli):
    pytest.importorskip("transformers")
    code, _, err = run_cli("convert", "vivit_demo", "--to", "transformers", "--out", tmp_path / "hf", "-q")
    assert code == 0, err  # was "checkpoint vivit_demo does not exist"
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    code, _, err = run_cli("convert", "vivit_demo", "--out", tmp_path / "demo.safetensors", "-q")
    assert code == 0, err
    again = vivit.create_model("vivit_demo", pretrained=tmp_path / "demo.safetensors")
    demo = vivit.create_model("vivit_demo", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(demo.state_dict().values(), again.state_dict().values(), strict=True))
    code, _, err = run_cli("convert", "vivit_ti_st", "--out", tmp_path / "x.safetensors")
    assert code == 2 and "has no released weights to convert" in err
    code, _, err = run_cli("convert", "vivit_dmeo", "--out", tmp_path / "x.safetensors")
    assert code == 1 and "does not exist (nor is it a registered model name" in err
    assert err.rstrip().endswith("; did you mean vivit_demo?"), err  # attack21: no suggestion before


@pytest.mark.parametrize("workers", ["0", "1"])
def test_evaluate_warns_about_short_videos_as_predict_and_features_do(files, tmp_path, workers, run_cli, one_thread):
    listing = tmp_path / "val.csv"
    listing.write_text(f"{files['short']},left\n{files['clip']},up\n", encoding="utf-8")
    code, _, err = run_cli("evaluate", listing, "--model", "vivit_demo", "--workers", workers)
    assert code == 0, err
    warning = (
        f"vivit: warning: {files['short']} has 6 frames, fewer than one clip spans (8 frames every 1 = 8); "
        "its frames are repeated (looped), as DMVR does"
    )
    assert err.splitlines().count(warning) == 1, err
    code, _, predict_err = run_cli("predict", files["short"])
    assert "vivit: warning: " in predict_err and "has 6 frames, fewer than one clip spans" in predict_err
    code, _, err = run_cli("evaluate", listing, "--model", "vivit_demo", "--workers", workers, "-q")
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["predcit"], "did you mean 'predict'?"),
        (["predict", "--windw", "3"], "did you mean '--window'?"),
        (["features", "x.npy", "--model", "vivit_demo", "--out", "f", "--per-frmae"], "did you mean '--per-frame'?"),
        (["convert", "vivit_demo", "--out", "x", "--to", "transfomers"], "did you mean 'transformers'?"),
    ],
)
def test_typos_get_a_did_you_mean(argv, suggestion, run_cli, one_error_line):
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    one_error_line(err, suggestion)


def test_features_names_outputs_the_same_through_a_list_and_a_folder(tmp_path, run_cli, one_thread):
    """A list of absolute paths (as `find $PWD/videos` writes it, kept elsewhere) names the outputs as the folder does."""
    rng = np.random.default_rng(1)
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    for name in ("a.npy", "sub/b.npy"):
        np.save(videos / name, rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8))
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "all.txt"
    listing.write_text(f"{videos / 'a.npy'}\n{videos / 'sub' / 'b.npy'}\n", encoding="utf-8")
    relative = tmp_path / "lists" / "relative.txt"
    relative.write_text("../videos/a.npy\n../videos/sub/b.npy\n", encoding="utf-8")
    inside = videos / "list.csv"
    inside.write_text("a.npy\nsub/b.npy\n", encoding="utf-8")
    names = {}
    for key, source in {"folder": videos, "list": listing, "relative": relative, "inside": inside}.items():
        out = tmp_path / f"out_{key}"
        code, _, err = run_cli("features", source, "--model", "vivit_demo", "--out", out, "--workers", "0", "-q")
        assert code == 0, err
        names[key] = sorted(str(p.relative_to(out)) for p in out.rglob("*.safetensors"))
    assert names["folder"] == ["a.npy.safetensors", "sub/b.npy.safetensors"]
    assert names["list"] == names["relative"] == names["inside"] == names["folder"], names


def test_predict_json_writes_a_record_for_a_video_that_failed(files, run_cli):
    code, out, err = run_cli("predict", files["clip"], files["garbage"], "--json", "-q")
    assert code == 1
    good, bad = (json.loads(line) for line in out.splitlines())
    assert good["video"] == str(files["clip"]) and good["predictions"]
    assert bad["video"] == str(files["garbage"]) and bad["model"] == "vivit_demo" and "predictions" not in bad
    assert "garbage.npy" in bad["error"] and bad["error"] in err


def _pyav_shim(tmp_path: Path) -> str:
    """A folder that, first on PYTHONPATH, makes `import av` fail as it does where PyAV is not installed."""
    shim = tmp_path / "no_av"
    shim.mkdir(exist_ok=True)
    (shim / "av.py").write_text("raise ImportError(\"No module named 'av'\")\n", encoding="utf-8")
    return str(shim)


@pytest.mark.slow
def test_without_pyav_predict_features_and_evaluate_print_the_same_one_line(tmp_path, run_cli_process, cli_env):
    """features and evaluate printed a worker's whole traceback on one ~1,500-character line."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    listing = tmp_path / "val.csv"
    listing.write_text(f"{video},left\n", encoding="utf-8")
    env = {**cli_env, "PYTHONPATH": _pyav_shim(tmp_path) + os.pathsep + cli_env.get("PYTHONPATH", "")}
    lines = {}
    for name, argv in {
        "predict": ["predict", video],
        "features": ["features", video, "--model", "vivit_demo", "--out", tmp_path / "f", "--workers", "1"],
        "evaluate": ["evaluate", listing, "--model", "vivit_demo", "--workers", "1"],
    }.items():
        done = run_cli_process(*argv, env=env, timeout=300)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        (lines[name],) = done.stderr.splitlines()
    assert lines["predict"] == lines["features"] == lines["evaluate"], lines
    assert lines["predict"].startswith("vivit: error: reading video files needs PyAV: pip install av")
    assert len(lines["predict"]) < 300


def test_a_transformers_folder_written_by_convert_runs_as_local_dir(tmp_path, run_cli, one_error_line):
    """attack21: `vivit convert vivit_demo --to transformers --out hf` then `vivit predict --model local-dir:hf`
    failed with "hf/config.json: its config's label_names is ('right', ...), expected a list of strings" (the
    id2label names were read as a tuple and refused), and so did `create_model("local-dir:hf")`."""
    pytest.importorskip("transformers")
    code, _, err = run_cli("convert", "vivit_demo", "--to", "transformers", "--out", tmp_path / "hf", "-q")
    assert code == 0, err
    fresh = vivit.create_model(f"local-dir:{tmp_path / 'hf'}")  # the architecture, fresh weights
    assert fresh.pretrained_cfg["label_names"] == ("right", "left", "down", "up")
    sample = Path(vivit.__file__).parent / "assets" / "sample_clip.npz"
    code, out, err = run_cli("predict", sample, "--model", f"local-dir:{tmp_path / 'hf'}", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["predictions"][0]["label"] == "left"
