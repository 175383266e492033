"""`vivit features` at dataset scale: per-video window files, resume, bad input, workers and torchrun ranks.

The model is the bundled `vivit_demo` (8 frames of 32x32, stride 1: one window is 8 frames); the videos
are real H.264 files written by the test, 8 frames per second so that frame i is shown at i / 8 s.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from video_datasets import disc_clips, write_video

import vivit
from vivit.cli.options import ModelChoice
from vivit.data.sampling import multiview_clip_starts, sample_frame_indices
from vivit.features import feature_fn, read_features, video_features
from vivit.predict import iter_views

RATE = 8
MODEL = ["--model", "vivit_demo", "-q"]


@pytest.fixture(scope="module")
def demo() -> torch.nn.Module:
    return vivit.create_model("vivit_demo", pretrained=True).eval()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{long.mp4 (20 frames), sub/exact.mp4 (16), sub/deeper/short.mp4 (5), arr.npz (11, 4 fps)}."""
    root = tmp_path_factory.mktemp("videos")
    clips, _ = disc_clips(4, frames=20, seed=2)
    write_video(root / "long.mp4", clips[0], rate=RATE)
    write_video(root / "sub" / "exact.mp4", clips[1][:16], rate=RATE)
    write_video(root / "sub" / "deeper" / "short.mp4", clips[2][:5], rate=RATE)
    np.savez(root / "arr.npz", frames=clips[3][:11], fps=np.float64(4.0))
    return root


def outputs(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.safetensors"))}


def segment_features(
    model: torch.nn.Module, path: Path, first: int, last: int, views: tuple[int, int], per_frame: bool
) -> torch.Tensor:
    """The reference: frames [first, last) decoded as a video of their own, classified as predict_views would."""
    frames = vivit.read_video(path)[first:last]
    extract = feature_fn(model, per_frame)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", vivit.VideoWarning)  # short segments loop, as the job's do
        stacked = torch.stack(list(iter_views(frames, *views, model.pretrained_cfg)))
        return extract(stacked).mean(0)


def test_default_windows_values_times_and_metadata(videos, demo, tmp_path, one_thread, run_cli):
    out = tmp_path / "features"
    code, _, err = run_cli("features", videos, *MODEL, "--out", out, "--workers", "0")
    assert code == 0, err
    assert list(outputs(out)) == [
        "arr.npz.safetensors",
        "long.mp4.safetensors",
        "sub/deeper/short.mp4.safetensors",
        "sub/exact.mp4.safetensors",
    ]
    expected_windows = {
        "long.mp4": [[0, 8], [8, 16], [16, 20]],
        "sub/exact.mp4": [[0, 8], [8, 16]],
        "sub/deeper/short.mp4": [[0, 5]],
        "arr.npz": [[0, 8], [8, 11]],
    }
    for name, windows in expected_windows.items():
        tensors, meta = read_features(out / f"{name}.safetensors")
        source = videos / name
        assert tensors["window_frames"].dtype == torch.int64 and tensors["window_frames"].tolist() == windows
        rate = 4.0 if name.endswith(".npz") else RATE
        assert tensors["window_seconds"].dtype == torch.float64
        np.testing.assert_allclose(tensors["window_seconds"].numpy(), np.array(windows) / rate, atol=1e-9)
        features = tensors["features"]
        assert features.dtype == torch.float32 and features.shape == (len(windows), 64)
        for row, (first, last) in zip(features, windows, strict=True):
            torch.testing.assert_close(
                row, segment_features(demo, source, first, last, (1, 1), False), rtol=0, atol=2e-6
            )
        stat = source.stat()
        assert meta["source_path"] == str(source.resolve()) and meta["source_size"] == str(stat.st_size)
        assert meta["source_mtime_ns"] == str(stat.st_mtime_ns)
        assert (meta["model"], meta["window"], meta["stride"], meta["views"], meta["per_frame"]) == (
            "vivit_demo",
            "8",
            "8",
            "1x1",
            "false",
        )
        assert meta["vivit_version"] == vivit.__version__ and meta["weights"] == "released"
    assert not list(out.rglob("*.part"))  # nothing temporary left behind


def test_window_stride_views_per_frame_and_whole_video(videos, demo, tmp_path, one_thread, run_cli):
    long = videos / "long.mp4"
    out = tmp_path / "overlap"
    code, _, err = run_cli(
        "features",
        long,
        *MODEL,
        "--out",
        out,
        "--window",
        "12",
        "--stride",
        "4",
        "--views",
        "2x3",
        "--per-frame",
        "--batch-size",
        "5",
        "--workers",
        "0",
    )
    assert code == 0, err
    tensors, meta = read_features(out / "long.mp4.safetensors")
    windows = [[0, 12], [4, 16], [8, 20]]
    assert tensors["window_frames"].tolist() == windows and tensors["features"].shape == (3, 4, 64)  # nt = 8 / 2
    for row, (first, last) in zip(tensors["features"], windows, strict=True):
        torch.testing.assert_close(row, segment_features(demo, long, first, last, (2, 3), True), rtol=0, atol=2e-6)
    assert (meta["window"], meta["stride"], meta["views"], meta["per_frame"]) == ("12", "4", "2x3", "true")

    # --window 0: one clip for the whole video, vivit 0.1's features
    out = tmp_path / "whole"
    assert run_cli("features", long, *MODEL, "--out", out, "--window", "0", "--views", "4x3", "--workers", "0")[0] == 0
    tensors, _ = read_features(out / "long.mp4.safetensors")
    assert tensors["window_frames"].tolist() == [[0, 20]] and tensors["window_seconds"].tolist() == [[0.0, 2.5]]
    expected = video_features(long, feature_fn(demo, False), (4, 3), demo.pretrained_cfg, 4, torch.device("cpu"))
    torch.testing.assert_close(tensors["features"][0], expected, rtol=0, atol=2e-6)
    starts = multiview_clip_starts(20, 8, 1, 4)  # the clips it averaged are predict_views' own
    assert starts == [0, 4, 8, 12] and sample_frame_indices(20, 8, 1, start=starts[-1]).tolist() == list(range(12, 20))


def test_workers_compute_the_same_bits(videos, tmp_path, one_thread, run_cli):
    a, b = tmp_path / "in_process", tmp_path / "two_workers"
    assert run_cli("features", videos, *MODEL, "--out", a, "--workers", "0", "--window", "6")[0] == 0
    assert run_cli("features", videos, *MODEL, "--out", b, "--workers", "2", "--window", "6")[0] == 0
    assert list(outputs(a)) == list(outputs(b))
    for name, path in outputs(a).items():
        ours, theirs = read_features(path), read_features(outputs(b)[name])
        assert all(torch.equal(ours[0][k], theirs[0][k]) for k in ours[0]) and ours[1] == theirs[1]


def test_resume_skips_without_the_model_and_recomputes_what_changed(videos, tmp_path, monkeypatch, one_thread, run_cli):
    data = tmp_path / "data"
    shutil.copytree(videos, data)
    out = tmp_path / "features"
    assert run_cli("features", data, *MODEL, "--out", out, "--workers", "0")[0] == 0
    stamps = {name: p.stat().st_mtime_ns for name, p in outputs(out).items()}

    with monkeypatch.context() as patch:  # nothing to do: the model is not even loaded, no file is touched
        patch.setattr(ModelChoice, "load", lambda *a, **k: pytest.fail("the model was loaded"))
        monkeypatch.chdir(data / "sub")  # the same files named from elsewhere are still the same files
        code, _, err = run_cli("features", "..", "--model", "vivit_demo", "--out", out, "--workers", "0")
        monkeypatch.chdir(tmp_path)
    assert code == 0 and "4 of 4 videos already done" in err and "0 written, 4 already done, 0 failed" in err
    assert {name: p.stat().st_mtime_ns for name, p in outputs(out).items()} == stamps

    # a changed source (new content, size, mtime) is recomputed; the others are left alone
    write_video(data / "long.mp4", disc_clips(1, frames=12, seed=9)[0][0], rate=RATE)
    code, _, err = run_cli("features", data, "--model", "vivit_demo", "--out", out, "--workers", "0")
    assert code == 0 and "1 written, 3 already done" in err
    assert read_features(out / "long.mp4.safetensors")[0]["window_frames"].tolist() == [[0, 8], [8, 12]]
    assert all(outputs(out)[n].stat().st_mtime_ns == s for n, s in stamps.items() if n != "long.mp4.safetensors")

    # other settings: everything is recomputed, in place
    code, _, err = run_cli("features", data, "--model", "vivit_demo", "--out", out, "--stride", "4", "--workers", "0")
    assert code == 0 and "4 written, 0 already done" in err

    # another video of the same name (`cd a; features clip.mp4`, then `cd b; ...`) is not mistaken for it
    for sub in ("a", "b"):
        write_video(tmp_path / sub / "clip.mp4", disc_clips(1, frames=8, seed=ord(sub))[0][0], rate=RATE)
    monkeypatch.chdir(tmp_path / "a")
    assert run_cli("features", "clip.mp4", *MODEL, "--out", out, "--workers", "0")[0] == 0
    first = read_features(out / "clip.mp4.safetensors")
    monkeypatch.chdir(tmp_path / "b")
    code, _, err = run_cli("features", "clip.mp4", "--model", "vivit_demo", "--out", out, "--workers", "0")
    second = read_features(out / "clip.mp4.safetensors")
    assert code == 0 and "1 written" in err and second[1]["source_path"] == str(tmp_path / "b" / "clip.mp4")
    assert not torch.equal(first[0]["features"], second[0]["features"])


def test_bad_inputs_are_reported_counted_and_lose_nothing(videos, tmp_path, one_thread, run_cli):
    data = tmp_path / "data"
    (data / "one").mkdir(parents=True)
    (data / "two").mkdir()
    shutil.copy(videos / "long.mp4", data / "one" / "same.mp4")
    shutil.copy(videos / "sub" / "exact.mp4", data / "two" / "same.mp4")  # same relative name, other file
    shutil.copy(videos / "sub" / "exact.mp4", data / "good.mp4")
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (data / "notes.md").write_text("# not a video\n", encoding="utf-8")
    shutil.copy(videos / "sub" / "exact.mp4", data / "foreign.mp4")
    odd = os.fsdecode(b"caf\xe9.mp4")  # a file name that is not UTF-8
    shutil.copy(videos / "sub" / "deeper" / "short.mp4", data / odd)
    (data / "link.mp4").symlink_to(data / "good.mp4")
    listing = data / "list.csv"
    listing.write_text("good.mp4\nmissing.mp4\n", encoding="utf-8")
    out = tmp_path / "features"
    out.mkdir()
    (out / "foreign.mp4.safetensors").write_bytes(b"someone else's file")
    kept = out / "earlier.mp4.safetensors"  # an output of an earlier run, of a video not named now
    assert run_cli("features", videos / "sub" / "exact.mp4", *MODEL, "--out", out, "--workers", "0")[0] == 0
    os.replace(out / "exact.mp4.safetensors", kept)
    before = kept.read_bytes()

    code, _, err = run_cli(
        "features",
        data / "good.mp4",
        data / "broken.mp4",
        data / "notes.md",
        data / "foreign.mp4",
        listing,
        data / odd,
        data / "link.mp4",
        data / "one",
        data / "two",
        *MODEL,
        "--out",
        out,
        "--workers",
        "0",
    )
    assert code == 1
    lines = err.splitlines()
    assert "vivit: features: 3 written, 0 already done, 5 failed, 2 duplicate inputs:" in lines, err
    failed = lines[lines.index("vivit: features: 3 written, 0 already done, 5 failed, 2 duplicate inputs:") + 1 :]
    assert len(failed) == 5 and "Traceback" not in err
    assert any("broken.mp4" in line and "cannot decode" in line for line in failed)
    assert any("notes.md" in line and "cannot decode" in line for line in failed)
    assert any(
        "foreign.mp4.safetensors exists but is not a readable safetensors file" in line and "not overwritten" in line
        for line in failed
    )
    assert any("missing.mp4: does not exist (listed at" in line and "list.csv:2" in line for line in failed)
    assert any("two/same.mp4" in line and "same relative name under two inputs" in line for line in failed)
    odd_output = os.fsdecode(b"caf\xe9.mp4.safetensors")
    assert sorted(outputs(out)) == sorted(
        [
            odd_output,
            "earlier.mp4.safetensors",
            "foreign.mp4.safetensors",
            "good.mp4.safetensors",
            "same.mp4.safetensors",
        ]
    )
    assert (out / "foreign.mp4.safetensors").read_bytes() == b"someone else's file" and kept.read_bytes() == before
    assert read_features(out / odd_output)[1]["source_path"].endswith("caf\\xe9.mp4")
    assert read_features(out / "same.mp4.safetensors")[1]["source_path"] == str(data / "one" / "same.mp4")

    code, _, err = run_cli("features", data / "good.mp4", data / "link.mp4", "--model", "vivit_demo", "--out", out)
    assert code == 0 and f"link.mp4 is the same file as {data / 'good.mp4'}; computed once" in err


def test_usage_errors(videos, tmp_path, run_cli):
    code, _, err = run_cli("features", videos, *MODEL, "--out", tmp_path / "feats.safetensors")
    assert code == 2 and "features are now written one file per video into a folder" in err and "--out features/" in err
    code, _, err = run_cli("features", videos, *MODEL, "--out", tmp_path / "f", "--window", "0", "--stride", "4")
    assert code == 2 and "--stride needs windows" in err
    code, _, err = run_cli("features", videos, *MODEL, "--out", tmp_path / "f", "--window", "-1")
    assert code == 2 and "expected an integer >= 0" in err
    code, _, err = run_cli("features", videos, "--model", "vivit_ti_st", "--out", tmp_path / "f")
    assert code == 2 and "no pretrained weights" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *argv: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *map(str, argv),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False)


@pytest.mark.distributed
def test_two_torchrun_ranks_resume_a_killed_run_and_equal_one_process(tmp_path, one_thread, run_cli):
    data = tmp_path / "data"
    clips, _ = disc_clips(8, frames=20, seed=5)
    for i, clip in enumerate(clips):
        write_video(data / f"g{i % 3}" / f"v{i}.mp4", clip[: 9 + i], rate=RATE)
    reference = tmp_path / "one_process"
    assert run_cli("features", data, *MODEL, "--out", reference, "--window", "6", "--workers", "0")[0] == 0

    # what a run killed midway leaves: two finished outputs and one temporary file
    out = tmp_path / "features"
    for name in ("g0/v0.mp4.safetensors", "g2/v5.mp4.safetensors"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(reference / name, out / name)
    kept = {name: (out / name).stat().st_mtime_ns for name in ("g0/v0.mp4.safetensors", "g2/v5.mp4.safetensors")}
    # (its name carries the pid of the process that was killed: only such a file is known to be abandoned)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = out / "g1" / f".v1.mp4.safetensors.{int(dead.stdout)}.0123456789ab.part"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a file")

    done = torchrun(
        2,
        "-m",
        "vivit",
        "features",
        data,
        "--model",
        "vivit_demo",
        "--out",
        out,
        "--window",
        "6",
        "--workers",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vivit: features: 6 written, 2 already done, 0 failed" in done.stderr  # one summary, from rank 0
    assert done.stderr.count("vivit: features:") == 1
    assert list(outputs(out)) == list(outputs(reference)) and not list(out.rglob("*.part"))
    assert all((out / name).stat().st_mtime_ns == stamp for name, stamp in kept.items())
    for name, path in outputs(reference).items():  # the union is bit for bit the single-process run
        with safe_open(str(path), "pt") as ref, safe_open(str(out / name), "pt") as got:
            assert ref.metadata() == got.metadata()
            assert all(torch.equal(ref.get_tensor(k), got.get_tensor(k)) for k in ref.keys())  # noqa: SIM118


def test_the_same_features_make_the_same_file_bytes(videos, tmp_path, one_thread, run_cli):
    # safetensors writes its header's metadata in hash order, which changes from run to run; `diff -r`,
    # checksums and content-addressed stores (DVC, git-lfs) must see two equal runs as equal files.
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        assert run_cli("features", videos / "long.mp4", *MODEL, "--out", out, "--workers", "0")[0] == 0
    data = (first / "long.mp4.safetensors").read_bytes()
    assert data == (second / "long.mp4.safetensors").read_bytes()
    header = data[8 : 8 + int.from_bytes(data[:8], "little")]
    assert header.startswith(b"{") and len(header) % 8 == 0  # still a valid safetensors header
    assert read_features(first / "long.mp4.safetensors")[1]["window"] == "8"


def test_an_empty_list_is_a_failure_not_a_clean_run_cli(videos, tmp_path, run_cli):
    listing = tmp_path / "list.csv"
    listing.write_text("# nothing yet\n\n", encoding="utf-8")
    code, _, err = run_cli("features", listing, *MODEL, "--out", tmp_path / "f")
    assert code == 1 and "0 written, 0 already done, 1 failed" in err
    assert "list.csv: lists no videos" in err


@pytest.mark.slow
def test_no_room_in_shared_memory_is_an_error_not_a_hang(videos, tmp_path):
    """Workers hand decoded clips over in shared memory (/dev/shm: 64 MB in a default docker container).
    When it cannot be had, `features` hung for ever (torch's queue thread failed and dropped the batch)
    and `evaluate` printed a worker's traceback as its error. RLIMIT_FSIZE stands in for a full /dev/shm:
    shared-memory segments are files too. In a subprocess, so that a hang is a timeout."""
    listing = tmp_path / "val.csv"
    listing.write_text(f"{videos / 'long.mp4'},right\n", encoding="utf-8")
    script = (
        "import resource, sys\n"
        "from vivit import cli\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        f"codes = [cli.main(['features', {str(videos / 'long.mp4')!r}, '--model', 'vivit_demo', '--out', "
        f"{str(tmp_path / 'f')!r}, '--workers', '1']),\n"
        f"         cli.main(['evaluate', {str(listing)!r}, '--model', 'vivit_demo', '--workers', '1'])]\n"
        "print(codes)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.stdout.strip() == "[1, 1]", done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("vivit: error:")]
    assert len(errors) == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert all("shared memory (/dev/shm)" in line and "--shm-size" in line and "--workers 0" in line for line in errors)
    assert not list((tmp_path / "f").rglob("*.safetensors"))
